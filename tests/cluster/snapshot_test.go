package cluster

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
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

var transferMiB = flag.String("transfer-mib", "16,96",
	"TestTransferMemoryIsBounded: the snapshot sizes (MiB) to transfer")

// Raft §7 / Figure 13 on a live cluster: the leader reads the snapshot it
// sends a chunk at a time (the state actor's readChunk) and keeps at most
// MaxSnapshotChunks in flight, so the memory a transfer holds does not
// depend on the snapshot's size. Measured with the heap profile: the
// bytes still in use that readChunk allocated, sampled after a GC while
// the follower stages the chunks; also the live heap, reported only (the
// nodes share the process, and the restarted follower's own start-up is
// in it).
func TestTransferMemoryIsBounded(t *testing.T) {
	var sizes []int
	for _, s := range strings.Split(*transferMiB, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			t.Fatalf("-transfer-mib %q: a comma-separated list of sizes in MiB", *transferMiB)
		}
		sizes = append(sizes, n)
	}
	// Chunks of 128 KiB: a transfer of many round trips (the follower
	// fsyncs each chunk), long enough to sample. They are sampled with
	// certainty at this rate (and each record's bytes are exact, not
	// scaled).
	const chunkBytes = 128 << 10
	defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
	runtime.MemProfileRate = 4 << 10
	chunkHeld := func() int64 {
		var recs []runtime.MemProfileRecord
		n, ok := runtime.MemProfile(nil, false)
		for !ok {
			recs = make([]runtime.MemProfileRecord, n+64)
			n, ok = runtime.MemProfile(recs, false)
		}
		var held int64
		for _, r := range recs[:n] {
			frames := runtime.CallersFrames(r.Stack())
			for {
				f, more := frames.Next()
				if strings.Contains(f.Function, "actors/state.(*stateActor).readChunk") {
					held += r.InUseBytes()
					break
				}
				if !more {
					break
				}
			}
		}
		return held
	}
	const valueBytes = 16 << 10
	type transfer struct {
		bytes uint64
		held  int64
	}
	var results []transfer
	for _, size := range sizes {
		c := New(t, 3, false, func(cfg *node.Config) {
			cfg.SnapshotEntries, cfg.SnapshotBytes = -1, -1 // only when asked
			cfg.SnapshotTrailing = 10
			cfg.SnapshotChunkBytes = chunkBytes
		})
		cl := c.Client()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		leader, err := c.Leader(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		follower := leader%3 + 1
		c.Stop(follower)
		keys := size << 20 / valueBytes
		var wg sync.WaitGroup
		var failed atomic.Pointer[error]
		for w := range 16 {
			wg.Go(func() {
				v := bytes.Repeat([]byte{byte('a' + w)}, valueBytes)
				for i := w; i < keys; i += 16 {
					if err := cl.Put(ctx, fmt.Sprintf("k%06d", i), v); err != nil {
						failed.CompareAndSwap(nil, &err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			t.Fatal(*err)
		}
		staging := filepath.Join(c.dirs[follower], "snapshots", "staging-*.part")
		live := func() uint64 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}
		// One transfer of the whole state to the stopped follower: every
		// node snapshots (whichever leads sends its own), then the
		// follower starts and is sampled while it stages the chunks.
		var snapBytes uint64
		var peakHeap, before uint64
		var peakHeld, heldLeft int64
		samples := 0
		transferOnce := func() time.Duration {
			var snap *pb.SnapshotResponse
			for id, n := range c.Nodes {
				if n == nil || id == follower {
					continue
				}
				r, err := cl.Snapshot(ctx, c.Addrs[id])
				if err != nil {
					t.Fatal(err)
				}
				if snap == nil || r.Index > snap.Index {
					snap = r
				}
			}
			snapBytes = snap.Bytes
			runtime.GC()
			runtime.GC()
			// Earlier transfers' buffers may still be referenced (a
			// stopped cluster's remote not yet torn down) and are freed
			// at some point during this one, so they are not subtracted:
			// what is sampled is an upper bound of this transfer's.
			before, heldLeft = live(), chunkHeld()
			began := time.Now()
			c.Start(follower)
			for c.Nodes[follower].Status().Applied < snap.Index && ctx.Err() == nil {
				if m, _ := filepath.Glob(staging); len(m) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				// The heap profile is published a cycle late: two GCs
				// leave only what is still referenced.
				runtime.GC()
				runtime.GC()
				h, held := live(), chunkHeld()
				// Count the sample only if the transfer was still going
				// on after it: once installed, the follower's heap holds
				// the restored state, which is not the transfer's cost.
				if m, _ := filepath.Glob(staging); len(m) == 1 && c.Nodes[follower].Status().SnapshotIndex < snap.Index {
					peakHeap, peakHeld, samples = max(peakHeap, h), max(peakHeld, held), samples+1
				}
			}
			took := time.Since(began)
			if err := c.WaitApplied(ctx, snap.Index); err != nil {
				t.Fatal(err)
			}
			return took
		}
		// A fast machine stages a small snapshot in less time than two
		// GCs of a large heap take: then the transfer is made again
		// (the follower stopped, the state overwritten past the
		// trailing entries and snapshotted anew) until it was sampled.
		var took []time.Duration
		for attempt := 0; samples < 3 && attempt < 10; attempt++ {
			if attempt > 0 {
				c.Stop(follower)
				v := bytes.Repeat([]byte{'z'}, valueBytes)
				for i := range 64 {
					if err := cl.Put(ctx, fmt.Sprintf("k%06d", i), v); err != nil {
						t.Fatal(err)
					}
				}
			}
			took = append(took, transferOnce().Round(time.Millisecond))
		}
		cancel()
		for id := range c.Nodes {
			c.Stop(id)
		}
		t.Logf("snapshot of %s in 128 KiB chunks: %d transfers in %v; chunk buffers held at most %s over %d samples mid-transfer (%s before it); live heap %s before, at most %s",
			mibs(snapBytes), len(took), took, mibs(uint64(peakHeld)), samples, mibs(uint64(heldLeft)), mibs(before), mibs(peakHeap))
		if samples == 0 {
			t.Fatalf("no sample was taken while the %s snapshot was staged, over %d transfers", mibs(snapBytes), len(took))
		}
		results = append(results, transfer{snapBytes, peakHeld})
	}
	// MaxSnapshotChunks (now 1; 4 when these were measured) in flight and one being read; after a resend,
	// older chunks still on their way (a slow, CPU-starved follower makes
	// the leader resend while they are queued). Measured alone: 8-24
	// chunks of 128 KiB, 4-9 of 1 MiB; after the package's other tests,
	// up to 62 of 128 KiB. What must hold is that it does not grow with
	// the snapshot: a quarter of the difference in size, and of the
	// larger snapshot, is far above that noise and far below a leader
	// that holds the snapshot.
	first, last := results[0], results[len(results)-1]
	if d := last.held - first.held; d > int64(last.bytes-first.bytes)/4 || last.held > int64(last.bytes)/4 {
		t.Errorf("chunk buffers held: %s for a snapshot of %s, %s for one of %s: the transfer's memory grows with the snapshot",
			mibs(uint64(first.held)), mibs(first.bytes), mibs(uint64(last.held)), mibs(last.bytes))
	}
}

func mibs(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
