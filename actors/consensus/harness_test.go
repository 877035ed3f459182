package consensus

// A deterministic harness for the fsm actor: a real protoactor system, the
// actor itself, and fakes of its neighbours (store, state, sender, a client)
// that record what it sends them. Orderings are built by the test, which
// answers in the order it wants; nothing waits on a timer to create an
// interleaving. Where a test must show that something did not happen, it
// sends a probe behind it and waits for the probe's answer: the mailbox is
// FIFO, so by then the earlier message was handled.

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/protocol"
	"github.com/ketch-raft/ketch/fsm"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
)

// recorder is an actor that keeps every message it receives, with its
// sender, for the test to take in order.
type recorder struct {
	mu    sync.Mutex
	msgs  []recorded
	taken []bool
	// auto, if set, runs in the actor for every message (after it is
	// recorded) and may answer it.
	auto func(ctx actor.Context)
}

type recorded struct {
	msg    any
	sender *actor.PID
}

func (r *recorder) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
		return
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, recorded{ctx.Message(), ctx.Sender()})
	r.taken = append(r.taken, false)
	auto := r.auto
	r.mu.Unlock()
	if auto != nil {
		auto(ctx)
	}
}

func (r *recorder) setAuto(f func(ctx actor.Context)) {
	r.mu.Lock()
	r.auto = f
	r.mu.Unlock()
}

// count returns how many messages of type T that match ok were received.
func count[T any](r *recorder, ok func(T) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if x, is := m.msg.(T); is && (ok == nil || ok(x)) {
			n++
		}
	}
	return n
}

// next waits for the first message of type T not yet taken that ok
// accepts (nil: any), marks it taken and returns it with its sender.
func next[T any](t *testing.T, r *recorder, what string, ok func(T) bool) (T, *actor.PID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		for i, m := range r.msgs {
			if x, is := m.msg.(T); is && !r.taken[i] && (ok == nil || ok(x)) {
				r.taken[i] = true
				r.mu.Unlock()
				return x, m.sender
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			var zero T
			t.Fatalf("no %s (%T) within 5s", what, zero)
			return zero, nil
		}
		time.Sleep(time.Millisecond)
	}
}

// harness is one fsm actor among fakes.
type harness struct {
	t                           *testing.T
	sys                         *actor.ActorSystem
	fsm                         *actor.PID
	store, state, send, client  *recorder
	storePID, statePID, clientP *actor.PID
	stats                       *Stats
}

// newHarness starts an fsm actor for node 1 of members. Writes are made
// durable at once by the fake store (it answers every WriteRequest with a
// Durable); loads and applied queries are answered by the test.
func newHarness(t *testing.T, members []uint64, tune func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, sys: actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(nil, slog.LevelError))),
		store: &recorder{}, state: &recorder{}, send: &recorder{}, client: &recorder{}, stats: &Stats{}}
	t.Cleanup(h.sys.Shutdown)
	spawn := func(r *recorder) *actor.PID {
		return h.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return r }))
	}
	h.storePID, h.statePID, h.clientP = spawn(h.store), spawn(h.state), spawn(h.client)
	sendPID := spawn(h.send)
	h.store.setAuto(func(ctx actor.Context) {
		if w, ok := ctx.Message().(*logstore.WriteRequest); ok && ctx.Sender() != nil {
			ctx.Send(ctx.Sender(), &logstore.Durable{Epoch: w.Epoch, Seq: w.Seq})
		}
	})
	peers := map[uint64]string{}
	for _, m := range members {
		peers[m] = fmt.Sprintf("127.0.0.1:%d", 7000+m)
	}
	level := slog.LevelError
	if os.Getenv("KETCH_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	cfg := Config{
		Raft: fsm.Config{ID: 1, ClusterID: "c", Members: members,
			ElectionTimeout: 20 * time.Millisecond, HeartbeatInterval: 5 * time.Millisecond},
		Peers: peers,
		Store: h.storePID, State: h.statePID, Sender: sendPID,
		Stats:  h.stats,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	if tune != nil {
		tune(&cfg)
	}
	h.fsm = h.sys.Root.Spawn(Props(cfg))
	return h
}

// incarnation answers the queries of the fsm incarnation that starts next
// (its LoadRequest and AppliedQuery) with the log ents and the applied
// index applied, and returns its epoch. before runs between the two
// questions arriving and the answers going out: there the test may queue
// messages that the new incarnation handles first.
func (h *harness) incarnation(ents []*pb.Entry, applied uint64, before func(epoch uint64)) uint64 {
	h.t.Helper()
	load, _ := next[*logstore.LoadRequest](h.t, h.store, "LoadRequest", nil)
	q, _ := next[*protocol.AppliedQuery](h.t, h.state, "AppliedQuery", nil)
	if q.Epoch != load.Epoch {
		h.t.Fatalf("LoadRequest of epoch %d, AppliedQuery of epoch %d", load.Epoch, q.Epoch)
	}
	if before != nil {
		before(load.Epoch)
	}
	st := logstore.State{Entries: ents}
	if len(ents) > 0 {
		st.HardState = &pb.HardState{Term: ents[len(ents)-1].Term}
	}
	h.sys.Root.Send(h.fsm, &logstore.Loaded{Epoch: load.Epoch, State: st})
	h.sys.Root.Send(h.fsm, &protocol.AppliedInfo{Epoch: load.Epoch, Index: applied})
	return load.Epoch
}

// sync waits until the fsm actor has handled everything sent to it so far:
// it sends a Transfer (to a node that is not a member) and waits for the
// answer.
func (h *harness) sync() {
	h.t.Helper()
	before := count[*pb.TransferResponse](h.client, nil)
	h.sys.Root.Send(h.fsm, &protocol.Transfer{To: 99, ReplyTo: h.clientP})
	deadline := time.Now().Add(5 * time.Second)
	for count[*pb.TransferResponse](h.client, nil) == before {
		if time.Now().After(deadline) {
			h.t.Fatal("the fsm actor did not answer a probe within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// crash makes the fsm actor panic; its parent (the root guardian)
// restarts it.
func (h *harness) crash() { h.sys.Root.Send(h.fsm, &Crash{Reason: "test"}) }

// command sends a client command as the gateway would.
func (h *harness) command(seq uint64, cmd *pb.KVCommand) {
	h.sys.Root.Send(h.fsm, &protocol.Command{Req: &pb.ClientRequest{ClusterId: "c", ClientId: 7, Sequence: seq, Command: cmd}, ReplyTo: h.clientP})
}

func put(k, v string) *pb.KVCommand {
	return &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: k, Value: []byte(v)}}}
}

func get(k string) *pb.KVCommand {
	return &pb.KVCommand{Op: &pb.KVCommand_Get{Get: &pb.Get{Key: k}}}
}

func noops(n int) []*pb.Entry {
	ents := make([]*pb.Entry, n)
	for i := range ents {
		ents[i] = &pb.Entry{Index: uint64(i + 1), Term: 1, Type: pb.EntryType_ENTRY_TYPE_NOOP}
	}
	return ents
}
