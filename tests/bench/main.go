// Command bench drives ketch, hashicorp/raft, dragonboat and etcd-io/raft
// side by side on the same workload, machine and process, and reports
// throughput, latency, CPU and memory for each (see README.md).
//
// It lives in its own module so that the peers' dependencies stay out of
// ketch's go.mod.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Workload constants (issue 5): 16-byte keys, 128-byte values.
const (
	keyBytes   = 16
	valueBytes = 128
	// keySpace bounds the distinct keys, so both state machines hold the
	// same bounded map whatever the run length.
	keySpace = 1 << 16
)

// cluster is one system under test, started fresh for each level.
type cluster interface {
	// Put writes key = value and returns once the write is committed and
	// applied on the leader's state machine.
	Put(ctx context.Context, key string, value []byte) error
	// Close stops the cluster and frees its files and ports.
	Close()
}

// starter starts a 3-node cluster of one system, ready for Put.
type starter func(dir string, log *slog.Logger) (cluster, error)

var systems = map[string]starter{
	"ketch":            startKetchLocal,
	"hashicorp":        startHashicorp,
	"dragonboat":       startDragonboat,
	"etcdraft":         startEtcdRaft,
	"ketch-remote":     startKetchRemote,
	"ketch-nosnap":     startKetchNoSnap,
	"ketch-metrics":    startKetchMetrics,
	"ketch-view":       startKetchView,
	"ketch-tls":        startKetchTLS,
	"ketch-remote-tls": startKetchRemoteTLS,
}

var systemOrder = []string{"ketch", "hashicorp", "dragonboat", "etcdraft", "ketch-remote", "ketch-nosnap", "ketch-metrics", "ketch-view", "ketch-tls", "ketch-remote-tls"}

// defaultSystems are the systems a run without -systems compares.
var defaultSystems = []string{"ketch", "hashicorp", "dragonboat", "etcdraft", "ketch-remote"}

// Result is one (system, clients) measurement. The first seven keys are
// the JSON contract of issue 5; the rest are extras.
type Result struct {
	System    string  `json:"system"`
	Clients   int     `json:"clients"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	P999us    float64 `json:"p999_us"`
	CPUPer1k  float64 `json:"cpu_s_per_1k"`

	Ops       int64   `json:"ops"`
	Errors    int64   `json:"errors"`
	HeapInuse float64 `json:"heap_inuse_mb"` // runtime HeapInuse at the end of the window
	HeapLive  float64 `json:"heap_live_mb"`  // HeapAlloc after a GC, cluster still up
	// LivePeak is the largest live heap (runtime/metrics /gc/heap/live:bytes,
	// what the latest GC marked) sampled during the window, under load.
	LivePeak float64 `json:"live_peak_mb"`
	// RSSPeak is the largest resident set of the process sampled during
	// the window: with memory outside the Go heap (cgo allocations, as
	// pebble's memtables). RSSBase is the resident set just before the
	// cluster started, after the previous system's freed heap went back to
	// the OS; what earlier systems left resident outside the Go heap (45 MB
	// after dragonboat at 256 clients) is in both, so RSSPeak-RSSBase is what this system added.
	RSSPeak float64 `json:"rss_peak_mb"`
	RSSBase float64 `json:"rss_base_mb"`
}

func main() {
	duration := flag.Duration("duration", 10*time.Second, "measured time per system and client count")
	warmup := flag.Duration("warmup", 2*time.Second, "load before each measurement, not counted")
	clientsFlag := flag.String("clients", "1,16,64,256", "comma-separated concurrency levels")
	systemsFlag := flag.String("systems", strings.Join(defaultSystems, ","), "comma-separated systems to run, in order, of: "+strings.Join(systemOrder, ", "))
	jsonOut := flag.String("json", "", "write the results as a JSON array to this file")
	plotOut := flag.String("plot", "", "write a latency/throughput plot (PNG) to this file")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (with -snapshot-pause: of the window with the snapshot) to this file")
	traceOut := flag.String("trace", "", "write an execution trace (runtime/trace) of the whole run to this file: go tool trace -pprof=sync|sched|syscall FILE shows where goroutines wait")
	memprofile := flag.String("memprofile", "", "write a heap profile at the end of each level's window to PREFIX-SYSTEM-N.pprof")
	logLevel := flag.String("log-level", "error", "log level of the nodes: debug, info, warn, error")
	medianFiles := flag.String("median", "", "instead of running: read the -json files of several runs (comma-separated) and print, write (-json) and plot (-plot) the median of each figure per system and level, with ketch's ratios to the best peer")
	snapKeys := flag.Int("snapshot-pause", 0, "instead of the levels: load this many keys, then compare commit latency at -clients' first level while a snapshot of them is written with the latency without one")
	flag.Parse()

	if *medianFiles != "" {
		rs, err := medianOf(strings.Split(*medianFiles, ","))
		if err != nil {
			fatal("median: %v", err)
		}
		fmt.Printf("bench: medians of %d runs (rss+ MB is the median of each run's peak minus its base)\n", len(strings.Split(*medianFiles, ",")))
		printHeader()
		for _, r := range rs {
			printRow(r)
		}
		printTargets(rs)
		if *jsonOut != "" {
			b, _ := json.MarshalIndent(rs, "", "  ")
			if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
				fatal("json: %v", err)
			}
		}
		if *plotOut != "" {
			if err := plotResults(rs, *plotOut); err != nil {
				fatal("plot: %v", err)
			}
		}
		return
	}
	levels, err := parseInts(*clientsFlag)
	if err != nil {
		fatal("bad -clients: %v", err)
	}
	var names []string
	for _, s := range strings.Split(*systemsFlag, ",") {
		if _, ok := systems[s]; !ok {
			fatal("bad -systems: unknown system %q (have %s)", s, strings.Join(systemOrder, ", "))
		}
		names = append(names, s)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fatal("bad -log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if *snapKeys > 0 {
		fmt.Printf("bench: %d CPUs, GOMAXPROCS %d, %s, keys %d B, values %d B\n",
			runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), keyBytes, valueBytes)
		if err := snapshotPause(*snapKeys, levels[0], *duration, *cpuprofile, log); err != nil {
			fatal("snapshot-pause: %v", err)
		}
		return
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fatal("cpuprofile: %v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatal("cpuprofile: %v", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}

	if *traceOut != "" {
		f, err := os.Create(*traceOut)
		if err != nil {
			fatal("trace: %v", err)
		}
		if err := trace.Start(f); err != nil {
			fatal("trace: %v", err)
		}
		defer func() {
			trace.Stop()
			_ = f.Close()
		}()
	}
	fmt.Printf("bench: %d CPUs, GOMAXPROCS %d, %s, warm-up %v, %v per level, keys %d B, values %d B\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), *warmup, *duration, keyBytes, valueBytes)
	printHeader()
	var results []Result
	for _, n := range levels {
		for _, name := range names {
			r, err := runLevel(name, systems[name], n, *warmup, *duration, *memprofile, log)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: %s with %d clients: %v\n", name, n, err)
				continue
			}
			printRow(r)
			results = append(results, r)
		}
	}

	if *jsonOut != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fatal("json: %v", err)
		}
	}
	if *plotOut != "" {
		if err := plotResults(results, *plotOut); err != nil {
			fatal("plot: %v", err)
		}
	}
}

// runLevel starts a fresh cluster of one system, loads it with n clients
// for warmup+duration, and measures the duration window.
func runLevel(name string, start starter, n int, warmup, duration time.Duration, memprofile string, log *slog.Logger) (Result, error) {
	dir, err := os.MkdirTemp("", "ketch-bench-"+name+"-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	// Hand the previous system's freed heap back to the OS, and note the
	// resident set left, so that what this system adds to it can be told.
	debug.FreeOSMemory()
	rss0 := rssMB()
	g0 := runtime.NumGoroutine()
	c, err := start(dir, log.With("system", name))
	if err != nil {
		return Result{}, fmt.Errorf("start: %w", err)
	}
	defer func() {
		c.Close()
		checkStopped(name, n, g0)
	}()
	runtime.GC()

	value := make([]byte, valueBytes)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	var (
		from, to atomic.Int64 // the window, in UnixNano; to == 0 while open
		stop     atomic.Bool
		errs     atomic.Int64
		wg       sync.WaitGroup
	)
	from.Store(time.Now().Add(warmup).UnixNano())
	lat := make([][]int64, n)
	for w := range n {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			mine := make([]int64, 0, 1024)
			var kb [keyBytes]byte
			for !stop.Load() {
				key := fmtKey(&kb, rng.Uint64N(keySpace))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				err := c.Put(ctx, key, value)
				t1 := time.Now()
				cancel()
				if t0.UnixNano() < from.Load() {
					continue // warm-up
				}
				if end := to.Load(); end != 0 && t1.UnixNano() > end {
					break // finished after the window closed
				}
				if err != nil {
					if errs.Add(1) <= 3 {
						log.Warn("put failed", "system", name, "err", err)
					}
					continue
				}
				mine = append(mine, int64(t1.Sub(t0)))
			}
			lat[w] = mine
		})
	}

	time.Sleep(time.Until(time.Unix(0, from.Load())))
	cpu0 := cpuTime()
	t0 := time.Now()
	peaks := sampleMemory(duration)
	to.Store(time.Now().UnixNano())
	elapsed := time.Since(t0)
	cpu1 := cpuTime()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	stop.Store(true)
	wg.Wait()
	if memprofile != "" {
		writeHeapProfile(fmt.Sprintf("%s-%s-%d.pprof", memprofile, name, n))
	}
	heapInuse := float64(ms.HeapInuse) / (1 << 20)
	runtime.GC()
	runtime.ReadMemStats(&ms)

	var all []int64
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	ops := int64(len(all))
	r := Result{
		System: name, Clients: n, Ops: ops, Errors: errs.Load(),
		OpsPerSec: float64(ops) / elapsed.Seconds(),
		P50us:     quantile(all, 0.50), P99us: quantile(all, 0.99), P999us: quantile(all, 0.999),
		HeapInuse: heapInuse, HeapLive: float64(ms.HeapAlloc) / (1 << 20),
		LivePeak: peaks.live, RSSPeak: peaks.rss, RSSBase: rss0,
	}
	if ops > 0 {
		r.CPUPer1k = (cpu1 - cpu0).Seconds() / float64(ops) * 1000
	}
	if ops == 0 {
		return r, errors.New("no operation completed in the window")
	}
	return r, nil
}

// checkStopped warns when a closed cluster leaves goroutines running that
// would share the CPU with the systems after it: it waits up to 3 s for
// the count to fall back to g0, what it was before the cluster started.
func checkStopped(name string, n, g0 int) {
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if left := runtime.NumGoroutine() - g0; left > 0 {
		fmt.Fprintf(os.Stderr, "bench: %s with %d clients left %d goroutines running after Close\n", name, n, left)
	}
}

// memPeaks are the largest live heap and resident set seen, in MB.
type memPeaks struct{ live, rss float64 }

// memSampleEvery is how often sampleMemory looks; cheap reads, no GC.
const memSampleEvery = 100 * time.Millisecond

// sampleMemory samples the live heap (what the latest GC marked, from
// runtime/metrics) and the process's resident set every memSampleEvery
// for d, and returns the peaks. It forces no GC: the load's own GCs mark
// the heap, so the live figure is the load's.
func sampleMemory(d time.Duration) memPeaks {
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var p memPeaks
	sample := func() {
		metrics.Read(samples)
		if samples[0].Value.Kind() == metrics.KindUint64 {
			p.live = max(p.live, float64(samples[0].Value.Uint64())/(1<<20))
		}
		p.rss = max(p.rss, rssMB())
	}
	t := time.NewTicker(memSampleEvery)
	defer t.Stop()
	end := time.After(d)
	for {
		select {
		case <-t.C:
			sample()
		case <-end:
			sample()
			return p
		}
	}
}

// rssMB is the process's resident set in MB (/proc/self/statm), 0 where
// there is none.
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return float64(pages) * float64(os.Getpagesize()) / (1 << 20)
}

func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: memprofile: %v\n", err)
		return
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "bench: memprofile: %v\n", err)
	}
}

func fmtKey(b *[keyBytes]byte, k uint64) string {
	const hex = "0123456789abcdef"
	for i := keyBytes - 1; i >= 0; i-- {
		b[i] = hex[k&15]
		k >>= 4
	}
	return string(b[:])
}

// quantile returns the q-quantile of sorted latencies (ns) in µs.
func quantile(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / 1e3
}

// cpuTime is the process's user+system CPU time (getrusage).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func printHeader() {
	fmt.Printf("%-13s %7s %10s %9s %9s %9s %11s %9s %9s %9s %9s %6s\n",
		"system", "clients", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "cpu s/1k", "heap MB", "live MB", "livepk MB", "rss+ MB", "errors")
}

func printRow(r Result) {
	fmt.Printf("%-13s %7d %10.0f %9.0f %9.0f %9.0f %11.3f %9.1f %9.1f %9.1f %9.1f %6d\n",
		r.System, r.Clients, r.OpsPerSec, r.P50us, r.P99us, r.P999us, r.CPUPer1k, r.HeapInuse, r.HeapLive, r.LivePeak, r.RSSPeak-r.RSSBase, r.Errors)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(2)
}
