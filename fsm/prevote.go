package fsm

import (
	pb "github.com/ketch-raft/ketch/messages"
)

// handlePreVote answers a pre-vote (thesis §9.6) in any role. A pre-vote
// changes neither this node's term nor its vote. It is granted when the
// candidate would be in a later term (or in this term, if this node has
// neither voted nor a leader), its log is at least as up-to-date as this
// one (Raft §5.4.1), and this node has not heard from a leader within an
// election timeout (leader stickiness). A grant carries the pre-vote's
// term, so the pre-candidate can tell it from answers to earlier rounds; a
// refusal carries this node's term, so a pre-candidate in an older term
// learns the current one (etcd-io/etcd#8501: without that answer a node
// whose term fell behind could stay without a leader).
func (n *Node) handlePreVote(m *pb.RaftMessage) {
	rv := m.GetRequestVote()
	if n.bug(bugPreVoteBumpsTerm) && m.Term > n.term {
		n.becomeFollower(m.Term, 0) // the planted bug: treat it as a vote
	}
	canVote := m.Term > n.term || (m.Term == n.term && n.leader == 0 && (n.vote == 0 || n.vote == m.From))
	granted := canVote && !n.inLease() && n.log.isUpToDate(rv.LastLogIndex, rv.LastLogTerm)
	if granted {
		n.sendTerm(m.From, m.Term, &pb.RequestVoteResponse{Granted: true, PreVote: true}, false)
		return
	}
	n.send(m.From, &pb.RequestVoteResponse{PreVote: true}, true)
}

// handlePreVoteResponse counts an answer to this node's pre-vote.
func (n *Node) handlePreVoteResponse(m *pb.RaftMessage) {
	r := m.GetRequestVoteResponse()
	switch {
	case !r.Granted && m.Term > n.term:
		// A refusal from a later term: adopt it (Raft §5.1).
		n.becomeFollower(m.Term, 0)
	case n.role != PreCandidate:
		// An answer to a pre-vote this node has given up.
	case r.Granted && m.Term == n.term+1:
		n.votes[m.From] = true
		n.maybeWinPreVote()
	case !r.Granted && m.Term == n.term:
		n.refusals[m.From] = true
		if n.quorum.blocks(func(id uint64) bool { return n.refusals[id] }) {
			// It cannot win: wait as a follower for a leader or the
			// next timeout.
			n.becomeFollower(n.term, 0)
		}
	}
}
