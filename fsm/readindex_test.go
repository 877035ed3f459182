package fsm

// ReadIndex: linearizable reads without writing to the log (thesis §6.4).

import (
	"errors"
	"slices"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// readAck is an AppendEntriesResponse echoing read round `round`.
func readAck(from, to, term, match, round uint64) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.AppendEntriesResponse{Success: true, MatchIndex: match, ReadRound: round})}
}

// readsReady returns the ReadReady actions in acts.
func readsReady(acts []Action) []ReadReady { return actionsOf[ReadReady](acts) }

// readLeader returns a leader at term 3 of a three-node cluster whose no-op
// (index 2) has committed (follower 2 acknowledged it) and whose state
// machine reported it applied.
func readLeader(t *testing.T, cfg Config) *Node {
	t.Helper()
	n := nodeInRole(t, cfg, Leader)
	stepSettled(t, n, appendAck(2, 1, 3, 2))
	if n.commit != 2 {
		t.Fatalf("readLeader: commit %d, want the no-op at 2 committed", n.commit)
	}
	n.Step(Applied{Index: 2})
	return n
}

// thesis §6.4 step 2: "The leader needs to make sure it hasn't been
// superseded by a newer leader of which it is unaware. It issues a new
// round of heartbeats and waits for their acknowledgments from a majority
// of the cluster." The ReadIndex sends every follower an empty
// AppendEntries carrying a new read round; only an echo of that round (not
// of an older one) from a majority, the leader included, confirms the read.
func TestReadIndexNeedsQuorumConfirmation(t *testing.T) {
	tests := []struct {
		name  string
		acks  []Message
		ready bool
	}{
		{"no answer", nil, false},
		{"answer to an older round", []Message{readAck(2, 1, 3, 2, 0)}, false},
		{"answer of another term", []Message{readAck(2, 1, 2, 2, 1)}, false},
		{"one follower echoes the round", []Message{readAck(3, 1, 3, 0, 1)}, true},
		{"a rejection echoing the round", []Message{{Msg: raftMsg(2, 1, 3, &pb.AppendEntriesResponse{RejectIndex: 2, ReadRound: 1})}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := readLeader(t, testConfig(1))
			acts := n.Step(ReadIndex{IDs: []uint64{7, 8}})
			if r := readsReady(acts); len(r) != 0 {
				t.Fatalf("served %v before confirming leadership", r)
			}
			var to []uint64
			for _, m := range sent(acts) {
				ae := m.GetAppendEntries()
				if ae == nil || ae.ReadRound != 1 || len(ae.Entries) != 0 || m.Term != 3 {
					t.Fatalf("sent %v, want empty AppendEntries with read round 1", m)
				}
				to = append(to, m.To)
			}
			if !slices.Equal(to, []uint64{2, 3}) {
				t.Fatalf("read round sent to %v, want [2 3]", to)
			}
			var got []ReadReady
			for _, a := range tt.acks {
				got = append(got, readsReady(n.Step(a))...)
			}
			if !tt.ready {
				if len(got) != 0 {
					t.Fatalf("served %v without a quorum echoing the read round", got)
				}
				return
			}
			want := []ReadReady{{ID: 7, Index: 2}, {ID: 8, Index: 2}}
			if !slices.Equal(got, want) {
				t.Fatalf("ready %v, want %v (one round serves the batch)", got, want)
			}
		})
	}
}

// thesis §6.4 step 1: "If the leader has not yet marked an entry from its
// current term committed, it waits until it has done so." Until then its
// commit index may lag what earlier leaders committed. The read index is
// the commit index once the no-op has committed.
func TestReadIndexWaitsForNoop(t *testing.T) {
	v := readBeforeNoop(t, testConfig(1))
	if len(v) != 0 {
		t.Fatal(v)
	}
}

// readBeforeNoop is the rule check of read-before-noop: a new leader whose
// no-op has not committed gets a read confirmed by a quorum; it must serve
// it only after the no-op commits, at the no-op's index.
func readBeforeNoop(t *testing.T, cfg Config) []string {
	t.Helper()
	n := nodeInRole(t, cfg, Leader) // log 1 (term 1), 2 (no-op, term 3); commit 0
	var v []string
	got := readsReady(n.Step(ReadIndex{IDs: []uint64{5}}))
	got = append(got, readsReady(n.Step(readAck(2, 1, 3, 1, 1)))...)
	if len(got) != 0 {
		v = append(v, "served a read at index "+itoa(got[0].Index)+" before the term's no-op committed")
	}
	got = readsReady(stepSettled(t, n, appendAck(2, 1, 3, 2)))
	got = append(got, readsReady(n.Step(Applied{Index: 2}))...)
	if len(v) == 0 && (len(got) != 1 || got[0] != (ReadReady{ID: 5, Index: 2})) {
		v = append(v, "the read was not served at the no-op's index once it committed")
	}
	return v
}

// thesis §6.4 step 3-4: the leader waits for its state machine to advance
// at least as far as the read index; ReadReady comes only once the state
// machine reported (Applied) that index, so the read can be served from it.
func TestReadIndexWaitsForStateMachine(t *testing.T) {
	n := nodeInRole(t, testConfig(1), Leader)
	stepSettled(t, n, appendAck(2, 1, 3, 2)) // commit 2; not yet reported applied
	acts := n.Step(ReadIndex{IDs: []uint64{1}})
	acts = append(acts, n.Step(readAck(2, 1, 3, 2, 1))...)
	acts = append(acts, n.Step(Applied{Index: 1})...)
	if r := readsReady(acts); len(r) != 0 {
		t.Fatalf("served %v before the state machine applied the read index", r)
	}
	if r := readsReady(n.Step(Applied{Index: 2})); len(r) != 1 || r[0] != (ReadReady{ID: 1, Index: 2}) {
		t.Fatalf("after Applied 2: %v, want read 1 ready at 2", r)
	}
}

// thesis §6.4: a server that is not leader cannot serve the read; it
// answers at once with the leader it knows. A leader that loses its
// leadership before confirming a read fails it (nothing was read).
func TestReadIndexErrors(t *testing.T) {
	t.Run("follower", func(t *testing.T) {
		n := newNode(t, testConfig(1), restoreLog(2, 0, 1))
		stepSettled(t, n, appendMsg(3, 1, 2, 1, 1, 0))
		got := readsReady(n.Step(ReadIndex{IDs: []uint64{4}}))
		if len(got) != 1 || got[0].ID != 4 || !errors.Is(got[0].Err, ErrNotLeader) || got[0].Leader != 3 {
			t.Fatalf("got %v, want read 4 failed with ErrNotLeader, hint 3", got)
		}
	})
	t.Run("deposed", func(t *testing.T) {
		n := readLeader(t, testConfig(1))
		n.Step(ReadIndex{IDs: []uint64{4}})
		got := readsReady(stepSettled(t, n, appendMsg(2, 1, 4, 2, 3, 2)))
		if len(got) != 1 || got[0].ID != 4 || !errors.Is(got[0].Err, ErrReadNotConfirmed) {
			t.Fatalf("got %v, want read 4 failed with ErrReadNotConfirmed", got)
		}
	})
	t.Run("check-quorum", func(t *testing.T) {
		n := extLeader(t, 1, 2, 3)
		stepSettled(t, n, appendAck(2, 1, 3, 2))
		n.Step(Applied{Index: 2})
		n.Step(ReadIndex{IDs: []uint64{4}})
		fireElection(t, n) // follower 2 answered in this timeout
		got := readsReady(fireElection(t, n))
		if len(got) != 1 || !errors.Is(got[0].Err, ErrReadNotConfirmed) || n.role != Follower {
			t.Fatalf("got %v (role %v), want the read failed as the leader steps down", got, n.role)
		}
	})
}

// thesis §6.4: followers echo the read round in every answer, accepting or
// rejecting, so any answer in the term confirms the leader.
func TestFollowerEchoesReadRound(t *testing.T) {
	for _, tt := range []struct {
		name string
		prev uint64
		ok   bool
	}{{"accepted", 1, true}, {"rejected", 5, false}} {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), restoreLog(2, 0, 1))
			ev := appendMsg(2, 1, 2, tt.prev, 1, 0)
			ev.Msg.GetAppendEntries().ReadRound = 9
			var r *pb.AppendEntriesResponse
			for _, m := range sentTo(stepSettled(t, n, ev), 2) {
				r = m.GetAppendEntriesResponse()
			}
			if r == nil || r.Success != tt.ok || r.ReadRound != 9 {
				t.Fatalf("answer %v, want success=%v echoing read round 9", r, tt.ok)
			}
		})
	}
}

// A single-node cluster is its own quorum: reads are served at once.
func TestReadIndexSingleNode(t *testing.T) {
	n := newNode(t, testConfig(1, 1), restoreLog(2, 0, 1))
	makeLeader(t, n)
	settle(t, n)
	n.Step(Applied{Index: 2})
	if got := readsReady(n.Step(ReadIndex{IDs: []uint64{1}})); len(got) != 1 || got[0] != (ReadReady{ID: 1, Index: 2}) {
		t.Fatalf("got %v, want read 1 ready at 2", got)
	}
}
