package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
)

// Everything from the network is validated at the boundary: clients get a
// one-line reason, peers' bad messages are dropped and logged, and the
// node carries on.
func TestBadInputIsRefusedAndHarmless(t *testing.T) {
	c := New(t, 3, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	good := c.Client()
	if err := good.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}

	t.Run("client of another cluster", func(t *testing.T) {
		cl, err := client.New(client.Config{Cluster: c.AddrList(), ClusterID: "elsewhere", AttemptTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		err = cl.Put(ctx, "k", []byte("x"))
		if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "cluster") {
			t.Fatalf("got %v, want ErrInvalid naming the cluster", err)
		}
	})
	t.Run("oversized value", func(t *testing.T) {
		err := good.Put(ctx, "k", make([]byte, 2<<20))
		if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "limit") {
			t.Fatalf("got %v, want ErrInvalid naming the limit", err)
		}
	})
	// The size limits agree across the layers (messages.Limits): the
	// largest value the limits promise is accepted by the gateway, packed
	// by the leader and accepted by every follower; one byte more is
	// refused at once by the client, and by the gateway too.
	t.Run("the largest value replicates", func(t *testing.T) {
		lim := pb.DefaultLimits()
		key := strings.Repeat("k", lim.MaxKeyBytes)
		if err := good.Put(ctx, key, make([]byte, lim.MaxValueBytes())); err != nil {
			t.Fatalf("a put of MaxValueBytes: %v", err)
		}
		leader, err := c.Leader(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitApplied(ctx, c.Nodes[leader].Status().Commit); err != nil {
			t.Fatalf("the followers did not apply the largest entry: %v", err)
		}
		over := lim.MaxEntryBytes
		if err := good.Put(ctx, key, make([]byte, over)); !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("a put over the entry limit: %v, want ErrInvalid", err)
		}
		l := c.Nodes[leader].Local()
		defer l.Close()
		r, err := l.Do(ctx, &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: key, Value: make([]byte, over)}}})
		if !errors.Is(err, node.ErrNotApplied) || r.GetStatus() != pb.ClientStatus_CLIENT_STATUS_INVALID {
			t.Fatalf("the gateway took a put over the entry limit: %v %v", r.GetStatus(), err)
		}
	})
	t.Run("key not UTF-8", func(t *testing.T) {
		start := time.Now()
		err := good.Put(ctx, "\xff\xfe", []byte("v"))
		if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "UTF-8") || time.Since(start) > time.Second {
			t.Fatalf("got %v after %v, want ErrInvalid naming UTF-8 at once", err, time.Since(start))
		}
	})
	t.Run("empty command", func(t *testing.T) {
		_, err := good.Do(ctx, &pb.KVCommand{})
		if !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("got %v, want ErrInvalid", err)
		}
	})
	t.Run("forged peer messages", func(t *testing.T) {
		// A rogue peer with its own remote sends raft messages of another
		// cluster, in the leader's own name, and with a gap in the entries, each
		// with a higher term that would depose the leader if believed.
		rogue := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(nil, slog.LevelError)))
		if _, err := sender.StartRemote(rogue, "127.0.0.1", 0); err != nil {
			t.Fatal(err)
		}
		defer rogue.Shutdown()
		leader, err := c.Leader(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		before := c.Nodes[leader].Status()
		bad := []*pb.RaftMessage{
			{ClusterId: "other", From: leader%3 + 1, To: leader, Term: before.Term + 5, Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{}}},
			{ClusterId: node.DefaultClusterID, From: leader, To: leader, Term: before.Term + 5, Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{}}},
			{ClusterId: node.DefaultClusterID, From: leader%3 + 1, To: leader, Term: before.Term + 5, Body: &pb.RaftMessage_AppendEntries{AppendEntries: &pb.AppendEntries{
				PrevLogIndex: 1, PrevLogTerm: 1, Entries: []*pb.Entry{{Index: 5, Term: 1}}}}},
		}
		// A vote request from a server no configuration names is not
		// refused (thesis §4.1: a candidate this node does not know yet
		// may be a new voter), but a leader that hears its followers
		// disregards it (leader stickiness, §4.2.3): the checks below see
		// it change nothing. It goes first, on the same connection, so it is
		// handled before the rejections below are all counted.
		stranger := &pb.RaftMessage{ClusterId: node.DefaultClusterID, From: 99, To: leader, Term: before.Term + 5, Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{LastLogIndex: 1 << 40, LastLogTerm: before.Term + 5}}}
		rogue.Root.Send(actor.NewPID(c.Addrs[leader], node.FSMID), &pb.RaftBatch{Messages: []*pb.RaftMessage{stranger}})
		for _, m := range bad {
			rogue.Root.Send(actor.NewPID(c.Addrs[leader], node.FSMID), &pb.RaftBatch{Messages: []*pb.RaftMessage{m}})
		}
		// Each is rejected and counted; none may have moved the leader's
		// term or dethroned it.
		deadline := time.Now().Add(5 * time.Second)
		for c.Nodes[leader].Status().RejectedPeerMessages < before.RejectedPeerMessages+uint64(len(bad)) {
			if time.Now().After(deadline) {
				t.Fatalf("rejected %d of %d forged messages", c.Nodes[leader].Status().RejectedPeerMessages-before.RejectedPeerMessages, len(bad))
			}
			time.Sleep(5 * time.Millisecond) // polling tick
		}
		after := c.Nodes[leader].Status()
		if after.Term != before.Term || after.Role != "leader" {
			t.Fatalf("forged messages changed the leader: before %v after %v", before, after)
		}
		if err := good.Put(ctx, "k2", []byte("v2")); err != nil {
			t.Fatalf("cluster stopped serving after forged messages: %v", err)
		}
	})
}
