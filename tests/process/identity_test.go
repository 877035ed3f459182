package process

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stop sends node id SIGTERM (a clean stop: the store moves its journal
// into the bbolt file) and waits for it to exit 0.
func (c *cluster) stop(id uint64) {
	c.t.Helper()
	if code := c.stopCode(id); code != 0 {
		c.t.Fatalf("node %d exited %d after SIGTERM, want 0", id, code)
	}
}

// stopCode sends node id SIGTERM and returns its exit code.
func (c *cluster) stopCode(id uint64) int {
	c.t.Helper()
	p := c.nodes[id]
	if !p.running() {
		c.t.Fatalf("node %d is not running", id)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatalf("SIGTERM node %d: %v", id, err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("node %d did not exit within 15s of SIGTERM", id)
	}
	code, _ := runningOrExit(p, 0)
	return code
}

// Regression (issue 11): split brain from one restart with the wrong flags.
// With node 1 down, a key was written; node 1, restarted on its data dir
// without --peers, came up as a one-node cluster, elected itself and took
// writes beside the real leader, and once restarted correctly the other
// nodes fail-stopped and acknowledged keys were gone. Now the data dir
// records who the node is: without --peers node 1 uses the recorded
// members and follows the real leader, and another --id, --cluster-id,
// --listen or --peers is refused at once with one line.
func TestIdentityOnDisk(t *testing.T) {
	c := newCluster(t, 3, false)
	c.waitLeader(15*time.Second, c.ids...)
	cl := startClient(t, "identity", c.addrList(), 0, filepath.Join(c.logs, "client-identity.log"))
	acked := map[string]string{}
	put := func(k, v string) {
		t.Helper()
		if _, err := cl.put(k, v, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		acked[k] = v
	}
	put("before", "1")

	c.kill(1)
	c.reap(1)
	c.waitLeader(10*time.Second, 2, 3)
	put("while-down", "2")

	// Every wrong identity on node 1's data dir is refused, one line, exit 2.
	for _, tc := range []struct {
		name, flag, value, mention string
		args                       []string
	}{
		{"node 2's command on node 1's data dir", "--data", c.nodes[1].dir, "belongs to node 1", c.nodeArgs(2)},
		{"another cluster id", "--cluster-id", "other", `belongs to cluster "ketch"`, c.nodeArgs(1)},
		{"another address", "--listen", freeAddrs(t, 1)[0], "--listen", c.nodeArgs(1)},
		{"other peers", "--peers", "2=" + c.nodes[2].addr, "--peers", c.nodeArgs(1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, withFlag(tc.args, tc.flag, tc.value)...)
			checkOneLineFailure(t, r)
			if !strings.Contains(r.stderr, tc.mention) {
				t.Errorf("the error does not say %q: %s", tc.mention, r)
			}
		})
	}

	// The reported restart: node 1 without --peers. It must follow the
	// cluster's leader, not lead a cluster of its own.
	c.startWith(1, func(a []string) []string { return withFlag(a, "--peers", "") })
	// Every node, node 1 included, follows one leader in one term: a node 1
	// leading a cluster of its own would be a second leader (of another
	// term), and waitLeader would time out.
	c.waitLeader(15*time.Second, c.ids...)
	put("after", "3")
	// No second leader while it catches up: every answer names one leader
	// per term, and node 1 knows the cluster's.
	poll(t, 10*time.Second, 50*time.Millisecond, "node 1 caught up", func() (bool, string) {
		sts := c.status(time.Second)
		perTerm := map[uint64]map[uint64]bool{}
		for _, s := range sts {
			if s.Role == "leader" {
				if perTerm[s.Term] == nil {
					perTerm[s.Term] = map[uint64]bool{}
				}
				perTerm[s.Term][s.ID] = true
			}
		}
		for term, ls := range perTerm {
			if len(ls) > 1 {
				t.Fatalf("two leaders in term %d: %+v", term, sts)
			}
		}
		n1, _ := byID(sts, 1)
		l := leaders(sts)
		return len(l) == 1 && n1.Leader == l[0].ID && n1.Applied >= l[0].Commit, fmt.Sprintf("%+v", sts)
	})

	// The README's "start it again with the same command", for everyone:
	// no acknowledged write is lost.
	for _, id := range c.ids {
		c.kill(id)
		c.reap(id)
	}
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitLeader(15*time.Second, c.ids...)
	for k, v := range acked {
		got, err := cl.get(k, 10*time.Second)
		if err != nil || got != v {
			t.Errorf("acknowledged %s=%s, read %q (%v)", k, v, got, err)
		}
	}
	c.checkAlive()
}
