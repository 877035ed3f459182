package fsm

import (
	pb "github.com/ketch-raft/ketch/messages"
)

// The leader's election timer: check-quorum (thesis §6.2) and the
// leadership transfer's time limit (thesis §3.10).

// leaderTick runs when the leader's election timer fires, every election
// timeout while check-quorum is on or a transfer runs.
func (n *Node) leaderTick() {
	if n.checkQuorum() {
		// thesis §6.2: a leader that has not heard from a majority, itself
		// included, within an election timeout steps down, so clients
		// find the real leader and its reads fail instead of hanging.
		active := map[uint64]bool{n.id: true}
		for _, p := range n.peers {
			if pr := n.progress[p]; pr.active {
				active[p] = true
				pr.active = false
			}
		}
		if !n.quorum.has(func(id uint64) bool { return active[id] }) {
			n.becomeFollower(n.term, 0)
			return
		}
		if n.bug(bugLeaseFromCheck) && n.leaseOn() {
			n.bugCheckAt = n.now
		}
	}
	if n.transferee != 0 {
		// thesis §3.10: a transfer that has not finished within an
		// election timeout is abandoned, and proposals are accepted again.
		n.transferTicks++
		if n.transferTicks >= 2 {
			n.transferee, n.transferTicks = 0, 0
		}
	}
	if !n.isVoter() && n.config().Index <= n.commit && n.transferee == 0 {
		// thesis §4.2.2: a removed leader whose handover was abandoned
		// tries again.
		n.transferLeadership(0)
		if n.role != Leader {
			return // it handed over
		}
	}
	if n.checkQuorum() || n.transferee != 0 {
		n.setTimer(ElectionTimer, n.cfg.ElectionTimeout)
	}
}

// transferLeadership starts a leadership transfer (thesis §3.10).
func (n *Node) transferLeadership(to uint64) {
	if n.role != Leader {
		return
	}
	if to == 0 {
		// The most up-to-date voter, the lowest id among equals.
		var best uint64
		for _, p := range n.voterPeers() {
			if pr := n.progress[p]; pr != nil && (best == 0 || pr.match > n.progress[best].match) {
				best = p
			}
		}
		to = best
	}
	pr := n.progress[to]
	if pr == nil || to == n.transferee || !n.quorum.isVoter(to) {
		return // only a voter can be elected
	}
	n.transferee = to
	// thesis §3.10, §6.4.1: voters ignore leader stickiness for the
	// target's election, so leases end for the rest of this term (a late
	// TimeoutNow may still start that election after the transfer ends).
	n.leaseEnded = true
	if n.checkQuorum() {
		// The election timer already ticks every election timeout; the
		// transfer ends at the second tick, after (ET, 2*ET].
		n.transferTicks = 0
	} else {
		n.transferTicks = 1
		n.setTimer(ElectionTimer, n.cfg.ElectionTimeout)
	}
	if pr.match == n.log.lastIndex() {
		n.sendTimeoutNow(to)
		return
	}
	n.sendAppend(to)
}

// sendTimeoutNow tells the transfer's target, whose log is up to date, to
// start an election now (thesis §3.10). A leader that its committed
// configuration removed steps down with it (thesis §4.2.2): it has handed
// over, and nothing it sends would be heard any more.
func (n *Node) sendTimeoutNow(to uint64) {
	n.send(to, &pb.TimeoutNow{}, false)
	if !n.isVoter() && n.config().Index <= n.commit {
		n.becomeFollower(n.term, 0)
	}
}
