package fsm

// Lease reads (thesis §6.4.1): "the leader would use the normal heartbeat
// mechanism to maintain a lease ... once the leader's heartbeats were
// acknowledged by a majority of the cluster, it would extend its lease to
// start + election timeout / clock drift bound, since the followers shouldn't
// time out before then."

import (
	"slices"
	"testing"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

// t0 is the driver's clock when the test leader sends its timed heartbeat.
const t0 = 10 * time.Second

// leaseConfig is testConfig with check-quorum and lease reads on (pre-vote
// stays off so that makeLeader's election is immediate).
func leaseConfig(id uint64) Config {
	cfg := testConfig(id)
	cfg.DisableCheckQuorum, cfg.LeaseReads = false, true
	return cfg
}

// leaseLeader returns readLeader(cfg) after a heartbeat sent at t0 (read
// round 1) that follower 2 echoed when ack is true.
func leaseLeader(t *testing.T, cfg Config, ack bool) *Node {
	t.Helper()
	n := readLeader(t, cfg)
	n.Step(Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer], Now: t0})
	if ack {
		n.Step(readAck(2, 1, 3, 2, 1))
	}
	return n
}

// leaseServed steps ReadIndex{7} at now and reports whether the read was
// served at once, without a read round.
func leaseServed(t *testing.T, n *Node, now time.Duration) bool {
	t.Helper()
	acts := n.Step(ReadIndex{IDs: []uint64{7}, Now: now})
	got := readsReady(acts)
	if len(got) == 0 {
		return false
	}
	if !slices.Equal(got, []ReadReady{{ID: 7, Index: 2}}) || len(sent(acts)) != 0 {
		t.Fatalf("lease read answered %v and sent %v, want read 7 at the commit index 2 and nothing sent", got, sent(acts))
	}
	return true
}

// thesis §6.4.1: a read is served at once, at the commit index, while the
// leader holds a lease: a quorum acknowledged a heartbeat sent less than
// ElectionTimeout / (1 + MaxClockDrift) ago (on the leader's clock).
// Otherwise it takes the ReadIndex path.
func TestLeaseReadServedOnlyWithinLease(t *testing.T) {
	et, drift := float64(testElectionTimeout), DefaultMaxClockDrift
	lease := time.Duration(et / (1 + drift))
	tests := []struct {
		name  string
		cfg   func() Config
		ack   bool
		now   time.Duration
		setup func(n *Node)
		want  bool
	}{
		{"within the lease", func() Config { return leaseConfig(1) }, true, t0 + lease - time.Millisecond, nil, true},
		{"at the heartbeat's sending", func() Config { return leaseConfig(1) }, true, t0, nil, true},
		{"lease expired", func() Config { return leaseConfig(1) }, true, t0 + lease, nil, false},
		{"no time given", func() Config { return leaseConfig(1) }, true, 0, nil, false},
		{"no quorum acknowledged", func() Config { return leaseConfig(1) }, false, t0 + time.Millisecond, nil, false},
		{"lease reads off", func() Config { c := leaseConfig(1); c.LeaseReads = false; return c }, true, t0 + time.Millisecond, nil, false},
		{"larger drift bound, shorter lease", func() Config { c := leaseConfig(1); c.MaxClockDrift = 0.5; return c }, true,
			t0 + time.Duration(et/1.5), nil, false},
		// thesis §3.10: a transfer's TimeoutNow makes voters ignore
		// stickiness, so the lease ends for the term.
		{"after a leadership transfer", func() Config { return leaseConfig(1) }, true, t0 + time.Millisecond,
			func(n *Node) { n.Step(TransferLeadership{To: 2}) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := leaseLeader(t, tt.cfg(), tt.ack)
			if tt.setup != nil {
				tt.setup(n)
			}
			if got := leaseServed(t, n, tt.now); got != tt.want {
				t.Fatalf("served at once: %v, want %v", got, tt.want)
			}
		})
	}
}

// thesis §6.4.1 with §6.4 step 1: even under a lease, a leader whose
// term's no-op has not committed does not know the commit index.
func TestLeaseReadWaitsForNoop(t *testing.T) {
	n := nodeInRole(t, leaseConfig(1), Leader)
	n.Step(Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer], Now: t0})
	n.Step(Message{Msg: raftMsg(2, 1, 3, &pb.AppendEntriesResponse{RejectIndex: 2, ReadRound: 1})})
	if got := readsReady(n.Step(ReadIndex{IDs: []uint64{7}, Now: t0 + time.Millisecond})); len(got) != 0 {
		t.Fatalf("served %v under a lease before the no-op committed", got)
	}
}

// thesis §6.4.1: the lease starts when the acknowledged heartbeat was sent,
// not when the leader learned of the acknowledgment (its check-quorum tick
// counts answers up to an election timeout old, or late).
func TestLeaseCountsFromSending(t *testing.T) {
	if v := leaseFromCheck(t, leaseConfig(1)); len(v) != 0 {
		t.Fatal(v)
	}
}

// leaseFromCheck is the rule check of lease-from-check: the heartbeat sent
// at t0 was echoed; a check-quorum tick at t0 + 2 election timeouts finds
// the follower active; a read just after it must not be served under a
// lease, which expired long before.
func leaseFromCheck(t *testing.T, cfg Config) []string {
	t.Helper()
	cfg.DisableCheckQuorum, cfg.LeaseReads = false, true
	n := leaseLeader(t, cfg, true)
	check := t0 + 2*testElectionTimeout
	n.Step(Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer], Now: check})
	if n.role != Leader {
		t.Fatalf("check-quorum deposed the leader: %v", n.role)
	}
	if leaseServed(t, n, check+time.Millisecond) {
		return []string{"served a lease read two election timeouts after the acknowledged heartbeat was sent"}
	}
	return nil
}

// thesis §6.4.1: a node that may have acknowledged a leader's heartbeat just
// before it restarted grants no vote or pre-vote until its first election
// timeout, as if it had just heard from that leader.
func TestRestartedNodeWaitsBeforeVotingUnderLeases(t *testing.T) {
	tests := []struct {
		name    string
		lease   bool
		fire    bool
		granted bool
	}{
		{"leases off", false, false, true},
		{"leases on, just started", true, false, false},
		{"leases on, after an election timeout", true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(1)
			cfg.DisableCheckQuorum, cfg.LeaseReads = false, tt.lease
			n := newNode(t, cfg, restoreLog(2, 0, 1))
			if tt.fire {
				fireElection(t, n) // becomes a candidate in term 3
				settle(t, n)
			}
			acts := stepSettled(t, n, Message{Msg: raftMsg(2, 1, 4, &pb.RequestVote{LastLogIndex: 5, LastLogTerm: 3, PreVote: true})})
			ms := sentTo(acts, 2)
			granted := len(ms) == 1 && ms[0].GetRequestVoteResponse().GetGranted()
			if granted != tt.granted {
				t.Fatalf("pre-vote answered %v, want granted %v", ms, tt.granted)
			}
		})
	}
}
