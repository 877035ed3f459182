package fsm

// Term rules: Raft §5.1 and Figure 2 ("Rules for Servers, All Servers").

import "testing"

var allRoles = []Role{Follower, Candidate, Leader}

// Raft §5.1, Figure 2 (All Servers): "If RPC request or response contains
// term T > currentTerm: set currentTerm = T, convert to follower." The new
// term starts with no vote, and (ARCHITECTURE §3 rule 1) it is written to
// disk before anything is said in it.
func TestHigherTermMakesFollowerAndIsPersisted(t *testing.T) {
	bodies := []struct {
		name       string
		msg        func(term uint64) Message
		wantLeader uint64 // only an AppendEntries names the leader
		wantAnswer bool   // a request is answered once the term is durable
	}{
		{"AppendEntries", func(term uint64) Message { return appendMsg(2, 1, term, 0, 0, 0) }, 2, true},
		{"AppendEntriesResponse", func(term uint64) Message { return appendAck(2, 1, term, 0) }, 0, false},
		// The candidate's log is behind this node's, so the vote is refused
		// and the vote cleared by the new term stays clear.
		{"RequestVote", func(term uint64) Message { return voteMsg(2, 1, term, 0, 0) }, 0, true},
		{"RequestVoteResponse", func(term uint64) Message { return voteResp(2, 1, term, false) }, 0, false},
	}
	for _, role := range allRoles {
		for _, b := range bodies {
			t.Run(role.String()+"/"+b.name, func(t *testing.T) {
				n := nodeInRole(t, testConfig(1), role)
				newTerm := n.term + 3
				acts := n.Step(b.msg(newTerm))

				st := n.Status()
				if st.Role != Follower || st.Term != newTerm || st.Vote != 0 || st.Leader != b.wantLeader {
					t.Fatalf("status %+v, want follower at term %d, vote 0, leader %d", st, newTerm, b.wantLeader)
				}
				if len(acts) == 0 {
					t.Fatal("no actions")
				}
				p, ok := acts[0].(Persist)
				if !ok {
					t.Fatalf("first action is %v, want the Persist of the new term", describe(acts))
				}
				if hs := p.HardState; hs == nil || hs.Term != newTerm || hs.Vote != 0 {
					t.Fatalf("persisted hard state %v, want term %d vote 0", hs, newTerm)
				}
				if msgs := sent(acts); len(msgs) != 0 {
					t.Fatalf("sent %v before the new term was durable", msgs)
				}
				answers := sent(deliverPersisted(t, n, acts))
				if !b.wantAnswer {
					if len(answers) != 0 {
						t.Fatalf("answered a response: %v", answers)
					}
					return
				}
				if len(answers) != 1 || answers[0].Term != newTerm || answers[0].To != 2 {
					t.Fatalf("after Persisted sent %v, want one answer to 2 at term %d", answers, newTerm)
				}
			})
		}
	}
}

// Raft §5.1: "If a server receives a request with a stale term number, it
// rejects the request"; Figure 2 AppendEntries rule 1: "Reply false if term <
// currentTerm". The answer carries the receiver's term so the stale leader
// steps down, and nothing of the message is taken in.
func TestStaleAppendEntriesRejectedWithOurTerm(t *testing.T) {
	for _, role := range allRoles {
		t.Run(role.String(), func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), role)
			before := n.Status()
			acts := n.Step(appendMsg(2, 1, 1, 1, 1, 1, entries(2, 1, 1)...))

			if after := n.Status(); after != before {
				t.Fatalf("stale AppendEntries changed the node: %+v -> %+v", before, after)
			}
			if len(actionsOf[Persist](acts)) != 0 || len(actionsOf[SetTimer](acts)) != 0 {
				t.Fatalf("stale AppendEntries caused %v", describe(acts))
			}
			msgs := sent(acts)
			if len(msgs) != 1 {
				t.Fatalf("sent %v, want one rejection", msgs)
			}
			m, r := msgs[0], msgs[0].GetAppendEntriesResponse()
			if m.To != 2 || m.Term != before.Term || r == nil || r.Success || r.RejectIndex != 1 {
				t.Fatalf("answer %v, want a rejection of prev 1 to 2 at term %d", m, before.Term)
			}
		})
	}
}

// Raft §5.1 and Figure 2 RequestVote rule 1: "Reply false if term <
// currentTerm", whatever the candidate's log.
func TestStaleRequestVoteRefused(t *testing.T) {
	for _, role := range allRoles {
		t.Run(role.String(), func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), role)
			before := n.Status()
			acts := n.Step(voteMsg(2, 1, 1, 100, 1))

			if after := n.Status(); after != before {
				t.Fatalf("stale RequestVote changed the node: %+v -> %+v", before, after)
			}
			if len(actionsOf[Persist](acts)) != 0 {
				t.Fatalf("stale RequestVote persisted %v", describe(acts))
			}
			msgs := sent(acts)
			if len(msgs) != 1 || msgs[0].To != 2 || msgs[0].Term != before.Term ||
				msgs[0].GetRequestVoteResponse() == nil || msgs[0].GetRequestVoteResponse().Granted {
				t.Fatalf("sent %v, want one refusal to 2 at term %d", msgs, before.Term)
			}
		})
	}
}

// Raft §5.1 and ARCHITECTURE §3 rule 5: a response from an earlier term
// answers a request this node no longer stands behind, and is dropped.
func TestStaleResponsesIgnored(t *testing.T) {
	tests := []struct {
		name  string
		role  Role
		steps []Message
	}{
		// The leader's no-op (index 2) is durable; counting either ack would
		// commit it.
		{"leader/acks", Leader, []Message{appendAck(2, 1, 1, 2), appendAck(3, 1, 2, 2)}},
		{"leader/rejection", Leader, []Message{appendReject(2, 1, 2, 2, 0, 1)}},
		// Either grant would complete a quorum with the durable self-vote.
		{"candidate/grants", Candidate, []Message{voteResp(2, 1, 1, true), voteResp(3, 1, 2, true)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), tt.role)
			before := n.Status()
			var probes []progress
			for _, p := range n.peers {
				if pr := n.progress[p]; pr != nil {
					probes = append(probes, *pr)
				}
			}
			for _, m := range tt.steps {
				if acts := n.Step(m); len(acts) != 0 {
					t.Fatalf("stale %v caused %v", m.Msg, describe(acts))
				}
			}
			if after := n.Status(); after != before {
				t.Fatalf("stale responses changed the node: %+v -> %+v", before, after)
			}
			for i, p := range n.peers {
				if pr := n.progress[p]; pr != nil && (pr.match != probes[i].match || pr.next != probes[i].next) {
					t.Fatalf("progress of %d moved: %+v -> %+v", p, probes[i], *pr)
				}
			}
		})
	}
}

// The messages used above must be what they claim: a current-term ack from
// the same peers does commit, so the stale ones were ignored for their term.
func TestStaleResponsesIgnoredControl(t *testing.T) {
	n := nodeInRole(t, testConfig(1), Leader)
	n.Step(appendAck(2, 1, n.term, 2))
	if c := n.Status().Commit; c != 2 {
		t.Fatalf("current-term ack: commit %d, want 2", c)
	}
	c := nodeInRole(t, testConfig(1), Candidate)
	c.Step(voteResp(2, 1, c.term, true))
	if c.Status().Role != Leader {
		t.Fatalf("current-term grant: %v, want leader", c.Status().Role)
	}
}
