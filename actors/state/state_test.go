package state

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/kv"
	"github.com/ketch-raft/ketch/actors/protocol"
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
	h := &stateHarness{t: t, sys: actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(nil, slog.LevelError))),
		fsm: &inbox{}, client: &inbox{}}
	t.Cleanup(h.sys.Shutdown)
	h.fsmP = h.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return h.fsm }))
	h.clientP = h.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return h.client }))
	h.state = h.sys.Root.Spawn(Props(Config{New: func() StateMachine { return kv.New() }, Logger: slog.New(slog.DiscardHandler)}))
	return h
}

// apply sends an ApplyRequest of epoch for entries lo..hi (puts of key k
// to "v<index>"), with a waiter for each index in waitFor, and returns
// the AppliedInfo it was answered with.
func (h *stateHarness) apply(epoch, lo, hi uint64, waitFor ...uint64) *protocol.AppliedInfo {
	h.t.Helper()
	req := &protocol.ApplyRequest{Epoch: epoch}
	for i := lo; i <= hi; i++ {
		data, err := proto.Marshal(&pb.KVEntry{ClientId: 1, Sequence: i, Command: &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: "k", Value: []byte{byte(i)}}}}})
		if err != nil {
			h.t.Fatal(err)
		}
		req.Entries = append(req.Entries, &pb.Entry{Index: i, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: data})
	}
	for _, w := range waitFor {
		req.Waiters = append(req.Waiters, protocol.Waiter{Index: w, ReplyTo: h.clientP})
	}
	n := h.fsm.len()
	h.sys.Root.RequestWithCustomSender(h.state, req, h.fsmP)
	info, ok := h.fsm.wait(h.t, n).(*protocol.AppliedInfo)
	if !ok {
		h.t.Fatalf("the state answered %T to an ApplyRequest", h.fsm.wait(h.t, n))
	}
	return info
}

func (h *stateHarness) query(epoch uint64) *protocol.AppliedInfo {
	h.t.Helper()
	n := h.fsm.len()
	h.sys.Root.RequestWithCustomSender(h.state, &protocol.AppliedQuery{Epoch: epoch}, h.fsmP)
	return h.fsm.wait(h.t, n).(*protocol.AppliedInfo)
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
	h.sys.Root.Send(h.state, &protocol.ReadRequest{Index: 5, Command: &pb.KVCommand{Op: &pb.KVCommand_Get{Get: &pb.Get{Key: "k"}}}, ReplyTo: h.clientP, ClientID: 2, SeqNum: 1})
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
