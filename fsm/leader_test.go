package fsm

// The leader: Raft §5.3, §5.4.2 (Figure 8), thesis §10.2.1, and the flow
// control of ARCHITECTURE §4 (pipelining, batching by bytes).

import (
	"errors"
	"slices"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// appendsTo returns the AppendEntries in acts addressed to peer to.
func appendsTo(acts []Action, to uint64) []*pb.AppendEntries {
	var out []*pb.AppendEntries
	for _, m := range sentTo(acts, to) {
		if ae := m.GetAppendEntries(); ae != nil {
			out = append(out, ae)
		}
	}
	return out
}

// Raft §5.4.2 and §8: a new leader appends a no-op entry of its own term so
// that entries of earlier terms commit through it. Thesis §10.2.1: the
// leader may send AppendEntries before its own disk write completes, so the
// Persist and the AppendEntries come out of the same step; Raft Figure 2
// (Leaders) initialises nextIndex to the leader's last index + 1.
func TestLeaderAppendsNoOpAndSendsBeforeOwnPersist(t *testing.T) {
	tests := []struct {
		name string
		log  []uint64
	}{
		{"empty log", nil},
		{"one entry", []uint64{1}},
		{"several terms", []uint64{1, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), restoreLog(2, 0, tt.log...))
			acts := makeLeader(t, n)
			last := uint64(len(tt.log))
			noop := last + 1

			if len(acts) == 0 {
				t.Fatal("no actions on winning the election")
			}
			p, ok := acts[0].(Persist)
			if !ok || len(p.Entries) != 1 {
				t.Fatalf("actions %v, want first a Persist of the no-op", describe(acts))
			}
			if e := p.Entries[0]; e.Index != noop || e.Term != 3 || e.Type != pb.EntryType_ENTRY_TYPE_NOOP || len(e.Data) != 0 {
				t.Fatalf("no-op %v, want an empty no-op at index %d term 3", e, noop)
			}
			for _, peer := range []uint64{2, 3} {
				aes := appendsTo(acts, peer)
				if len(aes) != 1 {
					t.Fatalf("sent %d AppendEntries to %d before Persisted, want 1", len(aes), peer)
				}
				ae := aes[0]
				if ae.PrevLogIndex != last || ae.PrevLogTerm != n.log.term(last) || len(ae.Entries) != 1 || ae.Entries[0].Index != noop {
					t.Fatalf("AppendEntries to %d: %v, want prev %d and the no-op", peer, ae, last)
				}
			}
			timers := actionsOf[SetTimer](acts)
			if len(timers) != 1 || timers[0].Timer != HeartbeatTimer || timers[0].After != testHeartbeat {
				t.Fatalf("timers %v, want the heartbeat timer", describe(acts))
			}
			if st := n.Status(); st.Commit != 0 || st.Durable != last {
				t.Fatalf("status %+v, want commit 0 and durable %d before Persisted", st, last)
			}
		})
	}
}

// Raft §5.2: the leader "sends periodic heartbeats (AppendEntries RPCs that
// carry no log entries) to all followers in order to maintain its
// authority", re-arming its heartbeat timer each time.
func TestLeaderSendsHeartbeatsToEveryFollower(t *testing.T) {
	n := nodeInRole(t, testConfig(1), Leader)
	n.Step(appendAck(2, 1, 3, 2)) // 2 replicates, 3 is still probed
	for round := 1; round <= 3; round++ {
		acts := fireHeartbeat(t, n)
		for _, peer := range []uint64{2, 3} {
			if aes := appendsTo(acts, peer); len(aes) != 1 || aes[0].LeaderCommit != n.commit {
				t.Fatalf("round %d: AppendEntries to %d: %v, want one carrying commit %d", round, peer, aes, n.commit)
			}
		}
		if ts := actionsOf[SetTimer](acts); len(ts) != 1 || ts[0].Timer != HeartbeatTimer || ts[0].After != testHeartbeat {
			t.Fatalf("round %d: %v, want the heartbeat timer re-armed", round, describe(acts))
		}
	}
}

// ARCHITECTURE §3 rule 2 and Raft §5.3 ("replicated it on a majority"): the
// leader counts itself towards a commit quorum only for entries its own
// store reports durable.
func TestLeaderCountsItselfOnlyForDurableEntries(t *testing.T) {
	own := Persisted{Seq: 2} // the no-op; seq 1 was the candidacy
	ack := func(p uint64) Event { return appendAck(p, 1, 1, 1) }
	three, five := []uint64{1, 2, 3}, []uint64{1, 2, 3, 4, 5}
	tests := []struct {
		name       string
		members    []uint64
		steps      []Event
		wantCommit uint64
	}{
		{"3/one follower, leader not durable", three, []Event{ack(2)}, 0},
		{"3/leader durable only", three, []Event{own}, 0},
		{"3/one follower then leader durable", three, []Event{ack(2), own}, 1},
		{"3/leader durable then one follower", three, []Event{own, ack(3)}, 1},
		{"3/two followers, leader not durable", three, []Event{ack(2), ack(3)}, 1},
		{"3/same follower twice", three, []Event{ack(2), ack(2)}, 0},
		{"5/leader and one follower", five, []Event{own, ack(2)}, 0},
		{"5/leader and two followers", five, []Event{own, ack(2), ack(4)}, 1},
		{"5/three followers, leader not durable", five, []Event{ack(2), ack(3), ack(5)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1, tt.members...), Restore{})
			acts := makeLeader(t, n)
			if p := onlyPersist(t, acts); p.Seq != own.Seq {
				t.Fatalf("no-op persisted with seq %d, want %d", p.Seq, own.Seq)
			}
			var applied []uint64
			for _, ev := range tt.steps {
				applied = append(applied, appliedIndexes(n.Step(ev))...)
			}
			if c := n.Status().Commit; c != tt.wantCommit {
				t.Fatalf("commit %d, want %d", c, tt.wantCommit)
			}
			if want := tt.wantCommit; uint64(len(applied)) != want {
				t.Fatalf("applied %v with commit %d", applied, want)
			}
		})
	}
}

// figure8Leader builds the situation of Raft Figure 8 (c): leader 1 of
// {1,2,3} at term 4 whose log is [1:t1 2:t2 3:t4(no-op)], all durable on
// the leader. Entry 2, of an earlier term, reaches follower 2 (which held
// only entry 1), so a majority now stores it, while the no-op of the current
// term is on the leader alone. MaxMsgBytes 1 makes every AppendEntries carry
// one entry, so follower 2's ack of entry 2 is a genuine one.
func figure8Leader(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.MaxMsgBytes = 1
	n := newNode(t, cfg, restoreLog(3, 0, 1, 2))
	makeLeader(t, n)
	settle(t, n)
	// Follower 2 lacks index 2: it rejects the probe at prev 2.
	acts := n.Step(appendReject(2, 1, 4, 2, 0, 2))
	if aes := appendsTo(acts, 2); len(aes) != 1 || aes[0].PrevLogIndex != 1 || len(aes[0].Entries) != 1 || aes[0].Entries[0].Term != 2 {
		t.Fatalf("after the rejection sent %v, want entry 2 alone after prev 1", aes)
	}
	n.Step(appendAck(2, 1, 4, 2))
	return n
}

// Raft §5.4.2 (Figure 8) and ARCHITECTURE §3 rule 3: "Raft never commits
// log entries from previous terms by counting replicas. Only log entries
// from the leader's current term are committed by counting replicas; once an
// entry from the current term has been committed in this way, then all
// prior entries are committed indirectly because of the Log Matching
// Property."
func TestLeaderNeverCommitsEarlierTermEntryByCountingReplicas(t *testing.T) {
	tests := []struct {
		name       string
		steps      []Event
		wantCommit uint64
	}{
		{"old-term entry on a majority", nil, 0},
		{"old-term entry on every node", []Event{appendAck(3, 1, 4, 2)}, 0},
		{"no-op on a majority", []Event{appendAck(2, 1, 4, 3)}, 3},
		{"no-op via the other follower", []Event{appendAck(3, 1, 4, 3)}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := figure8Leader(t, testConfig(1))
			if c := n.Status().Commit; c != 0 {
				t.Fatalf("commit %d with entry 2 (term 2) on a majority and the no-op (term 4) on one node, want 0", c)
			}
			var applied []uint64
			for _, ev := range tt.steps {
				applied = append(applied, appliedIndexes(n.Step(ev))...)
			}
			if c := n.Status().Commit; c != tt.wantCommit {
				t.Fatalf("commit %d, want %d", c, tt.wantCommit)
			}
			if tt.wantCommit == 3 && !slices.Equal(applied, []uint64{1, 2, 3}) {
				t.Fatalf("applied %v, want the earlier entries committed with the no-op: [1 2 3]", applied)
			}
		})
	}
}

// Raft §5.3: "After a rejection, the leader decrements nextIndex and retries
// the AppendEntries RPC", and the optimisation in its last paragraphs: with
// the conflicting term and the first index the follower stores for it, the
// leader skips a whole term per round trip. If the leader has entries of
// that term it resumes after its last one; if not, at the conflict index.
// The leader's log is Figure 7's: terms [1 1 1 4 4 5 5 6 6 6], term 8.
func TestLeaderFastBacktracking(t *testing.T) {
	tests := []struct {
		name          string
		conflictTerm  uint64
		conflictIndex uint64
		wantPrev      uint64
	}{
		{"follower log shorter", 0, 10, 9},
		{"follower log much shorter", 0, 5, 4},
		{"leader lacks the term", 3, 7, 6},
		{"leader has the term (4)", 4, 4, 5},
		{"leader has the term (5)", 5, 6, 7},
		{"leader has the term (6)", 6, 8, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), restoreLog(7, 0, 1, 1, 1, 4, 4, 5, 5, 6, 6, 6))
			makeLeader(t, n)
			settle(t, n)
			acts := n.Step(appendReject(2, 1, 8, 10, tt.conflictTerm, tt.conflictIndex))
			aes := appendsTo(acts, 2)
			if len(aes) != 1 {
				t.Fatalf("sent %v, want one new probe", describe(acts))
			}
			if ae := aes[0]; ae.PrevLogIndex != tt.wantPrev || ae.PrevLogTerm != n.log.term(tt.wantPrev) || ae.Entries[0].Index != tt.wantPrev+1 {
				t.Fatalf("probe %v, want prev %d (term %d)", ae, tt.wantPrev, n.log.term(tt.wantPrev))
			}
			if pr := n.progress[2]; (pr.state == stateReplicate) || pr.next != tt.wantPrev+1 {
				t.Fatalf("progress %+v, want probe with next %d", *pr, tt.wantPrev+1)
			}
		})
	}
}

// Raft §5.3 and Figure 7: "the leader must find the latest log entry where
// the two logs agree, delete any entries in the follower's log after that
// point, and send the follower all of the leader's entries after that
// point." Real follower nodes with the logs of Figure 7 (a)-(f) answer the
// leader, and fast backtracking needs at most one rejection per term.
func TestLeaderBringsFigure7FollowersIntoAgreement(t *testing.T) {
	leaderLog := []uint64{1, 1, 1, 4, 4, 5, 5, 6, 6, 6}
	tests := []struct {
		name           string
		log            []uint64
		wantRejections int
	}{
		{"a", []uint64{1, 1, 1, 4, 4, 5, 5, 6, 6}, 1},
		{"b", []uint64{1, 1, 1, 4}, 1},
		{"c", []uint64{1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6}, 0},
		{"d", []uint64{1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7}, 0},
		{"e", []uint64{1, 1, 1, 4, 4, 4, 4}, 2},
		{"f", []uint64{1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leader := newNode(t, testConfig(1), restoreLog(7, 0, leaderLog...))
			follower := newNode(t, testConfig(2), restoreLog(slices.Max(tt.log), 0, tt.log...))
			msgs := sentTo(makeLeader(t, leader), 2)
			msgs = append(msgs, sentTo(settle(t, leader), 2)...)
			rejections := 0
			for hops := 0; len(msgs) > 0; hops++ {
				if hops > 50 {
					t.Fatal("no agreement after 50 messages")
				}
				m := msgs[0]
				msgs = msgs[1:]
				var out []Action
				if m.To == 2 {
					out = stepSettled(t, follower, Message{Msg: m})
				} else {
					if r := m.GetAppendEntriesResponse(); r != nil && !r.Success {
						rejections++
					}
					out = leader.Step(Message{Msg: m})
				}
				for _, o := range sent(out) {
					if o.To == 1 || o.To == 2 {
						msgs = append(msgs, o)
					}
				}
			}
			if got, want := logTerms(follower), logTerms(leader); !slices.Equal(got, want) {
				t.Fatalf("follower log %v, leader log %v", got, want)
			}
			if rejections != tt.wantRejections {
				t.Fatalf("%d rejections, want %d", rejections, tt.wantRejections)
			}
			// The no-op is now on a majority (leader and follower 2).
			if c := leader.Status().Commit; c != 11 {
				t.Fatalf("leader commit %d, want 11", c)
			}
		})
	}
}

// Regression (review of issue 11): an in-term rejection past the leader's
// log moved next past it; every later probe then carried a prev index with
// no term, which the follower refused as malformed, and replication to it
// stalled until leadership changed. It is rejected now, and the follower
// is still caught up.
func TestRejectionPastTheLogIsRejected(t *testing.T) {
	n := replicatingLeader(t, testConfig(1))
	acts := n.Step(appendReject(2, 1, 1, 1<<40, 0, 1<<40))
	if r := actionsOf[Rejected](acts); len(r) != 1 || !errors.Is(r[0].Err, ErrImpossible) {
		t.Fatalf("rejection past the log: %v, want a Rejected", describe(acts))
	}
	if pr := n.progress[2]; pr.next != 2 {
		t.Fatalf("progress %+v after the forged rejection, want next 2", *pr)
	}
	aes := appendsTo(propose(n, "x"), 2)
	if len(aes) != 1 || aes[0].PrevLogIndex != 1 || aes[0].PrevLogTerm != 1 {
		t.Fatalf("replication after the forged rejection: %v", aes)
	}
}

// The re-probe rule below fires on honest traffic too: in a pipeline, the
// rejection of a message that overtook an earlier one arrives after the
// earlier one's acknowledgement. It costs a probe round and nothing else:
// the follower is caught up and commits go on.
func TestReorderedRejectionCostsOneProbe(t *testing.T) {
	n := replicatingLeader(t, testConfig(1))
	propose(n, "a", "b")
	settle(t, n)
	// The follower got the message with prev 2 first (log ends at 1: it
	// rejects), then the one with prev 1 (acks 3); the leader hears them in
	// the other order.
	n.Step(appendAck(2, 1, 1, 3))
	n.Step(Message{Msg: raftMsg(2, 1, 1, &pb.AppendEntriesResponse{RejectIndex: 3, ConflictIndex: 2, LastLogIndex: 1})})
	if st := n.Status(); st.Commit != 3 {
		t.Fatalf("commit %d, want 3 (it never goes back)", st.Commit)
	}
	acts := n.Step(appendAck(2, 1, 1, 3)) // the probe from 2 is answered
	if pr := n.progress[2]; pr.match != 3 || !(pr.state == stateReplicate) {
		t.Fatalf("progress %+v after the probe's answer: want match 3, replicating (%v)", *pr, describe(acts))
	}
}

// A follower that lost entries it had acknowledged (its data dir replaced
// by an empty one, or an older copy, after corruption) rejects the
// leader's heartbeat at its match index with a shorter log. Rejections at
// or below the match are ignored as stale, so without this rule the leader
// would never catch it up; it probes again from where the follower's log
// ends, and commits nothing twice.
func TestLeaderReprobesAFollowerThatLostItsLog(t *testing.T) {
	n := replicatingLeader(t, testConfig(1)) // 2 acknowledged the no-op at 1
	propose(n, "a", "b", "c")
	settle(t, n)
	n.Step(appendAck(2, 1, 1, 4))
	if st := n.Status(); st.Commit != 4 {
		t.Fatalf("commit %d, want 4", st.Commit)
	}
	// Node 2 comes back empty: the next heartbeat (prev 4) is rejected.
	lost := Message{Msg: raftMsg(2, 1, 1, &pb.AppendEntriesResponse{RejectIndex: 4, ConflictIndex: 1, LastLogIndex: 0})}
	acts := n.Step(lost)
	aes := appendsTo(acts, 2)
	if len(aes) != 1 || aes[0].PrevLogIndex != 0 || len(aes[0].Entries) == 0 {
		t.Fatalf("after the lost log: %v, want a probe from index 1", describe(acts))
	}
	if pr := n.progress[2]; pr.match != 0 || (pr.state == stateReplicate) {
		t.Fatalf("progress %+v, want match 0 and probing", *pr)
	}
	// It catches up; the commit index never went back.
	n.Step(appendAck(2, 1, 1, 4))
	if pr, st := n.progress[2], n.Status(); pr.match != 4 || st.Commit != 4 {
		t.Fatalf("progress %+v commit %d after catching up", *pr, st.Commit)
	}
}

// ARCHITECTURE §3 rule 5: a rejection that answers a probe other than the
// current one, or a point the follower has already matched, is stale and
// must not move nextIndex backwards or trigger a send.
func TestLeaderIgnoresStaleRejections(t *testing.T) {
	tests := []struct {
		name      string
		setup     []Message
		reject    Message
		ignored   bool
		wantNext  uint64
		replicate bool
	}{
		// The leader (term 3, log [1 2]) probes 2 at prev 1, next 2.
		{"probe: answers an older probe", nil, appendReject(2, 1, 3, 0, 0, 1), true, 2, false},
		// Past the leader's log: impossible, and rejected as such.
		{"probe: answers a point past the log", nil, appendReject(2, 1, 3, 5, 0, 1), true, 2, false},
		{"replicate: at the match index", []Message{appendAck(2, 1, 3, 2)}, appendReject(2, 1, 3, 2, 1, 1), true, 3, true},
		{"replicate: below the match index", []Message{appendAck(2, 1, 3, 2)}, appendReject(2, 1, 3, 1, 0, 1), true, 3, true},
		// Control: the current probe's rejection is acted on.
		{"probe: current probe", nil, appendReject(2, 1, 3, 1, 0, 1), false, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodeInRole(t, testConfig(1), Leader)
			for _, m := range tt.setup {
				n.Step(m)
			}
			acts := n.Step(tt.reject)
			if tt.ignored && len(acts) != len(actionsOf[Rejected](acts)) {
				t.Fatalf("stale rejection caused %v", describe(acts))
			}
			if past := tt.reject.Msg.GetAppendEntriesResponse().RejectIndex > 2; past != (len(actionsOf[Rejected](acts)) == 1) {
				t.Fatalf("a rejection past the log (%v) must be Rejected, no other: %v", past, describe(acts))
			}
			if !tt.ignored && len(appendsTo(acts, 2)) != 1 {
				t.Fatalf("current rejection caused %v, want a new probe", describe(acts))
			}
			if pr := n.progress[2]; pr.next != tt.wantNext || (pr.state == stateReplicate) != tt.replicate {
				t.Fatalf("progress %+v, want next %d replicate %v", *pr, tt.wantNext, tt.replicate)
			}
		})
	}
}

// ARCHITECTURE §3 rule 5 and Raft §5.3 (matchIndex is what the leader
// knows is replicated): an acknowledgement of entries this leader never had
// answers no request of its own, is not counted, and is rejected.
func TestLeaderIgnoresAckBeyondItsLog(t *testing.T) {
	n := nodeInRole(t, testConfig(1), Leader) // log [1 2], both durable
	acts := n.Step(appendAck(2, 1, 3, 7))
	if r := actionsOf[Rejected](acts); len(r) != 1 || len(acts) != 1 || !errors.Is(r[0].Err, ErrImpossible) || r[0].From != 2 {
		t.Fatalf("ack of index 7 caused %v, want only a Rejected from 2", describe(acts))
	}
	if pr := n.progress[2]; pr.match != 0 || n.Status().Commit != 0 {
		t.Fatalf("progress %+v commit %d after an ack beyond the log", *pr, n.Status().Commit)
	}
}

// replicatingLeader returns leader 1 of {1,2,3} at term 1 with its no-op
// (index 1) durable and acknowledged by follower 2, which it therefore
// replicates to in pipeline; follower 3 is still being probed.
func replicatingLeader(t *testing.T, cfg Config) *Node {
	t.Helper()
	n := newNode(t, cfg, Restore{})
	makeLeader(t, n)
	settle(t, n)
	n.Step(appendAck(2, 1, 1, 1))
	if pr := n.progress[2]; !(pr.state == stateReplicate) || pr.next != 2 {
		t.Fatalf("progress of 2 %+v, want replicate from 2", *pr)
	}
	return n
}

func propose(n *Node, data ...string) []Action {
	ps := make([]Proposal, len(data))
	for i, d := range data {
		ps[i] = Proposal{Data: []byte(d)}
	}
	return n.Step(Propose{Proposals: ps})
}

// ARCHITECTURE §4: the leader pipelines AppendEntries to a follower whose
// log is known to match (etcd-io/raft's replicate state): a new proposal is
// sent at once, without waiting for earlier answers, but at most
// MaxInflight messages stay unacknowledged. A follower still being probed
// gets nothing until its probe is answered.
func TestLeaderPipelinesWithinInflightWindow(t *testing.T) {
	for _, window := range []int{1, 2, 3} {
		t.Run("window "+itoa(uint64(window)), func(t *testing.T) {
			cfg := testConfig(1)
			cfg.MaxInflight = window
			n := replicatingLeader(t, cfg)
			const proposals = 5
			var prevs []uint64
			for i := 0; i < proposals; i++ {
				acts := propose(n, "x")
				for _, ae := range appendsTo(acts, 2) {
					prevs = append(prevs, ae.PrevLogIndex)
					if len(ae.Entries) != 1 || ae.Entries[0].Index != ae.PrevLogIndex+1 {
						t.Fatalf("AppendEntries %v, want the one new entry after prev", ae)
					}
				}
				if aes := appendsTo(acts, 3); len(aes) != 0 {
					t.Fatalf("sent %v to the probed follower 3 while its probe is out", aes)
				}
			}
			want := []uint64{1, 2, 3}[:window] // entries 2, 3, 4 after prevs 1, 2, 3
			if !slices.Equal(prevs, want) {
				t.Fatalf("sent AppendEntries after prevs %v, want %v (window %d)", prevs, want, window)
			}
			// An ack of the first message frees one slot: the rest goes out
			// in one message, as far as the window allows.
			acts := n.Step(appendAck(2, 1, 1, 2))
			aes := appendsTo(acts, 2)
			if len(aes) != 1 || aes[0].PrevLogIndex != uint64(window)+1 || aes[0].Entries[len(aes[0].Entries)-1].Index != 6 {
				t.Fatalf("after the ack sent %v, want entries %d..6 in one message", aes, window+2)
			}
			if pr := n.progress[2]; len(pr.inflight) > window {
				t.Fatalf("%d messages in flight, window %d", len(pr.inflight), window)
			}
		})
	}
}

// ARCHITECTURE §4: the leader packs unsent entries into AppendEntries of at
// most MaxMsgBytes of entries (framing included), but always at least one
// entry, so an entry larger than the limit still goes out (alone).
func TestLeaderSplitsEntriesByMaxMsgBytes(t *testing.T) {
	small := string(make([]byte, 20))
	big := string(make([]byte, 500))
	// An entry's share of a message: its encoding, framed as one element
	// of AppendEntries.entries (a tag byte and a length byte).
	size := proto.Size(&pb.Entry{Index: 2, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: []byte(small)}) + 2
	tests := []struct {
		name     string
		maxBytes int
		data     []string
		wantMsgs int
	}{
		{"one entry per message", 1, []string{small, small, small, small}, 4},
		{"two entries per message", 2 * size, []string{small, small, small, small, small, small}, 3},
		{"just under two entries", 2*size - 1, []string{small, small, small}, 3},
		{"everything in one", 1 << 20, []string{small, small, small, small, small}, 1},
		{"oversized entry alone", 2 * size, []string{small, big, small, small}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(1)
			cfg.MaxMsgBytes = tt.maxBytes
			n := replicatingLeader(t, cfg)
			aes := appendsTo(propose(n, tt.data...), 2)
			if len(aes) != tt.wantMsgs {
				t.Fatalf("sent %d AppendEntries, want %d", len(aes), tt.wantMsgs)
			}
			next := uint64(2)
			for _, ae := range aes {
				if len(ae.Entries) == 0 || ae.PrevLogIndex != next-1 {
					t.Fatalf("AppendEntries %v, want entries from %d", ae, next)
				}
				bytes := 0
				for _, e := range ae.Entries {
					if e.Index != next {
						t.Fatalf("entry %d, want %d: entries not contiguous", e.Index, next)
					}
					next++
					bytes += proto.Size(e)
				}
				if len(ae.Entries) > 1 && bytes > tt.maxBytes {
					t.Fatalf("%d entries of %d bytes in one message, limit %d", len(ae.Entries), bytes, tt.maxBytes)
				}
			}
			if last := uint64(len(tt.data)) + 1; next != last+1 {
				t.Fatalf("sent entries up to %d, want up to %d", next-1, last)
			}
		})
	}
}

// ARCHITECTURE §4 and config RetransmitRounds: the leader does not resend
// pipelined entries on every heartbeat, but a follower that has acknowledged
// no progress for RetransmitRounds heartbeats is assumed to have lost them
// and is probed again from its match index + 1. (Raft §5.3: "If followers
// ... network packets are lost, the leader retries AppendEntries RPCs
// indefinitely".)
func TestLeaderProbesStalledFollowerAgain(t *testing.T) {
	for _, rounds := range []int{1, 3, 4} {
		t.Run(itoa(uint64(rounds))+" rounds", func(t *testing.T) {
			cfg := testConfig(1)
			cfg.RetransmitRounds = rounds
			n := replicatingLeader(t, cfg)
			if aes := appendsTo(propose(n, "a", "b"), 2); len(aes) != 1 {
				t.Fatalf("proposal sent %v, want one AppendEntries", aes)
			}
			for r := 1; r <= rounds; r++ {
				aes := appendsTo(fireHeartbeat(t, n), 2)
				if len(aes) != 1 || aes[0].PrevLogIndex != 1 {
					t.Fatalf("heartbeat %d sent %v, want one AppendEntries after match 1", r, aes)
				}
				if r < rounds {
					if len(aes[0].Entries) != 0 || !(n.progress[2].state == stateReplicate) {
						t.Fatalf("heartbeat %d of %d: %v, want an empty heartbeat and still pipelining", r, rounds, aes[0])
					}
					continue
				}
				if len(aes[0].Entries) != 2 || aes[0].Entries[0].Index != 2 || (n.progress[2].state == stateReplicate) {
					t.Fatalf("heartbeat %d: %v, want a probe resending entries 2..3", r, aes[0])
				}
			}
			// Progress before the limit resets the count.
			n.Step(appendAck(2, 1, 1, 3))
			if pr := n.progress[2]; !(pr.state == stateReplicate) || pr.match != 3 {
				t.Fatalf("after the ack: %+v, want replicate with match 3", *pr)
			}
		})
	}
}
