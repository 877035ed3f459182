package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
)

// snapshotPause measures what writing a large snapshot costs the writes
// that go on meanwhile (issue 12): a ketch cluster whose state machine
// holds keys keys (16-byte keys, 128-byte values) and that snapshots only
// when asked; the preload asks every 250,000 keys, so the log is compacted
// as the snapshot policy would keep it. Then n writers overwrite those keys
// for a baseline window, and again while every node writes a snapshot of
// all of them, and for a window as long again after it (where the
// compaction that follows the snapshot lands). It prints commit p50/p99 of
// each window and the ratios to the baseline. With profile set, the
// snapshot window is CPU-profiled into that file.
func snapshotPause(keys, n int, window time.Duration, profile string, log *slog.Logger) error {
	dir, err := os.MkdirTemp("", "ketch-bench-snapshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	k, err := startKetchWith(dir, log, func(c *node.Config) {
		c.SnapshotEntries, c.SnapshotBytes = -1, -1 // only when asked
	})
	if err != nil {
		return err
	}
	defer k.Close()
	local := &ketchLocal{ketchCluster: k, local: k.leader.Local()}
	if err := warm(local); err != nil {
		return err
	}
	defer local.local.Close()
	cl, err := client.New(client.Config{Cluster: k.addrs, Logger: log})
	if err != nil {
		return err
	}
	defer cl.Close()
	// snapshotAll has every node write a snapshot now and returns their
	// sizes.
	snapshotAll := func() ([]uint64, error) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var sizes []uint64
		var first error
		for _, a := range k.addrs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				r, err := cl.Snapshot(ctx, a)
				mu.Lock()
				defer mu.Unlock()
				if err != nil && first == nil {
					first = err
				}
				if err == nil {
					sizes = append(sizes, r.Bytes)
				}
			})
		}
		wg.Wait()
		return sizes, first
	}

	value := make([]byte, valueBytes)
	start := time.Now()
	const step = 250_000
	for lo := 0; lo < keys; lo += step {
		hi := min(lo+step, keys)
		if err := load(local, 256, hi-lo, func(i int) uint64 { return uint64(lo + i) }, value); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
		if _, err := snapshotAll(); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
	}
	fmt.Printf("bench: preloaded %d keys in %v (a snapshot every %d)\n", keys, time.Since(start).Round(time.Millisecond), step)
	time.Sleep(2 * time.Second) // the last compaction settles

	type sample struct{ at, took time.Duration }
	var stop atomic.Bool
	var mu sync.Mutex
	var samples []sample
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range n {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var kb [keyBytes]byte
			var mine []sample
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				began := time.Now()
				err := local.Put(ctx, fmtKey(&kb, rng.Uint64N(uint64(keys))), value)
				cancel()
				if err == nil {
					mine = append(mine, sample{at: began.Sub(t0), took: time.Since(began)})
				}
			}
			mu.Lock()
			samples = append(samples, mine...)
			mu.Unlock()
		})
	}
	time.Sleep(window)
	snapFrom := time.Since(t0)
	var stopProfile func()
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		stopProfile = func() { pprof.StopCPUProfile(); _ = f.Close() }
	}
	sizes, snapErr := snapshotAll()
	snapTo := time.Since(t0)
	if stopProfile != nil {
		stopProfile()
	}
	took := snapTo - snapFrom
	time.Sleep(took)
	stop.Store(true)
	wg.Wait()
	if snapErr != nil {
		return snapErr
	}
	// A write belongs to the window it started in.
	var base, during, after []int64
	for _, s := range samples {
		switch {
		case s.at < snapFrom:
			base = append(base, int64(s.took))
		case s.at < snapTo:
			during = append(during, int64(s.took))
		default:
			after = append(after, int64(s.took))
		}
	}
	if len(base) == 0 || len(during) == 0 || len(after) == 0 {
		return fmt.Errorf("no write completed in a window (%d, %d, %d)", len(base), len(during), len(after))
	}
	for _, l := range [][]int64{base, during, after} {
		slices.Sort(l)
	}
	ms := func(us float64) string { return fmt.Sprintf("%.1f ms", us/1e3) }
	fmt.Printf("bench: snapshot of %d keys (%v bytes per node) written by all three nodes in %v\n", keys, sizes, took.Round(time.Millisecond))
	line := func(name string, l []int64, d time.Duration) {
		fmt.Printf("bench: %-16s %7d writes %6.0f/s  p50 %8s  p99 %8s  p99/baseline %.2f\n", name, len(l), float64(len(l))/d.Seconds(),
			ms(quantile(l, 0.5)), ms(quantile(l, 0.99)), quantile(l, 0.99)/quantile(base, 0.99))
	}
	fmt.Printf("bench: %d writers\n", n)
	line("baseline", base, snapFrom)
	line("during snapshot", during, took)
	line("after it", after, took)
	return nil
}

// load writes count keys, key(i) for i in 0..count-1, conc at a time.
func load(c cluster, conc, count int, key func(int) uint64, value []byte) error {
	var next atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var kb [keyBytes]byte
			for first.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := c.Put(ctx, fmtKey(&kb, key(i)), value)
				cancel()
				if err != nil {
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return *err
	}
	return nil
}
