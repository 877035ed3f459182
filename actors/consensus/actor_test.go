package consensus

import (
	"math"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/protocol"
	"github.com/ketch-raft/ketch/fsm"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
)

// Regression (issue 11): state.AppliedInfo carried no incarnation, and the
// fsm actor took whichever arrived first while it started. A reply the dead
// state instance had queued (applied 100) made the new fsm believe the new,
// empty state had applied everything; it never handed the entries over
// again, and the state waited forever. Now the answer of another epoch is
// ignored and the new incarnation applies from index 1.
func TestStaleAppliedInfoIsIgnoredAtStart(t *testing.T) {
	h := newHarness(t, []uint64{1}, nil)
	first := h.incarnation(nil, 0, nil)
	// The first incarnation leads alone and applies its no-op.
	if a, _ := next[*protocol.ApplyRequest](t, h.state, "the first no-op's ApplyRequest", nil); a.Epoch != first || a.Entries[0].Index != 1 {
		t.Fatalf("first ApplyRequest %+v", a)
	}
	// The state restarts (empty) and so, rest_for_one, does the fsm. The
	// old state's answer to the old fsm is still queued in the fsm's
	// mailbox when the new incarnation starts.
	h.crash()
	h.incarnation(noops(1), 0, func(uint64) {
		h.sys.Root.Send(h.fsm, &protocol.AppliedInfo{Epoch: first, Index: 100})
	})
	a, _ := next[*protocol.ApplyRequest](t, h.state, "the new incarnation's ApplyRequest", func(a *protocol.ApplyRequest) bool { return a.Epoch != first })
	if a.Entries[0].Index != 1 {
		t.Fatalf("the new incarnation applies from index %d, want 1: it took the stale AppliedInfo", a.Entries[0].Index)
	}
}

// A store/state disagreement about the applied index (the state applied
// entries the store does not hold) is a crash, never clamped: the
// supervisor restarts the fsm from disk.
func TestStateAheadOfStoreCrashes(t *testing.T) {
	h := newHarness(t, []uint64{1}, nil)
	first := h.incarnation(noops(2), 5, nil)
	load, _ := next[*logstore.LoadRequest](t, h.store, "the restarted incarnation's LoadRequest", nil)
	if load.Epoch == first {
		t.Fatal("the fsm did not restart")
	}
	if n := count[*protocol.ApplyRequest](h.state, nil); n != 0 {
		t.Fatalf("the fsm applied %d batches from a state it could not trust", n)
	}
}

// Every answer that depends on the incarnation carries its epoch; answers
// of an earlier incarnation (a Durable, a Fenced, a Loaded, an AppliedInfo,
// a fetch's EntriesRead, queued before a restart) are ignored by the next.
func TestAnswersOfAnEarlierIncarnationAreIgnored(t *testing.T) {
	var st atomic.Pointer[fsm.Status]
	h := newHarness(t, []uint64{1}, func(c *Config) { c.OnStatus = func(s fsm.Status) { st.Store(&s) } })
	first := h.incarnation(nil, 0, nil)
	next[*protocol.ApplyRequest](t, h.state, "the no-op's ApplyRequest", nil)
	h.crash()
	// The new incarnation's answers, with a Loaded of the dead incarnation
	// between them: taking it would restore a log of 50 entries.
	load, _ := next[*logstore.LoadRequest](t, h.store, "LoadRequest", nil)
	next[*protocol.AppliedQuery](t, h.state, "AppliedQuery", nil)
	second := load.Epoch
	h.sys.Root.Send(h.fsm, &logstore.Loaded{Epoch: second, State: logstore.State{HardState: &pb.HardState{Term: 1}, Entries: noops(1)}})
	h.sys.Root.Send(h.fsm, &logstore.Loaded{Epoch: first, State: logstore.State{HardState: &pb.HardState{Term: 1}, Entries: noops(50)}})
	h.sys.Root.Send(h.fsm, &protocol.AppliedInfo{Epoch: second, Index: 1})
	h.sync()
	if s := st.Load(); s.LastIndex > 3 {
		t.Fatalf("the new incarnation restored %d entries: it took the stale Loaded", s.LastIndex)
	}
	for _, stale := range []any{
		// A Durable beyond anything the new incarnation issued would trip
		// the fsm's assert ("store reports seq durable but only ... issued").
		&logstore.Durable{Epoch: first, Seq: 1 << 40},
		// A Fenced of the old epoch must not crash the new one.
		&logstore.Fenced{Epoch: first, Seq: 3},
		// A stale applied index must not move the new one.
		&protocol.AppliedInfo{Epoch: first, Index: 1 << 40},
		// A fetch answered after the restart.
		&logstore.EntriesRead{Entries: noops(3), Tag: fetchTag{epoch: first, peer: 2, term: 1, lo: 1}},
	} {
		h.sys.Root.Send(h.fsm, stale)
	}
	h.sync()
	if n := count[*logstore.LoadRequest](h.store, func(l *logstore.LoadRequest) bool { return l.Epoch != first && l.Epoch != second }); n != 0 {
		t.Fatalf("a stale answer crashed the incarnation (%d restarts)", n)
	}
	if s := st.Load(); s.Applied > s.LastIndex || s.Term > 3 {
		t.Fatalf("status after the stale answers: %+v", *s)
	}
}

// A Fenced of the current epoch means the store lost writes this
// incarnation believes durable: it must crash and reload.
func TestFencedOfTheCurrentEpochCrashes(t *testing.T) {
	h := newHarness(t, []uint64{1}, nil)
	first := h.incarnation(nil, 0, nil)
	h.sys.Root.Send(h.fsm, &logstore.Fenced{Epoch: first, Seq: 1})
	if load, _ := next[*logstore.LoadRequest](t, h.store, "the LoadRequest after the crash", nil); load.Epoch == first {
		t.Fatal("the fsm did not restart on a Fenced of its own epoch")
	}
}

// Client work reaches the fsm only as a protocol.Command or Transfer from
// the gateway: a raw ClientRequest or TransferRequest (from anywhere else
// in the process; the wire guard routes none here) is refused, counted,
// and never proposed.
func TestRawClientRequestsAreRefused(t *testing.T) {
	h := newHarness(t, []uint64{1}, nil)
	h.incarnation(nil, 0, nil)
	next[*protocol.ApplyRequest](t, h.state, "the no-op's ApplyRequest", nil)
	h.sys.Root.RequestWithCustomSender(h.fsm, &pb.ClientRequest{ClusterId: "other", ClientId: 1, Sequence: 1, Command: put("k", "v")}, h.clientP)
	h.sys.Root.RequestWithCustomSender(h.fsm, &pb.TransferRequest{}, h.clientP)
	r, _ := next[*pb.ClientResponse](t, h.client, "the answer to the raw ClientRequest", nil)
	if r.Status != pb.ClientStatus_CLIENT_STATUS_INVALID || !strings.Contains(r.Error, "gateway") {
		t.Fatalf("raw ClientRequest answered %v %q, want INVALID naming the gateway", r.Status, r.Error)
	}
	tr, _ := next[*pb.TransferResponse](t, h.client, "the answer to the raw TransferRequest", nil)
	if tr.Ok || !strings.Contains(tr.Error, "gateway") {
		t.Fatalf("raw TransferRequest answered %+v", tr)
	}
	h.sync()
	if n := count[*logstore.WriteRequest](h.store, func(w *logstore.WriteRequest) bool { return len(w.Entries) > 0 && w.Entries[0].Index > 1 }); n != 0 {
		t.Fatalf("a raw ClientRequest was proposed (%d writes)", n)
	}
	if got := h.stats.RejectedClient.Load(); got != 2 {
		t.Fatalf("RejectedClient = %d, want 2", got)
	}
}

// Backpressure: at most MaxPendingWrites writes and MaxPendingReads reads
// wait on the fsm actor; the next is answered BUSY at once, and counted.
// When the writes commit, the waiting ones are answered and there is room
// again.
func TestPendingRequestsAreBounded(t *testing.T) {
	h := newHarness(t, []uint64{1}, func(c *Config) { c.MaxPendingWrites, c.MaxPendingReads = 3, 2 })
	h.incarnation(nil, 0, nil)
	next[*protocol.ApplyRequest](t, h.state, "the no-op's ApplyRequest", nil)
	// From now on the disk does not answer: writes stay uncommitted, and
	// the state does not report the no-op applied, so reads wait too.
	var held []*logstore.WriteRequest
	h.store.setAuto(nil)
	for seq := uint64(1); seq <= 5; seq++ {
		h.command(seq, put("k", "v"))
	}
	for seq := uint64(6); seq <= 8; seq++ {
		h.command(seq, get("k"))
	}
	for range 3 {
		r, _ := next[*pb.ClientResponse](t, h.client, "a BUSY answer", nil)
		if r.Status != pb.ClientStatus_CLIENT_STATUS_BUSY || !strings.Contains(r.Error, "retry") {
			t.Fatalf("answer %v %q, want BUSY", r.Status, r.Error)
		}
		if r.Sequence != 4 && r.Sequence != 5 && r.Sequence != 8 {
			t.Fatalf("sequence %d refused, want 4, 5 and 8", r.Sequence)
		}
	}
	if got := h.stats.Busy.Load(); got != 3 {
		t.Fatalf("Busy = %d, want 3", got)
	}
	// Let the disk catch up: the three writes commit and are handed over
	// with their waiters.
	for {
		w, _ := next[*logstore.WriteRequest](t, h.store, "the writes", func(w *logstore.WriteRequest) bool { return len(w.Entries) > 0 })
		held = append(held, w)
		if last := w.Entries[len(w.Entries)-1].Index; last >= 4 {
			break
		}
	}
	h.store.setAuto(func(ctx actor.Context) {
		if w, ok := ctx.Message().(*logstore.WriteRequest); ok {
			ctx.Send(ctx.Sender(), &logstore.Durable{Epoch: w.Epoch, Seq: w.Seq})
		}
	})
	for _, w := range held {
		h.sys.Root.Send(h.fsm, &logstore.Durable{Epoch: w.Epoch, Seq: w.Seq})
	}
	waiters := 0
	for waiters < 3 {
		a, _ := next[*protocol.ApplyRequest](t, h.state, "the writes' ApplyRequest", nil)
		waiters += len(a.Waiters)
	}
	h.command(9, put("k", "v"))
	w, _ := next[*logstore.WriteRequest](t, h.store, "the write after the commit", func(w *logstore.WriteRequest) bool {
		return len(w.Entries) > 0 && w.Entries[0].Index == 5
	})
	if w.Entries[0].Index != 5 {
		t.Fatal("no room after the commit")
	}
}

// Peer messages the fsm rejects are counted (and logged, rate-limited);
// the node carries on.
func TestRejectedPeerMessagesAreCounted(t *testing.T) {
	h := newHarness(t, []uint64{1, 2, 3}, nil)
	h.incarnation(nil, 0, nil)
	h.sync()
	bad := []*pb.RaftMessage{
		nil,
		{ClusterId: "other", From: 2, To: 1, Term: 1, Body: &pb.RaftMessage_TimeoutNow{TimeoutNow: &pb.TimeoutNow{}}},
		{ClusterId: "c", From: 1, To: 1, Term: 1, Body: &pb.RaftMessage_TimeoutNow{TimeoutNow: &pb.TimeoutNow{}}}, // from itself
		{ClusterId: "c", From: 2, To: 1, Term: math.MaxUint64, Body: &pb.RaftMessage_AppendEntriesResponse{AppendEntriesResponse: &pb.AppendEntriesResponse{}}},
		{ClusterId: "c", From: 2, To: 1, Term: 1},
	}
	h.sys.Root.Send(h.fsm, &pb.RaftBatch{Messages: bad})
	h.sync()
	if got := h.stats.RejectedPeer.Load(); got != uint64(len(bad)) {
		t.Fatalf("RejectedPeer = %d, want %d", got, len(bad))
	}
}

// TestBatchSpeaksForItsSenderOnly: a message in a RaftBatch from another
// node than the batch's sender is refused (with mutual TLS the batch's
// sender is the certificate's node, so this keeps one node's certificate
// from speaking for another); the batch sender's own messages are taken.
func TestBatchSpeaksForItsSenderOnly(t *testing.T) {
	h := newHarness(t, []uint64{1, 2, 3}, nil)
	h.incarnation(nil, 0, nil)
	h.sync()
	vote := func(from uint64) *pb.RaftMessage {
		return &pb.RaftMessage{ClusterId: "c", From: from, To: 1, Term: 1, Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{}}}
	}
	h.sys.Root.Send(h.fsm, &pb.RaftBatch{From: 2, Messages: []*pb.RaftMessage{vote(2), vote(3), vote(3)}})
	h.sync()
	if got := h.stats.RejectedPeer.Load(); got != 2 {
		t.Fatalf("RejectedPeer = %d, want the 2 messages claiming node 3 in node 2's batch", got)
	}
}
