package fsm

// Voting: Raft §5.2, §5.4.1 and Figure 2 ("RequestVote RPC, Receiver
// implementation").

import (
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// voteAnswer steps ev, reports everything durable, and returns whether the
// node granted candidate its vote; it fails when the node sent no answer.
func voteAnswer(t *testing.T, n *Node, ev Message) bool {
	t.Helper()
	var answer *pb.RequestVoteResponse
	for _, m := range sentTo(stepSettled(t, n, ev), ev.Msg.From) {
		if r := m.GetRequestVoteResponse(); r != nil {
			if m.Term != n.term {
				t.Fatalf("vote answer at term %d, node at %d", m.Term, n.term)
			}
			answer = r
		}
	}
	if answer == nil {
		t.Fatalf("no answer to the RequestVote from %d", ev.Msg.From)
	}
	return answer.Granted
}

// Raft §5.2: "Each server will vote for at most one candidate in a given
// term, on a first-come-first-served basis"; Figure 2 RequestVote rule 2:
// grant "if votedFor is null or candidateId" — so a candidate asking again
// (its first answer lost) gets the same answer.
func TestVoteAtMostOncePerTerm(t *testing.T) {
	type ask struct {
		from, term uint64
		want       bool
	}
	tests := []struct {
		name string
		role Role
		asks []ask
	}{
		{"first come first served", Follower, []ask{{2, 2, true}, {3, 2, false}}},
		{"same candidate granted again", Follower, []ask{{2, 2, true}, {3, 2, false}, {2, 2, true}}},
		{"other order", Follower, []ask{{3, 2, true}, {2, 2, false}, {3, 2, true}}},
		{"a new term frees the vote", Follower, []ask{{2, 2, true}, {3, 3, true}, {2, 3, false}}},
		{"candidate voted for itself", Candidate, []ask{{2, 3, false}, {3, 3, false}}},
		{"leader voted for itself", Leader, []ask{{2, 3, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), tt.role)
			for i, a := range tt.asks {
				// The candidates' logs are as up-to-date as any here.
				if got := voteAnswer(t, n, voteMsg(a.from, 1, a.term, 5, a.term)); got != a.want {
					t.Fatalf("ask %d (%d at term %d): granted %v, want %v", i, a.from, a.term, got, a.want)
				}
			}
			if tt.role != Follower {
				wantRoleTerm(t, n, tt.role, 3)
			}
		})
	}
}

// upToDateVote asks a voter at term 2 whose log has terms [1 2 2] for its
// vote at term 3, from candidate 2 whose log ends at (lastIndex, lastTerm).
func upToDateVote(t *testing.T, cfg Config, lastIndex, lastTerm uint64) (granted bool, n *Node) {
	t.Helper()
	n = newNode(t, cfg, restoreLog(2, 0, 1, 2, 2))
	return voteAnswer(t, n, voteMsg(2, 1, 3, lastIndex, lastTerm)), n
}

// Raft §5.4.1: "the voter denies its vote if its own log is more up-to-date
// than that of the candidate. ... If the logs have last entries with
// different terms, then the log with the later term is more up-to-date. If
// the logs end with the same term, then whichever log is longer is more
// up-to-date."
func TestVoteOnlyForUpToDateLog(t *testing.T) {
	tests := []struct {
		name                string
		lastIndex, lastTerm uint64
		want                bool
	}{
		{"later last term, shorter log", 1, 3, true},
		{"later last term, longer log", 9, 3, true},
		{"same last term, same length", 3, 2, true},
		{"same last term, longer log", 5, 2, true},
		{"same last term, shorter log", 2, 2, false},
		{"earlier last term, longer log", 10, 1, false},
		{"earlier last term, same length", 3, 1, false},
		{"empty log", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			granted, n := upToDateVote(t, testConfig(1), tt.lastIndex, tt.lastTerm)
			if granted != tt.want {
				t.Fatalf("candidate log (%d, %d) against voter (3, 2): granted %v, want %v", tt.lastIndex, tt.lastTerm, granted, tt.want)
			}
			// The candidate's term is adopted either way (Raft §5.1); the
			// vote is recorded only when granted.
			wantVote := uint64(0)
			if tt.want {
				wantVote = 2
			}
			if st := n.Status(); st.Term != 3 || st.Vote != wantVote {
				t.Fatalf("term %d vote %d, want term 3 vote %d", st.Term, st.Vote, wantVote)
			}
		})
	}
}

// heldVote has follower 1 (term 2, log [1]) grant candidate 2 its vote at
// term; it returns the actions of that step, which must hold the Persist of
// the vote, and of the step reporting it durable.
func heldVote(t *testing.T, cfg Config, term uint64) (asked, persisted []Action) {
	t.Helper()
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	asked = n.Step(voteMsg(2, 1, term, 1, 1))
	return asked, deliverPersisted(t, n, asked)
}

// ARCHITECTURE §3 rule 1 and Raft Figure 2 ("Persistent state ... updated on
// stable storage before responding to RPCs"): a granted vote is written to
// disk, and the grant is sent only once the store reports it durable, so a
// voter that crashes and restarts cannot vote twice in one term.
func TestGrantedVoteHeldUntilPersisted(t *testing.T) {
	for _, tt := range []struct {
		name string
		term uint64
	}{{"same term", 2}, {"higher term", 5}} {
		t.Run(tt.name, func(t *testing.T) {
			asked, persisted := heldVote(t, testConfig(1), tt.term)
			p := onlyPersist(t, asked)
			if p.HardState == nil || p.HardState.Term != tt.term || p.HardState.Vote != 2 {
				t.Fatalf("persisted hard state %v, want term %d vote 2", p.HardState, tt.term)
			}
			if msgs := sent(asked); len(msgs) != 0 {
				t.Fatalf("sent %v before the vote was durable", msgs)
			}
			msgs := sent(persisted)
			if len(msgs) != 1 || msgs[0].To != 2 || msgs[0].Term != tt.term || !msgs[0].GetRequestVoteResponse().GetGranted() {
				t.Fatalf("after Persisted sent %v, want the grant to 2 at term %d", msgs, tt.term)
			}
		})
	}

	// The grant waits for its own Persist, not merely for an earlier one.
	t.Run("earlier persist pending", func(t *testing.T) {
		n := newNode(t, testConfig(1), restoreLog(2, 0, 1))
		appended := n.Step(appendMsg(3, 1, 2, 1, 1, 0, entries(2, 2)...)) // seq 1
		asked := n.Step(voteMsg(2, 1, 3, 2, 2))                           // seq 2
		if onlyPersist(t, appended).Seq != 1 || onlyPersist(t, asked).Seq != 2 {
			t.Fatalf("unexpected persist seqs: %v, %v", describe(appended), describe(asked))
		}
		for _, m := range sent(append(asked, n.Step(Persisted{Seq: 1})...)) {
			if m.GetRequestVoteResponse() != nil {
				t.Fatalf("grant %v sent before its own Persist was durable", m)
			}
		}
		msgs := sentTo(n.Step(Persisted{Seq: 2}), 2)
		if len(msgs) != 1 || !msgs[0].GetRequestVoteResponse().GetGranted() {
			t.Fatalf("after Persisted{2} sent %v, want the grant", msgs)
		}
	})
}
