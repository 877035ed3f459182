package fsm

import (
	"time"
)

// Lease reads (thesis §6.4.1), opt-in with Config.LeaseReads.
//
// The fsm reads no clock: the driver passes a monotonic time as data, in
// Timeout.Now and ReadIndex.Now (zero: no time, and then every read takes
// the ReadIndex path). While lease reads are on, every heartbeat the leader
// sends with a time starts a new read round and remembers the time t it was
// sent (leaseRounds). A follower that echoes that round received a message
// the leader sent at or after t. With check-quorum on, a follower that has
// heard from its leader grants no vote and no pre-vote until its election
// timer fires, at least ElectionTimeout later on its own clock (thesis
// §4.2.3, §9.6); a node that starts grants none until its first election
// timer fired either, so a crash does not cut that short. So once a quorum
// has echoed a round sent at t, no other leader can be elected before
// ElectionTimeout has passed on some follower's clock after t, which is at
// least ElectionTimeout / (1 + MaxClockDrift) on the leader's clock when no
// clock runs more than MaxClockDrift faster than another. Until then, the
// lease, reads are served at once at the commit index, once the term's
// no-op has committed (thesis §6.4 step 1 still applies).
//
// A leadership transfer ends leases for the rest of the term: the TimeoutNow
// it sends makes voters ignore leader stickiness (thesis §3.10), and a late
// TimeoutNow can arrive after the transfer was abandoned.

// leaseRound is a read round a heartbeat or ReadIndex started at a known
// time (the driver's monotonic clock).
type leaseRound struct {
	round uint64
	at    time.Duration
}

// leaseOn reports whether this leader may use its lease now.
func (n *Node) leaseOn() bool {
	return n.cfg.LeaseReads && n.now > 0 && n.role == Leader && !n.leaseEnded
}

// noteRound records that read round n.readRound started at n.now.
func (n *Node) noteRound() {
	if !n.leaseOn() {
		return
	}
	n.leaseRounds = append(n.leaseRounds, leaseRound{round: n.readRound, at: n.now})
	if len(n.leaseRounds) > 4*len(n.peers)+68 {
		// Rounds nobody echoes (a partitioned leader): keep the latest.
		n.leaseRounds = append(n.leaseRounds[:0], n.leaseRounds[len(n.leaseRounds)/2:]...)
	}
}

// leaseDuration is how long, on the leader's clock, a lease lasts after the
// heartbeat round that a quorum confirmed was sent.
func (n *Node) leaseDuration() time.Duration {
	return time.Duration(float64(n.cfg.ElectionTimeout) / (1 + n.cfg.MaxClockDrift))
}

// inLeaderLease reports whether the leader holds a lease at n.now: a quorum,
// itself included, echoed a round sent less than leaseDuration ago.
func (n *Node) inLeaderLease() bool {
	if !n.leaseOn() {
		return false
	}
	if n.bug(bugLeaseFromCheck) {
		// The planted bug: the lease runs from the last check-quorum tick.
		return n.bugCheckAt > 0 && n.now < n.bugCheckAt+n.leaseDuration()
	}
	if len(n.leaseRounds) == 0 {
		return false
	}
	confirmed := n.confirmedRound()
	// The latest timed round at or below the confirmed one: the follower
	// answers that confirm it were sent no earlier than its time.
	k := -1
	for i, lr := range n.leaseRounds {
		if lr.round > confirmed {
			break
		}
		k = i
	}
	if k < 0 {
		return false
	}
	n.leaseRounds = n.leaseRounds[k:] // earlier rounds can no longer help
	at := n.leaseRounds[0].at
	return at <= n.now && n.now < at+n.leaseDuration()
}

// leaseRead serves reads at once at the commit index if the leader holds a
// lease (thesis §6.4.1) and its term's no-op has committed; it reports
// whether it did. The reads still wait for the state machine to apply the
// commit index.
func (n *Node) leaseRead(ids []uint64) bool {
	if !n.noopCommitted() || !n.inLeaderLease() {
		return false
	}
	for _, id := range ids {
		// Round 0 is always confirmed: the lease stands for the round.
		n.reads = append(n.reads, pendingRead{id: id, index: n.commit, set: true})
	}
	return true
}
