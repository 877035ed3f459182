package fsm

// Pre-vote (thesis §9.6) and check-quorum with leader stickiness (thesis
// §4.2.3, §6.2). These tests build on extConfig: both on, their defaults.

import (
	"slices"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// preVoteMsg is a pre-vote from a pre-candidate at term-1 whose log ends at
// (lastIndex, lastTerm); term is the term it would campaign in.
func preVoteMsg(from, to, term, lastIndex, lastTerm uint64) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.RequestVote{LastLogIndex: lastIndex, LastLogTerm: lastTerm, PreVote: true})}
}

// preVoteResp is an answer to a pre-vote.
func preVoteResp(from, to, term uint64, granted bool) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.RequestVoteResponse{Granted: granted, PreVote: true})}
}

// preVoteAnswer steps a pre-vote, reports everything durable, and returns
// the answer sent back (nil if none) and the actions.
func preVoteAnswer(t *testing.T, n *Node, ev Message) (*pb.RaftMessage, []Action) {
	t.Helper()
	acts := stepSettled(t, n, ev)
	for _, m := range sentTo(acts, ev.Msg.From) {
		if m.GetRequestVoteResponse() != nil {
			return m, acts
		}
	}
	return nil, acts
}

// thesis §9.6: "a candidate would first ask other servers whether its log
// was up-to-date enough to get their vote. Only if the candidate believed
// it could get votes from a majority of the cluster would it increment its
// term and start a normal election." The pre-vote raises no term and
// persists nothing, so its requests go out at once, for term + 1.
func TestPreVoteTimeoutStartsPreVoteWithoutChangingTerm(t *testing.T) {
	for _, role := range []Role{Follower, Candidate, PreCandidate} {
		t.Run(role.String(), func(t *testing.T) {
			n := newNode(t, extConfig(1), restoreLog(2, 0, 1))
			switch role {
			case Candidate:
				n.cfg.DisablePreVote = true
				makeCandidate(t, n)
				n.cfg.DisablePreVote = false
			case PreCandidate:
				fireElection(t, n)
			}
			term, vote := n.term, n.vote
			acts := fireElection(t, n)
			if st := n.Status(); st.Role != PreCandidate || st.Term != term || st.Vote != vote || st.Leader != 0 {
				t.Fatalf("status %+v, want pre-candidate at term %d, vote %d", st, term, vote)
			}
			if len(actionsOf[Persist](acts)) != 0 {
				t.Fatalf("a pre-vote persisted: %v", describe(acts))
			}
			if ts := actionsOf[SetTimer](acts); len(ts) != 1 || ts[0].Timer != ElectionTimer {
				t.Fatalf("actions %v, want the election timer re-armed", describe(acts))
			}
			var to []uint64
			for _, m := range sent(acts) {
				rv := m.GetRequestVote()
				if rv == nil || !rv.PreVote || rv.Transfer || m.Term != term+1 || rv.LastLogIndex != 1 || rv.LastLogTerm != 1 {
					t.Fatalf("sent %v, want a pre-vote for term %d, log (1, 1)", m, term+1)
				}
				to = append(to, m.To)
			}
			if !slices.Equal(to, []uint64{2, 3}) {
				t.Fatalf("pre-votes sent to %v, want [2 3]", to)
			}
		})
	}
}

// thesis §9.6: the pre-candidate starts the real election (increments its
// term, Raft §5.2) only once a majority, itself included, would grant; it
// gives up when a majority refuses, and adopts a later term it learns.
func TestPreCandidateCampaignsOnlyWithMajority(t *testing.T) {
	three, five := []uint64{1, 2, 3}, []uint64{1, 2, 3, 4, 5}
	// The node is at term 2; a grant for its pre-vote carries term 3.
	tests := []struct {
		name     string
		members  []uint64
		answers  []Message
		wantRole Role
		wantTerm uint64
	}{
		{"3/one grant", three, []Message{preVoteResp(2, 1, 3, true)}, Candidate, 3},
		{"3/grant for an old pre-vote", three, []Message{preVoteResp(2, 1, 2, true)}, PreCandidate, 2},
		{"3/refusal", three, []Message{preVoteResp(2, 1, 2, false)}, PreCandidate, 2},
		{"3/two refusals", three, []Message{preVoteResp(2, 1, 2, false), preVoteResp(3, 1, 2, false)}, Follower, 2},
		{"3/refusal from a later term", three, []Message{preVoteResp(2, 1, 7, false)}, Follower, 7},
		{"3/a real vote answer does not count", three, []Message{voteResp(2, 1, 2, true)}, PreCandidate, 2},
		{"5/one grant", five, []Message{preVoteResp(2, 1, 3, true)}, PreCandidate, 2},
		{"5/one peer granting twice", five, []Message{preVoteResp(2, 1, 3, true), preVoteResp(2, 1, 3, true)}, PreCandidate, 2},
		{"5/two grants", five, []Message{preVoteResp(2, 1, 3, true), preVoteResp(4, 1, 2, false), preVoteResp(3, 1, 3, true)}, Candidate, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, extConfig(1, tt.members...), restoreLog(2, 0, 1))
			fireElection(t, n)
			for _, a := range tt.answers {
				stepSettled(t, n, a)
			}
			wantRoleTerm(t, n, tt.wantRole, tt.wantTerm)
			if tt.wantRole == Candidate && n.vote != 1 {
				t.Fatalf("candidate votes for %d, want itself", n.vote)
			}
		})
	}
}

// thesis §9.6: a server grants a pre-vote only if the candidate's log is
// at least as up-to-date as its own (Raft §5.4.1) and it has not heard from
// a leader within an election timeout; granting or not, it changes neither
// its term nor its vote. A grant carries the pre-vote's term; a refusal the
// voter's own, so a pre-candidate from an older term catches up (etcd-io/
// etcd#8501, #9586: dropping it could leave the cluster without a leader).
func TestPreVoteReceiverRules(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, n *Node)
		vote      Message
		want      bool
		wantTerm  uint64 // of the answer
		stateTerm uint64 // the node's term after
	}{
		{"no leader, up-to-date log", nil, preVoteMsg(2, 1, 3, 1, 1), true, 3, 2},
		{"no leader, longer log", nil, preVoteMsg(2, 1, 3, 4, 1), true, 3, 2},
		{"no leader, far future term", nil, preVoteMsg(2, 1, 9, 1, 1), true, 9, 2},
		{"stale log", nil, preVoteMsg(2, 1, 3, 0, 0), false, 2, 2},
		{"heard from the leader", func(t *testing.T, n *Node) {
			stepSettled(t, n, appendMsg(3, 1, 2, 1, 1, 0))
		}, preVoteMsg(2, 1, 3, 1, 1), false, 2, 2},
		{"heard from the leader, then its election timer fired", func(t *testing.T, n *Node) {
			stepSettled(t, n, appendMsg(3, 1, 2, 1, 1, 0))
			fireElection(t, n)
		}, preVoteMsg(2, 1, 3, 1, 1), true, 3, 2},
		{"pre-vote from an older term", nil, preVoteMsg(2, 1, 1, 1, 1), false, 2, 2},
		{"this term, no vote, no leader", nil, preVoteMsg(2, 1, 2, 1, 1), true, 2, 2},
		{"same term, voted for another", func(t *testing.T, n *Node) {
			stepSettled(t, n, voteMsg(3, 1, 3, 1, 1))
		}, preVoteMsg(2, 1, 3, 1, 1), false, 3, 3},
		{"same term, voted for it", func(t *testing.T, n *Node) {
			stepSettled(t, n, voteMsg(2, 1, 3, 1, 1))
		}, preVoteMsg(2, 1, 3, 1, 1), true, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, extConfig(1), restoreLog(2, 0, 1))
			if tt.setup != nil {
				tt.setup(t, n)
			}
			term, vote := n.term, n.vote
			ans, acts := preVoteAnswer(t, n, tt.vote)
			if ans == nil {
				t.Fatalf("no answer to %v: %v", tt.vote.Msg, describe(acts))
			}
			r := ans.GetRequestVoteResponse()
			if !r.PreVote || r.Granted != tt.want || ans.Term != tt.wantTerm {
				t.Fatalf("answer %v, want pre-vote granted=%v at term %d", ans, tt.want, tt.wantTerm)
			}
			if n.term != term || n.vote != vote || n.term != tt.stateTerm {
				t.Fatalf("term/vote went from %d/%d to %d/%d on a pre-vote", term, vote, n.term, n.vote)
			}
			if len(actionsOf[Persist](acts)) != 0 {
				t.Fatalf("a pre-vote persisted: %v", describe(acts))
			}
		})
	}
}

// extLeader returns node 1 of members as leader at term 3 with pre-vote
// and check-quorum on, as nodeInRole(Leader) does: its log is one entry of
// term 1 and its no-op, everything durable, every follower probed.
func extLeader(t *testing.T, members ...uint64) *Node {
	t.Helper()
	cfg := extConfig(1, members...)
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	n.cfg.DisablePreVote = true // win the election in one go
	makeLeader(t, n)
	n.cfg.DisablePreVote = cfg.DisablePreVote
	settle(t, n)
	return n
}

// thesis §9.6: the leader itself refuses pre-votes and keeps its term.
func TestLeaderRefusesPreVote(t *testing.T) {
	n := extLeader(t, 1, 2, 3)
	ans, _ := preVoteAnswer(t, n, preVoteMsg(2, 1, 4, 9, 3))
	if ans == nil || ans.GetRequestVoteResponse().Granted {
		t.Fatalf("leader answered %v, want a refusal", ans)
	}
	wantRoleTerm(t, n, Leader, 3)
}

// preVoteBumps is the rule check of prevote-bumps-term: a follower at term
// 2 receiving a pre-vote for term 3 keeps its term and persists nothing.
func preVoteBumps(t *testing.T, cfg Config) []string {
	t.Helper()
	cfg.DisablePreVote = false
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	acts := n.Step(preVoteMsg(2, 1, 3, 1, 1))
	var v []string
	if n.term != 2 {
		v = append(v, "a pre-vote raised the term to "+itoa(n.term))
	}
	if len(actionsOf[Persist](acts)) != 0 {
		v = append(v, "a pre-vote persisted the hard state")
	}
	return v
}

func TestPreVoteChangesNoTerm(t *testing.T) {
	if v := preVoteBumps(t, extConfig(1)); len(v) != 0 {
		t.Fatal(v)
	}
}

// thesis §9.6 (the point of pre-vote): a node cut off from the cluster
// keeps failing pre-votes and never raises its term, so when it comes back
// the leader is not disrupted.
func TestPartitionedNodeDoesNotRaiseTerm(t *testing.T) {
	n := newNode(t, extConfig(1), restoreLog(2, 0, 1))
	for range 10 {
		fireElection(t, n)
		settle(t, n)
	}
	wantRoleTerm(t, n, PreCandidate, 2)
}

// thesis §6.2: with check-quorum, a leader steps down when it has not heard
// from a majority, itself included, within an election timeout; its
// election timer checks that every election timeout.
func TestCheckQuorum(t *testing.T) {
	tests := []struct {
		name    string
		members []uint64
		heard   []uint64 // peers that answer within the election timeout
		want    Role
	}{
		{"3/one peer answers", []uint64{1, 2, 3}, []uint64{2}, Leader},
		{"3/no peer answers", []uint64{1, 2, 3}, nil, Follower},
		{"5/two peers answer", []uint64{1, 2, 3, 4, 5}, []uint64{2, 5}, Leader},
		{"5/one peer answers", []uint64{1, 2, 3, 4, 5}, []uint64{3}, Follower},
		{"1/alone", []uint64{1}, nil, Leader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := extLeader(t, tt.members...)
			for _, p := range tt.heard {
				stepSettled(t, n, appendAck(p, 1, 3, 1))
			}
			acts := fireElection(t, n)
			wantRoleTerm(t, n, tt.want, 3)
			if tt.want == Leader {
				if ts := actionsOf[SetTimer](acts); len(ts) != 1 || ts[0].Timer != ElectionTimer || ts[0].After != testElectionTimeout {
					t.Fatalf("actions %v, want the check re-armed after an election timeout", describe(acts))
				}
				// The next check counts only answers since this one.
				if len(tt.heard) > 0 {
					fireElection(t, n)
					wantRoleTerm(t, n, Follower, 3)
				}
			}
		})
	}
}

// thesis §4.2.3: "if a server receives a RequestVote request within the
// minimum election timeout of hearing from a current leader, it does not
// update its term or grant its vote" — unless the candidate was started by
// a leadership transfer (§3.10).
func TestLeaderStickinessIgnoresVotes(t *testing.T) {
	transferVote := Message{Msg: raftMsg(2, 1, 3, &pb.RequestVote{LastLogIndex: 1, LastLogTerm: 1, Transfer: true})}
	tests := []struct {
		name      string
		cfg       Config
		heard     bool
		vote      Message
		wantTerm  uint64
		wantGrant bool
		wantReply bool
	}{
		{"heard from leader", extConfig(1), true, voteMsg(2, 1, 3, 1, 1), 2, false, false},
		{"heard from leader, transfer", extConfig(1), true, transferVote, 3, true, true},
		{"no leader", extConfig(1), false, voteMsg(2, 1, 3, 1, 1), 3, true, true},
		{"check-quorum off", testConfig(1), true, voteMsg(2, 1, 3, 1, 1), 3, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, tt.cfg, restoreLog(2, 0, 1))
			if tt.heard {
				stepSettled(t, n, appendMsg(3, 1, 2, 1, 1, 0))
			}
			acts := stepSettled(t, n, tt.vote)
			if n.term != tt.wantTerm {
				t.Fatalf("term %d, want %d", n.term, tt.wantTerm)
			}
			var got *pb.RequestVoteResponse
			for _, m := range sentTo(acts, 2) {
				got = m.GetRequestVoteResponse()
			}
			if (got != nil) != tt.wantReply || (got != nil && got.Granted != tt.wantGrant) {
				t.Fatalf("answer %v, want reply=%v granted=%v", got, tt.wantReply, tt.wantGrant)
			}
		})
	}
}
