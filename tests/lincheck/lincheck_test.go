package lincheck

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ketch-raft/ketch/actors/client"
)

// A script is a hand-built history: invocations and completions in the
// order they happened.
type action func(r *Recorder, ids map[string]int)

func inv(name string, client int, op Op) action {
	return func(r *Recorder, ids map[string]int) { ids[name] = r.Invoke(client, op) }
}

func ret(name string, res Result, out Outcome) action {
	return func(r *Recorder, ids map[string]int) { r.Complete(ids[name], res, out) }
}

// do is an operation that completes OK before the next one starts.
func do(client int, op Op, res Result) []action {
	name := fmt.Sprintf("seq-%d-%v-%p", client, op, &op)
	return []action{inv(name, client, op), ret(name, res, OK)}
}

func run(script ...[]action) *Recorder {
	r := NewRecorder()
	ids := map[string]int{}
	for _, part := range script {
		for _, a := range part {
			a(r, ids)
		}
	}
	return r
}

func one(a ...action) []action { return a }

func b(s string) []byte { return []byte(s) }

var (
	ok       = Result{}
	absent   = Result{Found: false}
	swapped  = Result{Swapped: true}
	existed  = Result{Found: true}
	is       = func(v string) Result { return Result{Found: true, Value: b(v)} }
	notSwapN = func(v string) Result { return Result{Found: true, Value: b(v)} }
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		script [][]action
		want   bool
	}{
		{"empty history", nil, true},
		{"sequential put then get", [][]action{
			do(0, Put("x", b("1")), ok),
			do(1, Get("x"), is("1")),
		}, true},
		{"get of a key never written is absent", [][]action{
			do(0, Get("x"), absent),
		}, true},
		{"concurrent put: one read sees the old value, a later one the new", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("p2", 0, Put("x", b("2")))),
			do(1, Get("x"), is("1")),
			do(2, Get("x"), is("2")),
			one(ret("p2", ok, OK)),
		}, true},
		{"stale read: old value after a completed later put", [][]action{
			do(0, Put("x", b("1")), ok),
			do(0, Put("x", b("2")), ok),
			do(1, Get("x"), is("1")),
		}, false},
		{"stale read: new value seen, then old value by a later read", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("p2", 0, Put("x", b("2")))),
			do(1, Get("x"), is("2")),
			do(2, Get("x"), is("1")),
			one(ret("p2", ok, OK)),
		}, false},
		{"lost acknowledged write: absent after a completed put", [][]action{
			do(0, Put("x", b("1")), ok),
			do(1, Get("x"), absent),
		}, false},
		{"read of a value nobody wrote", [][]action{
			do(0, Put("x", b("1")), ok),
			do(1, Get("x"), is("7")),
		}, false},
		{"unknown put, applied", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("p2", 0, Put("x", b("2"))), ret("p2", ok, Unknown)),
			do(1, Get("x"), is("2")),
		}, true},
		{"unknown put, not applied", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("p2", 0, Put("x", b("2"))), ret("p2", ok, Unknown)),
			do(1, Get("x"), is("1")),
		}, true},
		{"unknown put, applied late (after the client gave up)", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("p2", 0, Put("x", b("2"))), ret("p2", ok, Unknown)),
			do(1, Get("x"), is("1")),
			do(1, Get("x"), is("2")),
		}, true},
		{"unknown put cannot un-happen", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("p2", 0, Put("x", b("2"))), ret("p2", ok, Unknown)),
			do(1, Get("x"), is("2")),
			do(1, Get("x"), is("1")),
		}, false},
		{"unknown put cannot happen before its invocation", [][]action{
			do(1, Get("x"), is("2")),
			one(inv("p2", 0, Put("x", b("2"))), ret("p2", ok, Unknown)),
		}, false},
		{"pending put counts as unknown", [][]action{
			one(inv("p", 0, Put("x", b("2")))),
			do(1, Get("x"), is("2")),
		}, true},
		{"unknown get is tolerated", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("g", 1, Get("x")), ret("g", is("nonsense"), Unknown)),
		}, true},
		{"failed put never happened", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("p2", 0, Put("x", b("2"))), ret("p2", ok, Failed)),
			do(1, Get("x"), is("1")),
		}, true},
		{"failed put seen by a read", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("p2", 0, Put("x", b("2"))), ret("p2", ok, Failed)),
			do(1, Get("x"), is("2")),
		}, false},
		{"cas swaps on the expected value", [][]action{
			do(0, Put("x", b("1")), ok),
			do(0, CAS("x", b("1"), b("2")), swapped),
			do(1, Get("x"), is("2")),
		}, true},
		{"cas cannot swap on a wrong expected value", [][]action{
			do(0, Put("x", b("1")), ok),
			do(0, CAS("x", b("9"), b("2")), swapped),
		}, false},
		{"cas that did not swap reports the current value", [][]action{
			do(0, Put("x", b("1")), ok),
			do(0, CAS("x", b("9"), b("2")), notSwapN("1")),
			do(1, Get("x"), is("1")),
		}, true},
		{"cas that did not swap must report the right value", [][]action{
			do(0, Put("x", b("1")), ok),
			do(0, CAS("x", b("9"), b("2")), notSwapN("3")),
		}, false},
		{"cas that did not swap although it matched", [][]action{
			do(0, Put("x", b("1")), ok),
			do(0, CAS("x", b("1"), b("2")), notSwapN("1")),
		}, false},
		{"cas expecting absent swaps on an absent key", [][]action{
			do(0, CAS("x", nil, b("1")), swapped),
			do(1, Get("x"), is("1")),
		}, true},
		{"cas expecting absent fails on a present key", [][]action{
			do(0, Put("x", b("1")), ok),
			do(0, CAS("x", nil, b("2")), swapped),
		}, false},
		{"cas expecting the empty value is not cas expecting absent", [][]action{
			do(0, CAS("x", []byte{}, b("1")), swapped),
		}, false},
		{"unknown cas, applied", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("c", 0, CAS("x", b("1"), b("2"))), ret("c", ok, Unknown)),
			do(1, Get("x"), is("2")),
		}, true},
		{"unknown cas, not applied", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("c", 0, CAS("x", b("1"), b("2"))), ret("c", ok, Unknown)),
			do(1, Get("x"), is("1")),
		}, true},
		{"unknown cas cannot swap a value it does not expect", [][]action{
			do(0, Put("x", b("1")), ok),
			one(inv("c", 0, CAS("x", b("9"), b("2"))), ret("c", ok, Unknown)),
			do(1, Get("x"), is("2")),
		}, false},
		{"delete removes the key", [][]action{
			do(0, Put("x", b("1")), ok),
			do(0, Delete("x"), existed),
			do(1, Get("x"), absent),
			do(1, Delete("x"), absent),
		}, true},
		{"delete of an absent key cannot report it existed", [][]action{
			do(0, Delete("x"), existed),
		}, false},
		{"keys are independent", [][]action{
			do(0, Put("x", b("1")), ok),
			do(1, Put("y", b("2")), ok),
			do(2, Get("x"), is("1")),
			do(2, Get("y"), is("2")),
		}, true},
		{"a value does not leak to another key", [][]action{
			do(0, Put("x", b("1")), ok),
			do(1, Put("y", b("2")), ok),
			do(2, Get("y"), is("1")),
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(tt.script...)
			got, info := r.Check(0)
			if got != tt.want {
				path, err := VisualizeTemp(info, t.TempDir(), "lincheck")
				t.Fatalf("Check = %v, want %v (visualization %s %v)", got, tt.want, path, err)
			}
			// Both representations porcupine offers must agree.
			if ev := porcupine.CheckEvents(Model, toEvents(r.Operations())); ev != tt.want {
				t.Fatalf("CheckEvents = %v, want %v", ev, tt.want)
			}
		})
	}
}

// toEvents turns operations into porcupine events, to exercise
// Model.PartitionEvent.
func toEvents(ops []porcupine.Operation) []porcupine.Event {
	type at struct {
		t   int64
		ret bool
		ev  porcupine.Event
	}
	var all []at
	for i, op := range ops {
		all = append(all,
			at{op.Call, false, porcupine.Event{ClientId: op.ClientId, Kind: porcupine.CallEvent, Value: op.Input, Id: i}},
			at{op.Return, true, porcupine.Event{ClientId: op.ClientId, Kind: porcupine.ReturnEvent, Value: op.Output, Id: i}})
	}
	// Times are distinct except the shared "infinity" of unknown returns.
	for i := 1; i < len(all); i++ {
		for j := i; j > 0 && (all[j].t < all[j-1].t || all[j].t == all[j-1].t && !all[j].ret && all[j-1].ret); j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
	evs := make([]porcupine.Event, len(all))
	for i, a := range all {
		evs[i] = a.ev
	}
	return evs
}

func TestOperationsShape(t *testing.T) {
	r := NewRecorder()
	p := r.Invoke(3, Put("x", b("1")))
	g := r.Invoke(4, Get("x"))
	r.Complete(p, ok, Unknown)
	q := r.Invoke(3, Put("x", b("2"))) // after an unknown op: a new stream
	f := r.Invoke(5, Put("x", b("3")))
	r.Complete(g, absent, Unknown) // unknown get: dropped
	r.Complete(q, ok, OK)
	r.Complete(f, ok, Failed) // failed: dropped
	ops := r.Operations()
	if len(ops) != 2 {
		t.Fatalf("got %d operations, want 2 (unknown get and failed put left out): %+v", len(ops), ops)
	}
	if ops[0].Return <= ops[1].Return {
		t.Errorf("unknown put returns at %d, not after everything (last return %d)", ops[0].Return, ops[1].Return)
	}
	if ops[0].ClientId == ops[1].ClientId {
		t.Errorf("client 3's operation after an unknown one shares its porcupine client id %d", ops[0].ClientId)
	}
	if c := r.Counts(); c != (Counts{Ops: 4, OK: 1, Failed: 1, Unknown: 2}) {
		t.Errorf("counts = %v", c)
	}
}

func TestRecorderPanicsOnMisuse(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	r := NewRecorder()
	id := r.Invoke(0, Get("x"))
	r.Complete(id, absent, OK)
	mustPanic("second Complete", func() { r.Complete(id, absent, OK) })
	mustPanic("Complete of an unknown id", func() { r.Complete(42, absent, OK) })
	mustPanic("Complete with Pending", func() { r.Complete(r.Invoke(0, Get("x")), absent, Pending) })
}

func TestRecorderCopiesBuffers(t *testing.T) {
	r := NewRecorder()
	v := b("1")
	id := r.Invoke(0, Put("x", v))
	r.Complete(id, ok, OK)
	v[0] = '9' // the caller reuses its buffer
	res := is("1")
	gid := r.Invoke(1, Get("x"))
	r.Complete(gid, res, OK)
	res.Value[0] = '9'
	if lin, _ := r.Check(0); !lin {
		t.Fatal("the recorder kept a caller's buffer instead of a copy")
	}
}

func TestOutcomeOf(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{fmt.Errorf("get %q: %w", "x", client.ErrNotFound), OK},
		{fmt.Errorf("%w: key too long", client.ErrInvalid), Failed},
		{fmt.Errorf("%w (context deadline exceeded)", client.ErrTimeout), Unknown},
		{errors.New("something else"), Unknown},
	} {
		if got := OutcomeOf(tt.err); got != tt.want {
			t.Errorf("OutcomeOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestConcurrentRegisterIsLinearizable records many goroutines working a
// mutex-protected map — linearizable by construction — and a copy whose
// reads come from a stale snapshot, which must be caught.
func TestConcurrentRegisterIsLinearizable(t *testing.T) {
	const workers, opsEach = 8, 300
	keys := []string{"a", "b", "c"}
	var mu sync.Mutex
	data := map[string][]byte{}
	r := NewRecorder()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var last []byte
			for i := range opsEach {
				k := keys[rng.IntN(len(keys))]
				v := fmt.Appendf(nil, "w%d-%d", w, i)
				var op Op
				switch rng.IntN(4) {
				case 0:
					op = Put(k, v)
				case 1:
					op = CAS(k, last, v)
				case 2:
					if rng.IntN(4) == 0 {
						op = Delete(k)
						break
					}
					fallthrough
				default:
					op = Get(k)
				}
				id := r.Invoke(w, op)
				mu.Lock()
				cur, found := data[k]
				var res Result
				switch op.Kind {
				case KindPut:
					data[k] = v
				case KindGet:
					res = Result{Found: found, Value: cur}
				case KindDelete:
					delete(data, k)
					res = Result{Found: found}
				case KindCAS:
					if found == (op.Old != nil) && (!found || string(cur) == string(op.Old)) {
						data[k], res = v, Result{Swapped: true}
					} else {
						res = Result{Found: found, Value: cur}
					}
				}
				mu.Unlock()
				out := OK
				if rng.IntN(50) == 0 {
					out = Unknown // the answer was lost; the effect was not
				}
				r.Complete(id, res, out)
				if res.Found {
					last = res.Value
				}
			}
		})
	}
	wg.Wait()
	if lin, info := r.Check(30 * time.Second); !lin {
		path, _ := VisualizeTemp(info, t.TempDir(), "register")
		t.Fatalf("a mutex-protected map is not linearizable? visualization: %s", path)
	}

	// Corrupt it: make the last successful read of some key return a value
	// that an acknowledged write had overwritten before the read began.
	entries := r.Entries()
	what, ok := CorruptStaleRead(entries)
	if !ok {
		t.Fatal("no read to corrupt")
	}
	if lin, _ := FromEntries(entries).Check(30 * time.Second); lin {
		t.Fatalf("a history with a stale read passed the check: %s", what)
	}
}

func TestVisualizeOnFailure(t *testing.T) {
	r := run(
		do(0, Put("x", b("1")), ok),
		do(0, Put("x", b("2")), ok),
		do(1, Get("x"), is("1")),
	)
	lin, info := r.Check(time.Second)
	if lin {
		t.Fatal("stale read passed")
	}
	path, err := VisualizeTemp(info, t.TempDir(), "stale")
	if err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(html), `get(\"x\")`) {
		t.Fatalf("the visualization at %s does not describe the operations", path)
	}
}

func TestCorruptions(t *testing.T) {
	history := func() []Entry {
		return run(
			do(0, Put("x", b("1")), ok),
			do(1, Put("x", b("2")), ok),
			do(0, CAS("x", b("2"), b("3")), swapped),
			do(2, Get("x"), is("3")),
			do(2, Get("y"), absent),
		).Entries()
	}
	if lin, _ := FromEntries(history()).Check(0); !lin {
		t.Fatal("the uncorrupted copy is not linearizable")
	}
	for name, corrupt := range map[string]func([]Entry) (string, bool){
		"stale read": CorruptStaleRead,
		"lost write": CorruptLostWrite,
	} {
		entries := history()
		what, ok := corrupt(entries)
		if !ok {
			t.Errorf("%s: nothing to corrupt", name)
			continue
		}
		if lin, _ := FromEntries(entries).Check(0); lin {
			t.Errorf("%s: corrupted history passed: %s", name, what)
		}
		if res := FromEntries(entries).Linearizable(0); res != porcupine.Illegal {
			t.Errorf("%s: Linearizable = %s, want Illegal", name, res)
		}
	}
	// Nothing to corrupt: no read follows two acknowledged writes.
	if _, ok := CorruptStaleRead(run(do(0, Put("x", b("1")), ok), do(1, Get("x"), is("1"))).Entries()); ok {
		t.Error("CorruptStaleRead corrupted a history with a single write")
	}
	// A key that is deleted can legitimately be absent.
	if _, ok := CorruptLostWrite(run(do(0, Put("x", b("1")), ok), do(0, Delete("x"), existed), do(1, Get("x"), absent)).Entries()); ok {
		t.Error("CorruptLostWrite corrupted a read of a deleted key")
	}
}
