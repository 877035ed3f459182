package fsm

// Log replication, follower side: Raft §5.3 and Figure 2 ("AppendEntries
// RPC, Receiver implementation"), with ARCHITECTURE §3 rules 1 and 4.

import (
	"slices"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// appendAnswer returns the one AppendEntriesResponse in acts, or nil.
func appendAnswer(t *testing.T, acts []Action) (*pb.RaftMessage, *pb.AppendEntriesResponse) {
	t.Helper()
	var out []*pb.RaftMessage
	for _, m := range sent(acts) {
		if m.GetAppendEntriesResponse() != nil {
			out = append(out, m)
		}
	}
	switch len(out) {
	case 0:
		return nil, nil
	case 1:
		return out[0], out[0].GetAppendEntriesResponse()
	}
	t.Fatalf("want at most one AppendEntriesResponse, got %v", out)
	return nil, nil
}

// Raft §5.3, Figure 2 AppendEntries rule 2: "Reply false if log doesn't
// contain an entry at prevLogIndex whose term matches prevLogTerm." The
// rejection carries what fast backtracking needs (Raft §5.3, last
// paragraphs): the follower's term at prevLogIndex (0 when its log is
// shorter) and the first index it holds of that term (or its last index +
// 1). Nothing is appended.
func TestFollowerRejectsAppendEntriesWithoutMatchingPrev(t *testing.T) {
	tests := []struct {
		name              string
		log               []uint64
		prevIndex         uint64
		prevTerm          uint64
		wantConflictTerm  uint64
		wantConflictIndex uint64
	}{
		{"empty log", nil, 1, 1, 0, 1},
		{"prev beyond the log", []uint64{1, 1, 2}, 5, 2, 0, 4},
		{"prev just past the log", []uint64{1, 1, 2}, 4, 2, 0, 4},
		{"prev term differs, run starts mid-log", []uint64{1, 1, 2, 2, 2}, 4, 3, 2, 3},
		{"prev term differs, run starts at 1", []uint64{1, 1, 2, 2, 2}, 2, 2, 1, 1},
		{"prev term differs at the last entry", []uint64{1, 2, 3}, 3, 4, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), restoreLog(4, 0, tt.log...))
			acts := n.Step(appendMsg(2, 1, 4, tt.prevIndex, tt.prevTerm, 0, entries(tt.prevIndex+1, 4)...))

			if len(actionsOf[Persist](acts)) != 0 {
				t.Fatalf("a rejected AppendEntries persisted %v", describe(acts))
			}
			if got := logTerms(n); !slices.Equal(got, tt.log) {
				t.Fatalf("log %v changed to %v", tt.log, got)
			}
			m, r := appendAnswer(t, acts)
			if r == nil || r.Success || m.Term != 4 || m.To != 2 {
				t.Fatalf("answer %v, want a rejection to 2 at term 4", m)
			}
			if r.RejectIndex != tt.prevIndex || r.ConflictTerm != tt.wantConflictTerm || r.ConflictIndex != tt.wantConflictIndex ||
				r.LastLogIndex != uint64(len(tt.log)) {
				t.Fatalf("rejection %v, want reject_index %d conflict_term %d conflict_index %d last_log_index %d",
					r, tt.prevIndex, tt.wantConflictTerm, tt.wantConflictIndex, len(tt.log))
			}
		})
	}
}

// heldAck has follower 1 (term 2, log [1 1]) take entry 3 of term 2 from
// leader 2; it returns the actions of that step and of the step reporting
// its Persist durable.
func heldAck(t *testing.T, cfg Config) (appended, persisted []Action) {
	t.Helper()
	n := newNode(t, cfg, restoreLog(2, 0, 1, 1))
	appended = n.Step(appendMsg(2, 1, 2, 2, 1, 0, entries(3, 2)...))
	return appended, deliverPersisted(t, n, appended)
}

// Raft §5.3 and Figure 2 AppendEntries rule 4: "Append any new entries not
// already in the log", then "reply true" with the index it now matches up to
// (prevLogIndex + len(entries)). ARCHITECTURE §3 rule 1: the success is sent
// only once the store reports the entries durable, because the leader
// counts it towards a commit quorum.
func TestFollowerAppendsAndAcksOnlyWhenDurable(t *testing.T) {
	tests := []struct {
		name      string
		log       []uint64
		prevIndex uint64
		prevTerm  uint64
		ents      []*pb.Entry
		wantFrom  uint64 // first index of the persisted entries
		wantLog   []uint64
	}{
		{"into an empty log", nil, 0, 0, entries(1, 1, 2), 1, []uint64{1, 2}},
		{"after the last entry", []uint64{1, 1}, 2, 1, entries(3, 2), 3, []uint64{1, 1, 2}},
		{"partly present", []uint64{1, 1, 1}, 1, 1, entries(2, 1, 1, 2, 2), 4, []uint64{1, 1, 1, 2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), restoreLog(2, 0, tt.log...))
			acts := n.Step(appendMsg(2, 1, 2, tt.prevIndex, tt.prevTerm, 0, tt.ents...))

			p := onlyPersist(t, acts)
			if len(p.Entries) == 0 || p.Entries[0].Index != tt.wantFrom || p.Entries[len(p.Entries)-1].Index != uint64(len(tt.wantLog)) {
				t.Fatalf("persisted %v, want entries %d..%d", describe(acts), tt.wantFrom, len(tt.wantLog))
			}
			if got := logTerms(n); !slices.Equal(got, tt.wantLog) {
				t.Fatalf("log %v, want %v", got, tt.wantLog)
			}
			if m, _ := appendAnswer(t, acts); m != nil {
				t.Fatalf("acknowledged %v before the entries were durable", m)
			}
			if d := n.Status().Durable; d >= tt.wantFrom {
				t.Fatalf("durable %d before Persisted, want < %d", d, tt.wantFrom)
			}

			m, r := appendAnswer(t, deliverPersisted(t, n, acts))
			want := tt.prevIndex + uint64(len(tt.ents))
			if r == nil || !r.Success || r.MatchIndex != want || m.Term != 2 || m.To != 2 {
				t.Fatalf("after Persisted answered %v, want success with match_index %d", m, want)
			}
			if d := n.Status().Durable; d != uint64(len(tt.wantLog)) {
				t.Fatalf("durable %d after Persisted, want %d", d, len(tt.wantLog))
			}
		})
	}

	t.Run("representative", func(t *testing.T) {
		appended, persisted := heldAck(t, testConfig(1))
		if m, _ := appendAnswer(t, appended); m != nil {
			t.Fatalf("acknowledged %v before Persisted", m)
		}
		if _, r := appendAnswer(t, persisted); !r.GetSuccess() || r.GetMatchIndex() != 3 {
			t.Fatalf("after Persisted: %v, want success match 3", describe(persisted))
		}
	})
}

// staleAppend gives follower 1 (term 2, durable log [1 1 2 2]) a delayed
// copy of an AppendEntries it already took: prev 1, entries 2 and 3. It
// returns the node and the actions of that step.
func staleAppend(t *testing.T, cfg Config) (*Node, []Action) {
	t.Helper()
	n := newNode(t, cfg, restoreLog(2, 0, 1, 1, 2, 2))
	return n, n.Step(appendMsg(2, 1, 2, 1, 1, 0, entries(2, 1, 2)...))
}

// ARCHITECTURE §3 rule 4 and Figure 2 AppendEntries rule 3 ("If an existing
// entry conflicts with a new one ..."): only a conflict truncates. A stale or
// duplicated AppendEntries whose entries the log already holds changes
// nothing — truncating would delete entries this follower acknowledged and
// a leader may have committed — and is answered for what it covered.
func TestFollowerDoesNotTruncateOnDuplicateAppendEntries(t *testing.T) {
	log := []uint64{1, 1, 2, 2}
	tests := []struct {
		name      string
		prevIndex uint64
		prevTerm  uint64
		ents      []*pb.Entry
	}{
		{"whole log again", 0, 0, entries(1, 1, 1, 2, 2)},
		{"stale prefix", 1, 1, entries(2, 1, 2)},
		{"single old entry", 2, 1, entries(3, 2)},
		{"heartbeat in the middle", 2, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), restoreLog(2, 0, log...))
			acts := n.Step(appendMsg(2, 1, 2, tt.prevIndex, tt.prevTerm, 0, tt.ents...))

			if ps := actionsOf[Persist](acts); len(ps) != 0 {
				t.Fatalf("a duplicate caused %v", describe(acts))
			}
			if got := logTerms(n); !slices.Equal(got, log) {
				t.Fatalf("log %v became %v", log, got)
			}
			// Nothing is pending, so the answer goes out at once.
			want := tt.prevIndex + uint64(len(tt.ents))
			if _, r := appendAnswer(t, acts); !r.GetSuccess() || r.GetMatchIndex() != want {
				t.Fatalf("answered %v, want success with match_index %d", describe(acts), want)
			}
		})
	}

	t.Run("representative", func(t *testing.T) {
		n, acts := staleAppend(t, testConfig(1))
		if len(actionsOf[Persist](acts)) != 0 || n.Status().LastIndex != 4 {
			t.Fatalf("stale AppendEntries: %v, last index %d", describe(acts), n.Status().LastIndex)
		}
	})

	// A duplicate of entries that are not durable yet adds no Persist, and
	// its answer waits for the Persist that holds them.
	t.Run("duplicate of entries not yet durable", func(t *testing.T) {
		n := newNode(t, testConfig(1), restoreLog(2, 0, log...))
		first := n.Step(appendMsg(2, 1, 2, 4, 2, 0, entries(5, 2)...))
		dup := n.Step(appendMsg(2, 1, 2, 4, 2, 0, entries(5, 2)...))
		if len(actionsOf[Persist](dup)) != 0 || len(sent(dup)) != 0 {
			t.Fatalf("duplicate: %v, want nothing until the first Persist is durable", describe(dup))
		}
		acks := sent(deliverPersisted(t, n, first))
		if len(acks) != 2 || acks[1].GetAppendEntriesResponse().GetMatchIndex() != 5 {
			t.Fatalf("after Persisted sent %v, want both acks of index 5", acks)
		}
	})
}

// Raft §5.3 and Figure 2 AppendEntries rule 3: "If an existing entry
// conflicts with a new one (same index but different terms), delete the
// existing entry and all that follow it"; rule 4 appends the rest. The
// Persist starts at the first conflicting index, so the store deletes from
// there.
func TestFollowerTruncatesAndReplacesOnConflict(t *testing.T) {
	tests := []struct {
		name      string
		prevIndex uint64
		prevTerm  uint64
		ents      []*pb.Entry
		wantFrom  uint64
		wantLog   []uint64
	}{
		{"conflict at the first new entry", 2, 1, entries(3, 3), 3, []uint64{1, 1, 3}},
		{"conflict after a matching entry", 2, 1, entries(3, 2, 3, 3), 4, []uint64{1, 1, 2, 3, 3}},
		{"conflict at index 1", 0, 0, entries(1, 3), 1, []uint64{3}},
		{"conflict at the last entry", 3, 2, entries(4, 3, 3), 4, []uint64{1, 1, 2, 3, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), restoreLog(3, 0, 1, 1, 2, 2))
			acts := n.Step(appendMsg(2, 1, 3, tt.prevIndex, tt.prevTerm, 0, tt.ents...))

			p := onlyPersist(t, acts)
			var got []uint64
			for i, e := range p.Entries {
				if e.Index != tt.wantFrom+uint64(i) {
					t.Fatalf("persisted %v, want entries from %d", describe(acts), tt.wantFrom)
				}
				got = append(got, e.Term)
			}
			if !slices.Equal(got, tt.wantLog[tt.wantFrom-1:]) {
				t.Fatalf("persisted terms %v, want %v", got, tt.wantLog[tt.wantFrom-1:])
			}
			if got := logTerms(n); !slices.Equal(got, tt.wantLog) {
				t.Fatalf("log %v, want %v", got, tt.wantLog)
			}
			if d := n.Status().Durable; d != tt.wantFrom-1 {
				t.Fatalf("durable %d after truncating at %d, want %d", d, tt.wantFrom, tt.wantFrom-1)
			}
			want := tt.prevIndex + uint64(len(tt.ents))
			if _, r := appendAnswer(t, deliverPersisted(t, n, acts)); !r.GetSuccess() || r.GetMatchIndex() != want {
				t.Fatalf("after Persisted: want success with match_index %d, got %v", want, r)
			}
		})
	}
}

// commitBeyondSent gives follower 1 (term 1, log of five entries of term 1)
// a heartbeat from leader 2 that matches at index 2 and says the leader
// committed 5; it returns the node and the actions of that step.
func commitBeyondSent(t *testing.T, cfg Config) (*Node, []Action) {
	t.Helper()
	n := newNode(t, cfg, restoreLog(1, 0, 1, 1, 1, 1, 1))
	return n, n.Step(appendMsg(2, 1, 1, 2, 1, 5))
}

// Raft Figure 2 AppendEntries rule 5: "If leaderCommit > commitIndex, set
// commitIndex = min(leaderCommit, index of last new entry)". Entries past
// what the message covered may be a deposed leader's and differ from the
// committed ones, even when the follower's log is longer.
func TestFollowerCommitIsMinOfLeaderCommitAndLastNewEntry(t *testing.T) {
	tests := []struct {
		name       string
		pre        []Message
		msg        Message
		wantCommit uint64
	}{
		{"heartbeat matching early in a longer log", nil, appendMsg(2, 1, 1, 2, 1, 5), 2},
		{"one entry covered", nil, appendMsg(2, 1, 1, 2, 1, 5, entries(3, 1)...), 3},
		{"leader commit is the limit", nil, appendMsg(2, 1, 1, 5, 1, 3), 3},
		{"whole log covered", nil, appendMsg(2, 1, 1, 5, 1, 9), 5},
		{"from the start", nil, appendMsg(2, 1, 1, 0, 0, 5, entries(1, 1)...), 1},
		{"never decreases", []Message{appendMsg(2, 1, 1, 5, 1, 4)}, appendMsg(2, 1, 1, 1, 1, 1), 4},
		{"rejected message commits nothing", nil, appendMsg(2, 1, 1, 7, 1, 5), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), restoreLog(1, 0, 1, 1, 1, 1, 1))
			var acts []Action
			for _, ev := range append(tt.pre, tt.msg) {
				acts = append(acts, stepSettled(t, n, ev)...)
			}
			if c := n.Status().Commit; c != tt.wantCommit {
				t.Fatalf("commit %d, want %d", c, tt.wantCommit)
			}
			var want []uint64
			for i := uint64(1); i <= tt.wantCommit; i++ {
				want = append(want, i)
			}
			if got := appliedIndexes(acts); !slices.Equal(got, want) {
				t.Fatalf("applied %v, want %v", got, want)
			}
		})
	}

	t.Run("representative", func(t *testing.T) {
		if n, _ := commitBeyondSent(t, testConfig(1)); n.Status().Commit != 2 {
			t.Fatalf("commit %d, want 2", n.Status().Commit)
		}
	})
}
