package sender

import (
	"log/slog"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// FuzzWireGuard: whatever batch a peer sends, the guard never panics, and
// everything it admits is something protoactor's endpoint reader can take
// without panicking: indexes in range, a registered type, the protobuf
// serializer. The input is a remote.MessageBatch's encoding; the guard
// routes as a node's does.
func FuzzWireGuard(f *testing.F) {
	const local = "127.0.0.1:7001"
	name := func(m proto.Message) string { return string(proto.MessageName(m)) }
	fsm, gateway := actor.NewPID(local, "raft/1/fsm"), actor.NewPID(local, "raft/1/gateway")
	for _, b := range []*remote.MessageBatch{
		oneEnvelope(fsm, name(&pb.RaftBatch{}), goodBatchData(3)),
		oneEnvelope(gateway, name(&pb.ClientRequest{}), marshal(&pb.ClientRequest{ClusterId: "ketch", ClientId: 1, Sequence: 1})),
		oneEnvelope(fsm, name(&pb.ClientRequest{}), marshal(&pb.ClientRequest{})),
		oneEnvelope(fsm, "evil.v1.Nope", []byte{1, 2, 3}),
		oneEnvelope(fsm, terminatedName, marshal(&actor.Terminated{Who: actor.NewPID("127.0.0.1:1", "x")})),
		oneEnvelope(actor.NewPID("10.0.0.1:1", "raft/1/fsm"), name(&pb.RaftBatch{}), goodBatchData(1)),
		{TypeNames: []string{name(&pb.RaftBatch{})}, Targets: []*actor.PID{fsm}, Senders: []*actor.PID{gateway},
			Envelopes: []*remote.MessageEnvelope{{TypeId: 0, Target: 0, Sender: 1, MessageData: goodBatchData(2)}, {TypeId: 1, Target: 0}}},
	} {
		f.Add(marshal(b))
	}
	g, err := newWireGuard(actor.NewActorSystem(), GuardConfig{
		Routes: map[string][]string{
			"raft/1/fsm":     {name(&pb.RaftBatch{})},
			"raft/1/gateway": {name(&pb.ClientRequest{}), name(&pb.StatusRequest{}), name(&pb.CrashRequest{}), name(&pb.TransferRequest{})},
		},
		Logger: discardLogger(),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b remote.MessageBatch
		if proto.Unmarshal(data, &b) != nil {
			return
		}
		s := &guardedStream{g: g, peer: "fuzz", announced: "127.0.0.1:1"}
		if s.filterAt(&b, local) != nil {
			return // refused whole: the stream closes
		}
		// What protoactor's endpoint reader does with what is admitted.
		for _, e := range b.Envelopes {
			target := b.Targets[e.Target]
			if e.Sender > 0 {
				_ = b.Senders[e.Sender-1].String()
			}
			msg, err := remote.Deserialize(e.MessageData, b.TypeNames[e.TypeId], e.SerializerId)
			if err != nil {
				continue
			}
			if rs, ok := msg.(remote.RootSerialized); ok {
				if _, err := rs.Deserialize(); err != nil {
					continue
				}
			}
			if target.Address != local {
				t.Fatalf("admitted an envelope for %s", target.Address)
			}
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
