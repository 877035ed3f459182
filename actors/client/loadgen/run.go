package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
)

// Operation types: the keys of Report.ByOp.
const (
	OpPut = "put"
	OpGet = "get"
)

// progressEvery is how often Run calls its progress function.
const progressEvery = time.Second

// Progress is what Run reports about every second while it runs.
type Progress struct {
	// Preloading: the keys are being written before the timed phase
	// (Config.Reads > 0); Ops counts the keys written so far.
	Preloading bool
	// Elapsed is the time since the phase began.
	Elapsed time.Duration
	// Ops and Errors are the operations answered and failed so far.
	Ops, Errors int64
	// OpsPerSec is the rate of answered operations since the last call.
	OpsPerSec float64
}

// store is what Run needs of a client; tests give it a fake.
type store interface {
	Put(ctx context.Context, key string, value []byte) error
	Get(ctx context.Context, key string) ([]byte, error)
}

// key is the name of key i of the key space.
func key(i int) string { return fmt.Sprintf("bench-%06d", i) }

// Run drives the cluster behind c with cfg.Clients workers until
// cfg.Duration has passed or cfg.Ops operations completed, and reports what
// they did. It overwrites the keys bench-000000 up to bench-(Keys-1). Each
// operation is one c.Put of ValueBytes random bytes or one c.Get (a fraction
// cfg.Reads of them), of a key drawn uniformly, bounded by the client's own
// timeout (client.Config.Timeout); a run may end that much after Duration.
//
// An operation that returns an error counts as an error of its type; a get
// that answers "not found" is a success. Latencies are those of successful
// operations. With Reads > 0 every key is first written once, not timed
// and not counted, so that gets find values; a put that fails then ends
// the run with an error.
//
// progress, if not nil, is called about every second from one goroutine,
// never after Run returns. When ctx ends, Run stops early and returns what
// was done (nothing, during the preload) together with an error wrapping
// ctx's; operations cut short by it are not counted. Any other error is
// a bad cfg (see Config.Validate) or a failed preload.
func Run(ctx context.Context, c *client.Client, cfg Config, progress func(Progress)) (Report, error) {
	if c == nil {
		return Report{}, errors.New("loadgen: no client")
	}
	return run(ctx, c, cfg, progress)
}

func run(ctx context.Context, s store, cfg Config, progress func(Progress)) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	if cfg.Reads > 0 {
		if err := preload(ctx, s, cfg, progress); err != nil {
			return report(cfg, 0, nil), err
		}
	}
	var (
		answered, failed atomic.Int64
		claimed          atomic.Int64 // operations begun, against cfg.Ops
		deadline         time.Time
		workers          = make([]worker, cfg.Clients)
		wg               sync.WaitGroup
	)
	start := time.Now()
	if cfg.Duration > 0 {
		deadline = start.Add(cfg.Duration)
	}
	more := func() bool {
		switch {
		case ctx.Err() != nil:
			return false
		case cfg.Ops > 0:
			return claimed.Add(1) <= int64(cfg.Ops)
		default:
			return time.Now().Before(deadline)
		}
	}
	stopProgress := startProgress(progress, false, &answered, &failed)
	for i := range workers {
		w := &workers[i]
		w.init(cfg)
		wg.Go(func() {
			for more() {
				op, lat, err := w.do(ctx, s)
				switch {
				case err == nil:
					w.latency[op].record(lat)
					answered.Add(1)
				case ctx.Err() != nil:
					// cut short by the caller: neither an answer nor an error
				default:
					w.errors[op]++
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	return report(cfg, elapsed, workers), ctx.Err()
}

// worker is one client's state: its random source and what it measured.
type worker struct {
	cfg     Config
	rng     *rand.Rand
	bytes   *rand.ChaCha8 // fills values
	latency [2]histogram  // by opIndex
	errors  [2]int64
}

// Indexes of an operation type in worker's arrays.
const (
	putIndex = iota
	getIndex
)

var opNames = [2]string{putIndex: OpPut, getIndex: OpGet}

func (w *worker) init(cfg Config) {
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	w.cfg, w.bytes = cfg, rand.NewChaCha8(seed)
	w.rng = rand.New(w.bytes)
}

// value returns a fresh value (the client may still hold the last one in
// a retried attempt, so none is reused).
func (w *worker) value() []byte {
	v := make([]byte, w.cfg.ValueBytes)
	_, _ = w.bytes.Read(v)
	return v
}

// do runs one operation and returns its type, latency and error.
func (w *worker) do(ctx context.Context, s store) (op int, lat time.Duration, err error) {
	k := key(w.rng.IntN(w.cfg.Keys))
	if w.rng.Float64() < w.cfg.Reads {
		start := time.Now()
		_, err = s.Get(ctx, k)
		lat = time.Since(start)
		if errors.Is(err, client.ErrNotFound) {
			err = nil // an answer
		}
		return getIndex, lat, err
	}
	v := w.value()
	start := time.Now()
	err = s.Put(ctx, k, v)
	return putIndex, time.Since(start), err
}

// preload writes every key once with cfg.Clients workers. When parent
// ends first, its error is returned (wrapped), not that of a put it cut
// short.
func preload(parent context.Context, s store, cfg Config, progress func(Progress)) error {
	var (
		next, done, failed atomic.Int64
		firstErr           error
		once               sync.Once
		wg                 sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stopProgress := startProgress(progress, true, &done, &failed)
	defer stopProgress()
	for range cfg.Clients {
		var w worker
		w.init(cfg)
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.Keys {
					return
				}
				if err := s.Put(ctx, key(i), w.value()); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("preload: put %s: %w", key(i), err) })
					cancel()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if err := parent.Err(); err != nil {
		return fmt.Errorf("preload: %w", err)
	}
	return firstErr
}

// startProgress calls progress every progressEvery with the counters until
// the returned function is called, which waits for the last call to end.
func startProgress(progress func(Progress), preloading bool, ops, errs *atomic.Int64) (stop func()) {
	if progress == nil {
		return func() {}
	}
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(progressEvery)
		defer tick.Stop()
		start, last, lastOps := time.Now(), time.Now(), int64(0)
		for {
			select {
			case <-quit:
				return
			case now := <-tick.C:
				n := ops.Load()
				progress(Progress{Preloading: preloading, Elapsed: now.Sub(start), Ops: n, Errors: errs.Load(),
					OpsPerSec: float64(n-lastOps) / now.Sub(last).Seconds()})
				last, lastOps = now, n
			}
		}
	}()
	return func() { close(quit); <-exited }
}
