package fsm

import (
	pb "github.com/ketch-raft/ketch/messages"
)

// Follower reads (thesis §6.4, last paragraph): with Config.FollowerReads a
// follower that knows its leader serves linearizable reads itself. It asks
// the leader for a read index (ReadIndexRequest); the leader runs the request
// through its own ReadIndex machinery (its term's no-op committed, a heartbeat
// round started after the request confirmed by a quorum) and answers with the
// read index (ReadIndexResponse); the follower serves the reads once its own
// state machine has applied that index.
//
// Requests and answers may be lost. A forwarded read therefore fails with
// ErrReadNotConfirmed when this node stops following the leader it asked
// (new term, new or lost leader, own election) before the answer came, and
// at the latest after between one and two election timeouts. That deadline
// uses the HeartbeatTimer, which only a leader needs otherwise.

// forwardedRead is a read this follower asked its leader to confirm.
type forwardedRead struct {
	id     uint64
	ctx    uint64 // the ReadIndexRequest's context
	term   uint64 // the term and leader it was sent in and to
	leader uint64
	tick   uint64 // n.fwdTick when it was sent
	index  uint64 // the read index, once the leader answered
	set    bool
}

// forwardReads asks the leader to confirm reads (thesis §6.4).
func (n *Node) forwardReads(ids []uint64) {
	if n.fwdCtx == 0 {
		// Contexts must not repeat across restarts in one term, or a late
		// answer to an earlier incarnation's request would serve a new
		// read at an old index: start from a random point.
		n.fwdCtx = uint64(n.cfg.Rand.Int64N(1 << 62))
	}
	n.fwdCtx++
	if len(n.fwdReads) == 0 {
		n.setTimer(HeartbeatTimer, n.cfg.ElectionTimeout)
	}
	for _, id := range ids {
		n.fwdReads = append(n.fwdReads, forwardedRead{id: id, ctx: n.fwdCtx, term: n.term, leader: n.leader, tick: n.fwdTick})
	}
	// Like every message, it goes out only once this node's term is
	// durable (it may have adopted the term in a recent Step).
	n.send(n.leader, &pb.ReadIndexRequest{Context: n.fwdCtx}, true)
}

// handleReadIndexRequest runs on every role once terms are settled. A
// leader registers the request as a read of its own; anyone else refuses,
// so the asker fails its reads at once.
func (n *Node) handleReadIndexRequest(m *pb.RaftMessage) {
	ctx := m.GetReadIndexRequest().GetContext()
	if n.role != Leader || n.forwarded >= n.cfg.MaxForwardedReads || member(n.config().Config, m.From) == nil {
		// Not the leader, or too many followers' reads wait already: the
		// follower fails its reads at once and its clients retry.
		n.send(m.From, &pb.ReadIndexResponse{Context: ctx, Rejected: true}, true)
		return
	}
	n.forwarded++
	n.registerReads([]pendingRead{{from: m.From, ctx: ctx}})
}

// handleReadIndexResponse settles forwarded reads with the leader's answer.
// Only an answer from the leader they were sent to, in the term they were
// sent in, counts.
func (n *Node) handleReadIndexResponse(m *pb.RaftMessage) {
	r := m.GetReadIndexResponse()
	k := 0
	for _, fr := range n.fwdReads {
		if fr.ctx != r.GetContext() || fr.term != m.Term || fr.leader != m.From || fr.set {
			n.fwdReads[k] = fr
			k++
			continue
		}
		if r.GetRejected() {
			n.acts = append(n.acts, ReadReady{ID: fr.id, Err: ErrReadNotConfirmed})
			continue
		}
		fr.index, fr.set = r.GetIndex(), true
		n.fwdReads[k] = fr
		k++
	}
	n.fwdReads = n.fwdReads[:k]
}

// serveForwarded answers the forwarded reads whose read index the state
// machine has reached (thesis §6.4 step 4, on the follower).
func (n *Node) serveForwarded() {
	if len(n.fwdReads) == 0 {
		return
	}
	k := 0
	for _, fr := range n.fwdReads {
		switch {
		case fr.set && n.bug(bugFollowerReadUnapplied):
			// The planted bug: serve what the state machine has now.
			n.acts = append(n.acts, ReadReady{ID: fr.id, Index: n.stateAt})
		case fr.set && n.stateAt >= fr.index:
			n.acts = append(n.acts, ReadReady{ID: fr.id, Index: fr.index})
		default:
			n.fwdReads[k] = fr
			k++
		}
	}
	n.fwdReads = n.fwdReads[:k]
}

// dropForwarded fails forwarded reads: those still waiting for the leader's
// answer when this node no longer follows the leader they were sent to in
// their term, or all of them (all true, e.g. on becoming leader).
func (n *Node) dropForwarded(all bool) {
	k := 0
	for _, fr := range n.fwdReads {
		if all || (!fr.set && (fr.term != n.term || fr.leader != n.leader)) {
			n.acts = append(n.acts, ReadReady{ID: fr.id, Err: ErrReadNotConfirmed})
			continue
		}
		n.fwdReads[k] = fr
		k++
	}
	n.fwdReads = n.fwdReads[:k]
}

// expireForwarded runs when the HeartbeatTimer fires on a node that is not
// leader: reads forwarded at least a full election timeout ago fail, so a
// lost request or answer, or a state machine that cannot catch up, never
// leaves a read hanging.
func (n *Node) expireForwarded() {
	n.fwdTick++
	k := 0
	for _, fr := range n.fwdReads {
		if n.fwdTick-fr.tick >= 2 {
			n.acts = append(n.acts, ReadReady{ID: fr.id, Err: ErrReadNotConfirmed})
			continue
		}
		n.fwdReads[k] = fr
		k++
	}
	n.fwdReads = n.fwdReads[:k]
	if len(n.fwdReads) > 0 {
		n.setTimer(HeartbeatTimer, n.cfg.ElectionTimeout)
	}
}
