package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

// TestLocalDo starts a single-node cluster and proposes through Local: a
// put, then a get that must see it.
func TestLocalDo(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	n, err := Start(Config{
		// Peers must be non-nil: Start writes this node into a clone of it.
		ID: 1, Listen: addr, Peers: map[uint64]string{}, DataDir: t.TempDir(),
		ElectionTimeout: 100 * time.Millisecond, HeartbeatInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { n.Stop(); <-n.Done() }()
	local := n.Local()
	defer local.Close()

	put := &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: "k", Value: []byte("v")}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := local.Do(ctx, put)
		cancel()
		if err == nil {
			break
		}
		// Until the node has elected itself it answers NOT_LEADER or
		// UNAVAILABLE; anything else is a failure.
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNotApplied) {
			t.Fatalf("put: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("put: no leader within 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := local.Do(ctx, &pb.KVCommand{Op: &pb.KVCommand_Get{Get: &pb.Get{Key: "k"}}})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if !r.Found || !bytes.Equal(r.Value, []byte("v")) {
		t.Fatalf("get k = %q (found %v), want \"v\"", r.Value, r.Found)
	}
}
