package process

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCLITransfer: `ketch transfer` hands leadership to the named node
// (thesis §3.10), or to the most up-to-date one, and reads and writes work
// through the new leader.
func TestCLITransfer(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, false)
	sts := c.waitLeader(15*time.Second, 1, 2, 3)
	old := leaders(sts)[0]
	target := old.ID%3 + 1
	r := runCLI(t, "transfer", "--cluster", c.addrs(), "--to", fmt.Sprint(target))
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("from node %d to node %d", old.ID, target)) {
		t.Fatalf("transfer to %d: %s", target, r)
	}
	sts = c.waitLeader(5*time.Second, 1, 2, 3)
	if l := leaders(sts)[0]; l.ID != target || l.Term <= old.Term {
		t.Fatalf("after transfer the leader is %d in term %d, want %d after term %d", l.ID, l.Term, target, old.Term)
	}
	if r := runCLI(t, "put", "--cluster", c.addrs(), "k", "v"); r.code != 0 {
		t.Fatalf("put after transfer: %s", r)
	}
	if r := runCLI(t, "get", "--cluster", c.addrs(), "k"); r.code != 0 || strings.TrimSpace(r.stdout) != "v" {
		t.Fatalf("get after transfer: %s", r)
	}
	if r := runCLI(t, "transfer", "--cluster", c.addrs()); r.code != 0 || !strings.Contains(r.stdout, "leadership moved") {
		t.Fatalf("transfer to any: %s", r)
	}
	// A node that is not a member: one line, exit 2.
	checkOneLineFailure(t, runCLI(t, "transfer", "--cluster", c.addrs(), "--to", "9", "--timeout", "2s"))
}
