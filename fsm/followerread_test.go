package fsm

// Follower reads (thesis §6.4, last paragraph): "reads could be served
// from followers ... the follower would issue a request to the leader that
// just asked for a current readIndex ... the follower could then execute
// any number of queued read-only queries once its state machine has
// advanced at least as far as the readIndex."

import (
	"errors"
	"slices"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// readFollower returns node 1 as a follower at term 2 with FollowerReads on,
// following leader 2 (it heard an AppendEntries committing index 1), with
// its state machine at 1.
func readFollower(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.FollowerReads = true
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	stepSettled(t, n, appendMsg(2, 1, 2, 1, 1, 1))
	n.Step(Applied{Index: 1})
	if st := n.Status(); st.Role != Follower || st.Leader != 2 {
		t.Fatalf("readFollower: %v led by %d, want a follower of 2", st.Role, st.Leader)
	}
	return n
}

// forwarded steps ReadIndex{ids} on the follower and returns the context of
// the one ReadIndexRequest it must send to its leader.
func forwarded(t *testing.T, n *Node, ids ...uint64) uint64 {
	t.Helper()
	acts := n.Step(ReadIndex{IDs: ids})
	if r := readsReady(acts); len(r) != 0 {
		t.Fatalf("answered %v before the leader did", r)
	}
	ms := sent(acts)
	if len(ms) != 1 || ms[0].GetReadIndexRequest() == nil || ms[0].To != n.leader || ms[0].Term != n.term {
		t.Fatalf("sent %v, want one ReadIndexRequest to leader %d in term %d", ms, n.leader, n.term)
	}
	return ms[0].GetReadIndexRequest().Context
}

// readIndexResp is the leader's answer to a forwarded read.
func readIndexResp(from, to, term, ctx, index uint64, rejected bool) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.ReadIndexResponse{Context: ctx, Index: index, Rejected: rejected})}
}

// thesis §6.4: a follower forwards reads only to a leader it knows, and
// only with Config.FollowerReads; otherwise it answers ErrNotLeader with
// its hint, as before.
func TestFollowerForwardsReadOnlyToKnownLeader(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T) *Node
		forward bool
		hint    uint64
	}{
		{"follower of a known leader", func(t *testing.T) *Node { return readFollower(t, testConfig(1)) }, true, 0},
		{"follower reads off", func(t *testing.T) *Node {
			n := newNode(t, testConfig(1), restoreLog(2, 0, 1))
			stepSettled(t, n, appendMsg(2, 1, 2, 1, 1, 1))
			return n
		}, false, 2},
		{"follower without a leader", func(t *testing.T) *Node {
			cfg := testConfig(1)
			cfg.FollowerReads = true
			return newNode(t, cfg, restoreLog(2, 0, 1))
		}, false, 0},
		{"candidate", func(t *testing.T) *Node {
			cfg := testConfig(1)
			cfg.FollowerReads = true
			return nodeInRole(t, cfg, Candidate)
		}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.setup(t)
			if tt.forward {
				forwarded(t, n, 7)
				return
			}
			acts := n.Step(ReadIndex{IDs: []uint64{7}})
			want := []ReadReady{{ID: 7, Err: ErrNotLeader, Leader: tt.hint}}
			if got := readsReady(acts); !slices.Equal(got, want) || len(sent(acts)) != 0 {
				t.Fatalf("got %v and sent %v, want %v and nothing sent", got, sent(acts), want)
			}
		})
	}
}

// thesis §6.4, last paragraph: the follower serves the reads only once its
// own state machine has applied the read index the leader returned.
func TestFollowerServesReadOnceApplied(t *testing.T) {
	if v := followerReadUnapplied(t, testConfig(1)); len(v) != 0 {
		t.Fatal(v)
	}
}

// followerReadUnapplied is the rule check of follower-read-unapplied.
func followerReadUnapplied(t *testing.T, cfg Config) []string {
	t.Helper()
	n := readFollower(t, cfg)
	ctx := forwarded(t, n, 7, 8)
	var v []string
	if got := readsReady(n.Step(readIndexResp(2, 1, 2, ctx, 3, false))); len(got) != 0 {
		v = append(v, "served read "+itoa(got[0].ID)+" at "+itoa(got[0].Index)+" before applying the read index 3")
	}
	n.Step(appendMsg(2, 1, 2, 1, 1, 3, entries(2, 2, 2)...))
	settle(t, n)
	if got := readsReady(n.Step(Applied{Index: 2})); len(got) != 0 && len(v) == 0 {
		v = append(v, "served at applied index 2, below the read index 3")
	}
	got := readsReady(n.Step(Applied{Index: 3}))
	if len(v) == 0 && !slices.Equal(got, []ReadReady{{ID: 7, Index: 3}, {ID: 8, Index: 3}}) {
		v = append(v, "at applied index 3 got "+itoa(uint64(len(got)))+" answers, want reads 7 and 8 at 3")
	}
	return v
}

// thesis §6.4: the leader runs a forwarded read through its own ReadIndex
// (no-op committed, a heartbeat round confirmed by a quorum) and answers
// the follower with the read index, without waiting for its own state
// machine. A node that is not leader of the request's term refuses.
func TestLeaderAnswersForwardedRead(t *testing.T) {
	t.Run("leader", func(t *testing.T) {
		// The leader's own state machine has applied nothing: the
		// follower waits for its own, not for the leader's.
		n := nodeInRole(t, testConfig(1), Leader)
		stepSettled(t, n, appendAck(2, 1, 3, 2))
		acts := n.Step(Message{Msg: raftMsg(2, 1, 3, &pb.ReadIndexRequest{Context: 9})})
		for _, m := range sent(acts) {
			if m.GetAppendEntries().GetReadRound() != 1 {
				t.Fatalf("sent %v, want a read round to every follower", m)
			}
		}
		if len(sent(acts)) != 2 {
			t.Fatalf("sent %d messages, want the read round to both followers", len(sent(acts)))
		}
		acts = n.Step(readAck(3, 1, 3, 0, 1))
		ms := sentTo(acts, 2)
		if len(readsReady(acts)) != 0 || len(ms) != 1 {
			t.Fatalf("acts %v, want one answer to 2 and no local ReadReady", describe(acts))
		}
		if r := ms[0].GetReadIndexResponse(); r == nil || r.Context != 9 || r.Index != 2 || r.Rejected || ms[0].Term != 3 {
			t.Fatalf("answered %v, want context 9 at index 2 in term 3", ms[0])
		}
	})
	tests := []struct {
		name string
		n    func(t *testing.T) *Node
		term uint64
	}{
		{"follower of the same term", func(t *testing.T) *Node { return newNode(t, testConfig(1), restoreLog(2, 0, 1)) }, 2},
		{"stale term", func(t *testing.T) *Node { return readLeader(t, testConfig(1)) }, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.n(t)
			ms := sentTo(n.Step(Message{Msg: raftMsg(2, 1, tt.term, &pb.ReadIndexRequest{Context: 9})}), 2)
			if len(ms) != 1 || !ms[0].GetReadIndexResponse().GetRejected() || ms[0].GetReadIndexResponse().GetContext() != 9 {
				t.Fatalf("answered %v, want a refusal of context 9", ms)
			}
		})
	}
	t.Run("leadership lost", func(t *testing.T) {
		n := readLeader(t, testConfig(1))
		n.Step(Message{Msg: raftMsg(2, 1, 3, &pb.ReadIndexRequest{Context: 9})})
		// The refusal carries the new term, so it waits until that is durable.
		acts := stepSettled(t, n, appendMsg(3, 1, 4, 2, 3, 0))
		var refused bool
		for _, m := range sentTo(acts, 2) {
			refused = refused || m.GetReadIndexResponse().GetRejected()
		}
		if !refused {
			t.Fatalf("acts %v, want the waiting forwarded read refused", describe(acts))
		}
	})
}

// Backpressure on followers' reads (review of issue 11): at most
// MaxForwardedReads wait on the leader; the next is refused at once, and
// once the waiting ones are answered there is room again.
func TestForwardedReadsAreBounded(t *testing.T) {
	cfg := testConfig(1)
	cfg.MaxForwardedReads = 2
	n := nodeInRole(t, cfg, Leader)
	stepSettled(t, n, appendAck(2, 1, 3, 2))
	refused := func(acts []Action, ctx uint64) bool {
		for _, m := range sentTo(acts, 2) {
			if r := m.GetReadIndexResponse(); r.GetContext() == ctx && r.GetRejected() {
				return true
			}
		}
		return false
	}
	for ctx := uint64(1); ctx <= 3; ctx++ {
		acts := n.Step(Message{Msg: raftMsg(2, 1, 3, &pb.ReadIndexRequest{Context: ctx})})
		if refused(acts, ctx) != (ctx == 3) {
			t.Fatalf("request %d: refused %v, want only the third refused: %v", ctx, refused(acts, ctx), describe(acts))
		}
	}
	n.Step(readAck(3, 1, 3, 0, n.readRound)) // the rounds are confirmed: both answered
	if acts := n.Step(Message{Msg: raftMsg(2, 1, 3, &pb.ReadIndexRequest{Context: 4})}); refused(acts, 4) {
		t.Fatalf("no room after the answers: %v", describe(acts))
	}
}

// A forwarded read must not hang: it fails with ErrReadNotConfirmed when
// the leader refuses it, when this node stops following the leader it asked
// before the answer came (new term, new leader, its own election), and at
// the latest after two election timeouts (the HeartbeatTimer). Answers
// from another node or term are ignored.
func TestForwardedReadFailsInsteadOfHanging(t *testing.T) {
	tests := []struct {
		name   string
		events func(n *Node, ctx uint64) []Event
		fail   bool
	}{
		{"leader refuses", func(n *Node, ctx uint64) []Event { return []Event{readIndexResp(2, 1, 2, ctx, 0, true)} }, true},
		{"new term", func(n *Node, ctx uint64) []Event { return []Event{appendMsg(3, 1, 3, 1, 1, 1)} }, true},
		{"election timer fires", func(n *Node, ctx uint64) []Event {
			return []Event{Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer]}}
		}, true},
		{"expiry after two ticks", func(n *Node, ctx uint64) []Event {
			return []Event{
				Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer]},
				Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer] + 1},
			}
		}, true},
		{"one tick is not enough", func(n *Node, ctx uint64) []Event {
			return []Event{Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer]}}
		}, false},
		{"answer from another node", func(n *Node, ctx uint64) []Event { return []Event{readIndexResp(3, 1, 2, ctx, 1, false)} }, false},
		{"answer of another context", func(n *Node, ctx uint64) []Event { return []Event{readIndexResp(2, 1, 2, ctx+1, 1, false)} }, false},
		{"heartbeat of the same leader", func(n *Node, ctx uint64) []Event { return []Event{appendMsg(2, 1, 2, 1, 1, 1)} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := readFollower(t, testConfig(1))
			ctx := forwarded(t, n, 7)
			var got []ReadReady
			for _, ev := range tt.events(n, ctx) {
				got = append(got, readsReady(n.Step(ev))...)
			}
			if !tt.fail {
				if len(got) != 0 {
					t.Fatalf("answered %v, want the read still waiting", got)
				}
				return
			}
			if len(got) != 1 || got[0].ID != 7 || !errors.Is(got[0].Err, ErrReadNotConfirmed) {
				t.Fatalf("answered %v, want read 7 failed with ErrReadNotConfirmed", got)
			}
		})
	}
}

// A read whose index the leader confirmed stays linearizable at that index
// whoever leads later: an election does not fail it.
func TestConfirmedForwardedReadSurvivesLeaderChange(t *testing.T) {
	n := readFollower(t, testConfig(1))
	ctx := forwarded(t, n, 7)
	n.Step(readIndexResp(2, 1, 2, ctx, 1, false))
	// Applied is already 1, so it was served at once.
	n2 := readFollower(t, testConfig(1))
	ctx = forwarded(t, n2, 8)
	n2.Step(readIndexResp(2, 1, 2, ctx, 2, false))
	if got := readsReady(n2.Step(appendMsg(3, 1, 3, 1, 1, 1))); len(got) != 0 {
		t.Fatalf("answered %v on a new term, want the confirmed read kept", got)
	}
	n2.Step(appendMsg(3, 1, 3, 1, 1, 2, entries(2, 3)...))
	settle(t, n2)
	if got := readsReady(n2.Step(Applied{Index: 2})); !slices.Equal(got, []ReadReady{{ID: 8, Index: 2}}) {
		t.Fatalf("answered %v, want read 8 at 2", got)
	}
}
