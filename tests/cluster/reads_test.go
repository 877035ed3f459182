package cluster

import (
	"context"
	"testing"
	"time"
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
