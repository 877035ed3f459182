package process

// A recorded key-value workload on real processes: several Go clients, each
// in a child process of its own ("kv" children, see clientproc_test.go for
// why the Go client never runs in the test process), do put, get and cas on
// a small, rotating key set; the test process records every operation for
// the linearizability checker (tests/lincheck) and keeps the commit latency
// of every acknowledged put.
//
// The recorder's times are exact: the test process calls Invoke before it
// writes the command to the child and Complete after it read the answer,
// so each recorded interval contains the real one.
//
// A kv child reads one command per line on stdin and answers one line:
//
//	put KEY VALUE TIMEOUT
//	get KEY TIMEOUT
//	cas KEY OLD NEW TIMEOUT        (OLD "-": swap only if KEY is absent)
//	-> "ok UNIXNANO OUTCOME LATNS FOUND SWAPPED VALUE [ERROR...]"
//
// OUTCOME is lincheck's (ok, failed or unknown), LATNS the call's duration
// in the child, FOUND and SWAPPED 0 or 1, VALUE the value read ("-": none).
// Values never contain spaces and are never "-".

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/tests/lincheck"
)

// kvChildMain is a kv child's main: one client, commands from stdin.
func kvChildMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cl, err := client.New(client.Config{Cluster: strings.Split(os.Getenv(childClusterEnv), ","), Logger: log, TLS: tlsFromEnv()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer cl.Close()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) < 3 {
			fmt.Printf("err %d bad command %q\n", time.Now().UnixNano(), in.Text())
			continue
		}
		d, err := time.ParseDuration(f[len(f)-1])
		if err != nil {
			fmt.Printf("err %d bad timeout in %q\n", time.Now().UnixNano(), in.Text())
			continue
		}
		var op lincheck.Op
		switch {
		case f[0] == "put" && len(f) == 4:
			op = lincheck.Put(f[1], []byte(f[2]))
		case f[0] == "get" && len(f) == 3:
			op = lincheck.Get(f[1])
		case f[0] == "cas" && len(f) == 5:
			var old []byte
			if f[2] != "-" {
				old = []byte(f[2])
			}
			op = lincheck.CAS(f[1], old, []byte(f[3]))
		default:
			fmt.Printf("err %d unknown command %q\n", time.Now().UnixNano(), in.Text())
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		start := time.Now()
		res, err := doOp(ctx, cl, op)
		lat := time.Since(start)
		cancel()
		value, why := "-", ""
		if len(res.Value) > 0 {
			value = string(res.Value)
		}
		if err != nil {
			why = strings.ReplaceAll(err.Error(), "\n", " ")
		}
		fmt.Printf("ok %d %s %d %d %d %s %s\n", time.Now().UnixNano(), lincheck.OutcomeOf(err), lat.Nanoseconds(),
			b2i(res.Found), b2i(res.Swapped), value, why)
	}
	return 0
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// doOp is lincheck.Recorder.Do without the recording (the test process
// records).
func doOp(ctx context.Context, c *client.Client, op lincheck.Op) (lincheck.Result, error) {
	var res lincheck.Result
	var err error
	switch op.Kind {
	case lincheck.KindPut:
		err = c.Put(ctx, op.Key, op.Value)
	case lincheck.KindGet:
		res.Value, err = c.Get(ctx, op.Key)
		res.Found = err == nil
	case lincheck.KindCAS:
		res.Swapped, res.Value, res.Found, err = c.CompareAndSwap(ctx, op.Key, op.Old, op.Value)
	}
	return res, err
}

// startKVClient starts a kv child for the nodes at addrs, logging to
// logPath; it is stopped, and its exit status checked (a race report exits
// 66), when the test ends.
func startKVClient(t testing.TB, name string, addrs []string, logPath string) *clientProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(cliEnv(), childEnv+"=kv", childClusterEnv+"="+strings.Join(addrs, ","))
	cmd.Stderr = logf
	setProcAttr(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kv client %s: %v", name, err)
	}
	out := bufio.NewScanner(stdout)
	out.Buffer(make([]byte, 0, 64<<10), 4<<20) // a get answers the value
	p := &clientProc{name: name, cmd: cmd, stdin: stdin, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // the child exits at EOF
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
			t.Errorf("kv client %s did not exit within 10s of EOF", name)
			return
		}
		if p.err != nil {
			t.Errorf("kv client %s exited with %v (a race report exits 66); its log %s:\n%s", name, p.err, logPath, tail(logPath, 60))
		}
	})
	return p
}

// kvAnswer is a kv child's answer to one operation.
type kvAnswer struct {
	at      time.Time // when the child had the answer
	outcome lincheck.Outcome
	lat     time.Duration
	res     lincheck.Result
	err     string
}

// kvDo runs op on child p, each attempt within timeout.
func kvDo(p *clientProc, op lincheck.Op, timeout time.Duration) (kvAnswer, error) {
	var at time.Time
	var f []string
	var err error
	switch op.Kind {
	case lincheck.KindPut:
		at, f, err = p.call("put %s %s %s", op.Key, op.Value, timeout)
	case lincheck.KindGet:
		at, f, err = p.call("get %s %s", op.Key, timeout)
	case lincheck.KindCAS:
		old := "-"
		if op.Old != nil {
			old = string(op.Old)
		}
		at, f, err = p.call("cas %s %s %s %s", op.Key, old, op.Value, timeout)
	default:
		return kvAnswer{}, fmt.Errorf("kvDo: unsupported %v", op)
	}
	if err != nil {
		return kvAnswer{}, err
	}
	if len(f) < 5 {
		return kvAnswer{}, fmt.Errorf("kv client %s: %v: bad answer %q", p.name, op, f)
	}
	a := kvAnswer{at: at, err: strings.Join(f[5:], " ")}
	switch f[0] {
	case "ok":
		a.outcome = lincheck.OK
	case "failed":
		a.outcome = lincheck.Failed
	case "unknown":
		a.outcome = lincheck.Unknown
	default:
		return kvAnswer{}, fmt.Errorf("kv client %s: %v: bad outcome %q", p.name, op, f[0])
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return kvAnswer{}, fmt.Errorf("kv client %s: %v: bad latency %q", p.name, op, f[1])
	}
	a.lat = time.Duration(ns)
	a.res.Found, a.res.Swapped = f[2] == "1", f[3] == "1"
	if f[4] != "-" {
		a.res.Value = []byte(f[4])
	}
	return a, nil
}

// putSample is one acknowledged put: when it was sent and how long it took
// to commit and apply (the client's view).
type putSample struct {
	start time.Time
	lat   time.Duration
}

// kvLoad is the recorded workload: one worker per kv child, put, get and
// cas on slots keys that move on to fresh ones every keyLife (so no key's
// history grows long: porcupine's search is exponential in the unknown
// writes of one key), each operation within timeout, a pause of pace after
// each (0: as fast as the cluster answers).
type kvLoad struct {
	rec     *lincheck.Recorder
	procs   []*clientProc
	slots   int
	keyLife time.Duration
	timeout time.Duration
	pace    time.Duration
	begin   time.Time

	mu    sync.Mutex
	used  map[string]bool
	puts  []putSample
	acked int      // acknowledged operations (outcome ok)
	errs  []string // protocol failures of the children

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newKVLoad(procs []*clientProc, slots int, keyLife, timeout, pace time.Duration) *kvLoad {
	return &kvLoad{rec: lincheck.NewRecorder(), procs: procs, slots: slots, keyLife: keyLife, timeout: timeout,
		pace: pace, begin: time.Now(), used: map[string]bool{}, stop: make(chan struct{})}
}

func (w *kvLoad) key(slot int) string {
	gen := int(time.Since(w.begin) / w.keyLife)
	k := fmt.Sprintf("k%d.%d", slot, gen)
	w.mu.Lock()
	w.used[k] = true
	w.mu.Unlock()
	return k
}

func (w *kvLoad) keys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ks []string
	for k := range w.used {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// do runs op on child i as lincheck client num, recorded.
func (w *kvLoad) do(i, num int, op lincheck.Op) (kvAnswer, bool) {
	id := w.rec.Invoke(num, op)
	a, err := kvDo(w.procs[i], op, w.timeout)
	if err != nil {
		// The child is gone or broke the protocol: the outcome is unknown.
		w.rec.Complete(id, lincheck.Result{}, lincheck.Unknown)
		w.mu.Lock()
		w.errs = append(w.errs, err.Error())
		w.mu.Unlock()
		return a, false
	}
	w.rec.Complete(id, a.res, a.outcome)
	w.mu.Lock()
	if a.outcome == lincheck.OK {
		w.acked++
		if op.Kind == lincheck.KindPut {
			w.puts = append(w.puts, putSample{start: a.at.Add(-a.lat), lat: a.lat})
		}
	}
	w.mu.Unlock()
	return a, true
}

// start starts one worker per child, worker i drawing from seed and i.
func (w *kvLoad) start(seed uint64) {
	for i := range w.procs {
		w.wg.Add(1)
		go w.worker(i, rand.New(rand.NewPCG(seed, uint64(i)+1)))
	}
}

// halt stops the workers and waits for their last operations.
func (w *kvLoad) halt() {
	w.stopOnce.Do(func() { close(w.stop) })
	w.wg.Wait()
}

func (w *kvLoad) worker(i int, rng *rand.Rand) {
	defer w.wg.Done()
	last := map[string][]byte{} // the last value this worker saw per key (nil: absent)
	for n := 0; ; n++ {
		if n > 0 && w.pace > 0 {
			select {
			case <-w.stop:
				return
			case <-time.After(w.pace): // the load's rate, not a wait for a condition
			}
		}
		select {
		case <-w.stop:
			return
		default:
		}
		key := w.key(rng.IntN(w.slots))
		value := []byte(fmt.Sprintf("c%d-%d", i, n)) // unique in the run
		var op lincheck.Op
		switch r := rng.IntN(10); {
		case r < 3:
			op = lincheck.Get(key)
		case r < 7:
			op = lincheck.Put(key, value)
		default:
			op = lincheck.CAS(key, last[key], value)
		}
		a, ok := w.do(i, i, op)
		if !ok {
			return
		}
		if a.outcome != lincheck.OK {
			continue
		}
		switch {
		case op.Kind == lincheck.KindGet && a.res.Found, op.Kind == lincheck.KindCAS && !a.res.Swapped && a.res.Found:
			last[key] = a.res.Value
		case op.Kind == lincheck.KindGet, op.Kind == lincheck.KindCAS && !a.res.Swapped:
			last[key] = nil
		default: // a put, or a cas that swapped
			last[key] = op.Value
		}
	}
}

// finalReads reads every key used back on the first child, recorded as
// client num (after halt).
func (w *kvLoad) finalReads(num int) {
	for _, k := range w.keys() {
		w.do(0, num, lincheck.Get(k))
	}
}

// putsIn returns the latencies of the acknowledged puts sent within any of
// the windows.
func (w *kvLoad) putsIn(windows ...[2]time.Time) []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ds []time.Duration
	for _, s := range w.puts {
		for _, win := range windows {
			if !s.start.Before(win[0]) && s.start.Before(win[1]) {
				ds = append(ds, s.lat)
				break
			}
		}
	}
	return ds
}

// longestGap is the longest time within [from, to] in which no
// acknowledged put completed: the longest gap between consecutive
// completions, counting from `from` and up to `to`.
func (w *kvLoad) longestGap(from, to time.Time) time.Duration {
	w.mu.Lock()
	var ends []time.Time
	for _, s := range w.puts {
		if e := s.start.Add(s.lat); !e.Before(from) && !e.After(to) {
			ends = append(ends, e)
		}
	}
	w.mu.Unlock()
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	prev, gap := from, time.Duration(0)
	for _, e := range ends {
		gap = max(gap, e.Sub(prev))
		prev = e
	}
	return max(gap, to.Sub(prev))
}

// quantile is the q-quantile (nearest rank) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// checkHistory checks the recorded history for linearizability (porcupine,
// per key, within timeout) and for lost writes, failing the test and
// writing a visualization under dir if it is not linearizable. It returns
// a one-line summary.
func (w *kvLoad) checkHistory(t testing.TB, finalClient int, timeout time.Duration, dir string) string {
	t.Helper()
	entries := w.rec.Entries()
	for _, l := range lincheck.LostWrites(entries, finalClient) {
		t.Errorf("lost write: %s", l)
	}
	start := time.Now()
	res, info := w.rec.CheckResult(timeout)
	took := time.Since(start)
	verdict := map[bool]string{true: "yes", false: "NO"}[res == porcupine.Ok]
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		verdict = "unknown (the check timed out)"
		t.Errorf("linearizability check did not finish within %v", timeout)
	default:
		path, err := lincheck.VisualizeTemp(info, dir, "history")
		t.Errorf("the history is not linearizable (visualization: %s %v)", path, err)
	}
	return fmt.Sprintf("%v on %d keys; linearizable: %s (checked in %v)", w.rec.Counts(), len(w.keys()), verdict, took.Round(time.Millisecond))
}
