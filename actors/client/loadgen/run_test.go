package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
)

// fakeStore is a store in memory that answers like the client.
type fakeStore struct {
	delay      time.Duration // each call takes this long
	failEvery  int           // every failEvery-th call (counted by type) fails; 0: none
	forgetPuts bool          // puts succeed but store nothing

	mu         sync.Mutex
	values     map[string][]byte
	puts, gets int
}

var errFake = errors.New("fake failure")

func (s *fakeStore) call(ctx context.Context, n *int) error {
	s.mu.Lock()
	*n++
	fail := s.failEvery > 0 && *n%s.failEvery == 0
	s.mu.Unlock()
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return fmt.Errorf("%w (%v)", client.ErrTimeout, ctx.Err())
		}
	}
	if fail {
		return errFake
	}
	return nil
}

func (s *fakeStore) Put(ctx context.Context, key string, value []byte) error {
	if err := s.call(ctx, &s.puts); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = map[string][]byte{}
	}
	if !s.forgetPuts {
		s.values[key] = value
	}
	return nil
}

func (s *fakeStore) Get(ctx context.Context, key string) ([]byte, error) {
	if err := s.call(ctx, &s.gets); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[key]
	if !ok {
		return nil, fmt.Errorf("get %q: %w", key, client.ErrNotFound)
	}
	return v, nil
}

// checkSums checks that the totals are the sums of the operation types.
func checkSums(t *testing.T, r Report) {
	t.Helper()
	put, get := r.ByOp[OpPut], r.ByOp[OpGet]
	if put.Ops+get.Ops != r.Ops || put.Errors+get.Errors != r.Errors {
		t.Errorf("totals %d ops, %d errors are not put's %d+%d and get's %d+%d", r.Ops, r.Errors, put.Ops, put.Errors, get.Ops, get.Errors)
	}
}

// With Ops, exactly that many operations run, in the mix asked for, on
// keys of the key space only, every key written once before the timed
// phase (not counted) and every value of ValueBytes.
func TestRunOpsPreloadAndMix(t *testing.T) {
	s := &fakeStore{}
	cfg := Config{Ops: 2000, Clients: 8, Keys: 50, ValueBytes: 33, Reads: 0.25}
	r, err := run(context.Background(), s, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, r)
	if r.Ops != 2000 || r.Errors != 0 {
		t.Fatalf("ops %d errors %d, want 2000 and 0", r.Ops, r.Errors)
	}
	if got := r.ByOp[OpPut].Ops; s.puts != int(got)+cfg.Keys {
		t.Errorf("the store saw %d puts; want %d timed + %d preloaded", s.puts, got, cfg.Keys)
	}
	if got := r.ByOp[OpGet].Ops; got != int64(s.gets) || got < 400 || got > 600 {
		t.Errorf("%d gets counted, %d made, want about 25%% of 2000", got, s.gets)
	}
	if len(s.values) != cfg.Keys {
		t.Errorf("%d keys written, want %d", len(s.values), cfg.Keys)
	}
	valid := regexp.MustCompile(`^bench-0000[0-4][0-9]$`)
	for k, v := range s.values {
		if !valid.MatchString(k) || len(v) != cfg.ValueBytes {
			t.Errorf("key %q (%d bytes of value) is not a key of the space or not %d bytes", k, len(v), cfg.ValueBytes)
		}
	}
	if r.Clients != 8 || r.Keys != 50 || r.ValueBytes != 33 || r.Reads != 0.25 || r.DurationS <= 0 {
		t.Errorf("the report does not describe its run: %+v", r)
	}
}

// A get of a key that holds nothing answered: it is not an error.
func TestRunNotFoundIsAnAnswer(t *testing.T) {
	s := &fakeStore{forgetPuts: true}
	r, err := run(context.Background(), s, Config{Ops: 300, Clients: 3, Reads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, r)
	if get := r.ByOp[OpGet]; get.Ops != 300 || get.Errors != 0 {
		t.Fatalf("gets that found nothing: %+v, want 300 answered and no error", get)
	}
}

// Failed operations count as errors of their type, not as operations.
func TestRunCountsErrors(t *testing.T) {
	s := &fakeStore{failEvery: 4}
	r, err := run(context.Background(), s, Config{Ops: 400, Clients: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, r)
	if put := r.ByOp[OpPut]; put.Ops != 300 || put.Errors != 100 {
		t.Fatalf("puts: %+v, want 300 answered and 100 errors", put)
	}

	// A failed preload ends the run: reads would find nothing.
	s = &fakeStore{failEvery: 7}
	_, err = run(context.Background(), s, Config{Ops: 10, Keys: 20, Reads: 0.5}, nil)
	if !errors.Is(err, errFake) || !strings.Contains(err.Error(), "preload: put bench-") {
		t.Fatalf("run with a failing preload: %v", err)
	}
}

// A timed run stops at its duration and reports progress about every
// second meanwhile, and never after it returned.
func TestRunDurationAndProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("takes over a second")
	}
	s := &fakeStore{delay: time.Millisecond}
	var mu sync.Mutex
	var got []Progress
	returned := false
	r, err := run(context.Background(), s, Config{Duration: 1200 * time.Millisecond, Clients: 2}, func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if returned {
			t.Error("progress called after Run returned")
		}
		got = append(got, p)
	})
	mu.Lock()
	returned = true
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if r.DurationS < 1.2 || r.DurationS > 1.7 {
		t.Errorf("a 1.2s run took %.3fs", r.DurationS)
	}
	if len(got) != 1 || got[0].Preloading || got[0].Ops <= 0 || got[0].Ops > r.Ops || got[0].OpsPerSec <= 0 {
		t.Fatalf("progress: %+v, want one call with the ops so far (run: %d ops)", got, r.Ops)
	}
	t.Logf("%d ops in %.2fs; progress %+v", r.Ops, r.DurationS, got)
}

// Cancelling ctx stops the run at once; what was done is reported, and the
// operations cut short count neither as answers nor as errors.
func TestRunCancel(t *testing.T) {
	s := &fakeStore{delay: 5 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	r, err := run(ctx, s, Config{Duration: time.Minute, Clients: 4}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a cancelled run took %v", took)
	}
	checkSums(t, r)
	if r.Ops == 0 || r.Errors != 0 || int(r.Ops) > s.puts {
		t.Fatalf("cancelled run: %d ops, %d errors (store saw %d puts)", r.Ops, r.Errors, s.puts)
	}

	// Cancelled during the preload: the context's error, not a put's.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	r, err = run(ctx, s, Config{Duration: time.Minute, Keys: 1e6, Reads: 0.5, Clients: 2}, nil)
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "preload: ") || r.Ops != 0 || r.Keys != 1e6 {
		t.Fatalf("cancelled in the preload: %v, %+v", err, r)
	}
}

func TestRunNeedsAClient(t *testing.T) {
	if _, err := Run(context.Background(), nil, Config{}, nil); err == nil {
		t.Fatal("Run without a client did not fail")
	}
}

// The JSON has exactly the promised keys, at the top and per operation.
func TestReportJSONKeys(t *testing.T) {
	r, err := run(context.Background(), &fakeStore{}, Config{Ops: 100, Reads: 0.5, Clients: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	stat := []string{"ops", "ops_per_sec", "p50_us", "p99_us", "p999_us", "errors"}
	want := append(slices.Clone(stat), "by_op", "clients", "duration_s", "value_bytes", "keys", "reads")
	if got := slices.Sorted(mapKeys(top)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("keys %v, want %v\n%s", got, want, b)
	}
	var byOp map[string]map[string]json.RawMessage
	if err := json.Unmarshal(top["by_op"], &byOp); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(mapKeys(byOp)); !slices.Equal(got, []string{"get", "put"}) {
		t.Errorf("by_op keys %v, want get and put", got)
	}
	for op, o := range byOp {
		if got := slices.Sorted(mapKeys(o)); !slices.Equal(got, slices.Sorted(slices.Values(stat))) {
			t.Errorf("by_op.%s keys %v, want %v", op, got, stat)
		}
	}
	if r.P50us <= 0 || r.P50us > r.P99us || r.P99us > r.P999us {
		t.Errorf("percentiles out of order: %+v", r.Stats)
	}

	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "2 clients,") || !strings.Contains(lines[4], "total") {
		t.Errorf("table: want a summary, a header, put, get and total rows:\n%s", table.String())
	}
	t.Logf("\n%s%s", table.String(), b)
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
