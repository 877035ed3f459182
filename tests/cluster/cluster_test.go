package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
)

func TestGatewayNameMatchesClient(t *testing.T) {
	if client.GatewayName != node.GatewayID {
		t.Fatalf("client addresses %q, nodes spawn %q", client.GatewayName, node.GatewayID)
	}
}

func TestThreeNodesReplicate(t *testing.T) {
	c := New(t, 3, false, nil)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	v, err := cl.Get(ctx, "a")
	if err != nil || string(v) != "1" {
		t.Fatalf("get a = %q, %v", v, err)
	}
	if _, err := cl.Get(ctx, "missing"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	swapped, cur, _, err := cl.CompareAndSwap(ctx, "a", []byte("9"), []byte("2"))
	if err != nil || swapped || string(cur) != "1" {
		t.Fatalf("cas mismatch: %v %q %v", swapped, cur, err)
	}
	swapped, _, _, err = cl.CompareAndSwap(ctx, "a", []byte("1"), []byte("2"))
	if err != nil || !swapped {
		t.Fatalf("cas: %v %v", swapped, err)
	}
	leader, err := c.Leader(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitApplied(ctx, c.Nodes[leader].Status().Commit); err != nil {
		t.Fatalf("followers did not catch up: %v", err)
	}
	for id, n := range c.Nodes {
		st := n.Status()
		t.Logf("node %d: %v", id, st)
	}
}
