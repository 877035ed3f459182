package process

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/tests/lincheck"
	bolt "go.etcd.io/bbolt"
)

// Membership changes on real processes (issue 13, item 9): `ketch node
// --join` and `ketch member add|promote|remove`, under a recorded client
// load that the linearizability checker judges.

var removedFor = flag.Duration("removed-for", 60*time.Second,
	"TestRemovedServerDoesNotDisrupt: how long the removed server keeps running (10s with -short)")

// ------------------------------------------------------------- helpers

// memberJSON is one member in `ketch member list --json` and in status.
type memberJSON struct {
	ID      uint64 `json:"id"`
	Address string `json:"address"`
	Role    string `json:"role"`
}

// mstatus is one object of `ketch status --json`, with the snapshot and
// membership keys.
type mstatus struct {
	nodeStatus
	SnapshotIndex      uint64            `json:"snapshot_index"`
	FirstIndex         uint64            `json:"first_index"`
	Members            []memberJSON      `json:"members"`
	ConfigurationIndex uint64            `json:"configuration_index"`
	NotMember          bool              `json:"not_member"`
	Match              map[uint64]uint64 `json:"match"`
}

func (c *cluster) addrsOf(ids []uint64) string {
	var l []string
	for _, id := range ids {
		l = append(l, c.nodes[id].addr)
	}
	return strings.Join(l, ",")
}

// statusOf runs `ketch status --json` against the nodes ids (in that
// order); unreachable ones have Role "unreachable" and an Error.
func (c *cluster) statusOf(ids []uint64, timeout time.Duration) []mstatus {
	c.t.Helper()
	r := runCLI(c.t, "status", "--cluster", c.addrsOf(ids), "--json", "--timeout", timeout.String())
	// The CLI must not panic; a node's crash shows in stdout (last_crash),
	// which noRestarts reports.
	checkNoPanic(c.t, cliResult{args: r.args, stderr: r.stderr, code: r.code})
	if r.code != 0 && r.code != 2 {
		c.t.Fatalf("status: %s", r)
	}
	if _, err := parseStatus(r.stdout, len(ids)); err != nil {
		c.t.Fatalf("%v\n%s", err, r)
	}
	var sts []mstatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
		c.t.Fatalf("status --json: %v\n%s", err, r)
	}
	return sts
}

func mbyID(sts []mstatus, id uint64) (mstatus, bool) {
	for _, s := range sts {
		if s.ID == id && s.Error == "" {
			return s, true
		}
	}
	return mstatus{}, false
}

// waitVoters polls until every node of ids answers and follows one leader
// among them in one term, and returns the leader and every status.
func (c *cluster) waitVoters(timeout time.Duration, ids ...uint64) (mstatus, []mstatus) {
	c.t.Helper()
	var lead mstatus
	var sts []mstatus
	poll(c.t, timeout, 20*time.Millisecond, fmt.Sprintf("nodes %v follow one leader", ids), func() (bool, string) {
		c.checkAlive()
		sts = c.statusOf(ids, 500*time.Millisecond)
		var ls []mstatus
		for _, s := range sts {
			if s.Role == "leader" {
				ls = append(ls, s)
			}
		}
		if len(ls) != 1 {
			return false, fmt.Sprintf("%d leaders: %+v", len(ls), sts)
		}
		lead = ls[0]
		for _, s := range sts {
			if s.Error != "" || s.Leader != lead.ID || s.Term != lead.Term {
				return false, fmt.Sprintf("node %s does not follow %d in term %d: %+v", s.Address, lead.ID, lead.Term, s)
			}
		}
		return true, ""
	})
	return lead, sts
}

// waitCaughtUp polls until node id's applied index is within slack of the
// leader's commit index (the leader among voters) and returns its status.
func (c *cluster) waitCaughtUp(timeout time.Duration, id uint64, slack uint64, voters ...uint64) mstatus {
	c.t.Helper()
	ids := append(slices.Clone(voters), id)
	var n mstatus
	poll(c.t, timeout, 20*time.Millisecond, fmt.Sprintf("node %d catches up", id), func() (bool, string) {
		c.checkAlive()
		sts := c.statusOf(ids, 500*time.Millisecond)
		var lead mstatus
		for _, s := range sts {
			if s.Role == "leader" && slices.Contains(voters, s.ID) {
				lead = s
			}
		}
		var ok bool
		n, ok = mbyID(sts, id)
		switch {
		case lead.ID == 0:
			return false, fmt.Sprintf("no leader among %v: %+v", voters, sts)
		case !ok:
			return false, fmt.Sprintf("node %d does not answer: %+v", id, sts)
		case n.Applied+slack < lead.Commit:
			return false, fmt.Sprintf("node %d applied %d, leader %d commit %d", id, n.Applied, lead.ID, lead.Commit)
		}
		return true, ""
	})
	return n
}

// noRestarts fails the test for each of the nodes ids whose supervisor
// restarted a child actor (a crash, rest_for_one) since its process
// started.
func (c *cluster) noRestarts(what string, ids ...uint64) {
	c.t.Helper()
	for _, s := range c.statusOf(ids, time.Second) {
		var kids []string
		for name, ch := range s.Children {
			if ch.Restarts > 0 {
				k := fmt.Sprintf("%s restarted %d times", name, ch.Restarts)
				if ch.LastCrash != "" {
					k += fmt.Sprintf(" (crashed: %s)", ch.LastCrash)
				}
				kids = append(kids, k)
			}
		}
		if len(kids) > 0 {
			slices.Sort(kids)
			c.t.Errorf("%s: node %d's actors: %s", what, s.ID, strings.Join(kids, "; "))
		}
	}
}

// memberList runs `ketch member list --json` against addrs.
func memberList(t testing.TB, addrs string) []memberJSON {
	t.Helper()
	r := runCLI(t, "member", "list", "--cluster", addrs, "--json")
	if r.code != 0 {
		t.Fatalf("member list: %s", r)
	}
	var ms []memberJSON
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
		t.Fatalf("member list --json is not a JSON array of {id, address, role}: %v\n%s", err, r)
	}
	return ms
}

// member runs `ketch member ARGS...` and fails the test unless it exits 0.
func member(t testing.TB, args ...string) cliResult {
	t.Helper()
	r := runCLI(t, append([]string{"member"}, args...)...)
	checkNoPanic(t, r)
	if r.code != 0 {
		t.Fatalf("want exit 0, got %s", r)
	}
	return r
}

// retire stops node id with SIGTERM, waits for it to exit 0 (see stop)
// and retires it: the harness no longer expects it to run.
func (c *cluster) retire(id uint64) {
	c.t.Helper()
	c.stop(id)
	c.nodes[id].cmd = nil
}

// dataDirFree checks that no process holds node id's log: bbolt locks
// its file while it is open, so opening it here must not block.
func (c *cluster) dataDirFree(id uint64) error {
	path := filepath.Join(c.nodes[id].dir, "ketch-1.db")
	if _, err := os.Stat(path); err != nil {
		return err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("node %d's data dir is still in use: %s: %w", id, path, err)
	}
	return db.Close()
}

// logsContain reports whether any of node id's logs contains s.
func (c *cluster) logsContain(id uint64, s string) bool { return c.logCount(id, s) > 0 }

// logCount counts the lines of node id's logs that contain s.
func (c *cluster) logCount(id uint64, s string) int {
	n := 0
	for _, l := range c.nodes[id].logs {
		if b, err := os.ReadFile(l); err == nil {
			n += strings.Count(string(b), s)
		}
	}
	return n
}

// removedMsg is what a node logs once it learnt that it was removed.
const removedMsg = "this node was removed from the cluster"

// wait spends d (a measurement period, not a wait for a condition),
// checking every 100 ms that the nodes still run.
func (c *cluster) wait(d time.Duration) {
	c.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		c.checkAlive()
		time.Sleep(min(100*time.Millisecond, time.Until(end)))
	}
}

func without(ids []uint64, id uint64) []uint64 {
	return slices.DeleteFunc(slices.Clone(ids), func(x uint64) bool { return x == id })
}

func latencies(ds []time.Duration) string {
	return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d puts",
		float64(quantile(ds, 0.5).Microseconds())/1000, float64(quantile(ds, 0.99).Microseconds())/1000,
		float64(quantile(ds, 1).Microseconds())/1000, len(ds))
}

// ---------------------------------------------------------------- tests

// TestReplaceEveryServer replaces each server of a three-node cluster, one
// at a time, under a recorded client load (thesis §4.2): a new server
// started with --join is added as a learner, catches up (by snapshot: the
// state is 32 MiB and every log is compacted), is promoted, and an old
// server is removed and stopped; the second removal is the leader's (the
// third's too, if the old server leads by then), which hands leadership
// over so that commits resume at once (thesis §4.2.2). Between steps a
// node is killed with SIGKILL and restarted with the same command. No
// node's actors may crash. At the end the history is linearizable, no
// acknowledged write is lost, the new servers are the voters and the old
// data dirs are free.
//
// It also measures the commit latency of acknowledged puts during a
// baseline period and while each learner catches up; the target is
// a catch-up p99 within 1.5x of the baseline's. The figures are reported
// (go test -v), not asserted: on a loaded 2-core machine, with the nodes,
// three race-built clients and the CLI processes sharing it, p99s over a
// few hundred puts swing by more than that from run to run.
func TestReplaceEveryServer(t *testing.T) {
	const (
		preloadKeys  = 1024
		preloadBytes = 32 << 10 // 32 MiB of state
		slack        = 16       // entries a caught-up server may lag the leader's commit
		handOver     = 3 * time.Second
		baseFor      = 5 * time.Second
		// Each client pauses between operations, so that the load leaves
		// the machine some room and latency measures the cluster, not
		// the queue for the CPU.
		pace = 2 * time.Millisecond
	)
	// Every log is compacted to 32 entries behind each snapshot, so a new
	// server can only catch up from a snapshot, sent in 256 KiB chunks.
	snapFlags := func(args []string) []string {
		return append(args, "--snapshot-entries", "256", "--snapshot-trailing", "32", "--snapshot-chunk-bytes", strconv.Itoa(256<<10))
	}
	began := time.Now()
	c := newClusterWith(t, 3, snapFlags)
	old := []uint64{1, 2, 3}
	for i, a := range freeAddrs(t, 3) {
		c.addJoiner(uint64(4+i), a)
	}
	lead, _ := c.waitVoters(15*time.Second, old...)

	// The state: preload keys of preloadBytes each, then a snapshot on
	// every node (which meets the automatic one through the same index:
	// the regression of actors/state
	// TestSnapshotAskedDuringAWriteOfTheSameIndexKeepsTheFile).
	pre := startClient(t, "preload", c.addrList()[:3], 0, filepath.Join(c.logs, "client-preload.log"))
	if _, f, err := pre.call("load %d %d %d 16 20s", preloadKeys, preloadKeys, preloadBytes); err != nil {
		t.Fatalf("preload: %v (%v)", err, f)
	}
	mustCLI(t, 0, "snapshot", "--cluster", c.addrsOf(old))
	for _, s := range c.statusOf(old, time.Second) {
		if s.FirstIndex <= 1 {
			t.Fatalf("node %d: log starts at %d after a snapshot; want it compacted", s.ID, s.FirstIndex)
		}
	}

	// The load: three clients, each knowing every address the cluster will
	// ever have.
	var procs []*clientProc
	for i := range 3 {
		name := fmt.Sprintf("kv%d", i)
		procs = append(procs, startKVClient(t, name, c.addrList(), filepath.Join(c.logs, "client-"+name+".log")))
	}
	w := newKVLoad(procs, 6, 4*time.Second, 5*time.Second, pace)
	w.start(uint64(time.Now().UnixNano()))
	defer w.halt()
	// The baseline polls status as the catch-up does (each poll is a CLI
	// process, which costs the machine as much as the change itself).
	baseStart := time.Now()
	for time.Since(baseStart) < baseFor {
		c.checkAlive()
		c.statusOf(old, 500*time.Millisecond)
		time.Sleep(20 * time.Millisecond) // the catch-up's polling tick
	}
	baseline := [2]time.Time{baseStart, time.Now()}

	voters := slices.Clone(old)
	var catchUps [][2]time.Time
	logged := map[uint64]bool{} // old node -> it logged removedMsg
	replace := func(step int, oldID, newID uint64) {
		t.Helper()
		// The new server, then add it as a learner.
		c.start(newID)
		poll(t, 10*time.Second, 20*time.Millisecond, fmt.Sprintf("node %d answers", newID), func() (bool, string) {
			c.checkAlive()
			s, ok := mbyID(c.statusOf([]uint64{newID}, 500*time.Millisecond), newID)
			return ok && s.NotMember, fmt.Sprintf("%+v", s)
		})
		addAt := time.Now()
		member(t, "add", "--cluster", c.addrsOf(voters), fmt.Sprintf("%d=%s", newID, c.nodes[newID].addr), "--learner")
		n := c.waitCaughtUp(30*time.Second, newID, slack, voters...)
		caught := time.Now()
		catchUps = append(catchUps, [2]time.Time{addAt, caught})
		if n.SnapshotIndex == 0 || !c.logsContain(newID, "installing a snapshot from the leader") {
			t.Errorf("step %d: node %d caught up without a snapshot (snapshot_index %d)", step, newID, n.SnapshotIndex)
		}
		for _, m := range n.Members {
			if m.ID == newID && m.Role != "learner" {
				t.Errorf("step %d: node %d is a %s before its promotion", step, newID, m.Role)
			}
		}
		member(t, "promote", "--cluster", c.addrsOf(voters), fmt.Sprint(newID))
		voters = append(voters, newID)

		// Remove the old server; if it leads, commits must resume soon.
		lead, _ := c.waitVoters(10*time.Second, voters...)
		removeAt := time.Now()
		member(t, "remove", "--cluster", c.addrsOf(voters), fmt.Sprint(oldID))
		removed := time.Now()
		voters = without(voters, oldID)
		nl, _ := c.waitVoters(10*time.Second, voters...)
		if lead.ID == oldID {
			c.wait(time.Second) // more load after the hand-over, for the gap to end
			gap := w.longestGap(removeAt, time.Now())
			t.Logf("step %d: removed the leader %d (term %d) in %v; node %d leads in term %d; longest time without an acknowledged put: %v",
				step, oldID, lead.Term, removed.Sub(removeAt).Round(time.Millisecond), nl.ID, nl.Term, gap.Round(time.Millisecond))
			if gap > handOver {
				t.Errorf("step %d: no put was acknowledged for %v around the removal of the leader; want the hand-over within %v", step, gap, handOver)
			}
		}
		poll(t, 10*time.Second, 20*time.Millisecond, fmt.Sprintf("node %d is no member", oldID), func() (bool, string) {
			s, ok := mbyID(c.statusOf([]uint64{oldID}, 500*time.Millisecond), oldID)
			return ok && s.NotMember && s.Role != "leader", fmt.Sprintf("%+v", s)
		})
		// Reported, not asserted: a removed follower learns that its
		// removal committed only if the leader knew, when it committed,
		// that the follower had the entry (the leader's last heartbeat to
		// it carries the commit index but no entries; fsm
		// configCommitted), so whether it logs removedMsg is a race.
		logged[oldID] = c.logsContain(oldID, removedMsg)
		// A removed leader's fsm must not crash either. (It can today: when
		// the append response that commits its removal comes from the
		// voter it hands over to, fsm handleAppendResponse makes it a
		// follower through sendTimeoutNow, which clears its progress, and
		// then calls sendAppend, a nil dereference; the TimeoutNow is lost
		// with the step, and commits wait for an election.)
		c.noRestarts(fmt.Sprintf("step %d, before node %d stops", step, oldID), oldID)
		c.retire(oldID)
		if err := c.dataDirFree(oldID); err != nil {
			t.Error(err)
		}
		t.Logf("step %d: node %d replaced node %d: learner caught up in %v (snapshot index %d), voters now %v",
			step, newID, oldID, caught.Sub(addAt).Round(time.Millisecond), n.SnapshotIndex, voters)
	}
	// killRestart kills node id with SIGKILL, restarts it with the same
	// command and waits until it caught up.
	killRestart := func(id uint64) {
		t.Helper()
		c.noRestarts(fmt.Sprintf("before node %d is killed", id), id)
		c.kill(id)
		c.reap(id)
		c.start(id)
		c.waitCaughtUp(30*time.Second, id, slack, voters...)
		c.waitVoters(10*time.Second, voters...)
		t.Logf("killed node %d with SIGKILL and restarted it: caught up", id)
	}

	// Step 1: an old follower goes; then the newcomer is killed and
	// restarted (a joined server restarts with --join).
	var f uint64
	for _, id := range old {
		if id != lead.ID {
			f = id
			break
		}
	}
	replace(1, f, 4)
	killRestart(4)

	// Step 2: the leader goes (if the kill moved leadership to node 4,
	// an old server is made leader first); then the new leader is killed.
	lead, _ = c.waitVoters(10*time.Second, voters...)
	if !slices.Contains(old, lead.ID) {
		to := without(voters, 4)[0]
		mustCLI(t, 0, "transfer", "--cluster", c.addrsOf(voters), "--to", fmt.Sprint(to))
		lead, _ = c.waitVoters(10*time.Second, voters...)
	}
	replace(2, lead.ID, 5)
	lead, _ = c.waitVoters(10*time.Second, voters...)
	killRestart(lead.ID)

	// Step 3: the last old server goes, whatever its role.
	var last uint64
	for _, id := range voters {
		if slices.Contains(old, id) {
			last = id
		}
	}
	replace(3, last, 6)

	// The load stops; every key is read back.
	c.wait(2 * time.Second)
	w.halt()
	final := len(procs)
	w.finalReads(final)
	want := strings.Repeat("v", preloadBytes)
	for i := range preloadKeys {
		k := fmt.Sprintf("key%06d", i)
		a, err := kvDo(procs[0], lincheck.Get(k), 10*time.Second)
		if err != nil || !a.res.Found || string(a.res.Value) != want {
			t.Errorf("preloaded key %s: found %v, %d bytes, err %v %s; want %d bytes", k, a.res.Found, len(a.res.Value), err, a.err, preloadBytes)
			break
		}
	}
	for _, e := range w.errs {
		t.Errorf("client: %s", e)
	}

	c.noRestarts("at the end", voters...)

	// The configuration names exactly the new servers, as voters.
	ms := memberList(t, c.addrsOf(voters))
	wantMs := []memberJSON{{4, c.nodes[4].addr, "voter"}, {5, c.nodes[5].addr, "voter"}, {6, c.nodes[6].addr, "voter"}}
	if !slices.Equal(ms, wantMs) {
		t.Errorf("member list: %+v, want %+v", ms, wantMs)
	}
	for _, id := range old {
		if c.nodes[id].running() {
			t.Errorf("old node %d still runs", id)
		}
		if err := c.dataDirFree(id); err != nil {
			t.Error(err)
		}
	}

	t.Logf("removed nodes that logged %q before they were stopped: %v", removedMsg, logged)
	summary := w.checkHistory(t, final, time.Minute, c.logs)
	t.Logf("history: %s", summary)
	base := w.putsIn(baseline)
	during := w.putsIn(catchUps...)
	var caughtFor time.Duration
	for _, cu := range catchUps {
		caughtFor += cu[1].Sub(cu[0])
	}
	t.Logf("commit latency, baseline (%v): %s", baseline[1].Sub(baseline[0]).Round(time.Millisecond), latencies(base))
	t.Logf("commit latency, while a learner catches up (3 windows, %v in all): %s", caughtFor.Round(time.Millisecond), latencies(during))
	if p := quantile(base, 0.99); p > 0 {
		t.Logf("catch-up p99 / baseline p99 = %.2f (the issue's target: at most 1.5; reported, not asserted)",
			float64(quantile(during, 0.99))/float64(p))
	}
	t.Logf("replaced every server in %v", time.Since(began).Round(time.Millisecond))
}

// TestRemovedServerDoesNotDisrupt: a follower removed from the cluster
// keeps running (for -removed-for, 60 s by default) under a light load; it
// must not disrupt the others (thesis §4.2.3): the remaining voters keep
// their leader and term throughout, the removed server never campaigns
// (its term does not move) and `ketch status` shows it not_member.
func TestRemovedServerDoesNotDisrupt(t *testing.T) {
	d := *removedFor
	if testing.Short() {
		d = min(d, 10*time.Second)
	}
	c := newCluster(t, 3, false)
	lead, _ := c.waitVoters(15*time.Second, c.ids...)
	f := lead.ID%3 + 1
	voters := without(c.ids, f)

	cl := startKVClient(t, "kv", c.addrList(), filepath.Join(c.logs, "client-kv.log"))
	w := newKVLoad([]*clientProc{cl}, 4, 4*time.Second, 5*time.Second, 20*time.Millisecond)
	w.start(uint64(time.Now().UnixNano()))
	defer w.halt()

	const election = "starting an election"
	elections := c.logCount(f, election) // at the start, before the removal
	member(t, "remove", "--cluster", c.addrs(), fmt.Sprint(f))
	var removed mstatus
	poll(t, 10*time.Second, 20*time.Millisecond, fmt.Sprintf("node %d is no member", f), func() (bool, string) {
		var ok bool
		removed, ok = mbyID(c.statusOf([]uint64{f}, 500*time.Millisecond), f)
		return ok && removed.NotMember, fmt.Sprintf("%+v", removed)
	})
	lead, _ = c.waitVoters(10*time.Second, voters...)
	t.Logf("removed follower %d (term %d); leader %d in term %d; watching for %v", f, removed.Term, lead.ID, lead.Term, d)

	start := time.Now()
	rounds, answered := 0, map[uint64]int{}
	for time.Since(start) < d {
		c.checkAlive()
		rounds++
		for _, s := range c.statusOf(c.ids, time.Second) {
			if s.Error != "" {
				continue // a status that timed out on a loaded machine says nothing
			}
			answered[s.ID]++
			switch {
			case s.ID == f && (!s.NotMember || s.Role != "follower" || s.Term != removed.Term):
				t.Fatalf("after %v: the removed node %d is %s in term %d (not_member %v); want an inert follower in term %d",
					time.Since(start).Round(time.Millisecond), f, s.Role, s.Term, s.NotMember, removed.Term)
			case s.ID != f && (s.Term != lead.Term || s.Leader != lead.ID || s.NotMember):
				t.Fatalf("after %v: node %d is %s in term %d following %d (not_member %v); want node %d to lead in term %d throughout",
					time.Since(start).Round(time.Millisecond), s.ID, s.Role, s.Term, s.Leader, s.NotMember, lead.ID, lead.Term)
			}
		}
		time.Sleep(250 * time.Millisecond) // a polling tick
	}
	for _, id := range c.ids {
		if answered[id] < rounds*9/10 {
			t.Errorf("node %d answered %d of %d status polls", id, answered[id], rounds)
		}
	}
	if n := c.logCount(f, election) - elections; n > 0 {
		t.Errorf("the removed node %d started %d elections", f, n)
	}
	w.halt()
	w.finalReads(1)
	for _, e := range w.errs {
		t.Errorf("client: %s", e)
	}
	t.Logf("removed node logged %q: %v; %d status polls", removedMsg, c.logsContain(f, removedMsg), rounds)
	t.Logf("history: %s", w.checkHistory(t, 1, time.Minute, c.logs))
	if w.acked < int(d/time.Second) {
		t.Errorf("only %d operations acknowledged in %v", w.acked, d)
	}
}

// TestMemberAdd: adding a voter at an address nobody listens on fails
// (exit 2, one line) and leaves the configuration as it was (thesis
// §4.2.1: the catch-up never starts); adding one whose server starts a
// second after the command succeeds (the catch-up waits for it).
func TestMemberAdd(t *testing.T) {
	c := newCluster(t, 3, false)
	founders := slices.Clone(c.ids)
	lead, _ := c.waitVoters(15*time.Second, founders...)
	mustCLI(t, 0, "put", "--cluster", c.addrs(), "before", "1")
	before := memberList(t, c.addrs())
	lead, _ = c.waitVoters(10*time.Second, founders...)

	// Unreachable: refused, nothing changed.
	dead := freeAddrs(t, 1)[0]
	r := runCLI(t, "member", "add", "--cluster", c.addrs(), "4="+dead)
	checkOneLineFailure(t, r)
	t.Logf("member add of an unreachable server: exit %d after %v: %s", r.code, r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
	if ms := memberList(t, c.addrs()); !slices.Equal(ms, before) {
		t.Errorf("after a failed add the members are %+v, want %+v", ms, before)
	}
	_, sts := c.waitVoters(10*time.Second, founders...)
	for _, s := range sts {
		if s.ConfigurationIndex != lead.ConfigurationIndex || !slices.Equal(s.Members, before) {
			t.Errorf("node %d: configuration %d %+v after a failed add; want %d %+v", s.ID, s.ConfigurationIndex, s.Members, lead.ConfigurationIndex, before)
		}
	}
	mustCLI(t, 0, "put", "--cluster", c.addrs(), "after-failed-add", "1")

	// Added before it starts: the command waits for it.
	p := c.addJoiner(5, freeAddrs(t, 1)[0])
	type result struct {
		r   cliResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := execCLI(c.bin, "member", "add", "--cluster", c.addrsOf(founders), fmt.Sprintf("5=%s", p.addr))
		done <- result{r, err}
	}()
	select {
	case x := <-done:
		t.Fatalf("member add returned before its server started: %s (%v)", x.r, x.err)
	case <-time.After(time.Second): // the scenario: the server starts a second late
	}
	c.start(5)
	x := <-done // execCLI bounds it (cliGuard)
	if x.err != nil || x.r.code != 0 {
		t.Fatalf("member add of a server that started late: %s (%v)", x.r, x.err)
	}
	t.Logf("member add of a server started 1 s later: exit 0 after %v", x.r.took.Round(time.Millisecond))
	want := append(slices.Clone(before), memberJSON{5, p.addr, "voter"})
	if ms := memberList(t, c.addrs()); !slices.Equal(ms, want) {
		t.Errorf("members %+v, want %+v", ms, want)
	}
	voters := append(slices.Clone(founders), 5)
	c.waitCaughtUp(10*time.Second, 5, 0, founders...)
	c.waitVoters(10*time.Second, voters...)
	mustCLI(t, 0, "put", "--cluster", c.addrsOf(voters), "after-add", "1")
	if r := mustCLI(t, 0, "get", "--cluster", p.addr, "before"); r.stdout != "1\n" {
		t.Errorf("get through the new server: %s", r)
	}
}
