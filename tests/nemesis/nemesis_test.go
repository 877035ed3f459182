package nemesis

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/tests/lincheck"
)

var (
	flagNemesis   = flag.String("nemesis", "mixed", "the nemesis: mixed, or one of "+strings.Join(allNemeses, ", "))
	flagSeed      = flag.Uint64("seed", 0, "seed of the schedule and the workload; 0 picks one from the clock")
	flagDuration  = flag.Duration("duration", 15*time.Second, "how long the nemesis runs (the whole test takes about 30 s more)")
	flagNodes     = flag.Int("nodes", 3, "cluster size: 3 or 5")
	flagClients   = flag.Int("clients", 10, "concurrent clients")
	flagKeys      = flag.Int("keys", 8, "keys in use at any time")
	flagKeyLife   = flag.Duration("key-life", 5*time.Second, "every key-life the workload moves on to fresh keys (0: never), which keeps each key's history small enough for porcupine")
	flagOpTimeout = flag.Duration("op-timeout", time.Second, "a client operation that takes longer ends unknown")
	flagCheck     = flag.Duration("check-timeout", 5*time.Minute, "bound on porcupine's search (past it: linearizable=unknown)")
	flagSnapEvery = flag.Int("snapshot-entries", 300, "the nodes' --snapshot-entries: small, so that snapshots are taken and installed many times per schedule")
	flagSnapTrail = flag.Int("snapshot-trailing", 100, "the nodes' --snapshot-trailing")
	flagSabotage  = flag.String("sabotage", "", "show that a check has teeth: stale (a read turned stale), lost (a final read turned absent) or log (node 1's last committed entry rewritten); the run must fail")
	flagTLS       = flag.Bool("tls", false, "run the cluster and the clients with mutual TLS (a CA made for the run; each node's certificate names its container's address)")
	flagKetchBin  = flag.String("ketch-bin", "", "use this static ketch binary (built with CGO_ENABLED=0) instead of building ./cmd/ketch")
	flagArtifacts = flag.String("failure-dir", "nemesis-artifacts", "where a failing run saves its visualization, history and node logs")
)

func TestNemesis(t *testing.T) {
	if testing.Short() {
		t.Skip("nemesis: skipped under -short (it runs Docker containers for about 45 s)")
	}
	kinds, err := nemesisKinds(*flagNemesis)
	if err != nil {
		t.Fatal(err)
	}
	if *flagNodes != 3 && *flagNodes != 5 {
		t.Fatalf("-nodes=%d: use 3 or 5", *flagNodes)
	}
	if ok, why := dockerAvailable(); !ok {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nemesis: no Docker engine (%s); CI=true requires one", why)
		}
		t.Skipf("nemesis: no Docker engine (%s); install Docker (20.10+) to run the fault test", why)
	}
	ipt, why := iptablesAvailable()
	if !ipt {
		var left []string
		for _, k := range kinds {
			if !slices.Contains(netNemeses, k) {
				left = append(left, k)
			}
		}
		if len(left) == 0 {
			t.Skipf("nemesis: -nemesis=%s needs iptables and root (%s)", *flagNemesis, why)
		}
		t.Logf("nemesis: no iptables (%s): leaving out %v", why, netNemeses)
		kinds = left
	}
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()%1_000_000) + 1
	}
	steps := plan(seed, kinds, *flagNodes, *flagDuration)
	var sched strings.Builder
	for i, s := range steps {
		fmt.Fprintf(&sched, "%2d. %v\n", i+1, s)
	}
	t.Logf("nemesis=%s seed=%d nodes=%d schedule:\n%s", *flagNemesis, seed, *flagNodes, sched.String())

	c := newCluster(t, *flagNodes, ipt)
	j := &journal{start: time.Now(), logf: t.Logf}
	var (
		artMu   sync.Mutex
		history []lincheck.Entry
		viz     *porcupine.LinearizationInfo
		w       *workload
	)
	// On failure, save what a human needs beside the test output. This
	// cleanup runs before the containers are removed.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		artMu.Lock()
		defer artMu.Unlock()
		dir, err := filepath.Abs(filepath.Join(*flagArtifacts, c.prefix))
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			t.Logf("artifacts: %v", err)
			return
		}
		for _, n := range c.all() {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("node%d.log", n.id)), []byte(c.logs(n)), 0o644)
		}
		_ = os.WriteFile(filepath.Join(dir, "schedule.txt"),
			[]byte(fmt.Sprintf("nemesis=%s seed=%d nodes=%d duration=%v\n%s\njournal:\n%s", *flagNemesis, seed, *flagNodes, *flagDuration, sched.String(), j)), 0o644)
		if history == nil && w != nil {
			history = w.rec.Entries()
		}
		var h bytes.Buffer
		for _, e := range history {
			fmt.Fprintf(&h, "#%d client=%d %v %v %+v call=%d ret=%d at=%s took=%v\n", e.ID, e.Client, e.Op, e.Outcome, e.Result,
				e.Call, e.Return, e.CallAt.Format("15:04:05.000"), e.ReturnAt.Sub(e.CallAt).Round(time.Millisecond))
		}
		_ = os.WriteFile(filepath.Join(dir, "history.txt"), h.Bytes(), 0o644)
		if viz != nil {
			if err := lincheck.Visualize(*viz, filepath.Join(dir, "history.html")); err != nil {
				t.Logf("artifacts: visualization: %v", err)
			}
		}
		fmt.Printf("nemesis: failure artifacts (node logs, schedule, history, visualization) in %s\n", dir)
		t.Logf("failure artifacts in %s", dir)
	})

	cl, err := client.New(client.Config{Cluster: c.addrs(), ListenHost: c.gateway, TLS: c.clientTLS(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if _, err := waitLeader(cl, c, 30*time.Second); err != nil {
		t.Fatalf("the cluster never elected a leader: %v", err)
	}
	j.add("cluster up: %d nodes %v", len(c.nodes), c.addrs())

	// The workload and the nemesis.
	w = newWorkload(cl, *flagKeys, *flagKeyLife, *flagOpTimeout)
	w.start(*flagClients, seed)
	t.Cleanup(w.halt) // before the client closes, if the test stops early
	m := &nemesis{c: c, cl: cl, j: j}
	m.run(steps)

	// Heal everything and let the cluster settle, under load.
	j.add("final heal")
	unexpected := finalHeal(c, j)
	if _, err := waitLeader(cl, c, 30*time.Second); err != nil {
		t.Errorf("no stable leader within 30 s of the final heal: %v", err)
	}
	time.Sleep(2 * time.Second) // two more seconds of workload on the healed cluster
	w.halt()
	j.add("workload stopped: %v", w.rec.Counts())

	// A full restart, then one more read of every key.
	j.add("full restart")
	if err := c.kill(c.nodes...); err != nil {
		t.Fatal(err)
	}
	if err := c.start(c.nodes...); err != nil {
		t.Fatal(err)
	}
	if _, err := waitLeader(cl, c, 30*time.Second); err != nil {
		t.Errorf("no leader within 30 s of the full restart: %v", err)
	}
	finalClient := *flagClients
	for _, k := range w.keys() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = w.rec.Do(ctx, cl, finalClient, lincheck.Get(k))
		cancel()
	}
	j.add("final reads done")

	// Commit indexes, then stop the nodes and compare their logs.
	minCommit, commits := settledCommit(cl, c, 10*time.Second)
	j.add("commit indexes %v; comparing entries up to %d", commits, minCommit)
	if _, err := docker(append([]string{"stop", "-t", "10"}, c.names(c.nodes)...)...); err != nil {
		t.Errorf("docker stop: %v", err)
	}
	if *flagSabotage == "log" {
		sabotageLog(t, c.nodes[0], minCommit)
	}
	divergent, divDetail := compareLogs(c, minCommit)

	// Check the history.
	rec := w.rec
	entries := rec.Entries()
	if *flagSabotage == "stale" || *flagSabotage == "lost" {
		corrupt := map[string]func([]lincheck.Entry) (string, bool){
			"stale": lincheck.CorruptStaleRead, "lost": lincheck.CorruptLostWrite}[*flagSabotage]
		what, ok := corrupt(entries)
		if !ok {
			t.Fatalf("-sabotage=%s: the history has no operation to corrupt", *flagSabotage)
		}
		t.Logf("sabotage: %s", what)
		rec = lincheck.FromEntries(entries)
		entries = rec.Entries()
	}
	lost := lincheck.LostWrites(entries, finalClient)
	cnt := rec.Counts()
	pruned, dropped := pruneUnobserved(entries)
	t.Logf("checking %d operations (%d unknown writes nobody observed left out) on %d keys", len(pruned), dropped, len(w.keys()))
	start := time.Now()
	res, info := lincheck.FromEntries(pruned).CheckResult(*flagCheck)
	lin := map[porcupine.CheckResult]string{porcupine.Ok: "true", porcupine.Illegal: "false", porcupine.Unknown: "unknown"}[res]
	artMu.Lock()
	history, viz = entries, &info
	artMu.Unlock()
	snapshots, installs := 0, 0
	for _, n := range c.all() {
		l := c.logs(n)
		snapshots += strings.Count(l, `msg="snapshot taken"`)
		installs += strings.Count(l, `msg="installing a snapshot from the leader"`)
	}
	fmt.Printf("nemesis=%s seed=%d nodes=%d ops=%d ok=%d failed=%d unknown=%d linearizable=%s lost=%d divergent=%d snapshots=%d installs=%d replaced=%d tls=%v\n",
		*flagNemesis, seed, *flagNodes, cnt.Ops, cnt.OK, cnt.Failed, cnt.Unknown+cnt.Pending, lin, len(lost), divergent, snapshots, installs, m.replaced, *flagTLS)
	t.Logf("checked in %v", time.Since(start).Round(time.Millisecond))
	t.Logf("operations completed per second (ok/unknown), from the start of the workload:\n%s", timeline(entries, j.start))

	fail := func(format string, args ...any) {
		t.Errorf("nemesis=%s seed=%d nodes=%d: %s\nreproduce (same schedule; timings vary): go test -run 'TestNemesis$' -v -nemesis=%s -seed=%d -nodes=%d -duration=%v\nschedule:\n%s",
			*flagNemesis, seed, *flagNodes, fmt.Sprintf(format, args...), *flagNemesis, seed, *flagNodes, *flagDuration, sched.String())
	}
	if res != porcupine.Ok {
		fail("history not linearizable (porcupine: %s)", lin)
	}
	if len(lost) > 0 {
		fail("lost writes:\n  %s", strings.Join(lost, "\n  "))
	}
	if divergent > 0 {
		fail("logs diverge:\n  %s", strings.Join(divDetail, "\n  "))
	}
	if len(unexpected) > 0 {
		fail("nodes exited on their own:\n  %s", strings.Join(unexpected, "\n  "))
	}
	if m.members > 0 && m.replaced == 0 {
		fail("%d member steps but no server was replaced", m.members)
	}
	if m.lagged > 0 && installs == 0 {
		fail("a follower lagged %d times but no snapshot was ever installed", m.lagged)
	}
	if slices.Contains(commits, 0) {
		fail("a node reported no commit index after the final restart (commits %v): the log comparison is incomplete", commits)
	}
	if len(m.err) > 0 {
		fail("nemesis commands failed:\n  %s", strings.Join(m.err, "\n  "))
	}
	if c.ipt {
		if left, err := c.rulesLeft(); err != nil || left > 0 {
			fail("iptables rules left after the final heal: %d (%v)", left, err)
		}
	}
}

// sabotageLog rewrites entry idx of n's log (the node must be stopped), for
// -sabotage=log.
func sabotageLog(t *testing.T, n *node, idx uint64) {
	t.Helper()
	st, err := logstore.OpenBolt(filepath.Join(n.dir, "ketch-1.db"), logstore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := st.Load()
	if err != nil || idx == 0 || uint64(len(s.Entries)) < idx {
		t.Fatalf("-sabotage=log: cannot load entry %d of node %d: %v", idx, n.id, err)
	}
	e := s.Entries[idx-1]
	bad := &pb.Entry{Index: e.Index, Term: e.Term, Type: e.Type, Data: append([]byte("sabotage"), e.Data...)}
	if err := st.Write([]logstore.Update{{Entries: []*pb.Entry{bad}}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("sabotage: rewrote entry %d of node %d", idx, n.id)
}

// nemesisKinds turns -nemesis into the kinds a schedule draws from.
func nemesisKinds(name string) ([]string, error) {
	if name == "mixed" {
		return slices.Clone(allNemeses), nil
	}
	if slices.Contains(allNemeses, name) {
		return []string{name}, nil
	}
	return nil, fmt.Errorf("-nemesis=%s: use mixed or one of %s", name, strings.Join(allNemeses, ", "))
}

// finalHeal removes every fault: rules, pauses, stopped containers. It
// returns the nodes that stopped during the run without the nemesis killing
// them, other than by a fail-stop (exit 3, past the restart intensity: by
// design, and an outer supervisor — the nemesis, at its next start of that
// node, or this heal — restarts it).
func finalHeal(c *cluster, j *journal) []string {
	if c.ipt {
		c.healNetwork()
	}
	var errs []string
	for _, n := range c.nodes {
		st, _, err := c.state(n)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		switch st {
		case "paused":
			if _, err := docker("unpause", n.name); err != nil {
				errs = append(errs, err.Error())
			}
		case "running":
		default:
			if err := c.start(n); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.exits {
		what := fmt.Sprintf("node %d had exited on its own with code %d", e.id, e.code)
		if e.code == 3 {
			j.add("%s (fail-stop: its supervisor gave up); restarted", what)
			continue
		}
		j.add("%s; restarted", what)
		errs = append(errs, what)
	}
	return errs
}

// statuses asks every node for its status, in parallel.
func statuses(cl *client.Client, c *cluster) []*pb.NodeStatus {
	out := make([]*pb.NodeStatus, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			st, err := cl.Status(ctx, n.addr())
			if err == nil {
				out[i] = st
			}
		}()
	}
	wg.Wait()
	return out
}

// waitLeader polls until every node answers and all follow one leader in
// one term.
func waitLeader(cl *client.Client, c *cluster, timeout time.Duration) ([]*pb.NodeStatus, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		sts := statuses(cl, c)
		last = describe(sts)
		if ok := agreed(sts); ok {
			return sts, nil
		}
		if time.Now().After(deadline) {
			return sts, fmt.Errorf("%w: %s", errNoLeader, last)
		}
		time.Sleep(100 * time.Millisecond) // a polling tick
	}
}

func agreed(sts []*pb.NodeStatus) bool {
	var leader, term uint64
	for _, s := range sts {
		if s == nil {
			return false
		}
		if s.Role == "leader" {
			if leader != 0 {
				return false
			}
			leader, term = s.Id, s.Term
		}
	}
	if leader == 0 {
		return false
	}
	for _, s := range sts {
		if s.Leader != leader || s.Term != term {
			return false
		}
	}
	return true
}

func describe(sts []*pb.NodeStatus) string {
	var parts []string
	for i, s := range sts {
		if s == nil {
			parts = append(parts, fmt.Sprintf("#%d unreachable", i+1))
			continue
		}
		parts = append(parts, fmt.Sprintf("%d:%s term=%d leader=%d commit=%d", s.Id, s.Role, s.Term, s.Leader, s.Commit))
	}
	return strings.Join(parts, "; ")
}

// settledCommit polls the nodes' commit indexes until every node has
// reached the highest one first seen (or timeout passes) and returns the
// smallest, with every node's.
func settledCommit(cl *client.Client, c *cluster, timeout time.Duration) (uint64, []uint64) {
	deadline := time.Now().Add(timeout)
	var target uint64
	for {
		sts := statuses(cl, c)
		commits := make([]uint64, len(sts))
		lowest := ^uint64(0)
		for i, s := range sts {
			if s != nil {
				commits[i] = s.Commit
			}
			lowest = min(lowest, commits[i])
		}
		if target == 0 { // the first poll sets the target
			for _, x := range commits {
				target = max(target, x)
			}
		}
		if lowest >= target || time.Now().After(deadline) {
			return lowest, commits
		}
		time.Sleep(100 * time.Millisecond) // a polling tick
	}
}

// compareLogs opens every node's bbolt file (the nodes must be stopped)
// and compares the entries up to upTo that every node still holds (after
// the highest compaction point). It returns how many indexes differ between
// some two nodes (or are missing on one), and a description of the first.
// Snapshots are compared too: two nodes' snapshots through the same index
// and term must be the same bytes (the key-value store writes its state in
// key order), which checks the compacted prefix by its state.
func compareLogs(c *cluster, upTo uint64) (int, []string) {
	logs := make([]logstore.State, len(c.nodes))
	var detail []string
	from := uint64(1)
	for i, n := range c.nodes {
		st, err := logstore.OpenBolt(filepath.Join(n.dir, "ketch-1.db"), logstore.BoltOptions{LockTimeout: 5 * time.Second})
		if err != nil {
			detail = append(detail, fmt.Sprintf("node %d: %v", n.id, err))
			continue
		}
		s, err := st.Load()
		_ = st.Close()
		if err != nil {
			detail = append(detail, fmt.Sprintf("node %d: %v", n.id, err))
			continue
		}
		logs[i] = s
		from = max(from, s.Base.Index+1)
	}
	if len(detail) > 0 {
		return len(detail), detail
	}
	divergent := 0
	entry := func(l logstore.State, idx uint64) *pb.Entry {
		if k := idx - l.Base.Index - 1; idx > l.Base.Index && k < uint64(len(l.Entries)) && l.Entries[k].Index == idx {
			return l.Entries[k]
		}
		return nil
	}
	for idx := from; idx <= upTo; idx++ {
		ref := entry(logs[0], idx)
		same := ref != nil
		for i := 1; same && i < len(logs); i++ {
			e := entry(logs[i], idx)
			same = e != nil && e.Term == ref.Term && e.Type == ref.Type && bytes.Equal(e.Data, ref.Data)
		}
		if !same {
			divergent++
			if len(detail) < 10 {
				var d []string
				for i, l := range logs {
					if e := entry(l, idx); e != nil {
						d = append(d, fmt.Sprintf("node %d term %d type %v %d bytes", c.nodes[i].id, e.Term, e.Type, len(e.Data)))
					} else {
						d = append(d, fmt.Sprintf("node %d missing (log from %d)", c.nodes[i].id, l.Base.Index+1))
					}
				}
				detail = append(detail, fmt.Sprintf("index %d: %s", idx, strings.Join(d, "; ")))
			}
		}
	}
	snaps := map[string][]byte{} // snapshot file name -> the first node's bytes
	owner := map[string]uint64{}
	for _, n := range c.nodes {
		files, _ := filepath.Glob(filepath.Join(n.dir, "snapshots", "snap-*.ksnap"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			name := filepath.Base(f)
			if ref, ok := snaps[name]; !ok {
				snaps[name], owner[name] = b, n.id
			} else if !bytes.Equal(ref, b) {
				divergent++
				detail = append(detail, fmt.Sprintf("snapshot %s differs between node %d and node %d", name, owner[name], n.id))
			}
		}
	}
	return divergent, detail
}

// timeline buckets the operations by the second they completed in, ok and
// unknown, so the availability during each fault shows.
func timeline(entries []lincheck.Entry, start time.Time) string {
	type bucket struct{ ok, unknown int }
	var bs []bucket
	for _, e := range entries {
		if e.ReturnAt.IsZero() {
			continue
		}
		s := int(e.ReturnAt.Sub(start) / time.Second)
		if s < 0 {
			s = 0
		}
		for len(bs) <= s {
			bs = append(bs, bucket{})
		}
		if e.Outcome == lincheck.OK {
			bs[s].ok++
		} else {
			bs[s].unknown++
		}
	}
	var b strings.Builder
	for i, x := range bs {
		fmt.Fprintf(&b, "%4d/%-3d", x.ok, x.unknown)
		if i%10 == 9 {
			b.WriteString("\n")
		}
	}
	return b.String()
}
