package cluster

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/tests/lincheck"
)

// The key figures of the crash tests go to stdout as lines starting with
// "crash:" (go test -v shows them).
var flagCrashDuration = flag.Duration("crash.duration", 0,
	"how long TestCrashEachChildUnderLoad crashes children under load (default 20s, 8s with -short)")

// crashKinds are the children a crash request can name, in start order.
var crashKinds = []string{"store", "state", "fsm", "sender"}

type crashEvent struct {
	node     uint64
	kind     string
	onLeader bool
	at       time.Time
}

// TestCrashEachChildUnderLoad is "let it crash, lose nothing": a 3-node
// cluster under a concurrent put/get/cas workload has its store, state, fsm
// and sender actors crashed again and again, on followers and on the
// leader, paced below the supervisor's restart intensity. Each node must
// carry on without operator action, lose no acknowledged write, converge,
// and the whole history must be linearizable.
func TestCrashEachChildUnderLoad(t *testing.T) {
	dur := *flagCrashDuration
	if dur == 0 {
		dur = 20 * time.Second
		if testing.Short() {
			dur = 8 * time.Second
		}
	}
	const (
		workers     = 6
		nkeys       = 5
		callTimeout = 3 * time.Second
		// spacing between two crashes of the same node: at most 4 in the
		// default restart window (5 restarts within 10s), never a 6th.
		spacing = 2500 * time.Millisecond
	)
	began := time.Now()
	c := New(t, 3, true, nil)
	if _, err := c.Leader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	baseline := map[uint64]map[string]uint64{}
	for id, n := range c.Nodes {
		baseline[id] = map[string]uint64{}
		for child, cs := range n.Status().Children {
			baseline[id][child] = cs.Restarts
		}
	}
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, duration %v", seed, dur)

	rec := lincheck.NewRecorder()
	load, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range workers {
		cl := c.Client()
		wg.Go(func() { kvWorker(load, cl, rec, w, keys, callTimeout, seed) })
	}

	// The crasher, in this goroutine (it alone touches c.Nodes meanwhile).
	crashes := crashLoop(t, c, c.Client(), dur, spacing, seed)
	loadEnd := time.Now()
	stopLoad()
	wg.Wait()
	if len(crashes) == 0 {
		t.Fatal("no crash was requested")
	}
	lastCrash := crashes[len(crashes)-1].at

	// The node carries on without operator action: a write succeeds again
	// within a bounded time of the last crash.
	probeClient := c.Client()
	var recovered time.Duration
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, err := rec.Do(ctx, probeClient, workers, lincheck.Put("probe", []byte("after-crashes")))
		cancel()
		if err == nil {
			recovered = time.Since(lastCrash)
			break
		}
		if time.Since(lastCrash) > 15*time.Second {
			t.Fatalf("no write succeeded within 15s of the last crash: %v\n%s", err, describeNodes(c))
		}
	}

	// Final linearizable reads of every key, appended to the history: any
	// acknowledged write that was lost shows up in the check.
	for _, k := range keys {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := rec.Do(ctx, probeClient, workers, lincheck.Get(k))
		cancel()
		if lincheck.OutcomeOf(err) != lincheck.OK {
			t.Errorf("final read of %s: %v", k, err)
		}
	}

	// Convergence: every node applied, committed and holds the same log.
	settle := time.Now()
	if err := waitConverged(c, 10*time.Second); err != nil {
		t.Error(err)
	}
	settled := time.Since(settle)

	// The supervisors: still running, and each crash shows in the stats.
	perNode := map[uint64]map[string]int{}
	perKind := map[string]int{}
	onLeader := map[string]int{}
	for _, e := range crashes {
		if perNode[e.node] == nil {
			perNode[e.node] = map[string]int{}
		}
		perNode[e.node][e.kind]++
		perKind[e.kind]++
		if e.onLeader {
			onLeader[e.kind]++
		}
	}
	extra := checkSupervisors(t, c, baseline, perNode)
	for _, k := range crashKinds {
		if perKind[k] == 0 {
			t.Errorf("%s was never crashed", k)
		}
		if onLeader[k] == 0 && dur >= 10*time.Second {
			t.Errorf("%s was never crashed on the leader", k)
		}
	}

	// No acknowledged write lost, every answer explained: linearizable.
	counts := rec.Counts()
	if counts.OK == 0 {
		t.Fatal("no operation succeeded")
	}
	gap, worst := writeGaps(rec.Entries(), crashes, loadEnd)
	if gap > 10*time.Second {
		t.Errorf("no write was acknowledged for %v during the load", gap)
	}
	checkStart := time.Now()
	res, info := rec.CheckResult(60 * time.Second)
	checkTook := time.Since(checkStart)
	if res != porcupine.Ok {
		path, err := lincheck.VisualizeTemp(info, "", "ketch-crash-history")
		t.Errorf("history of %d operations is %s (checked in %v); visualization: %s %v", counts.Ops, res, checkTook, path, err)
	}

	// The checker has teeth: the same history, with one read made stale or
	// one acknowledged write made lost, must fail.
	t.Run("corrupted history fails", func(t *testing.T) {
		for name, corrupt := range map[string]func([]lincheck.Entry) (string, bool){
			"stale read": lincheck.CorruptStaleRead,
			"lost write": lincheck.CorruptLostWrite,
		} {
			entries := rec.Entries()
			what, ok := corrupt(entries)
			if !ok {
				t.Errorf("%s: found nothing to corrupt in %d operations", name, len(entries))
				continue
			}
			start := time.Now()
			if res := lincheck.FromEntries(entries).Linearizable(60 * time.Second); res != porcupine.Illegal {
				t.Errorf("%s: the corrupted history is %s to the checker: %s", name, res, what)
			} else {
				t.Logf("%s caught in %v: %s", name, time.Since(start).Round(time.Millisecond), what)
			}
		}
	})

	var cas, swapped int
	for _, e := range rec.Entries() {
		if e.Op.Kind == lincheck.KindCAS && e.Outcome == lincheck.OK {
			cas++
			if e.Result.Swapped {
				swapped++
			}
		}
	}
	var kinds []string
	for _, k := range crashKinds {
		kinds = append(kinds, fmt.Sprintf("%s=%d(leader %d)", k, perKind[k], onLeader[k]))
	}
	fmt.Printf("crash: duration=%v ops=%d ok=%d failed=%d unknown=%d pending=%d cas_swapped=%d/%d crashes=%d %s extra_restarts=%d max_write_gap=%v worst_crash_recovery=%v write_after_last_crash=%v settle=%v check=%v total=%v linearizable=%v\n",
		dur, counts.Ops, counts.OK, counts.Failed, counts.Unknown, counts.Pending, swapped, cas, len(crashes), strings.Join(kinds, " "), extra,
		gap.Round(time.Millisecond), worst.Round(time.Millisecond), recovered.Round(time.Millisecond), settled.Round(time.Millisecond),
		checkTook.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), res == porcupine.Ok)
}

// shortTimeout bounds the few calls that are meant to time out when they
// meet a crash: longer than a call takes normally, shorter than recovery.
const shortTimeout = 150 * time.Millisecond

// kvWorker runs put/get/cas on keys until load ends, one call at a time,
// each bounded by timeout (a few by shortTimeout) and recorded in rec. Values are unique
// ("w<worker>-<n>"); a cas expects what this worker last saw of the key.
func kvWorker(load context.Context, cl *client.Client, rec *lincheck.Recorder, w int, keys []string, timeout time.Duration, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(w)))
	last := map[string][]byte{} // nil: absent, or not known
	for i := 0; load.Err() == nil; i++ {
		k := keys[rng.IntN(len(keys))]
		v := fmt.Appendf(nil, "w%d-%d", w, i)
		var op lincheck.Op
		switch p := rng.IntN(10); {
		case p < 4:
			op = lincheck.Put(k, v)
		case p < 7:
			op = lincheck.Get(k)
		default:
			op = lincheck.CAS(k, last[k], v)
		}
		// The call's own context, not load's: stopping the load must not
		// turn a call in flight into a timeout. One call in 16 gets a short
		// one, so that some writes time out around crashes and may still
		// be applied after the client gave up (outcome unknown).
		d := timeout
		if rng.IntN(16) == 0 {
			d = shortTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		res, err := rec.Do(ctx, cl, w, op)
		cancel()
		if lincheck.OutcomeOf(err) != lincheck.OK {
			delete(last, k)
			continue
		}
		switch {
		case op.Kind == lincheck.KindPut || op.Kind == lincheck.KindCAS && res.Swapped:
			last[k] = op.Value
		case res.Found:
			last[k] = res.Value
		default:
			delete(last, k)
		}
	}
}

// crashLoop crashes a child of some node every spacing/4 for dur, as long
// as that node's last crash is at least spacing ago: the kinds in turn
// (store, state, fsm, sender, ...), on the current leader for the first
// crash of each kind and one time in three after that, on a random other
// node otherwise. It returns the crashes requested.
func crashLoop(t *testing.T, c *Cluster, admin *client.Client, dur, spacing time.Duration, seed uint64) []crashEvent {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	deadline := time.Now().Add(dur)
	last := map[uint64]time.Time{}
	hitLeader := map[string]bool{}
	var events []crashEvent
	tick := time.NewTicker(spacing / 4)
	defer tick.Stop()
	for next := 0; time.Now().Before(deadline); {
		<-tick.C
		now := time.Now()
		var eligible []uint64
		for _, id := range slices.Sorted(maps.Keys(c.Nodes)) {
			if now.Sub(last[id]) >= spacing {
				eligible = append(eligible, id)
			}
		}
		if len(eligible) == 0 {
			continue
		}
		kind := crashKinds[next%len(crashKinds)]
		target := eligible[rng.IntN(len(eligible))]
		leader, hasLeader := currentLeader(c)
		if hasLeader && !hitLeader[kind] && !slices.Contains(eligible, leader) && time.Until(deadline) > 2*spacing {
			// This kind has not hit the leader yet and the leader was
			// crashed too recently: wait for it rather than spend the
			// kind's turn elsewhere (on a loaded machine every turn could
			// miss the leader).
			continue
		}
		if hasLeader && slices.Contains(eligible, leader) && (!hitLeader[kind] || rng.IntN(3) == 0) {
			target = leader
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := admin.Crash(ctx, c.Addrs[target], kind)
		cancel()
		if err != nil {
			t.Errorf("crash %s on node %d: %v", kind, target, err)
			continue
		}
		next++
		last[target] = now
		onLeader := hasLeader && target == leader
		hitLeader[kind] = hitLeader[kind] || onLeader
		events = append(events, crashEvent{node: target, kind: kind, onLeader: onLeader, at: now})
	}
	return events
}

// currentLeader is the node that reports itself leader in the highest term.
func currentLeader(c *Cluster) (uint64, bool) {
	var id, term uint64
	for nid, n := range c.Nodes {
		if st := n.Status(); st.Role == "leader" && st.Term >= term {
			id, term = nid, st.Term
		}
	}
	return id, id != 0
}

// describeNodes is one line per node: its role, indexes and, if it
// stopped, why.
func describeNodes(c *Cluster) string {
	var b strings.Builder
	for _, id := range slices.Sorted(maps.Keys(c.Nodes)) {
		n := c.Nodes[id]
		st := n.Status()
		fmt.Fprintf(&b, "node %d: %s term %d last %d commit %d applied %d", id, st.Role, st.Term, st.LastIndex, st.Commit, st.Applied)
		select {
		case <-n.Done():
			fmt.Fprintf(&b, "; stopped: %v", n.Err())
		default:
		}
		b.WriteString("\n")
	}
	return b.String()
}

// waitConverged waits until one node leads and every node has applied,
// committed and stored the same index.
func waitConverged(c *Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		_, leads := currentLeader(c)
		var idx []uint64
		var lines []string
		for _, id := range slices.Sorted(maps.Keys(c.Nodes)) {
			st := c.Nodes[id].Status()
			idx = append(idx, st.Applied, st.Commit, st.LastIndex)
			lines = append(lines, fmt.Sprintf("node %d %s term %d last %d commit %d applied %d", id, st.Role, st.Term, st.LastIndex, st.Commit, st.Applied))
		}
		last = strings.Join(lines, "; ")
		if leads && len(idx) > 0 && !slices.ContainsFunc(idx, func(i uint64) bool { return i != idx[0] }) && idx[0] > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes did not converge within %v: %s", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkSupervisors asserts that every node is running and that each child
// crashed on it was restarted (since baseline) at least as often as it was
// crashed, with a
// last crash reason naming the request. The rest_for_one arithmetic gives
// the expected restarts of every child (a crash restarts the crashed child
// and all later ones); it returns how many restarts exceed it in total.
func checkSupervisors(t *testing.T, c *Cluster, baseline map[uint64]map[string]uint64, perNode map[uint64]map[string]int) (extra int) {
	t.Helper()
	for _, id := range slices.Sorted(maps.Keys(c.Nodes)) {
		n := c.Nodes[id]
		select {
		case <-n.Done():
			t.Errorf("node %d stopped: %v", id, n.Err())
			continue
		default:
		}
		st := n.Status()
		if st.Error != "" || st.Role == "stopped" || st.Role == "stopping" || st.Role == "starting" {
			t.Errorf("node %d is %s: %s", id, st.Role, st.Error)
		}
		want := 0
		for _, child := range node.Children {
			want += perNode[id][child] // crashes of this child or an earlier one
			cs := st.Children[child]
			if cs == nil {
				t.Errorf("node %d: no status for child %s", id, child)
				continue
			}
			got := int(cs.Restarts - baseline[id][child])
			if got < want {
				t.Errorf("node %d: %s restarted %d times, want at least %d (rest_for_one after %v)", id, child, got, want, perNode[id])
			}
			extra += got - want
			if perNode[id][child] > 0 && !strings.Contains(cs.LastCrash, "ketch crash") {
				t.Errorf("node %d: %s crashed %d times but its last crash reason is %q", id, child, perNode[id][child], cs.LastCrash)
			}
			if perNode[id][child] == 0 && cs.LastCrash != "" {
				t.Logf("node %d: %s crashed on its own: %q", id, child, cs.LastCrash)
			}
			if got != want {
				t.Logf("node %d: %s restarted %d times, rest_for_one predicts %d", id, child, got, want)
			}
		}
	}
	return extra
}

// writeGaps measures availability during the load: the longest time in
// which no write was acknowledged, and the longest time from a crash to the
// first acknowledged write invoked after it.
func writeGaps(entries []lincheck.Entry, crashes []crashEvent, loadEnd time.Time) (maxGap, worstRecovery time.Duration) {
	var acks []lincheck.Entry
	for _, e := range entries {
		if e.Outcome == lincheck.OK && (e.Op.Kind == lincheck.KindPut || e.Op.Kind == lincheck.KindCAS) && !e.ReturnAt.After(loadEnd) {
			acks = append(acks, e)
		}
	}
	slices.SortFunc(acks, func(a, b lincheck.Entry) int { return a.ReturnAt.Compare(b.ReturnAt) })
	for i := 1; i < len(acks); i++ {
		maxGap = max(maxGap, acks[i].ReturnAt.Sub(acks[i-1].ReturnAt))
	}
	for _, cr := range crashes {
		for _, e := range acks {
			if e.CallAt.After(cr.at) {
				worstRecovery = max(worstRecovery, e.ReturnAt.Sub(cr.at))
				break
			}
		}
	}
	return maxGap, worstRecovery
}

// TestRestartIntensityFailStop: crashes faster than the restart intensity
// allows stop the node cleanly (fail-stop, the OTP way) while the rest of
// the cluster keeps serving; crashes spaced beyond the window do not.
func TestRestartIntensityFailStop(t *testing.T) {
	t.Run("within the window", func(t *testing.T) {
		c := New(t, 3, true, func(cfg *node.Config) { cfg.MaxRestarts, cfg.RestartWindow = 2, 5*time.Second })
		victim, err := c.Leader(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		n, admin := c.Nodes[victim], c.Client()
		start := time.Now()
		stoppedAt := make(chan time.Time, 1)
		go func() { <-n.Done(); stoppedAt <- time.Now() }()
		for i := range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := admin.Crash(ctx, c.Addrs[victim], "fsm")
			cancel()
			// The third answer may be lost: the node is stopping.
			if err != nil && i < 2 {
				t.Fatalf("crash %d: %v", i+1, err)
			}
		}
		var stopped time.Duration
		select {
		case at := <-stoppedAt:
			stopped = at.Sub(start)
		case <-time.After(10 * time.Second):
			t.Fatalf("node %d still running after 3 fsm crashes with MaxRestarts=2: %v", victim, n.Status())
		}
		nerr := n.Err()
		if nerr == nil {
			t.Fatal("fail-stopped node has no error")
		}
		for _, want := range []string{`"fsm"`, "ketch crash", "more than 2 restarts within 5s"} {
			if !strings.Contains(nerr.Error(), want) {
				t.Errorf("Err() = %q, does not mention %s", nerr, want)
			}
		}
		st := n.Status()
		if st.Role != "stopped" || st.Error == "" {
			t.Errorf("status of the fail-stopped node: role %q error %q", st.Role, st.Error)
		}
		if fs := st.Children["fsm"]; fs == nil || fs.Restarts != 2 || !strings.Contains(fs.LastCrash, "ketch crash") {
			t.Errorf("fsm status after fail-stop: %v (want 2 restarts, then the stop)", fs)
		}

		// The two others elect a leader and keep serving writes.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		wstart := time.Now()
		if err := c.Client().Put(ctx, "after-fail-stop", []byte("ok")); err != nil {
			t.Fatalf("the surviving nodes do not serve writes: %v", err)
		}
		leader, _ := currentLeader(c)
		if leader == victim {
			t.Errorf("the fail-stopped node %d still reports itself leader", victim)
		}
		fmt.Printf("crash: fail-stop of node %d after 3 fsm crashes in %v: %v; write on the survivors (leader %d) in %v\n",
			victim, stopped.Round(time.Millisecond), nerr, leader, time.Since(wstart).Round(time.Millisecond))
	})

	t.Run("spaced beyond the window", func(t *testing.T) {
		const window, crashes = 500 * time.Millisecond, 4
		c := New(t, 3, true, func(cfg *node.Config) { cfg.MaxRestarts, cfg.RestartWindow = 2, window })
		victim, err := c.Leader(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		n, admin := c.Nodes[victim], c.Client()
		for i := range crashes {
			if i > 0 {
				time.Sleep(window + 200*time.Millisecond) // pacing, not waiting for a condition
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := admin.Crash(ctx, c.Addrs[victim], "fsm")
			cancel()
			if err != nil {
				t.Fatalf("crash %d: %v", i+1, err)
			}
		}
		// Wait for the last restart to show, then a little longer than the
		// window: a fail-stop would have happened by then.
		deadline := time.Now().Add(5 * time.Second)
		for n.Status().Children["fsm"].GetRestarts() < crashes && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case <-n.Done():
			t.Fatalf("node %d fail-stopped after %d fsm crashes spaced beyond the %v window: %v", victim, crashes, window, n.Err())
		case <-time.After(window + 200*time.Millisecond):
		}
		st := n.Status()
		if st.Error != "" || st.Role == "stopped" || st.Role == "stopping" {
			t.Errorf("node %d: role %q error %q", victim, st.Role, st.Error)
		}
		if got := st.Children["fsm"].GetRestarts(); got != crashes {
			t.Errorf("fsm restarted %d times, want %d", got, crashes)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Client().Put(ctx, "after-spaced-crashes", []byte("ok")); err != nil {
			t.Fatalf("write after spaced crashes: %v", err)
		}
	})
}
