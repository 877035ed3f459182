package state

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/kv"
	"github.com/ketch-raft/ketch/actors/protocol"
	"github.com/ketch-raft/ketch/actors/statemachine"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
	"google.golang.org/protobuf/proto"
)

// The state actor's orderings, deterministic: the test is its fsm (it
// sends ApplyRequests and queries and reads the answers in a recorder) and
// its clients.

type inbox struct {
	mu   sync.Mutex
	msgs []any
}

func (b *inbox) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
		return
	}
	b.mu.Lock()
	b.msgs = append(b.msgs, ctx.Message())
	b.mu.Unlock()
}

// wait returns the n-th message received (0-based), waiting up to 5s.
func (b *inbox) wait(t *testing.T, n int) any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		if len(b.msgs) > n {
			m := b.msgs[n]
			b.mu.Unlock()
			return m
		}
		b.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no message %d within 5s", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitInfo returns the first AppliedInfo received at or after position n,
// skipping what else the state tells its fsm in between (SnapshotTaken,
// which a snapshot written in the background may send at any moment).
func (b *inbox) waitInfo(t *testing.T, n int) *protocol.AppliedInfo {
	t.Helper()
	for i := n; ; i++ {
		switch m := b.wait(t, i).(type) {
		case *protocol.AppliedInfo:
			return m
		case *protocol.SnapshotTaken:
		default:
			t.Fatalf("the state sent its fsm %T, want AppliedInfo", m)
		}
	}
}

func (b *inbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

type stateHarness struct {
	t             *testing.T
	sys           *actor.ActorSystem
	state         *actor.PID
	fsm, client   *inbox
	fsmP, clientP *actor.PID
}

func newStateHarness(t *testing.T) *stateHarness {
	t.Helper()
	return newStateHarnessWith(t, Config{})
}

// newStateHarnessWith is newStateHarness with cfg's snapshot fields (and
// FSM set to the harness's fsm inbox).
func newStateHarnessWith(t *testing.T, cfg Config) *stateHarness {
	t.Helper()
	h := &stateHarness{t: t, sys: actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(nil, slog.LevelError))),
		fsm: &inbox{}, client: &inbox{}}
	t.Cleanup(h.sys.Shutdown)
	h.fsmP = h.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return h.fsm }))
	h.clientP = h.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return h.client }))
	cfg.New, cfg.Typed, cfg.Logger, cfg.FSM = kv.NewStateMachine, kv.FillResponse, slog.New(slog.DiscardHandler), h.fsmP
	if cfg.ClusterID == "" {
		cfg.ClusterID = "test"
	}
	if cfg.Members == nil {
		cfg.Members = []*pb.Member{{Id: 1, Address: "127.0.0.1:1"}} // a founding member
	}
	h.state = h.sys.Root.Spawn(Props(cfg))
	return h
}

// apply sends an ApplyRequest of epoch for entries lo..hi (puts of key k
// to "v<index>"), with a waiter for each index in waitFor, and returns
// the AppliedInfo it was answered with.
func (h *stateHarness) apply(epoch, lo, hi uint64, waitFor ...uint64) *protocol.AppliedInfo {
	h.t.Helper()
	req := &protocol.ApplyRequest{Epoch: epoch}
	for i := lo; i <= hi; i++ {
		req.Entries = append(req.Entries, putEntry(h.t, i, 1, i, "k", []byte{byte(i)}))
	}
	for _, w := range waitFor {
		req.Waiters = append(req.Waiters, protocol.Waiter{Index: w, ReplyTo: h.clientP, Typed: true})
	}
	n := h.fsm.len()
	h.sys.Root.RequestWithCustomSender(h.state, req, h.fsmP)
	return h.fsm.waitInfo(h.t, n)
}

// putEntry is the log entry of client's put of key (its command number seq).
func putEntry(t *testing.T, index, client, seq uint64, key string, value []byte) *pb.Entry {
	t.Helper()
	cmd, err := proto.Marshal(&pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: key, Value: value}}})
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(&pb.ClientCommand{ClientId: client, Sequence: seq, Data: cmd})
	if err != nil {
		t.Fatal(err)
	}
	return &pb.Entry{Index: index, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: data}
}

func getQuery(t *testing.T, key string) []byte {
	t.Helper()
	q, err := proto.Marshal(&pb.KVCommand{Op: &pb.KVCommand_Get{Get: &pb.Get{Key: key}}})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (h *stateHarness) query(epoch uint64) *protocol.AppliedInfo {
	h.t.Helper()
	n := h.fsm.len()
	h.sys.Root.RequestWithCustomSender(h.state, &protocol.AppliedQuery{Epoch: epoch}, h.fsmP)
	return h.fsm.waitInfo(h.t, n)
}

// ARCHITECTURE §3 rule 7: each index is applied once, in order; entries at
// or below the applied index (replays after a restart) are skipped; a batch
// that starts past the next index (from an fsm incarnation being replaced)
// is dropped until the entries come in order. Every answer carries the
// asker's epoch.
func TestStateAppliesInOrderOnce(t *testing.T) {
	h := newStateHarness(t)
	if got := h.apply(7, 1, 3, 2); got.Epoch != 7 || got.Index != 3 {
		t.Fatalf("AppliedInfo %+v, want epoch 7 index 3", got)
	}
	if r := h.client.wait(t, 0).(*pb.ClientResponse); r.Index != 2 || r.Status != pb.ClientStatus_CLIENT_STATUS_OK {
		t.Fatalf("waiter of index 2 answered %+v", r)
	}
	if got := h.apply(8, 2, 4); got.Index != 4 || got.Epoch != 8 {
		t.Fatalf("a replay of 2-3 with 4: AppliedInfo %+v, want index 4 epoch 8", got)
	}
	if got := h.apply(8, 9, 10, 9); got.Index != 4 {
		t.Fatalf("a batch past a gap moved the applied index to %d", got.Index)
	}
	if got := h.apply(8, 5, 10, 9); got.Index != 10 {
		t.Fatalf("the entries in order: applied %d, want 10", got.Index)
	}
	if r := h.client.wait(t, 1).(*pb.ClientResponse); r.Index != 9 {
		t.Fatalf("the waiter of index 9 answered %+v", r)
	}
	if n := h.client.len(); n != 2 {
		t.Fatalf("%d client answers, want 2 (the waiter past the gap answered once)", n)
	}
	if got := h.query(11); got.Epoch != 11 || got.Index != 10 {
		t.Fatalf("AppliedQuery answered %+v", got)
	}
}

// A restart mid-request: the state crashes with requests queued behind the
// crash. The new instance starts empty, answers its queries with the epoch
// asked, drops the queued batch that no longer follows its applied index,
// and applies from 1 when the restarted fsm sends from there. A read the
// old instance could have served is answered UNAVAILABLE by the new one
// while it is behind.
func TestStateRestartMidRequest(t *testing.T) {
	h := newStateHarness(t)
	h.apply(1, 1, 5)
	h.sys.Root.Send(h.state, &Crash{Reason: "test"})
	// Queued behind the crash: a batch of the old fsm and a read at 5.
	h.sys.Root.RequestWithCustomSender(h.state, &protocol.ApplyRequest{Epoch: 1, Entries: []*pb.Entry{{Index: 6, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NOOP}}}, h.fsmP)
	h.sys.Root.Send(h.state, &protocol.ReadRequest{Index: 5, Query: getQuery(t, "k"), Typed: true, ReplyTo: h.clientP, ClientID: 2, SeqNum: 1})
	if got := h.fsm.wait(t, 1).(*protocol.AppliedInfo); got.Index != 0 || got.Epoch != 1 {
		t.Fatalf("the restarted state answered the queued batch with %+v, want index 0", got)
	}
	if r := h.client.wait(t, 0).(*pb.ClientResponse); r.Status != pb.ClientStatus_CLIENT_STATUS_UNAVAILABLE || r.ClientId != 2 {
		t.Fatalf("a read behind the restarted state answered %+v, want UNAVAILABLE", r)
	}
	if got := h.query(2); got.Index != 0 || got.Epoch != 2 {
		t.Fatalf("AppliedQuery of the new fsm answered %+v", got)
	}
	if got := h.apply(2, 1, 6); got.Index != 6 {
		t.Fatalf("replay from 1: applied %d, want 6", got.Index)
	}
}

// Thesis §6.3, in the state actor: a retried command (same client and
// sequence) is answered with the first result and not applied again, also
// when both copies are in one batch; an older sequence is refused; a read
// sees the state the batch left. Answers carry the index and term the
// command was applied at.
func TestSessionsDeduplicateRetries(t *testing.T) {
	h := newStateHarness(t)
	req := &protocol.ApplyRequest{Epoch: 1, Entries: []*pb.Entry{
		putEntry(t, 1, 5, 1, "k", []byte("a")),
		putEntry(t, 2, 5, 1, "k", []byte("b")), // a retry of 1 with other bytes: not applied
		putEntry(t, 3, 6, 1, "j", []byte("c")),
		putEntry(t, 4, 5, 2, "k", []byte("d")),
		putEntry(t, 5, 5, 1, "k", []byte("e")), // older than the session's last
	}}
	for i := uint64(1); i <= 5; i++ {
		req.Waiters = append(req.Waiters, protocol.Waiter{Index: i, ReplyTo: h.clientP, Typed: true})
	}
	h.sys.Root.RequestWithCustomSender(h.state, req, h.fsmP)
	if got := h.fsm.wait(t, 0).(*protocol.AppliedInfo); got.Index != 5 {
		t.Fatalf("applied %d, want 5", got.Index)
	}
	want := []struct {
		status pb.ClientStatus
		index  uint64
	}{{pb.ClientStatus_CLIENT_STATUS_OK, 1}, {pb.ClientStatus_CLIENT_STATUS_OK, 1}, {pb.ClientStatus_CLIENT_STATUS_OK, 3},
		{pb.ClientStatus_CLIENT_STATUS_OK, 4}, {pb.ClientStatus_CLIENT_STATUS_INVALID, 5}}
	for i, w := range want {
		r := h.client.wait(t, i).(*pb.ClientResponse)
		if r.Status != w.status || r.Index != w.index || r.Term != 1 {
			t.Fatalf("answer %d: %v at %d/%d, want %v at %d/1 (%s)", i, r.Status, r.Index, r.Term, w.status, w.index, r.Error)
		}
	}
	h.sys.Root.Send(h.state, &protocol.ReadRequest{Index: 5, Query: getQuery(t, "k"), Typed: true, ReplyTo: h.clientP, ClientID: 9, SeqNum: 1})
	if r := h.client.wait(t, 5).(*pb.ClientResponse); !r.Found || string(r.Value) != "d" || r.Index != 5 {
		t.Fatalf("read of k answered %+v, want d at index 5", r)
	}
	// A query the state machine cannot answer is INVALID, not a crash.
	h.sys.Root.Send(h.state, &protocol.ReadRequest{Index: 5, Query: []byte{0xff}, ReplyTo: h.clientP, ClientID: 9, SeqNum: 2})
	if r := h.client.wait(t, 6).(*pb.ClientResponse); r.Status != pb.ClientStatus_CLIENT_STATUS_INVALID {
		t.Fatalf("a malformed query answered %+v", r)
	}
}

// An untyped waiter gets the state machine's result bytes as they are.
func TestUntypedAnswerCarriesTheResult(t *testing.T) {
	h := newStateHarness(t)
	h.sys.Root.RequestWithCustomSender(h.state, &protocol.ApplyRequest{Epoch: 1,
		Entries: []*pb.Entry{putEntry(t, 1, 5, 1, "k", []byte("a"))},
		Waiters: []protocol.Waiter{{Index: 1, ReplyTo: h.clientP}}}, h.fsmP)
	r := h.client.wait(t, 0).(*pb.ClientResponse)
	var res pb.KVResult
	if err := proto.Unmarshal(r.Result, &res); err != nil || r.Status != pb.ClientStatus_CLIENT_STATUS_OK || r.Found {
		t.Fatalf("answer %+v (%v), want OK with a KVResult in result", r, err)
	}
}

// A state machine that breaks the contract (one result per command) crashes
// the state actor instead of answering the wrong clients.
func TestWrongResultCountCrashes(t *testing.T) {
	h := newStateHarness(t)
	crashed := make(chan any, 1)
	props := Props(Config{New: func() statemachine.StateMachine { return shortSM{} }, Logger: slog.New(slog.DiscardHandler)})
	strategy := actor.NewOneForOneStrategy(1, time.Second, func(reason any) actor.Directive {
		select {
		case crashed <- reason:
		default:
		}
		return actor.StopDirective
	})
	parent := h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			st := ctx.Spawn(props)
			ctx.Send(st, &protocol.ApplyRequest{Epoch: 1, Entries: []*pb.Entry{putEntry(t, 1, 5, 1, "k", nil)}})
		}
	}, actor.WithSupervisor(strategy)))
	defer h.sys.Root.Stop(parent)
	select {
	case r := <-crashed:
		if !strings.Contains(fmt.Sprint(r), "returned 0 results for 1 commands") {
			t.Fatalf("crashed with %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the state actor did not crash")
	}
}

type shortSM struct{ statemachine.StateMachine }

func (shortSM) Apply([]statemachine.Command) [][]byte { return nil }
