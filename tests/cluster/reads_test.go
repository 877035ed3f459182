package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
)

// Reads are served by ReadIndex (thesis §6.4): they see every write that
// completed before them and add nothing to the log.
func TestReadsDoNotWriteTheLog(t *testing.T) {
	c := New(t, 3, false, nil)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	leader, err := c.Leader(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	before := c.Nodes[leader].Status().LastIndex
	for i := range 50 {
		v, err := cl.Get(ctx, "k")
		if err != nil || string(v) != "v1" {
			t.Fatalf("read %d: %q, %v", i, v, err)
		}
	}
	if after := c.Nodes[leader].Status().LastIndex; after != before {
		t.Fatalf("50 reads grew the log from %d to %d", before, after)
	}
	if err := cl.Put(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if v, err := cl.Get(ctx, "k"); err != nil || string(v) != "v2" {
		t.Fatalf("read after write: %q, %v", v, err)
	}
}

// Leadership transfer (thesis §3.10) moves leadership to the named node,
// and the cluster serves writes and reads afterwards.
func TestTransferLeadership(t *testing.T) {
	c := New(t, 3, false, nil)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	leader, err := c.Leader(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	target := leader%3 + 1
	from, now, err := cl.Transfer(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if from != leader || now != target {
		t.Fatalf("transfer from %d to %d, want %d to %d", from, now, leader, target)
	}
	if err := cl.Put(ctx, "k", []byte("w")); err != nil {
		t.Fatalf("write after transfer: %v", err)
	}
	if v, err := cl.Get(ctx, "k"); err != nil || string(v) != "w" {
		t.Fatalf("read after transfer: %q, %v", v, err)
	}
	// To the most up-to-date voter.
	if _, now2, err := cl.Transfer(ctx, 0); err != nil || now2 == now {
		t.Fatalf("transfer to any: now %d (was %d), %v", now2, now, err)
	}
}

// A follower serves a read itself once the leader has confirmed the read
// index and the follower has applied up to it (thesis §6.4).
func TestFollowerServesReads(t *testing.T) {
	c := New(t, 3, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Client().Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	leader, err := c.Leader(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	follower := leader%3 + 1
	// A client that knows only the follower: its first attempt goes there.
	for i := range 20 {
		cl, err := client.New(client.Config{Cluster: []string{c.Addrs[follower]}, AttemptTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		v, err := cl.Get(ctx, "k")
		cl.Close()
		if err != nil || string(v) != "v1" {
			t.Fatalf("read %d through follower %d: %q, %v", i, follower, v, err)
		}
	}
	if err := c.Client().Put(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Cluster: []string{c.Addrs[follower]}, AttemptTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if v, err := cl.Get(ctx, "k"); err != nil || string(v) != "v2" {
		t.Fatalf("a follower read after a completed write saw %q, %v", v, err)
	}
}

// With lease reads on (thesis §6.4.1), reads still see every completed
// write.
func TestLeaseReads(t *testing.T) {
	c := New(t, 3, false, func(cfg *node.Config) { cfg.LeaseReads = true })
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 30 {
		val := fmt.Sprint(i)
		if err := cl.Put(ctx, "k", []byte(val)); err != nil {
			t.Fatal(err)
		}
		if v, err := cl.Get(ctx, "k"); err != nil || string(v) != val {
			t.Fatalf("lease read after write %d: %q, %v", i, v, err)
		}
	}
}
