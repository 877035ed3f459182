package fsm

// Leader election: Raft §5.2 and Figure 2 ("Followers", "Candidates").

import (
	"slices"
	"testing"
	"time"
)

// Raft §5.2: "To begin an election, a follower increments its current term
// and transitions to candidate state. It then votes for itself and issues
// RequestVote RPCs in parallel to each of the other servers." A candidate
// whose election times out starts another the same way (Figure 2,
// Candidates). ARCHITECTURE §3 rule 1: the new term and the self-vote are
// persisted first, and the RequestVotes, which act on them, wait until the
// store reports them durable.
func TestElectionTimeoutStartsElection(t *testing.T) {
	for _, role := range []Role{Follower, Candidate} {
		t.Run(role.String(), func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), role)
			term := n.term + 1
			acts := fireElection(t, n)

			if st := n.Status(); st.Role != Candidate || st.Term != term || st.Vote != 1 || st.Leader != 0 {
				t.Fatalf("status %+v, want candidate at term %d voting for itself", st, term)
			}
			p, ok := acts[0].(Persist)
			if !ok || p.HardState == nil || p.HardState.Term != term || p.HardState.Vote != 1 {
				t.Fatalf("actions %v, want first a Persist of term %d vote 1", describe(acts), term)
			}
			if len(actionsOf[SetTimer](acts)) != 1 || actionsOf[SetTimer](acts)[0].Timer != ElectionTimer {
				t.Fatalf("actions %v, want the election timer re-armed", describe(acts))
			}
			if msgs := sent(acts); len(msgs) != 0 {
				t.Fatalf("sent %v before the vote was durable", msgs)
			}

			msgs := sent(deliverPersisted(t, n, acts))
			var to []uint64
			for _, m := range msgs {
				rv := m.GetRequestVote()
				if rv == nil || m.Term != term || m.From != 1 || rv.LastLogIndex != 1 || rv.LastLogTerm != 1 {
					t.Fatalf("sent %v, want RequestVote at term %d for log (1, 1)", m, term)
				}
				to = append(to, m.To)
			}
			slices.Sort(to)
			if !slices.Equal(to, []uint64{2, 3}) {
				t.Fatalf("RequestVote sent to %v, want [2 3]", to)
			}
		})
	}
}

// Raft §5.2: "A candidate wins an election if it receives votes from a
// majority of the servers in the full cluster for the same term." Its own
// vote is one of them only once durable (ARCHITECTURE §3 rule 1).
func TestCandidateWinsOnlyWithQuorumIncludingDurableSelfVote(t *testing.T) {
	own := Persisted{Seq: 1} // the candidate's term and self-vote
	grant := func(p uint64) Event { return voteResp(p, 1, 1, true) }
	refuse := func(p uint64) Event { return voteResp(p, 1, 1, false) }
	three, five := []uint64{1, 2, 3}, []uint64{1, 2, 3, 4, 5}
	tests := []struct {
		name    string
		members []uint64
		steps   []Event
		want    Role
	}{
		{"3/own vote and one grant", three, []Event{own, grant(2)}, Leader},
		{"3/grant before own vote durable", three, []Event{grant(2)}, Candidate},
		{"3/all peers grant, own vote not durable", three, []Event{grant(2), grant(3)}, Candidate},
		{"3/own vote durable after grants", three, []Event{grant(2), grant(3), own}, Leader},
		{"3/own vote and refusals", three, []Event{own, refuse(2), refuse(3)}, Candidate},
		{"3/own vote only", three, []Event{own}, Candidate},
		{"5/own vote and one grant", five, []Event{own, grant(2)}, Candidate},
		{"5/own vote and one peer granting twice", five, []Event{own, grant(2), grant(2)}, Candidate},
		{"5/own vote and two grants", five, []Event{own, grant(2), refuse(4), grant(3)}, Leader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1, tt.members...), Restore{})
			fireElection(t, n)
			for _, ev := range tt.steps {
				n.Step(ev)
			}
			wantRoleTerm(t, n, tt.want, 1)
			if tt.want == Leader && n.Status().Leader != 1 {
				t.Fatalf("leader hint %d, want 1", n.Status().Leader)
			}
		})
	}
}

// Raft §5.2 with a cluster of one: the candidate's own vote is a majority,
// so it wins as soon as that vote is durable, and then commits its no-op
// (and anything proposed) as soon as its own log is durable.
func TestSingleNodeClusterBecomesLeaderAfterPersisted(t *testing.T) {
	n := newNode(t, testConfig(1, 1), Restore{})
	acts := fireElection(t, n)
	wantRoleTerm(t, n, Candidate, 1)
	if len(sent(acts)) != 0 {
		t.Fatalf("a single node sent %v", describe(acts))
	}

	acts = deliverPersisted(t, n, acts)
	wantRoleTerm(t, n, Leader, 1)
	p := onlyPersist(t, acts)
	if len(p.Entries) != 1 || p.Entries[0].Index != 1 || p.Entries[0].Term != 1 {
		t.Fatalf("leader persisted %v, want its no-op at index 1 term 1", p.Entries)
	}
	if c := n.Status().Commit; c != 0 {
		t.Fatalf("commit %d before the no-op is durable", c)
	}

	acts = deliverPersisted(t, n, acts)
	if got := appliedIndexes(acts); !slices.Equal(got, []uint64{1}) || n.Status().Commit != 1 {
		t.Fatalf("after the no-op is durable: applied %v commit %d, want [1] and 1", got, n.Status().Commit)
	}

	acts = n.Step(Propose{Proposals: []Proposal{{ID: 9, Data: []byte("x")}}})
	acts = deliverPersisted(t, n, acts)
	applies := actionsOf[Apply](acts)
	if len(applies) != 1 || !slices.Equal(applies[0].Refs, []Ref{{ID: 9, Index: 2}}) {
		t.Fatalf("proposal: %v, want Apply of index 2 with ref 9", describe(acts))
	}
}

// Raft §5.2: "If the leader's term (included in its RPC) is at least as large
// as the candidate's current term, then the candidate recognizes the leader
// as legitimate and returns to follower state. If the term in the RPC is
// smaller than the candidate's current term, then the candidate rejects the
// RPC and continues in candidate state."
func TestCandidateStepsDownOnAppendEntriesOfItsTerm(t *testing.T) {
	tests := []struct {
		name       string
		termDelta  int // relative to the candidate's term (3)
		wantRole   Role
		wantTerm   uint64
		wantLeader uint64
		wantOK     bool
	}{
		{"same term", 0, Follower, 3, 3, true},
		{"higher term", 1, Follower, 4, 3, true},
		{"lower term", -1, Candidate, 3, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), Candidate)
			term := uint64(int(n.term) + tt.termDelta)
			acts := stepSettled(t, n, appendMsg(3, 1, term, 1, 1, 0))

			st := n.Status()
			if st.Role != tt.wantRole || st.Term != tt.wantTerm || st.Leader != tt.wantLeader {
				t.Fatalf("status %+v, want %v at term %d with leader %d", st, tt.wantRole, tt.wantTerm, tt.wantLeader)
			}
			if tt.termDelta == 0 && st.Vote != 1 {
				t.Fatalf("vote %d, want the candidate's own vote kept for its term", st.Vote)
			}
			msgs := sentTo(acts, 3)
			if len(msgs) != 1 || msgs[0].GetAppendEntriesResponse().GetSuccess() != tt.wantOK {
				t.Fatalf("answered %v, want one response with success %v", msgs, tt.wantOK)
			}
		})
	}
}

// Raft §5.2: "each candidate will time out and start a new election by
// incrementing its term and initiating another round of RequestVote RPCs".
// Grants from an earlier round no longer count (Raft §5.1).
func TestSplitVoteStartsNewElectionWithHigherTerm(t *testing.T) {
	for _, rounds := range []int{1, 2, 5} {
		t.Run(itoa(uint64(rounds))+" rounds", func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), Candidate)
			first := n.term
			// Node 2 voted for someone else: a split vote.
			n.Step(voteResp(2, 1, first, false))
			for r := 1; r <= rounds; r++ {
				gen := n.timerGen[ElectionTimer]
				acts := stepSettled(t, n, Timeout{Timer: ElectionTimer, Gen: gen})
				term := first + uint64(r)
				wantRoleTerm(t, n, Candidate, term)
				if n.timerGen[ElectionTimer] == gen {
					t.Fatal("the new election did not re-arm the election timer")
				}
				if rvs := sent(acts); len(rvs) != 2 || rvs[0].Term != term || rvs[0].GetRequestVote() == nil {
					t.Fatalf("round %d sent %v, want RequestVotes at term %d", r, rvs, term)
				}
			}
			term := first + uint64(rounds)
			// A grant from the first round arrives late: it is stale.
			n.Step(voteResp(2, 1, term-1, true))
			wantRoleTerm(t, n, Candidate, term)
			n.Step(voteResp(2, 1, term, true))
			wantRoleTerm(t, n, Leader, term)
		})
	}
}

// A Timeout names the generation of the SetTimer it answers; the fsm actor
// may deliver a firing it could not cancel in time, which must change
// nothing (ARCHITECTURE §2: the fsm owns no clock, so it must recognise
// superseded timers itself).
func TestStaleTimeoutGenerationIgnored(t *testing.T) {
	tests := []struct {
		name string
		// setup drives the node and returns a Timeout that is stale.
		setup func(t *testing.T, n *Node) Timeout
	}{
		{"follower election timer reset by the leader", func(t *testing.T, n *Node) Timeout {
			old := Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer]}
			n.Step(appendMsg(2, 1, n.term, 1, 1, 0))
			return old
		}},
		{"follower election timer reset by a granted vote", func(t *testing.T, n *Node) Timeout {
			old := Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer]}
			stepSettled(t, n, voteMsg(2, 1, n.term, 1, 1))
			return old
		}},
		{"candidate timer of the previous round", func(t *testing.T, n *Node) Timeout {
			makeCandidate(t, n)
			old := Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer]}
			makeCandidate(t, n)
			return old
		}},
		{"leader election timer of its candidacy", func(t *testing.T, n *Node) Timeout {
			makeCandidate(t, n)
			old := Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer]}
			n.Step(voteResp(2, 1, n.term, true))
			return old
		}},
		{"leader heartbeat timer superseded", func(t *testing.T, n *Node) Timeout {
			makeLeader(t, n)
			old := Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer]}
			fireHeartbeat(t, n)
			return old
		}},
		{"heartbeat timer of a deposed leader", func(t *testing.T, n *Node) Timeout {
			makeLeader(t, n)
			old := Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer]}
			stepSettled(t, n, appendMsg(2, 1, n.term+1, 0, 0, 0))
			return old
		}},
		{"unknown timer", func(t *testing.T, n *Node) Timeout {
			return Timeout{Timer: Timer(7), Gen: 0}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), Follower)
			stale := tt.setup(t, n)
			settle(t, n)
			before := n.Status()
			if acts := n.Step(stale); len(acts) != 0 {
				t.Fatalf("stale %+v caused %v", stale, describe(acts))
			}
			if after := n.Status(); after != before {
				t.Fatalf("stale %+v changed the node: %+v -> %+v", stale, before, after)
			}
		})
	}
}

// fixedRand always draws the same value (clamped to n-1) and records the
// bounds it was asked for.
type fixedRand struct {
	v     int64
	asked []int64
}

func (r *fixedRand) Int64N(n int64) int64 {
	r.asked = append(r.asked, n)
	return min(r.v, n-1)
}

// electionTimeouts returns the durations of the first count election timers
// a node sets: at Start and at each of count-1 elections.
func electionTimeouts(t *testing.T, cfg Config, count int) []time.Duration {
	t.Helper()
	n, err := New(cfg, Restore{})
	if err != nil {
		t.Fatal(err)
	}
	acts := n.Step(Start{})
	for len(acts) < 1000 {
		var got []time.Duration
		for _, s := range actionsOf[SetTimer](acts) {
			if s.Timer == ElectionTimer {
				got = append(got, s.After)
			}
		}
		if len(got) >= count {
			return got[:count]
		}
		acts = append(acts, stepSettled(t, n, Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer]})...)
	}
	t.Fatal("too few election timers")
	return nil
}

// Raft §5.2: "election timeouts are chosen randomly from a fixed interval
// (e.g., 150–300ms)"; here [ElectionTimeout, 2*ElectionTimeout). ARCHITECTURE
// §2: the randomness comes from the injected Rand, so a seed reproduces it.
func TestElectionTimeoutRandomizedFromInjectedRand(t *testing.T) {
	const et = testElectionTimeout
	t.Run("range", func(t *testing.T) {
		for seed := uint64(1); seed <= 5; seed++ {
			cfg := testConfig(1)
			cfg.Rand = seededRand(seed)
			ds := electionTimeouts(t, cfg, 50)
			for _, d := range ds {
				if d < et || d >= 2*et {
					t.Fatalf("seed %d: election timeout %v outside [%v, %v)", seed, d, et, 2*et)
				}
			}
			if slices.Min(ds) == slices.Max(ds) {
				t.Fatalf("seed %d: 50 election timeouts all %v: not randomized", seed, ds[0])
			}
		}
	})
	t.Run("bounds", func(t *testing.T) {
		tests := []struct {
			draw int64
			want time.Duration
		}{
			{0, et},
			{int64(et) / 2, et + et/2},
			{int64(et) * 10, 2*et - 1}, // the largest value Int64N may return
		}
		for _, tt := range tests {
			r := &fixedRand{v: tt.draw}
			cfg := testConfig(1)
			cfg.Rand = r
			for _, d := range electionTimeouts(t, cfg, 3) {
				if d != tt.want {
					t.Fatalf("draw %d: timeout %v, want %v", tt.draw, d, tt.want)
				}
			}
			for _, n := range r.asked {
				if n != int64(et) {
					t.Fatalf("asked the Rand for Int64N(%d), want Int64N(%d)", n, int64(et))
				}
			}
		}
	})
	t.Run("seeds", func(t *testing.T) {
		run := func(seed uint64) []time.Duration {
			cfg := testConfig(1)
			cfg.Rand = seededRand(seed)
			return electionTimeouts(t, cfg, 20)
		}
		if a, b := run(1), run(1); !slices.Equal(a, b) {
			t.Fatalf("same seed, different timeouts:\n%v\n%v", a, b)
		}
		if a, b := run(1), run(2); slices.Equal(a, b) {
			t.Fatalf("seeds 1 and 2 gave the same timeouts %v", a)
		}
	})
}
