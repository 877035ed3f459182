package fsm

// Client proposals: Raft §5.3 ("Once the entry has been safely replicated
// ... the leader applies the entry to its state machine and returns the
// result of that execution to the client"), §8 (clients find the leader),
// and the Reply contract of api.go.

import (
	"errors"
	"slices"
	"testing"
)

// replies returns the Reply actions in acts keyed by proposal ID; it fails
// when one proposal is answered twice.
func replies(t *testing.T, acts []Action) map[uint64]Reply {
	t.Helper()
	out := map[uint64]Reply{}
	for _, r := range actionsOf[Reply](acts) {
		if _, dup := out[r.ID]; dup {
			t.Fatalf("proposal %d answered twice: %v", r.ID, describe(acts))
		}
		out[r.ID] = r
	}
	return out
}

// Raft §8: "If the client's first choice is not the leader, that server will
// reject the client's request and supply information about the most recent
// leader it has heard from." Nothing is appended.
func TestProposalToNonLeaderAnsweredNotLeader(t *testing.T) {
	tests := []struct {
		name       string
		role       Role
		setup      []Message
		wantLeader uint64
	}{
		{"follower knowing no leader", Follower, nil, 0},
		{"follower that heard the leader", Follower, []Message{appendMsg(3, 1, 2, 1, 1, 0)}, 3},
		{"candidate", Candidate, nil, 0},
		{"deposed leader that heard the new one", Leader, []Message{appendMsg(2, 1, 4, 2, 3, 0)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), tt.role)
			for _, m := range tt.setup {
				stepSettled(t, n, m)
			}
			before := logTerms(n)
			acts := n.Step(Propose{Proposals: []Proposal{{ID: 5, Data: []byte("a")}, {ID: 6, Data: []byte("b")}}})
			if len(actionsOf[Persist](acts)) != 0 || len(sent(acts)) != 0 || !slices.Equal(logTerms(n), before) {
				t.Fatalf("a non-leader took the proposal: %v", describe(acts))
			}
			rs := replies(t, acts)
			for _, id := range []uint64{5, 6} {
				r, ok := rs[id]
				if !ok || !errors.Is(r.Err, ErrNotLeader) || r.Leader != tt.wantLeader {
					t.Fatalf("reply to %d: %+v, want ErrNotLeader with leader hint %d", id, r, tt.wantLeader)
				}
			}
		})
	}
}

// Raft §5.3: the leader appends the command to its log, replicates it, and
// answers the client once the entry is committed — here by naming the
// proposal in Apply.Refs beside its entry. Proposals with ID 0 have no one
// waiting and get no Ref.
func TestProposalAcknowledgedThroughApplyRefsWhenCommitted(t *testing.T) {
	tests := []struct {
		name     string
		acks     []uint64 // match indexes follower 2 acknowledges, in order
		wantRefs [][]Ref  // the Refs of each Apply, in order
	}{
		{"all at once", []uint64{4}, [][]Ref{{{ID: 7, Index: 2}, {ID: 8, Index: 4}}}},
		{"one by one", []uint64{2, 3, 4}, [][]Ref{{{ID: 7, Index: 2}}, nil, {{ID: 8, Index: 4}}}},
		{"nothing acknowledged", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := replicatingLeader(t, testConfig(1))
			acts := n.Step(Propose{Proposals: []Proposal{{ID: 7, Data: []byte("a")}, {ID: 0, Data: []byte("b")}, {ID: 8, Data: []byte("c")}}})
			p := onlyPersist(t, acts)
			if len(p.Entries) != 3 || p.Entries[0].Index != 2 || p.Entries[0].Term != 1 || string(p.Entries[2].Data) != "c" {
				t.Fatalf("persisted %v, want the three commands at 2..4 of term 1", p.Entries)
			}
			if len(actionsOf[Apply](acts)) != 0 || len(actionsOf[Reply](acts)) != 0 {
				t.Fatalf("answered before commit: %v", describe(acts))
			}
			// The Propose step says where each proposal with an ID went.
			if got, want := actionsOf[Proposed](acts), []Proposed{{ID: 7, Index: 2, Term: 1}, {ID: 8, Index: 4, Term: 1}}; !slices.Equal(got, want) {
				t.Fatalf("Proposed %v, want %v", got, want)
			}
			settle(t, n)
			var got [][]Ref
			for _, match := range tt.acks {
				for _, a := range actionsOf[Apply](n.Step(appendAck(2, 1, 1, match))) {
					got = append(got, a.Refs)
				}
			}
			if !slices.EqualFunc(got, tt.wantRefs, func(a, b []Ref) bool { return slices.Equal(a, b) }) {
				t.Fatalf("Apply refs %v, want %v", got, tt.wantRefs)
			}
		})
	}
}

// api.go, ErrLeadershipLost: a leader that steps down (Raft §5.1, on seeing a
// higher term) can no longer tell whether its uncommitted entries will
// commit, so it answers every proposal still waiting, once, with an error
// that says the outcome is unknown. Committed ones were already answered.
func TestDeposedLeaderAnswersPendingProposalsLeadershipLost(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
	}{
		{"AppendEntries", appendMsg(2, 1, 5, 0, 0, 0)},
		{"RequestVote", voteMsg(2, 1, 5, 9, 5)},
		{"AppendEntriesResponse", appendAck(2, 1, 5, 0)},
		{"RequestVoteResponse", voteResp(3, 1, 5, false)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := replicatingLeader(t, testConfig(1))
			n.Step(Propose{Proposals: []Proposal{{ID: 7, Data: []byte("a")}}})
			settle(t, n)
			committed := n.Step(appendAck(2, 1, 1, 2))
			if a := actionsOf[Apply](committed); len(a) != 1 || !slices.Equal(a[0].Refs, []Ref{{ID: 7, Index: 2}}) {
				t.Fatalf("proposal 7 not committed: %v", describe(committed))
			}
			n.Step(Propose{Proposals: []Proposal{{ID: 8, Data: []byte("b")}, {ID: 0, Data: []byte("c")}, {ID: 9, Data: []byte("d")}}})

			acts := stepSettled(t, n, tt.msg)
			wantRoleTerm(t, n, Follower, 5)
			rs := replies(t, acts)
			if len(rs) != 2 {
				t.Fatalf("replies %v, want one each for 8 and 9", describe(acts))
			}
			for _, id := range []uint64{8, 9} {
				if r := rs[id]; !errors.Is(r.Err, ErrLeadershipLost) {
					t.Fatalf("reply to %d: %+v, want ErrLeadershipLost", id, r)
				}
			}
			// Nothing is answered twice: were the entries to commit later
			// under the new leader, they would carry no Refs.
			later := stepSettled(t, n, appendMsg(2, 1, 5, 5, 1, 5))
			for _, a := range actionsOf[Apply](later) {
				if len(a.Refs) != 0 {
					t.Fatalf("deposed leader still answers: %v", a.Refs)
				}
			}
			if got := appliedIndexes(later); !slices.Equal(got, []uint64{3, 4, 5}) {
				t.Fatalf("applied %v after the new leader committed 5, want [3 4 5]", got)
			}
		})
	}
}

// A Propose carrying no proposals asks for nothing (the fsm actor may well
// flush an empty batch); it comes from clients, so by CONVENTIONS it is
// validated, never asserted on. It must change nothing and not panic.
func TestEmptyProposalBatchIsNoOp(t *testing.T) {
	for _, role := range allRoles {
		t.Run(role.String(), func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), role)
			before := n.Status()
			acts := n.Step(Propose{})
			if len(acts) != 0 || n.Status() != before {
				t.Fatalf("empty Propose caused %v", describe(acts))
			}
		})
	}
}
