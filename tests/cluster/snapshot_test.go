package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/node"
)

// Raft §7 on a live cluster: nodes snapshot and compact as they apply; a
// follower kept down while the log moves past what the leader keeps is
// caught up by InstallSnapshot in chunks, ends with the same state, and
// its log and snapshot directory stay small.
func TestFollowerCaughtUpBySnapshot(t *testing.T) {
	c := New(t, 3, false, func(cfg *node.Config) {
		cfg.SnapshotEntries = 200
		cfg.SnapshotTrailing = 50
		cfg.SnapshotChunkBytes = 4 << 10 // many chunks
	})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader, err := c.Leader(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	put := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := cl.Put(ctx, fmt.Sprintf("k%03d", i%300), []byte(fmt.Sprintf("v%d-%s", i, strings.Repeat("x", 100)))); err != nil {
				t.Fatalf("put %d: %v", i, err)
			}
		}
	}
	put(0, 300)
	follower := leader%3 + 1
	c.Stop(follower)
	put(300, 1500) // several snapshots on the others, the log compacted past the follower
	lst := c.Nodes[leader].Status()
	if lst.SnapshotIndex == 0 || lst.FirstIndex <= 400 {
		t.Fatalf("leader status after 1500 writes: snapshot %d, first index %d; want a snapshot and a compacted log", lst.SnapshotIndex, lst.FirstIndex)
	}
	c.Start(follower)
	if err := c.WaitApplied(ctx, lst.Commit); err != nil {
		t.Fatalf("the follower did not catch up to %d: %v (it is at %d)", lst.Commit, err, c.Nodes[follower].Status().Applied)
	}
	fst := c.Nodes[follower].Status()
	if fst.SnapshotIndex < lst.FirstIndex-1 {
		t.Fatalf("the follower's snapshot is through %d, but it could only catch up by the leader's (log from %d)", fst.SnapshotIndex, lst.FirstIndex)
	}
	// Every node answers the last value of every key, linearizably.
	for i := 1200; i < 1500; i++ {
		k := fmt.Sprintf("k%03d", i%300)
		v, err := cl.Get(ctx, k)
		if err != nil || !strings.HasPrefix(string(v), fmt.Sprintf("v%d-", i)) {
			t.Fatalf("get %s = %.20q, %v; want v%d-...", k, v, err, i)
		}
	}
	// Its snapshot directory holds one snapshot, no staged leftovers.
	entries, _ := os.ReadDir(filepath.Join(c.dirs[follower], "snapshots"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || !strings.HasPrefix(names[0], "snap-") {
		t.Fatalf("the follower's snapshot directory holds %v, want one snapshot", names)
	}
	// A restart of the follower restores its snapshot and replays only the
	// log after it.
	c.Stop(follower)
	c.Start(follower)
	if err := c.WaitApplied(ctx, lst.Commit); err != nil {
		t.Fatal(err)
	}
	if st := c.Nodes[follower].Status(); st.SnapshotIndex == 0 {
		t.Fatalf("after a restart the follower reports no snapshot: %+v", st)
	}
}

// ketch snapshot's API: a snapshot on demand, then the log is compacted
// behind it (but for the trailing entries).
func TestSnapshotOnDemand(t *testing.T) {
	c := New(t, 3, false, func(cfg *node.Config) {
		cfg.SnapshotEntries = -1 // only on demand
		cfg.SnapshotBytes = -1
		cfg.SnapshotTrailing = 10
	})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 100 {
		if err := cl.Put(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	leader, _ := c.Leader(5 * time.Second)
	if st := c.Nodes[leader].Status(); st.SnapshotIndex != 0 || st.FirstIndex != 1 {
		t.Fatalf("snapshots off: %+v", st)
	}
	r, err := cl.Snapshot(ctx, c.Addrs[leader])
	if err != nil {
		t.Fatal(err)
	}
	if r.Index < 100 || r.Bytes == 0 {
		t.Fatalf("snapshot %+v, want one through at least 100", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Nodes[leader].Status().FirstIndex != r.Index-10+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.Nodes[leader].Status(); st.SnapshotIndex != r.Index || st.SnapshotBytes != r.Bytes || st.FirstIndex != r.Index-10+1 {
		t.Fatalf("after the snapshot: status snapshot %d (%d bytes), first index %d; want %d, %d, %d",
			st.SnapshotIndex, st.SnapshotBytes, st.FirstIndex, r.Index, r.Bytes, r.Index-10+1)
	}
}
