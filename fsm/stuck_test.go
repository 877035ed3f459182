package fsm

// Pre-vote with check-quorum: the traps of etcd-io/etcd#8243, #8501 and
// #9586, where a node that got ahead in term during a partition could leave
// a cluster without a leader, because its requests were ignored (leader
// stickiness) or its answers dropped (stale term).

import (
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// netCluster is a lossless network of nodes whose stores report every write
// durable at once, with links that can be cut.
type netCluster struct {
	t     *testing.T
	ids   []uint64
	nodes map[uint64]*Node
	q     []*pb.RaftMessage
	cut   map[[2]uint64]bool
	down  map[uint64]bool // crashed: hears nothing, says nothing
}

func newNetCluster(t *testing.T, restores map[uint64]Restore) *netCluster {
	t.Helper()
	c := &netCluster{t: t, nodes: map[uint64]*Node{}, cut: map[[2]uint64]bool{}, down: map[uint64]bool{}}
	for id := uint64(1); id <= uint64(len(restores)); id++ {
		c.ids = append(c.ids, id)
		c.nodes[id] = newNode(t, extConfig(id), restores[id])
	}
	return c
}

func (c *netCluster) step(id uint64, ev Event) {
	c.t.Helper()
	for _, m := range sent(stepSettled(c.t, c.nodes[id], ev)) {
		if !c.cut[[2]uint64{m.From, m.To}] && !c.down[m.To] {
			c.q = append(c.q, m)
		}
	}
}

// deliverAll delivers messages, in order, until none is left.
func (c *netCluster) deliverAll() {
	c.t.Helper()
	for i := 0; len(c.q) > 0; i++ {
		if i > 10000 {
			c.t.Fatal("the nodes never stop talking")
		}
		m := c.q[0]
		c.q = c.q[1:]

		c.step(m.To, Message{Msg: m})
	}
}

func (c *netCluster) fire(id uint64, tm Timer) {
	c.t.Helper()
	c.step(id, Timeout{Timer: tm, Gen: c.nodes[id].timerGen[tm]})
	c.deliverAll()
}

// setCut cuts (or mends) the links between a and b, both ways.
func (c *netCluster) setCut(a, b uint64, cut bool) {
	c.cut[[2]uint64{a, b}], c.cut[[2]uint64{b, a}] = cut, cut
}

// round is one election timeout of virtual time: leaders send heartbeats;
// every other node whose election timer was not restarted by them fires
// it; leaders run their check-quorum tick.
func (c *netCluster) round() {
	c.t.Helper()
	gens := map[uint64]uint64{}
	for _, id := range c.ids {
		gens[id] = c.nodes[id].timerGen[ElectionTimer]
	}
	for _, id := range c.ids {
		if c.nodes[id].role == Leader && !c.down[id] {
			c.fire(id, HeartbeatTimer)
		}
	}
	for _, id := range c.ids {
		if n := c.nodes[id]; n.role != Leader && n.timerGen[ElectionTimer] == gens[id] && !c.down[id] {
			c.fire(id, ElectionTimer)
		}
	}
	for _, id := range c.ids {
		if c.nodes[id].role == Leader && !c.down[id] {
			c.fire(id, ElectionTimer)
		}
	}
}

// stableLeader returns the leader every node follows in one term, or 0.
func (c *netCluster) stableLeader() uint64 {
	var leader, term uint64
	for _, id := range c.ids {
		st := c.nodes[id].Status()
		if st.Role == Leader && !c.down[id] {
			leader, term = id, st.Term
		}
	}
	for _, id := range c.ids {
		if st := c.nodes[id].Status(); !c.down[id] && (leader == 0 || st.Term != term || st.Leader != leader) {
			return 0
		}
	}
	return leader
}

// recovers runs rounds until one leader leads everyone, and fails when that
// takes more than max rounds.
func (c *netCluster) recovers(max int) uint64 {
	c.t.Helper()
	for r := 0; r < max; r++ {
		if l := c.stableLeader(); l != 0 {
			return l
		}
		c.round()
	}
	var s []string
	for _, id := range c.ids {
		st := c.nodes[id].Status()
		s = append(s, "n"+itoa(id)+" "+st.Role.String()+" t"+itoa(st.Term)+" leader "+itoa(st.Leader))
	}
	c.t.Fatalf("no stable leader after %d election timeouts: %v", max, s)
	return 0
}

// threeNodes returns a cluster of three nodes with a leader, n1, that every
// node follows with the whole log committed.
func threeNodes(t *testing.T) *netCluster {
	t.Helper()
	c := newNetCluster(t, map[uint64]Restore{1: restoreLog(2, 0, 1), 2: restoreLog(2, 0, 1), 3: restoreLog(2, 0, 1)})
	c.fire(1, ElectionTimer) // pre-vote, then the election
	c.fire(1, HeartbeatTimer)
	if l := c.stableLeader(); l != 1 {
		t.Fatalf("setup: leader %d, want 1", l)
	}
	return c
}

func TestPreVoteCheckQuorumNeverStuck(t *testing.T) {
	// etcd-io/etcd#9586 (and #8243): n3, cut off from the leader, wins a
	// pre-vote from n2 while n2 has not heard from the leader, but n2
	// hears from the leader again before n3's real RequestVote arrives,
	// and ignores it (leader stickiness). n3 is left in a higher term,
	// its pre-votes refused by n2 and unheard by n1. When the link to n1
	// comes back, n1's heartbeat gets an answer in n3's term, which makes
	// n1 step down (Raft §5.1); n2 is still sticky. The cluster must still
	// elect a leader everyone follows.
	t.Run("stuck candidate", func(t *testing.T) {
		c := threeNodes(t)
		c.setCut(1, 3, true)
		c.setCut(1, 2, true)
		c.fire(2, ElectionTimer) // n2 hears nothing: a pre-candidate
		wantRoleTerm(t, c.nodes[2], PreCandidate, 3)
		// n3's pre-vote is granted by n2; its RequestVote waits in the
		// network while n1's heartbeat reaches n2 first.
		c.step(3, Timeout{Timer: ElectionTimer, Gen: c.nodes[3].timerGen[ElectionTimer]})
		for range 2 { // the pre-votes, then their grants
			batch := c.q
			c.q = nil
			for _, m := range batch {
				c.step(m.To, Message{Msg: m})
			}
		}
		votes := c.q
		c.q = nil
		wantRoleTerm(t, c.nodes[3], Candidate, 4)
		c.setCut(1, 2, false)
		c.fire(1, HeartbeatTimer)
		c.q = votes
		c.deliverAll()
		wantRoleTerm(t, c.nodes[2], Follower, 3) // ignored the vote
		for range 3 {
			c.round() // n3 keeps asking; n2 keeps refusing
		}
		if c.nodes[3].term < 4 || c.nodes[1].role != Leader {
			t.Fatalf("setup: n3 at term %d, n1 %v", c.nodes[3].term, c.nodes[1].role)
		}
		c.setCut(1, 3, false)
		c.recovers(10)
	})
	// etcd-io/etcd#8501: a node that got far ahead in term (here: it ran
	// without pre-vote) with a shorter log. Its pre-votes are refused; the
	// leader steps down on its stale-term answer; the others must learn
	// its term from refusals of their pre-votes, or they could never win.
	t.Run("higher term, shorter log", func(t *testing.T) {
		c := threeNodes(t)
		c.nodes[3] = newNode(t, extConfig(3), restoreLog(9, 0, 1))
		for range 2 {
			c.fire(3, ElectionTimer)
		}
		if st := c.nodes[3].Status(); st.Term != 9 || c.nodes[1].role != Leader {
			t.Fatalf("setup: n3 %+v, n1 %v", st, c.nodes[1].role)
		}
		l := c.recovers(10)
		if got := c.nodes[l].Status().Term; got <= 9 {
			t.Fatalf("leader n%d at term %d, want beyond n3's term 9", l, got)
		}
	})
	// The same, where only the node left behind in term can win: the
	// leader is gone, n2 holds a committed entry n3 lacks, and n3 is far
	// ahead in term. n3 must answer n2's pre-vote from an older term with a
	// refusal in its own term; if it dropped it, n2 would never learn term
	// 9 and n3 could never win n2's vote: no leader, ever.
	t.Run("leader gone, older term has the log", func(t *testing.T) {
		c := newNetCluster(t, map[uint64]Restore{1: restoreLog(3, 1, 1, 3), 2: restoreLog(3, 1, 1, 3), 3: restoreLog(9, 0, 1)})
		c.down[1] = true
		if l := c.recovers(10); l != 2 {
			t.Fatalf("leader n%d, want n2 (the only live node with the whole log)", l)
		}
	})
}
