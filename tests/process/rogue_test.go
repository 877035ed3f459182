package process

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// One client boundary (issue 11): a rogue actor system sends every ketch.v1
// message type, zero-valued and with random fields, and a protobuf type
// that is not ketch's, to every actor of every node of a live 3-node
// cluster, with and without a sender to answer; then messages that are
// well addressed but out of bounds (absurd terms, a 1.5 MiB entry or
// value, another cluster's requests straight to the fsm actor). No process
// exits, no child restarts, the leader does not change, the cluster keeps
// serving, nothing over the entry limit reaches any log, and every node
// counts what it refused.
func TestRogueSystemCannotHarmTheCluster(t *testing.T) {
	c := newCluster(t, 3, false)
	before := leaders(c.waitLeader(15*time.Second, c.ids...))[0]
	cl := startClient(t, "rogue", c.addrList(), 0, filepath.Join(c.logs, "client-rogue.log"))
	if _, err := cl.put("before", "1", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	rogue := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(slog.New(slog.DiscardHandler), slog.LevelError)))
	if _, err := sender.StartRemote(rogue, "127.0.0.1", 0); err != nil {
		t.Fatal(err)
	}
	defer rogue.Shutdown()
	answers := rogue.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var msgs []proto.Message
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if strings.HasPrefix(string(mt.Descriptor().FullName()), "ketch.v1.") {
			msgs = append(msgs, mt.New().Interface())
			for range 3 {
				m := mt.New()
				randomize(m, rng, 0)
				msgs = append(msgs, m.Interface())
			}
		}
		return true
	})
	msgs = append(msgs, timestamppb.Now()) // not ketch's: the guard does not know it
	actors := []string{node.SupervisorID, "raft/1/store", "raft/1/state", node.FSMID, "raft/1/sender", node.GatewayID, "raft/1/nope"}
	sent := 0
	for _, id := range c.ids {
		for _, name := range actors {
			to := actor.NewPID(c.nodes[id].addr, name)
			for i, m := range msgs {
				if i%2 == 0 {
					rogue.Root.Send(to, m)
				} else {
					rogue.Root.RequestWithCustomSender(to, m, answers)
				}
				sent++
			}
		}
	}

	// Well addressed, out of bounds.
	big := make([]byte, 3<<19) // 1.5 MiB, over the 1 MiB entry limit
	follower := c.ids[0]
	if follower == before.ID {
		follower = c.ids[1]
	}
	hostile := []proto.Message{
		&pb.RaftBatch{Messages: []*pb.RaftMessage{
			{ClusterId: node.DefaultClusterID, From: follower, To: before.ID, Term: math.MaxUint64,
				Body: &pb.RaftMessage_AppendEntriesResponse{AppendEntriesResponse: &pb.AppendEntriesResponse{Success: true}}},
			{ClusterId: node.DefaultClusterID, From: follower, To: before.ID, Term: before.Term + 1<<40,
				Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{LastLogIndex: 1 << 40, LastLogTerm: before.Term}}},
			{ClusterId: node.DefaultClusterID, From: follower, To: before.ID, Term: before.Term,
				Body: &pb.RaftMessage_AppendEntries{AppendEntries: &pb.AppendEntries{Entries: []*pb.Entry{{Index: 1, Term: 99}}}}},
		}},
		&pb.RaftBatch{Messages: []*pb.RaftMessage{{ClusterId: node.DefaultClusterID, From: before.ID, To: follower, Term: before.Term,
			Body: &pb.RaftMessage_AppendEntries{AppendEntries: &pb.AppendEntries{PrevLogIndex: 1, PrevLogTerm: 1,
				Entries: []*pb.Entry{{Index: 2, Term: before.Term, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: big}}}}}}},
		// A Put over the limit and requests of another cluster, straight to
		// the fsm actor: the guard routes no client message there.
		&pb.ClientRequest{ClusterId: node.DefaultClusterID, ClientId: 1, Sequence: 1, Command: &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: "big", Value: big}}}},
		&pb.ClientRequest{ClusterId: "other", ClientId: 2, Sequence: 1, Command: &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: "other", Value: []byte("x")}}}},
		&pb.TransferRequest{},
		&pb.TransferRequest{ClusterId: "other", To: follower},
	}
	for _, m := range hostile {
		for _, name := range []string{node.FSMID, node.GatewayID} {
			for _, id := range c.ids {
				rogue.Root.RequestWithCustomSender(actor.NewPID(c.nodes[id].addr, name), m, answers)
				sent++
			}
		}
	}

	// Everything has arrived once every node has counted refusals and the
	// cluster still answers a write.
	poll(t, 15*time.Second, 50*time.Millisecond, "every node counted refused input", func() (bool, string) {
		c.checkAlive()
		for _, s := range c.status(time.Second) {
			if s.RejectedWire == 0 || s.RejectedClient == 0 {
				return false, fmt.Sprintf("%+v", s)
			}
		}
		return true, ""
	})
	if _, err := cl.put("after", "2", 10*time.Second); err != nil {
		t.Fatalf("the cluster stopped serving: %v", err)
	}
	sts := c.waitLeader(5*time.Second, c.ids...)
	if after := leaders(sts)[0]; after.ID != before.ID || after.Term != before.Term {
		t.Fatalf("the leader changed: node %d of term %d, then node %d of term %d", before.ID, before.Term, after.ID, after.Term)
	}
	var wire, peer, client uint64
	for _, s := range sts {
		for name, ch := range s.Children {
			if ch.Restarts != 0 {
				t.Errorf("node %d: child %s restarted %d times (%s)", s.ID, name, ch.Restarts, ch.LastCrash)
			}
		}
		wire, peer, client = wire+s.RejectedWire, peer+s.RejectedPeer, client+s.RejectedClient
	}
	t.Logf("%d rogue messages sent; refused: %d by the wire guards, %d peer messages by the fsm, %d client requests", sent, wire, peer, client)
	if peer == 0 {
		t.Error("no peer message was rejected by validation")
	}
	if got, err := cl.get("big", 5*time.Second); err == nil {
		t.Errorf("the oversized Put was applied (%d bytes)", len(got))
	}
	if got, err := cl.get("other", 5*time.Second); err == nil {
		t.Errorf("another cluster's Put was applied: %q", got)
	}

	// Nothing over the entry limit is in any log.
	for _, id := range c.ids {
		c.stop(id)
		for _, e := range loadLog(t, c.nodes[id].dir).Entries {
			if len(e.Data) > pb.DefaultMaxEntryBytes {
				t.Errorf("node %d holds entry %d of %d bytes", id, e.Index, len(e.Data))
			}
		}
	}
}

// randomize sets random values in about two thirds of m's fields,
// recursively up to a depth of 3.
func randomize(m protoreflect.Message, rng *rand.Rand, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if rng.IntN(3) == 0 {
			continue
		}
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range rng.IntN(3) {
				if fd.Kind() == protoreflect.MessageKind {
					if depth < 3 {
						e := l.NewElement()
						randomize(e.Message(), rng, depth+1)
						l.Append(e)
					}
					continue
				}
				l.Append(randomScalar(fd, rng))
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range rng.IntN(3) {
				k := randomScalar(fd.MapKey(), rng).MapKey()
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					if depth < 3 {
						v := mp.NewValue()
						randomize(v.Message(), rng, depth+1)
						mp.Set(k, v)
					}
					continue
				}
				mp.Set(k, randomScalar(fd.MapValue(), rng))
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth < 3 {
				randomize(m.Mutable(fd).Message(), rng, depth+1)
			}
		default:
			m.Set(fd, randomScalar(fd, rng))
		}
	}
}

func randomScalar(fd protoreflect.FieldDescriptor, rng *rand.Rand) protoreflect.Value {
	u := []uint64{0, 1, 2, 3, math.MaxUint64, 1 << 62, rng.Uint64()}[rng.IntN(7)]
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rng.IntN(2) == 0)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(rng.IntN(8) - 1))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(u))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(u))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(u))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(u)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(rng.Float32())
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(rng.Float64())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(strings.ToValidUTF8(string(randomBytes(rng)), "?"))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(randomBytes(rng))
	}
	panic(fmt.Sprintf("randomScalar: kind %v", fd.Kind()))
}

func randomBytes(rng *rand.Rand) []byte {
	b := make([]byte, rng.IntN(48))
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}
