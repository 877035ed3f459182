package lincheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ketch-raft/ketch/actors/client"
)

// Outcome says how an operation ended.
type Outcome uint8

const (
	// Pending: invoked, not completed yet. Checked as Unknown.
	Pending Outcome = iota
	// OK: the cluster answered; the Result must be explained.
	OK
	// Failed: the operation definitely did not take effect.
	Failed
	// Unknown: it may or may not have taken effect (a timeout).
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case Pending:
		return "pending"
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// OutcomeOf classifies an error of ketch's Go client: nil and
// client.ErrNotFound (an answered Get of an absent key) are OK,
// client.ErrInvalid (refused, never applied) is Failed, anything else —
// client.ErrTimeout above all — is Unknown.
func OutcomeOf(err error) Outcome {
	switch {
	case err == nil, errors.Is(err, client.ErrNotFound):
		return OK
	case errors.Is(err, client.ErrInvalid):
		return Failed
	default:
		return Unknown
	}
}

// Entry is one operation of a recorded history.
type Entry struct {
	// ID is the operation's id, as Invoke returned it.
	ID int
	// Client is the caller's client number, as given to Invoke.
	Client  int
	Op      Op
	Result  Result
	Outcome Outcome
	// Call and Return are logical times: every Invoke and Complete takes
	// the next tick of the recorder's clock. Return is 0 while Pending.
	Call, Return int64
	// CallAt and ReturnAt are the wall-clock times, for humans.
	CallAt, ReturnAt time.Time
}

// Counts sums a history up by outcome.
type Counts struct {
	Ops, OK, Failed, Unknown, Pending int
}

func (c Counts) String() string {
	return fmt.Sprintf("ops=%d ok=%d failed=%d unknown=%d pending=%d", c.Ops, c.OK, c.Failed, c.Unknown, c.Pending)
}

// Recorder records a history. It is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	clock   int64
	start   time.Time
	entries []Entry
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// FromEntries returns a recorder holding a copy of entries (as Entries
// returned them, possibly edited), to check a modified history. Entries are
// renumbered in order; the clock continues after their latest time.
func FromEntries(entries []Entry) *Recorder {
	r := NewRecorder()
	for i, e := range entries {
		e.ID = i
		e.Op = cloneOp(e.Op)
		e.Result = cloneResult(e.Result)
		r.entries = append(r.entries, e)
		r.clock = max(r.clock, e.Call, e.Return)
		if !e.CallAt.IsZero() && e.CallAt.Before(r.start) {
			r.start = e.CallAt
		}
	}
	return r
}

// Invoke records that client is about to send op and returns the
// operation's id for Complete. Call it before the request leaves.
func (r *Recorder) Invoke(client int, op Op) (id int) {
	op = cloneOp(op)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock++
	id = len(r.entries)
	r.entries = append(r.entries, Entry{ID: id, Client: client, Op: op, Call: r.clock, CallAt: time.Now()})
	return id
}

// Complete records how operation id ended. Call it as soon as the answer
// or the error is back. result matters only for OK. It panics on an
// unknown id, a second completion or a Pending outcome: those are bugs in
// the test.
func (r *Recorder) Complete(id int, result Result, outcome Outcome) {
	if outcome == Pending {
		panic("lincheck: Complete with outcome Pending")
	}
	result = cloneResult(result)
	r.mu.Lock()
	defer r.mu.Unlock()
	if id < 0 || id >= len(r.entries) {
		panic(fmt.Sprintf("lincheck: Complete of unknown operation %d", id))
	}
	e := &r.entries[id]
	if e.Outcome != Pending {
		panic(fmt.Sprintf("lincheck: operation %d (%v) completed twice", id, e.Op))
	}
	r.clock++
	e.Result, e.Outcome, e.Return, e.ReturnAt = result, outcome, r.clock, time.Now()
}

// Entries returns a copy of the history so far, in invocation order.
func (r *Recorder) Entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Entry, len(r.entries))
	for i, e := range r.entries {
		e.Op, e.Result = cloneOp(e.Op), cloneResult(e.Result)
		out[i] = e
	}
	return out
}

// Counts sums up the history so far.
func (r *Recorder) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c Counts
	for _, e := range r.entries {
		c.Ops++
		switch e.Outcome {
		case OK:
			c.OK++
		case Failed:
			c.Failed++
		case Unknown:
			c.Unknown++
		case Pending:
			c.Pending++
		}
	}
	return c
}

// Operations turns the history into porcupine operations for Model:
// Failed operations are left out; Unknown and Pending ones return after
// every other event with an output that matches anything, except Gets,
// which are left out (they change nothing and promise nothing). After an
// operation of unknown outcome, a client's later operations go on a new
// porcupine client id.
func (r *Recorder) Operations() []porcupine.Operation {
	entries := r.Entries()
	var end int64
	for _, e := range entries {
		end = max(end, e.Call, e.Return)
	}
	end++ // "infinity": after every recorded event

	type stream struct{ client, n int }
	streams := map[int]int{} // client -> its current stream number
	ids := map[stream]int{}  // stream -> porcupine client id, dense from 0
	var ops []porcupine.Operation
	for _, e := range entries {
		unknown := e.Outcome == Unknown || e.Outcome == Pending
		if e.Outcome == Failed || unknown && e.Op.Kind == KindGet {
			continue
		}
		s := stream{e.Client, streams[e.Client]}
		pid, ok := ids[s]
		if !ok {
			pid = len(ids)
			ids[s] = pid
		}
		op := porcupine.Operation{ClientId: pid, Input: e.Op.input(), Call: e.Call, Return: e.Return,
			Output: e.Result.output(), Metadata: r.describeMeta(e)}
		if unknown {
			op.Return, op.Output = end, output{unknown: true}
			streams[e.Client]++
		}
		ops = append(ops, op)
	}
	return ops
}

func (r *Recorder) describeMeta(e Entry) string {
	s := fmt.Sprintf("client %d, op #%d, %s at +%v", e.Client, e.ID, e.Outcome, e.CallAt.Sub(r.start).Round(time.Millisecond))
	if !e.ReturnAt.IsZero() {
		s += fmt.Sprintf(", took %v", e.ReturnAt.Sub(e.CallAt).Round(time.Microsecond))
	}
	return s
}

// CheckResult checks the history with porcupine. A timeout of 0 means
// none; when it runs out the result is porcupine.Unknown.
func (r *Recorder) CheckResult(timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(Model, r.Operations(), timeout)
}

// Check reports whether the history is linearizable, with the information
// Visualize needs. A check that runs out of time reports false; use
// CheckResult to tell that apart.
func (r *Recorder) Check(timeout time.Duration) (linearizable bool, info porcupine.LinearizationInfo) {
	res, info := r.CheckResult(timeout)
	return res == porcupine.Ok, info
}

// Linearizable checks the history without collecting what Visualize
// needs, so it stops at the first key that fails: faster on histories
// expected to fail. porcupine.Unknown means the timeout ran out.
func (r *Recorder) Linearizable(timeout time.Duration) porcupine.CheckResult {
	return porcupine.CheckOperationsTimeout(Model, r.Operations(), timeout)
}

// Visualize writes porcupine's HTML visualization of a check to path.
func Visualize(info porcupine.LinearizationInfo, path string) error {
	return porcupine.VisualizePath(Model, info, path)
}

// VisualizeTemp writes the visualization to a new file in dir (os.TempDir
// if empty) whose name starts with prefix, and returns its path.
func VisualizeTemp(info porcupine.LinearizationInfo, dir, prefix string) (string, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, prefix+"-*.html")
	if err != nil {
		return "", err
	}
	path := f.Name()
	_ = f.Close()
	if err := Visualize(info, path); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path, nil
	}
	return abs, nil
}

func cloneOp(o Op) Op {
	o.Value, o.Old = bytes.Clone(o.Value), bytes.Clone(o.Old)
	return o
}

func cloneResult(r Result) Result {
	r.Value = bytes.Clone(r.Value)
	return r
}
