package fsm

import (
	pb "github.com/ketch-raft/ketch/messages"
)

// readIndex registers linearizable reads (thesis §6.4). The leader takes
// its commit index as the read index once its term's no-op has committed
// (step 1), starts a new read round and sends every follower an empty
// AppendEntries carrying it (step 2); when a quorum has echoed the round,
// it was still leader after the reads arrived, and the reads are served as
// soon as the state machine has applied the read index (steps 3 and 4,
// see serveReads). One round serves every read of the event.
func (n *Node) readIndex(ids []uint64) {
	if len(ids) == 0 {
		return
	}
	if n.role == Follower && n.leader != 0 && n.cfg.FollowerReads {
		n.forwardReads(ids)
		return
	}
	if n.role != Leader {
		for _, id := range ids {
			n.acts = append(n.acts, ReadReady{ID: id, Err: ErrNotLeader, Leader: n.leader})
		}
		return
	}
	if n.leaseRead(ids) {
		return
	}
	rs := make([]pendingRead, len(ids))
	for i, id := range ids {
		rs[i] = pendingRead{id: id}
	}
	n.registerReads(rs)
}

// registerReads queues reads, local or forwarded by a follower, on a new
// read round and sends the round to every follower.
func (n *Node) registerReads(rs []pendingRead) {
	n.readRound++
	n.noteRound()
	for _, r := range rs {
		r.round = n.readRound
		if n.noopCommitted() || n.bug(bugReadBeforeNoop) {
			r.index, r.set = n.commit, true
		}
		n.reads = append(n.reads, r)
	}
	for _, p := range n.peers {
		// An empty AppendEntries at the known match point cannot be
		// rejected by a live follower of this term.
		n.sendEmpty(p)
	}
}

// noopCommitted reports whether the leader has committed an entry of its
// own term (its no-op), so that its commit index is at least that of every
// earlier leader (thesis §6.4 step 1, Raft §8).
func (n *Node) noopCommitted() bool {
	return n.log.term(n.commit) == n.term
}

// serveReads answers the reads that are ready, in arrival order.
func (n *Node) serveReads() {
	if n.role != Leader || len(n.reads) == 0 {
		return
	}
	confirmed := n.confirmedRound()
	noop := n.noopCommitted()
	k := 0
	for _, r := range n.reads {
		if !r.set && noop {
			// thesis §6.4 step 1: the read index is the commit index once
			// the no-op has committed; a later index is also safe.
			r.index, r.set = n.commit, true
		}
		switch {
		case !r.set || (r.round > confirmed && !n.bug(bugReadWithoutQuorum)):
		case r.from != 0:
			// A follower's read: it waits for its own state machine
			// (thesis §6.4, last paragraph).
			n.send(r.from, &pb.ReadIndexResponse{Context: r.ctx, Index: r.index}, false)
			n.forwarded--
			continue
		case n.stateAt >= r.index:
			n.acts = append(n.acts, ReadReady{ID: r.id, Index: r.index})
			continue
		}
		n.reads[k] = r
		k++
	}
	n.reads = n.reads[:k]
}

// confirmedRound is the highest read round a quorum, this node included,
// has echoed (thesis §6.4 step 2).
func (n *Node) confirmedRound() uint64 {
	return n.quorum.index(func(id uint64) uint64 {
		if id == n.id {
			return n.readRound
		}
		if pr := n.progress[id]; pr != nil {
			return pr.readAck
		}
		return 0
	})
}

// abandonReads fails every waiting read when leadership is lost: it could
// not be confirmed.
func (n *Node) abandonReads() {
	for _, r := range n.reads {
		if r.from != 0 {
			// Sent once the new term (if any) is durable.
			n.send(r.from, &pb.ReadIndexResponse{Context: r.ctx, Rejected: true}, true)
			continue
		}
		n.acts = append(n.acts, ReadReady{ID: r.id, Err: ErrReadNotConfirmed})
	}
	n.reads, n.forwarded = nil, 0
}
