package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
)

// Membership changes on a live cluster (thesis chapter 4): a server started
// with Join is added as a learner, caught up by snapshot, promoted; the
// leader removes itself and hands over; a joint change replaces a voter;
// and after a restart of every node the configuration is what the log (or
// the snapshot, once compacted) says, not what the nodes were bootstrapped
// with.
func TestMembershipChangesOnALiveCluster(t *testing.T) {
	c := New(t, 3, false, func(cfg *node.Config) {
		// Small snapshots, so a new server catches up by snapshot and
		// the configuration entries are compacted away.
		cfg.SnapshotEntries, cfg.SnapshotTrailing, cfg.SnapshotGrowth = 50, 10, -1
	})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	put := func(n int) {
		t.Helper()
		for i := range n {
			if err := cl.Put(ctx, fmt.Sprintf("k%03d", i%200), []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(300)
	dump := func() {
		for id, n := range c.Nodes {
			st := n.Status()
			t.Logf("node %d: %s term %d leader %d commit %d config %d %v first %d snapshot %d not member %v", id, st.Role, st.Term, st.Leader, st.Commit, st.ConfigurationIndex, st.Configuration, st.FirstIndex, st.SnapshotIndex, st.NotMember)
		}
	}
	members := func() map[uint64]string {
		t.Helper()
		r, err := cl.Members(ctx)
		if err != nil {
			dump()
			t.Fatal(err)
		}
		out := map[uint64]string{}
		for _, m := range r.Configuration.Members {
			out[m.Id] = m.Role.String()
		}
		return out
	}
	change := func(req *pb.MemberRequest) *pb.MemberResponse {
		t.Helper()
		r, err := cl.ChangeMembers(ctx, req)
		if err != nil {
			t.Fatalf("change %v: %v", req, err)
		}
		return r
	}
	const voter, learner = "MEMBER_ROLE_VOTER", "MEMBER_ROLE_LEARNER"

	// A server that joins takes part only once added.
	id4 := c.Join()
	waitFor(t, 5*time.Second, "the joining server to start", func() bool { return c.Nodes[id4].Status().Role == "follower" })
	if st := c.Nodes[id4].Status(); !st.NotMember {
		t.Fatalf("a joining server before it is added: %+v", st)
	}
	change(&pb.MemberRequest{Add: []*pb.Member{{Id: id4, Address: c.Addrs[id4], Role: pb.MemberRole_MEMBER_ROLE_LEARNER}}})
	if m := members(); m[id4] != learner || len(m) != 4 {
		t.Fatalf("after adding a learner: %v", m)
	}
	leader, _ := c.Leader(5 * time.Second)
	waitFor(t, 10*time.Second, "the learner to catch up", func() bool {
		return c.Nodes[id4].Status().Applied >= c.Nodes[leader].Status().Commit
	})
	if st := c.Nodes[id4].Status(); st.SnapshotIndex == 0 {
		t.Errorf("the learner caught up without a snapshot (snapshot index 0, first index %d)", st.FirstIndex)
	}
	change(&pb.MemberRequest{Promote: []uint64{id4}})
	if m := members(); m[id4] != voter {
		t.Fatalf("after promoting: %v", m)
	}

	// The leader removes itself: it hands over, and commits resume within
	// about an election timeout.
	leader, _ = c.Leader(5 * time.Second)
	r := change(&pb.MemberRequest{Remove: []uint64{leader}})
	began := time.Now()
	if err := cl.Put(ctx, "after-removal", []byte("x")); err != nil {
		t.Fatal(err)
	}
	resumed := time.Since(began)
	t.Logf("removed the leader (node %d) at configuration %d; the next write committed %v later", leader, r.ConfigurationIndex, resumed.Round(time.Millisecond))
	if resumed > 2*time.Second {
		t.Errorf("commits resumed %v after the leader removed itself; want about one election timeout (150 ms)", resumed)
	}
	waitFor(t, 5*time.Second, "the removed leader to know it", func() bool { return c.Nodes[leader].Status().NotMember })
	removed := leader

	// A joint change replaces a voter by a new server (thesis §4.3).
	id5 := c.Join()
	var old uint64
	for id := range members() {
		if id != id4 {
			old = id
			break
		}
	}
	r = change(&pb.MemberRequest{Add: []*pb.Member{{Id: id5, Address: c.Addrs[id5], Role: pb.MemberRole_MEMBER_ROLE_VOTER}}, Remove: []uint64{old}})
	if len(r.Configuration.Outgoing) != 0 {
		t.Fatalf("the change was answered in the joint configuration: %v", r.Configuration)
	}
	m := members()
	if m[id5] != voter || m[old] != "" || len(m) != 3 {
		t.Fatalf("after replacing %d by %d: %v", old, id5, m)
	}
	// Ids are never reused.
	_, err := cl.ChangeMembers(ctx, &pb.MemberRequest{Add: []*pb.Member{{Id: removed, Address: c.Addrs[removed], Role: pb.MemberRole_MEMBER_ROLE_LEARNER}}})
	if !errors.Is(err, client.ErrMemberChange) {
		dump()
		t.Fatalf("re-adding removed id %d: %v", removed, err)
	}
	put(300) // past a few snapshots: the configuration entries are compacted
	c.Stop(removed)
	c.Stop(old)

	// Every member restarts on its data dir: the configuration comes back
	// from the snapshot or the store's base, and the cluster serves.
	want := members()
	for id := range want {
		c.Stop(id)
	}
	for id := range want {
		c.Start(id)
	}
	// A new client: the old one's connections to the stopped nodes are
	// dead, and Proto.Actor remote redials them only after a pause.
	cl = c.Client()
	if err := cl.Put(ctx, "after-restart", []byte("y")); err != nil {
		for id := range want {
			st := c.Nodes[id].Status()
			t.Logf("node %d: %s term %d leader %d config %d %v first %d snapshot %d not member %v", id, st.Role, st.Term, st.Leader, st.ConfigurationIndex, st.Configuration, st.FirstIndex, st.SnapshotIndex, st.NotMember)
		}
		t.Fatal(err)
	}
	if got := members(); !equalRoles(got, want) {
		t.Fatalf("after a restart the configuration is %v, want %v", got, want)
	}
	for id := range want {
		if st := c.Nodes[id].Status(); st.NotMember || st.FirstIndex <= 1 {
			t.Errorf("node %d after the restart: not member %v, first index %d (want a compacted log)", id, st.NotMember, st.FirstIndex)
		}
	}
	for i := range 200 {
		k := fmt.Sprintf("k%03d", i)
		if v, err := cl.Get(ctx, k); err != nil || v == nil {
			t.Fatalf("%s after the changes: %q %v", k, v, err)
		}
	}
}

func equalRoles(a, b map[uint64]string) bool {
	if len(a) != len(b) {
		return false
	}
	for id, r := range a {
		if b[id] != r {
			return false
		}
	}
	return true
}

// A change adding a voter that never answers (a typo in its address) fails
// with a clear error after the catch-up timeout and leaves the
// configuration unchanged (thesis §4.2.1).
func TestUnreachableVoterIsNotAdded(t *testing.T) {
	c := New(t, 3, false, nil)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := cl.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dead := FreePorts(t, 1)[0]
	began := time.Now()
	_, err = cl.ChangeMembers(ctx, &pb.MemberRequest{Add: []*pb.Member{{Id: 9, Address: dead, Role: pb.MemberRole_MEMBER_ROLE_VOTER}}})
	if !errors.Is(err, client.ErrMemberChange) {
		t.Fatalf("adding a server nobody runs: %v", err)
	}
	t.Logf("refused after %v: %v", time.Since(began).Round(time.Millisecond), err)
	after, err := cl.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.ConfigurationIndex != before.ConfigurationIndex || len(after.Configuration.Members) != 3 {
		t.Fatalf("the configuration changed: %v -> %v", before, after)
	}
	ids := []uint64{}
	for _, m := range after.Configuration.Members {
		ids = append(ids, m.Id)
	}
	if slices.Contains(ids, 9) {
		t.Fatal("server 9 is a member")
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
