package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/tests/lincheck"
)

// workload runs concurrent clients doing put, get and cas on a small key
// set with unique values, recording every operation.
//
// The key set rotates: there are a few key slots, and every keyLife each
// slot moves on to a fresh key (k3.0, k3.1, ...), as Jepsen's independent
// checker does. That bounds how many operations, and above all how many
// operations of unknown outcome, one key's history holds: porcupine's search
// grows exponentially with the unknown writes concurrent with a key's later
// operations (a 60 s run with 500 unknowns on 4 fixed keys took more than
// 8 GB and minutes without an answer).
type workload struct {
	rec     *lincheck.Recorder
	cl      *client.Client
	slots   int
	keyLife time.Duration
	begin   time.Time
	timeout time.Duration

	mu   sync.Mutex
	used map[string]bool

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newWorkload(cl *client.Client, slots int, keyLife, timeout time.Duration) *workload {
	return &workload{rec: lincheck.NewRecorder(), cl: cl, slots: slots, keyLife: keyLife, timeout: timeout,
		begin: time.Now(), used: map[string]bool{}, stop: make(chan struct{})}
}

// key is the current key of slot.
func (w *workload) key(slot int) string {
	gen := 0
	if w.keyLife > 0 {
		gen = int(time.Since(w.begin) / w.keyLife)
	}
	k := fmt.Sprintf("k%d.%d", slot, gen)
	w.mu.Lock()
	w.used[k] = true
	w.mu.Unlock()
	return k
}

// keys returns every key used so far, sorted.
func (w *workload) keys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ks []string
	for k := range w.used {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// start starts n clients; client i draws its operations from seed and i.
func (w *workload) start(n int, seed uint64) {
	for i := range n {
		w.wg.Add(1)
		go w.client(i, rand.New(rand.NewPCG(seed, uint64(i)+1)))
	}
}

// halt stops the clients and waits until their last operation completed.
// It may be called more than once.
func (w *workload) halt() {
	w.stopOnce.Do(func() { close(w.stop) })
	w.wg.Wait()
}

func (w *workload) client(i int, rng *rand.Rand) {
	defer w.wg.Done()
	last := map[string][]byte{} // the last value this client saw per key (nil: absent)
	for n := 0; ; n++ {
		select {
		case <-w.stop:
			return
		default:
		}
		key := w.key(rng.IntN(w.slots))
		value := []byte(fmt.Sprintf("c%d-%d", i, n)) // unique in the run
		var op lincheck.Op
		switch r := rng.IntN(10); {
		case r < 4:
			op = lincheck.Get(key)
		case r < 7:
			op = lincheck.Put(key, value)
		default:
			op = lincheck.CAS(key, last[key], value)
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
		res, err := w.rec.Do(ctx, w.cl, i, op)
		cancel()
		if lincheck.OutcomeOf(err) != lincheck.OK {
			continue
		}
		switch {
		case op.Kind == lincheck.KindGet && res.Found, op.Kind == lincheck.KindCAS && !res.Swapped && res.Found:
			last[key] = res.Value
		case op.Kind == lincheck.KindGet, op.Kind == lincheck.KindCAS && !res.Swapped:
			last[key] = nil
		default: // a put, or a cas that swapped
			last[key] = op.Value
		}
	}
}

// pruneUnobserved returns entries without the writes of unknown outcome
// whose value nobody observed: no OK get or cas that did not swap returned
// it, and no cas (other than a failed one) expected it. Following etcd's
// robustness tests, this keeps porcupine's search small without changing
// its verdict: in this model (put and cas, values unique, no delete) such a
// write can always be linearized after everything else, where it explains
// nothing and contradicts nothing, and placing it anywhere earlier only adds
// constraints (every later read until the next write would have to return
// its value). It returns how many it dropped.
func pruneUnobserved(entries []lincheck.Entry) ([]lincheck.Entry, int) {
	observed := map[string]bool{} // key/value
	for _, e := range entries {
		if e.Op.Kind == lincheck.KindCAS && e.Op.Old != nil && e.Outcome != lincheck.Failed {
			observed[e.Op.Key+"/"+string(e.Op.Old)] = true
		}
		if e.Outcome == lincheck.OK && e.Result.Found && (e.Op.Kind == lincheck.KindGet || e.Op.Kind == lincheck.KindCAS && !e.Result.Swapped) {
			observed[e.Op.Key+"/"+string(e.Result.Value)] = true
		}
	}
	var out []lincheck.Entry
	dropped := 0
	for _, e := range entries {
		unknown := e.Outcome == lincheck.Unknown || e.Outcome == lincheck.Pending
		write := e.Op.Kind == lincheck.KindPut || e.Op.Kind == lincheck.KindCAS
		if unknown && write && !observed[e.Op.Key+"/"+string(e.Op.Value)] {
			dropped++
			continue
		}
		out = append(out, e)
	}
	return out, dropped
}
