package gateway

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/protocol"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
)

// box records what an actor receives.
type box struct {
	mu   sync.Mutex
	msgs []any
}

func (b *box) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
		return
	}
	b.mu.Lock()
	b.msgs = append(b.msgs, ctx.Message())
	b.mu.Unlock()
}

func (b *box) wait(t *testing.T, n int) any {
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
		time.Sleep(time.Millisecond) // polling tick
	}
}

func (b *box) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

// The gateway is the one door for client work: it refuses what is wrong
// with one line and counts it, and hands the fsm actor a protocol.Command
// (a ClientRequest) or protocol.Transfer naming the client, nothing else.
func TestGatewayChecksAndForwards(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(slog.New(slog.DiscardHandler), slog.LevelError)))
	defer sys.Shutdown()
	fsm, client := &box{}, &box{}
	fsmPID := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return fsm }))
	clientPID := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return client }))
	var rejected atomic.Uint64
	gw := sys.Root.Spawn(Props(Config{ClusterID: "ketch", NodeID: 1, FSM: fsmPID, Rejected: &rejected, Typed: true,
		Status: func(bool) *pb.NodeStatus { return &pb.NodeStatus{Id: 1} }, Logger: slog.New(slog.DiscardHandler)}))
	put := &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: "k", Value: []byte("v")}}}

	answers := 0
	for _, tc := range []struct {
		name    string
		req     *pb.ClientRequest
		mention string
	}{
		{"another cluster", &pb.ClientRequest{ClusterId: "other", ClientId: 1, Sequence: 1, Command: put}, `node 1 is in cluster "ketch", not "other"`},
		{"no client id", &pb.ClientRequest{ClusterId: "ketch", Sequence: 1, Command: put}, "client_id"},
		{"no command", &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1}, "no command"},
		{"a key that is not UTF-8", &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1,
			Command: &pb.KVCommand{Op: &pb.KVCommand_Get{Get: &pb.Get{Key: "\xff"}}}}, "UTF-8"},
		{"over the entry limit", &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1,
			Command: &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: "k", Value: make([]byte, pb.DefaultMaxEntryBytes)}}}}, "limit"},
		{"data over the entry limit", &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1,
			Data: make([]byte, pb.DefaultMaxEntryBytes)}, "limit"},
		{"a command and data", &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1, Command: put, Data: []byte("x")}, "send one"},
	} {
		sys.Root.RequestWithCustomSender(gw, tc.req, clientPID)
		r, ok := client.wait(t, answers).(*pb.ClientResponse)
		answers++
		if !ok || r.Status != pb.ClientStatus_CLIENT_STATUS_INVALID || !strings.Contains(r.Error, tc.mention) || strings.Contains(r.Error, "\n") {
			t.Errorf("%s: answered %v, want INVALID saying %q", tc.name, r, tc.mention)
		}
	}
	// Without a sender there is nobody to answer: dropped, and counted.
	sys.Root.Send(gw, &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1, Command: put})
	sys.Root.RequestWithCustomSender(gw, &pb.TransferRequest{ClusterId: "other"}, clientPID)
	if tr, ok := client.wait(t, answers).(*pb.TransferResponse); !ok || tr.Ok || !strings.Contains(tr.Error, "cluster") {
		t.Errorf("a transfer of another cluster: %v", tr)
	}
	if got := rejected.Load(); got != 9 {
		t.Errorf("rejected %d, want 9", got)
	}
	if n := fsm.len(); n != 0 {
		t.Fatalf("the fsm actor got %d messages from refused requests", n)
	}

	// What is well formed reaches the fsm as protocol messages naming the client.
	sys.Root.RequestWithCustomSender(gw, &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1, Command: put}, clientPID)
	sys.Root.RequestWithCustomSender(gw, &pb.TransferRequest{ClusterId: "ketch", To: 2}, clientPID)
	if c, ok := fsm.wait(t, 0).(*protocol.Command); !ok || c.ReplyTo.Id != clientPID.Id || c.Req.ClientId != 1 {
		t.Fatalf("the fsm actor got %v, want a Command naming the client", fsm.wait(t, 0))
	}
	if tr, ok := fsm.wait(t, 1).(*protocol.Transfer); !ok || tr.To != 2 || tr.ReplyTo.Id != clientPID.Id {
		t.Fatalf("the fsm actor got %v, want a Transfer to 2 naming the client", fsm.wait(t, 1))
	}
}

// A node whose state machine is not the key-value store refuses typed
// commands and forwards opaque commands and queries.
func TestGatewayOfAnotherStateMachine(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(slog.New(slog.DiscardHandler), slog.LevelError)))
	defer sys.Shutdown()
	fsm, client := &box{}, &box{}
	fsmPID := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return fsm }))
	clientPID := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return client }))
	gw := sys.Root.Spawn(Props(Config{ClusterID: "ketch", NodeID: 1, FSM: fsmPID,
		Status: func(bool) *pb.NodeStatus { return &pb.NodeStatus{Id: 1} }, Logger: slog.New(slog.DiscardHandler)}))
	put := &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: "k", Value: []byte("v")}}}
	sys.Root.RequestWithCustomSender(gw, &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1, Command: put}, clientPID)
	if r := client.wait(t, 0).(*pb.ClientResponse); r.Status != pb.ClientStatus_CLIENT_STATUS_INVALID || !strings.Contains(r.Error, "key-value") {
		t.Fatalf("a typed command answered %v", r)
	}
	sys.Root.RequestWithCustomSender(gw, &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1, Data: nil}, clientPID)
	sys.Root.RequestWithCustomSender(gw, &pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 2, Data: []byte("q"), Query: true}, clientPID)
	for i := range 2 {
		if c, ok := fsm.wait(t, i).(*protocol.Command); !ok || c.Req.Sequence != uint64(i+1) {
			t.Fatalf("the fsm actor got %v", fsm.wait(t, i))
		}
	}
}
