package fsm

import (
	"errors"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// The log cache: applied entries beyond Config.LogCacheEntries leave
// memory, their terms stay, and a follower that needs them gets them
// through a Fetch from the store.

func TestLogCacheCompactsAppliedEntriesAndKeepsTerms(t *testing.T) {
	cfg := testConfig(1)
	cfg.LogCacheEntries = 4
	// 30 entries of terms 1 (1-10), 2 (11-20), 3 (21-30), all applied.
	terms := make([]uint64, 30)
	for i := range terms {
		terms[i] = uint64(i/10 + 1)
	}
	r := restoreLog(3, 0, terms...)
	r.Applied = 30
	n := newNode(t, cfg, r)
	n.Step(Applied{Index: 30})
	if st := n.Status(); st.InMemory != 4 || st.LastIndex != 30 {
		t.Fatalf("after compaction InMemory=%d LastIndex=%d, want 4 and 30", st.InMemory, st.LastIndex)
	}
	for i, want := range terms {
		if got := n.log.term(uint64(i + 1)); got != want {
			t.Errorf("term(%d) = %d after compaction, want %d", i+1, got, want)
		}
	}
	// A follower's consistency check at a compacted index still works:
	// the entries it holds are matched by term, not by content.
	acts := stepSettled(t, n, appendMsg(2, 1, 3, 15, 2, 30, entries(16, 2, 2, 2, 2, 2)...))
	if m := sentTo(acts, 2); len(m) != 1 || !m[0].GetAppendEntriesResponse().Success {
		t.Fatalf("AppendEntries over compacted entries: %v", describe(acts))
	}
	// A conflicting term at a compacted (committed) index cannot come
	// from a correct leader: the fsm rejects the message and keeps its log.
	acts = n.Step(appendMsg(2, 1, 3, 15, 2, 30, entries(16, 3)...))
	if r := actionsOf[Rejected](acts); len(r) != 1 || !errors.Is(r[0].Err, ErrImpossible) || len(sent(acts)) != 0 || len(actionsOf[Persist](acts)) != 0 {
		t.Fatalf("AppendEntries replacing a compacted entry: %v, want a Rejected and no answer or write", describe(acts))
	}
	if got := n.log.term(16); got != 2 {
		t.Fatalf("term(16) = %d after the rejected message, want 2", got)
	}
}

func TestLeaderFetchesEntriesALaggingFollowerNeeds(t *testing.T) {
	cfg := testConfig(1)
	cfg.LogCacheEntries = 2
	n := newNode(t, cfg, Restore{})
	makeLeader(t, n)
	settle(t, n)
	// Follower 2 keeps up; follower 3 is silent (dead).
	for i := range 10 {
		stepSettled(t, n, Propose{Proposals: []Proposal{{ID: uint64(i + 1), Data: []byte{byte(i)}}}})
		n.Step(appendAck(2, 1, n.term, n.log.lastIndex()))
		n.Step(Applied{Index: n.commit})
	}
	st := n.Status()
	if st.Commit != 11 || st.InMemory > 3 {
		t.Fatalf("leader status %+v: want commit 11 and at most 3 entries in memory", st)
	}
	// Follower 3 answers a heartbeat: it has nothing, so the leader must
	// go back to index 1, which is only on disk.
	n.Step(appendReject(3, 1, n.term, n.progress[3].next-1, 0, 1))
	acts := fireHeartbeat(t, n)
	fetches := actionsOf[Fetch](acts)
	if len(fetches) != 1 || fetches[0].Peer != 3 || fetches[0].Lo != 1 || fetches[0].Hi != n.log.offset+1 {
		t.Fatalf("want one Fetch of [1,%d) for follower 3, got %v", n.log.offset+1, describe(acts))
	}
	if got := sentTo(acts, 3); len(got) != 0 {
		t.Fatalf("sent follower 3 %v before its entries were fetched", got)
	}
	// The store answers: the entries go out as an AppendEntries from index 0.
	f := fetches[0]
	var disk []*pb.Entry
	for i := f.Lo; i < f.Hi; i++ {
		disk = append(disk, &pb.Entry{Index: i, Term: n.log.term(i), Type: pb.EntryType_ENTRY_TYPE_NORMAL})
	}
	acts = n.Step(Fetched{Peer: 3, Term: f.Term, Lo: f.Lo, Entries: disk})
	out := sentTo(acts, 3)
	if len(out) != 1 {
		t.Fatalf("after Fetched: %v", describe(acts))
	}
	ae := out[0].GetAppendEntries()
	if ae.PrevLogIndex != 0 || len(ae.Entries) != len(disk) || ae.Entries[0].Index != 1 {
		t.Fatalf("AppendEntries after Fetched: prev %d, %d entries", ae.PrevLogIndex, len(ae.Entries))
	}
	// A stale answer (another term) is dropped.
	if acts := n.Step(Fetched{Peer: 3, Term: f.Term - 1, Lo: 1, Entries: disk}); len(sentTo(acts, 3)) != 0 {
		t.Fatalf("a Fetched of an old term was sent: %v", describe(acts))
	}
	// Once follower 3 has the fetched entries, the rest comes from memory.
	acts = n.Step(appendAck(3, 1, n.term, uint64(len(disk))))
	out = sentTo(acts, 3)
	if len(out) == 0 || out[0].GetAppendEntries().PrevLogIndex != uint64(len(disk)) {
		t.Fatalf("after the fetched entries were acknowledged: %v", describe(acts))
	}
	if len(actionsOf[Fetch](acts)) != 0 {
		t.Fatalf("fetched again entries that are in memory: %v", describe(acts))
	}
}

// A Fetch whose answer never comes (the store actor restarted) is issued
// again after RetransmitRounds heartbeats, not left pending forever.
func TestLostFetchIsRetried(t *testing.T) {
	cfg := testConfig(1)
	cfg.LogCacheEntries = 2
	n := newNode(t, cfg, Restore{})
	makeLeader(t, n)
	settle(t, n)
	for i := range 10 {
		stepSettled(t, n, Propose{Proposals: []Proposal{{ID: uint64(i + 1)}}})
		n.Step(appendAck(2, 1, n.term, n.log.lastIndex()))
		n.Step(Applied{Index: n.commit})
	}
	n.Step(appendReject(3, 1, n.term, n.progress[3].next-1, 0, 1))
	if got := actionsOf[Fetch](fireHeartbeat(t, n)); len(got) != 1 {
		t.Fatalf("want a Fetch for the lagging follower, got %d", len(got))
	}
	fetches := 0
	for range n.cfg.RetransmitRounds {
		fetches += len(actionsOf[Fetch](fireHeartbeat(t, n)))
	}
	if fetches != 1 {
		t.Fatalf("after %d heartbeats without an answer, %d new Fetches; want exactly 1 (retried once the round limit passed, not every heartbeat)", n.cfg.RetransmitRounds, fetches)
	}
}
