package fsm

import (
	"fmt"
	"hash/crc32"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// Raft §7 and Figure 13, one statement each.

// snapConfig is testConfig with a small trailing window and chunk size.
func snapConfig(id uint64) Config {
	cfg := testConfig(id)
	cfg.SnapshotTrailing = 2
	cfg.SnapshotChunkBytes = 4
	cfg.MaxSnapshotChunks = 2
	return cfg
}

// leaderWithLog is a leader of term 2 whose log holds 1..10 (index 1 of
// term 1, the rest of term 2), all committed and applied, with follower 2
// replicating and follower 3 never heard from.
func leaderWithLog(t *testing.T, cfg Config) *Node {
	t.Helper()
	n := newNode(t, cfg, Restore{HardState: &pb.HardState{Term: 1}, Entries: entries(1, 1)})
	makeLeader(t, n) // term 2, no-op at 2
	settle(t, n)
	n.Step(appendAck(2, 1, 2, 2))
	ps := make([]Proposal, 8)
	for i := range ps {
		ps[i] = Proposal{Data: []byte{byte(i)}}
	}
	n.Step(Propose{Proposals: ps})
	settle(t, n)
	n.Step(appendAck(2, 1, 2, 10))
	n.Step(Applied{Index: 10})
	if st := n.Status(); st.Commit != 10 || st.Applied != 10 {
		t.Fatalf("leader status %+v, want 10 committed and applied", st)
	}
	return n
}

// Raft §7: once a snapshot through i is durable, the log through i may go,
// but for SnapshotTrailing entries kept for followers that lag a little;
// never past what the state machine applied or what is durable.
func TestSnapshotTakenCompactsBehindTrailingEntries(t *testing.T) {
	n := leaderWithLog(t, snapConfig(1))
	acts := n.Step(SnapshotTaken{Meta: SnapshotMeta{Index: 8, Term: 2}})
	cs := actionsOf[Compact](acts)
	if len(cs) != 1 || cs[0].Through != 6 || cs[0].Term != 2 || cs[0].Config.Config == nil || cs[0].Config.Index != 0 {
		t.Fatalf("Compact actions %v, want one through 6 (8 less 2 trailing)", cs)
	}
	if st := n.Status(); st.FirstIndex != 7 || st.Snapshot != (SnapshotMeta{8, 2}) {
		t.Fatalf("status %+v, want first index 7 and snapshot 8/2", st)
	}
	if got := n.log.term(6); got != 2 {
		t.Fatalf("term of the floor %d, want 2", got)
	}
	if got := n.log.term(5); got != 0 {
		t.Fatalf("term below the floor %d, want 0 (unknown)", got)
	}
	// An older snapshot changes nothing.
	if acts := n.Step(SnapshotTaken{Meta: SnapshotMeta{Index: 7, Term: 2}}); len(actionsOf[Compact](acts)) != 0 {
		t.Fatalf("an older snapshot compacted again: %v", describe(acts))
	}
	// A snapshot the state machine could not have taken is a bug.
	mustPanic(t, "handed to Apply", func() { n.Step(SnapshotTaken{Meta: SnapshotMeta{Index: 11, Term: 2}}) })
}

// Compaction waits for the state machine: entries it has not reported
// applied stay, even under a snapshot (which cannot be, but the rule holds).
func TestCompactionNeverPassesWhatTheStateApplied(t *testing.T) {
	n, v := compactBehindTheState(t, snapConfig(1))
	if len(v) != 0 {
		t.Fatal(v)
	}
	acts := n.Step(Applied{Index: 8})
	if cs := actionsOf[Compact](acts); len(cs) != 1 || cs[0].Through != 6 {
		t.Fatalf("after Applied 8: Compact %v, want through 6", cs)
	}
}

// compactBehindTheState is TestCompactionNeverPassesWhatTheStateApplied's
// representative case (also the rule check of compact-unapplied): a
// snapshot through 8 while the state reported 4.
func compactBehindTheState(t *testing.T, cfg Config) (*Node, []string) {
	t.Helper()
	cfg.SnapshotTrailing = 2
	n := newNode(t, cfg, Restore{HardState: &pb.HardState{Term: 2}, Entries: entries(1, 1, 2, 2, 2, 2, 2, 2, 2), Applied: 8})
	n.stateAt = 4 // the state reported 4 (Restore set it to 8; pretend it lags)
	acts := n.Step(SnapshotTaken{Meta: SnapshotMeta{Index: 8, Term: 2}})
	if cs := actionsOf[Compact](acts); len(cs) != 1 || cs[0].Through != 4 {
		return n, []string{fmt.Sprintf("Compact %v, want through 4 (what the state applied)", cs)}
	}
	return n, nil
}

// Raft §7: a follower that needs an entry the leader compacted away is
// sent the snapshot, in chunks read from the driver, at most
// MaxSnapshotChunks at a time; each chunk carries its offset, its
// checksum, the file's size and checksum.
func TestLeaderSendsSnapshotInChunks(t *testing.T) {
	n := leaderWithLog(t, snapConfig(1))
	n.Step(SnapshotTaken{Meta: SnapshotMeta{Index: 8, Term: 2}}) // floor 6
	// Follower 3 has nothing: its probe at next 11 is rejected down to 1.
	acts := n.Step(appendReject(3, 1, 2, n.progress[3].next-1, 0, 1))
	reads := actionsOf[ReadChunk](acts)
	if len(reads) != 1 || reads[0] != (ReadChunk{Peer: 3, Meta: SnapshotMeta{8, 2}, Offset: 0, MaxBytes: 4}) {
		t.Fatalf("ReadChunk %v, want one at 0 (the size is not known yet)", reads)
	}
	if n.progress[3].state != stateSnapshot {
		t.Fatalf("follower 3 is in %v, want snapshot", n.progress[3].state)
	}
	file := []byte("0123456789") // 10 bytes: chunks of 4, 4, 2
	fileCRC := crc32.Checksum(file, crc32c)
	read := func(off uint64) []Action {
		end := min(off+4, 10)
		return n.Step(ChunkRead{Peer: 3, Meta: SnapshotMeta{8, 2}, Offset: off, Data: file[off:end], Size: 10, FileCRC: fileCRC})
	}
	acts = read(0)
	msgs := sentTo(acts, 3)
	if len(msgs) != 1 {
		t.Fatalf("sent %v, want one chunk", describe(acts))
	}
	is := msgs[0].GetInstallSnapshot()
	if is.Offset != 0 || string(is.Data) != "0123" || is.ChunkCrc != crc32.Checksum([]byte("0123"), crc32c) ||
		is.Size != 10 || is.FileCrc != fileCRC || is.Done || is.LastIncludedIndex != 8 || is.LastIncludedTerm != 2 {
		t.Fatalf("chunk %v", is)
	}
	// The window: one chunk sent, one read asked for.
	if reads := actionsOf[ReadChunk](acts); len(reads) != 1 || reads[0].Offset != 4 {
		t.Fatalf("after the first chunk: reads %v, want one at 4", reads)
	}
	acts = read(4)
	if reads := actionsOf[ReadChunk](acts); len(reads) != 0 {
		t.Fatalf("the window of 2 is full, but it reads %v", reads)
	}
	// The follower acknowledges the first chunk: the last is read and sent.
	ack := func(next uint64, installed, refused bool) []Action {
		return n.Step(Message{Msg: raftMsg(3, 1, 2, &pb.InstallSnapshotResponse{LastIncludedIndex: 8, LastIncludedTerm: 2,
			FileCrc: fileCRC, NextOffset: next, Installed: installed, Refused: refused})})
	}
	if reads := actionsOf[ReadChunk](ack(4, false, false)); len(reads) != 1 || reads[0].Offset != 8 {
		t.Fatalf("after an ack of 4: reads %v, want one at 8", reads)
	}
	acts = read(8)
	if is := sentTo(acts, 3)[0].GetInstallSnapshot(); !is.Done || string(is.Data) != "89" {
		t.Fatalf("the last chunk %v, want done with 89", is)
	}
	// Installed: the leader probes from the snapshot's last index + 1.
	acts = ack(10, true, false)
	if pr := n.progress[3]; pr.state != stateProbe || pr.match != 8 || pr.next != 9 {
		t.Fatalf("after the install: progress %+v, want probe from 9 with match 8", *pr)
	}
	if ends := actionsOf[EndTransfer](acts); len(ends) != 1 || ends[0].Peer != 3 {
		t.Fatalf("EndTransfer %v, want one for 3", ends)
	}
	if ae := sentTo(acts, 3); len(ae) != 1 || ae[0].GetAppendEntries().GetPrevLogIndex() != 8 {
		t.Fatalf("after the install sent %v, want an AppendEntries after 8", describe(acts))
	}
}

// A refused chunk while the chunk the follower wants is still on its way
// (reordered, or lost: the leader cannot tell) changes nothing; a refusal
// at an offset nothing in flight covers (the follower lost what it had
// staged) resends from there (go-back-N). Without any answer the leader
// resends from the acknowledged offset every RetransmitRounds heartbeats,
// and abandons the transfer after two election timeouts.
func TestSnapshotTransferRecoversFromLoss(t *testing.T) {
	n := leaderWithLog(t, snapConfig(1))
	n.Step(SnapshotTaken{Meta: SnapshotMeta{Index: 8, Term: 2}})
	n.Step(appendReject(3, 1, 2, n.progress[3].next-1, 0, 1))
	file := []byte("0123456789")
	fileCRC := crc32.Checksum(file, crc32c)
	n.Step(ChunkRead{Peer: 3, Meta: SnapshotMeta{8, 2}, Offset: 0, Data: file[0:4], Size: 10, FileCRC: fileCRC})
	n.Step(ChunkRead{Peer: 3, Meta: SnapshotMeta{8, 2}, Offset: 4, Data: file[4:8], Size: 10, FileCRC: fileCRC})
	refuse := func(next uint64) []Action {
		return n.Step(Message{Msg: raftMsg(3, 1, 2, &pb.InstallSnapshotResponse{LastIncludedIndex: 8, LastIncludedTerm: 2,
			FileCrc: fileCRC, NextOffset: next, Refused: true})})
	}
	// The follower refuses chunk 4 and holds nothing: chunk 0 is in flight.
	if reads := actionsOf[ReadChunk](refuse(0)); len(reads) != 0 {
		t.Fatalf("a refusal while chunk 0 is in flight re-read %v", reads)
	}
	// Silence: after an election timeout (10 heartbeats here, more than
	// RetransmitRounds), retransmit what was not acknowledged, one chunk
	// first: the chunks sent before may still be on their way.
	for i := 1; i < 10; i++ {
		if reads := actionsOf[ReadChunk](fireHeartbeat(t, n)); len(reads) != 0 {
			t.Fatalf("resent after %d silent heartbeats: %v", i, reads)
		}
	}
	if reads := actionsOf[ReadChunk](fireHeartbeat(t, n)); len(reads) != 1 || reads[0].Offset != 0 {
		t.Fatalf("after 10 silent heartbeats: reads %v, want 0 alone", reads)
	}
	if reads := actionsOf[ReadChunk](n.Step(ChunkRead{Peer: 3, Meta: SnapshotMeta{8, 2}, Offset: 0, Data: file[0:4], Size: 10, FileCRC: fileCRC})); len(reads) != 0 {
		t.Fatalf("the window refilled before the follower acknowledged anything: %v", reads)
	}
	// The follower acknowledged 8 and then lost it (a restart with
	// nothing durable is impossible, but a replaced staged file is not):
	// a refusal at 0 with nothing in flight there resends from 0.
	n.Step(Message{Msg: raftMsg(3, 1, 2, &pb.InstallSnapshotResponse{LastIncludedIndex: 8, LastIncludedTerm: 2, FileCrc: fileCRC, NextOffset: 8})})
	n.Step(ChunkRead{Peer: 3, Meta: SnapshotMeta{8, 2}, Offset: 8, Data: file[8:10], Size: 10, FileCRC: fileCRC})
	if reads := actionsOf[ReadChunk](refuse(0)); len(reads) != 1 || reads[0].Offset != 0 {
		t.Fatalf("a refusal at 0 with nothing in flight there: reads %v, want 0 (one chunk until acknowledged)", reads)
	}
	// Two election timeouts (20 heartbeats here) without progress since the
	// acknowledgement of 8: abandoned, and the follower probed again.
	abandonedAt := 0
	for i := 1; i <= 25 && abandonedAt == 0; i++ {
		if acts := fireHeartbeat(t, n); len(actionsOf[EndTransfer](acts)) > 0 {
			abandonedAt = i
		}
	}
	if abandonedAt != 20 {
		t.Fatalf("transfer abandoned after %d heartbeats, want 20 (two election timeouts)", abandonedAt)
	}
}

// A chunk read of a snapshot that is gone (replaced) restarts the
// transfer with the latest one, at the next heartbeat: a snapshot that
// cannot be read at all does not make the leader spin (found by
// tests/process: 3.35 million read/end cycles in 30 s).
func TestSnapshotGoneRestartsTransfer(t *testing.T) {
	n := leaderWithLog(t, snapConfig(1))
	n.Step(SnapshotTaken{Meta: SnapshotMeta{Index: 8, Term: 2}})
	n.Step(appendReject(3, 1, 2, n.progress[3].next-1, 0, 1))
	n.Step(SnapshotTaken{Meta: SnapshotMeta{Index: 10, Term: 2}})
	acts := n.Step(ChunkRead{Peer: 3, Meta: SnapshotMeta{8, 2}, Offset: 0, Err: errTest})
	if len(actionsOf[EndTransfer](acts)) != 1 || len(actionsOf[ReadChunk](acts)) != 0 {
		t.Fatalf("after a failed read: %v, want the transfer ended and nothing read until the next heartbeat", describe(acts))
	}
	acts = fireHeartbeat(t, n)
	reads := actionsOf[ReadChunk](acts)
	if len(reads) != 1 || reads[0].Meta != (SnapshotMeta{10, 2}) {
		t.Fatalf("at the next heartbeat: %v, want the transfer restarted with snapshot 10", describe(acts))
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("gone")

// Figure 13 receiver rules 2-5: chunks are staged in order, each answered
// once durable with what the follower holds; a chunk anywhere but at the
// end of the staged file is refused with that offset; chunks reset the
// election timer.
func TestFollowerStagesChunksInOrder(t *testing.T) {
	n := newNode(t, testConfig(2), Restore{HardState: &pb.HardState{Term: 2}})
	chunk := func(off uint64, data string, done bool) Message {
		return Message{Msg: raftMsg(1, 2, 2, &pb.InstallSnapshot{LastIncludedIndex: 8, LastIncludedTerm: 2,
			Offset: off, Data: []byte(data), ChunkCrc: crc32.Checksum([]byte(data), crc32c), Size: 10, FileCrc: 77, Done: done})}
	}
	gen := n.timerGen[ElectionTimer]
	acts := n.Step(chunk(0, "0123", false))
	if n.timerGen[ElectionTimer] == gen {
		t.Fatal("a chunk did not reset the election timer")
	}
	stage := actionsOf[StageChunk](acts)
	if len(stage) != 1 || stage[0].Offset != 0 || string(stage[0].Data) != "0123" || stage[0].Size != 10 || stage[0].FileCRC != 77 {
		t.Fatalf("StageChunk %v", stage)
	}
	if len(sent(acts)) != 0 {
		t.Fatalf("answered before the chunk was durable: %v", describe(acts))
	}
	// The next chunk may be staged before the first is durable.
	if stage := actionsOf[StageChunk](n.Step(chunk(4, "4567", false))); len(stage) != 1 || stage[0].Offset != 4 {
		t.Fatalf("the second chunk: %v", stage)
	}
	// A gap: refused, with what is durable (nothing yet); the same on a
	// fresh follower (gapChunk, the rule check of snapshot-chunk-unchecked).
	if v := chunkPastTheEnd(n.Step(chunk(9, "9", true))); len(v) != 0 {
		t.Fatal(v)
	}
	if v := gapChunk(t, testConfig(2)); len(v) != 0 {
		t.Fatal(v)
	}
	// Durable: answered with the offset.
	acts = n.Step(ChunkStaged{Meta: SnapshotMeta{8, 2}, FileCRC: 77, Offset: 4})
	if r := sentTo(acts, 1); len(r) != 1 || r[0].GetInstallSnapshotResponse().GetNextOffset() != 4 {
		t.Fatalf("after 4 bytes durable answered %v", describe(acts))
	}
	// A duplicate of chunk 0: refused with what is durable.
	acts = n.Step(chunk(0, "0123", false))
	if len(actionsOf[StageChunk](acts)) != 0 {
		t.Fatalf("a duplicate chunk was staged again: %v", describe(acts))
	}
	if r := sentTo(acts, 1); len(r) != 1 || r[0].GetInstallSnapshotResponse().GetNextOffset() != 4 {
		t.Fatalf("a duplicate answered %v", describe(acts))
	}
	// Another snapshot's chunk past 0 is refused with 0; one at 0 starts
	// a new staged file.
	other := Message{Msg: raftMsg(1, 2, 2, &pb.InstallSnapshot{LastIncludedIndex: 9, LastIncludedTerm: 2,
		Offset: 4, Data: []byte("x"), ChunkCrc: crc32.Checksum([]byte("x"), crc32c), Size: 10, FileCrc: 78})}
	if r := sentTo(n.Step(other), 1); len(r) != 1 || !r[0].GetInstallSnapshotResponse().GetRefused() || r[0].GetInstallSnapshotResponse().GetNextOffset() != 0 {
		t.Fatal("another snapshot's chunk was not refused with 0")
	}
}

// chunkPastTheEnd checks the answer to a chunk that starts after what is
// staged (8 bytes, none durable): refused with offset 0, not staged.
func chunkPastTheEnd(acts []Action) []string {
	var v []string
	if len(actionsOf[StageChunk](acts)) != 0 {
		v = append(v, "staged a chunk that leaves a gap")
	}
	if r := sentTo(acts, 1); len(r) != 1 || !r[0].GetInstallSnapshotResponse().GetRefused() || r[0].GetInstallSnapshotResponse().GetNextOffset() != 0 {
		v = append(v, fmt.Sprintf("a chunk past the end answered %v", describe(acts)))
	}
	return v
}

// gapChunk is the rule check of snapshot-chunk-unchecked: follower 2
// stages two chunks of a snapshot, then is sent one past their end.
func gapChunk(t *testing.T, cfg Config) []string {
	t.Helper()
	cfg.ID = 2
	n := newNode(t, cfg, Restore{HardState: &pb.HardState{Term: 2}})
	chunk := func(off uint64, data string, done bool) Message {
		return Message{Msg: raftMsg(1, 2, 2, &pb.InstallSnapshot{LastIncludedIndex: 8, LastIncludedTerm: 2,
			Offset: off, Data: []byte(data), ChunkCrc: crc32.Checksum([]byte(data), crc32c), Size: 10, FileCrc: 77, Done: done})}
	}
	n.Step(chunk(0, "0123", false))
	n.Step(chunk(4, "4567", false))
	return chunkPastTheEnd(n.Step(chunk(9, "9", true)))
}

// Figure 13 rule 6: a follower whose log holds the snapshot's last entry
// (same index and term) keeps the entries after it.
func TestInstallKeepsTheLogAfterAMatchingEntry(t *testing.T) {
	n := newNode(t, testConfig(2), Restore{HardState: &pb.HardState{Term: 2}, Entries: entries(1, 1, 2, 2, 2, 2)})
	acts := installAll(t, n, SnapshotMeta{Index: 3, Term: 2})
	cs := actionsOf[Compact](acts)
	if len(cs) != 1 || (cs[0].Through != 3 || cs[0].Term != 2 || cs[0].Reset || cs[0].Config.Config == nil) {
		t.Fatalf("Compact %v, want through 3 keeping the rest", cs)
	}
	if in := actionsOf[InstallSnapshot](acts); len(in) != 1 || in[0].Meta != (SnapshotMeta{3, 2}) {
		t.Fatalf("InstallSnapshot %v", in)
	}
	if st := n.Status(); st.LastIndex != 5 || st.Commit != 3 || st.Applied != 3 || st.FirstIndex != 4 {
		t.Fatalf("after the install: %+v, want log to 5, commit and applied 3", st)
	}
	if r := sentTo(acts, 1); len(r) != 1 || !r[0].GetInstallSnapshotResponse().GetInstalled() {
		t.Fatalf("answered %v, want installed", describe(acts))
	}
}

// Figure 13 rule 7: otherwise the whole log goes (the bug behind
// hashicorp/raft#697 kept a conflicting tail and re-sent the snapshot
// forever).
func TestInstallDiscardsALogThatDisagrees(t *testing.T) {
	n, v := installOverAConflict(t, testConfig(2))
	if len(v) != 0 {
		t.Fatal(v)
	}
	// The next AppendEntries follows the snapshot.
	acts := stepSettled(t, n, appendMsg(1, 2, 2, 3, 2, 4, entries(4, 2)...))
	if r := sentTo(acts, 1); len(r) != 1 || !r[0].GetAppendEntriesResponse().GetSuccess() || r[0].GetAppendEntriesResponse().GetMatchIndex() != 4 {
		t.Fatalf("an AppendEntries after the snapshot answered %v", describe(acts))
	}
}

// installOverAConflict is TestInstallDiscardsALogThatDisagrees'
// representative case (the rule check of snapshot-discards-tail): index 3
// of follower 2's log holds term 1, the snapshot through 3 says term 2.
func installOverAConflict(t *testing.T, cfg Config) (*Node, []string) {
	t.Helper()
	cfg.ID = 2
	n := newNode(t, cfg, Restore{HardState: &pb.HardState{Term: 2}, Entries: entries(1, 1, 1, 1, 1, 1)})
	acts := installAll(t, n, SnapshotMeta{Index: 3, Term: 2})
	var v []string
	if cs := actionsOf[Compact](acts); len(cs) != 1 || (cs[0].Through != 3 || cs[0].Term != 2 || !cs[0].Reset || cs[0].Config.Config == nil) {
		v = append(v, fmt.Sprintf("Compact %v, want a reset through 3", cs))
	}
	if st := n.Status(); st.LastIndex != 3 || st.LastTerm != 2 || st.Commit != 3 || st.Applied != 3 || st.Durable != 3 {
		v = append(v, fmt.Sprintf("after the install: %+v, want an empty log after 3/2", st))
	}
	return n, v
}

// A snapshot no newer than the commit index is not installed: the follower
// answers with what it holds, and the leader probes from there.
func TestStaleSnapshotIsAnsweredWithTheMatch(t *testing.T) {
	if v := staleSnapshot(t, testConfig(2)); len(v) != 0 {
		t.Fatal(v)
	}
}

// staleSnapshot is TestStaleSnapshotIsAnsweredWithTheMatch's case (the
// rule check of install-stale-snapshot): follower 2 has committed 5 and is
// sent a snapshot through 4.
func staleSnapshot(t *testing.T, cfg Config) []string {
	t.Helper()
	cfg.ID = 2
	n := newNode(t, cfg, Restore{HardState: &pb.HardState{Term: 2}, Entries: entries(1, 1, 2, 2, 2, 2), Applied: 5})
	acts := n.Step(Message{Msg: raftMsg(1, 2, 2, &pb.InstallSnapshot{LastIncludedIndex: 4, LastIncludedTerm: 2,
		Offset: 0, Data: []byte("ab"), ChunkCrc: crc32.Checksum([]byte("ab"), crc32c), Size: 2, FileCrc: 5, Done: true})})
	var v []string
	if len(actionsOf[StageChunk](acts)) != 0 {
		v = append(v, "a stale snapshot was staged")
	}
	if r := sentTo(acts, 1); len(r) != 1 || r[0].GetInstallSnapshotResponse().GetMatchIndex() != 5 {
		v = append(v, fmt.Sprintf("answered %v, want match 5", describe(acts)))
	}
	return v
}

// An AppendEntries that starts below the follower's floor: the entries
// through the floor are in its snapshot and match; the rest is appended.
func TestAppendEntriesBelowTheFloor(t *testing.T) {
	n := newNode(t, testConfig(2), Restore{HardState: &pb.HardState{Term: 2}, Base: SnapshotMeta{Index: 5, Term: 2},
		Snapshot: SnapshotMeta{Index: 5, Term: 2}, Applied: 5})
	acts := stepSettled(t, n, appendMsg(1, 2, 2, 3, 2, 7, entries(4, 2, 2, 2, 2)...))
	if r := sentTo(acts, 1); len(r) != 1 || r[0].GetAppendEntriesResponse().GetMatchIndex() != 7 {
		t.Fatalf("answered %v, want match 7", describe(acts))
	}
	if st := n.Status(); st.LastIndex != 7 || st.Commit != 7 {
		t.Fatalf("status %+v, want log and commit 7", st)
	}
	// Entirely below the floor: success at its last entry.
	acts = n.Step(appendMsg(1, 2, 2, 1, 1, 7, entries(2, 2, 2)...))
	if r := sentTo(acts, 1); len(r) != 1 || !r[0].GetAppendEntriesResponse().GetSuccess() || r[0].GetAppendEntriesResponse().GetMatchIndex() != 3 {
		t.Fatalf("an AppendEntries below the floor answered %v", describe(acts))
	}
}

// Restore after a crash between installing a snapshot and resetting the
// log: the log disagrees with the snapshot, so it is discarded (rule 7)
// and Start tells the store.
func TestRestoreDiscardsALogThatDisagreesWithTheSnapshot(t *testing.T) {
	n, err := New(testConfig(2), Restore{HardState: &pb.HardState{Term: 3}, Entries: entries(1, 1, 1, 1),
		Snapshot: SnapshotMeta{Index: 6, Term: 3}, Applied: 6})
	if err != nil {
		t.Fatal(err)
	}
	acts := n.Step(Start{})
	if cs := actionsOf[Compact](acts); len(cs) != 1 || cs[0] != (Compact{Through: 6, Term: 3, Reset: true}) {
		t.Fatalf("Start: %v, want a Compact resetting the log to 6", describe(acts))
	}
	if st := n.Status(); st.LastIndex != 6 || st.LastTerm != 3 || st.Commit != 6 {
		t.Fatalf("status %+v", st)
	}
	// A log compacted past the latest snapshot cannot be restored.
	if _, err := New(testConfig(2), Restore{HardState: &pb.HardState{Term: 3}, Base: SnapshotMeta{Index: 4, Term: 1},
		Snapshot: SnapshotMeta{Index: 2, Term: 1}, Applied: 2}); err == nil {
		t.Fatal("restored a log compacted past its snapshot")
	}
}

// Validation: chunks that fail their checksum, run past the file or mark
// done wrongly are rejected; a snapshot that contradicts a committed entry
// too.
func TestMalformedChunksAreRejected(t *testing.T) {
	n := newNode(t, testConfig(2), Restore{HardState: &pb.HardState{Term: 2}, Entries: entries(1, 1, 2, 2), Applied: 3})
	good := func() *pb.InstallSnapshot {
		return &pb.InstallSnapshot{LastIncludedIndex: 8, LastIncludedTerm: 2, Offset: 0, Data: []byte("ab"),
			ChunkCrc: crc32.Checksum([]byte("ab"), crc32c), Size: 4, FileCrc: 9}
	}
	for name, mutate := range map[string]func(*pb.InstallSnapshot){
		"bad checksum":       func(is *pb.InstallSnapshot) { is.ChunkCrc++ },
		"past the file":      func(is *pb.InstallSnapshot) { is.Offset = 3 },
		"done too early":     func(is *pb.InstallSnapshot) { is.Done = true },
		"empty":              func(is *pb.InstallSnapshot) { is.Data, is.ChunkCrc = nil, 0 },
		"index 0":            func(is *pb.InstallSnapshot) { is.LastIncludedIndex = 0 },
		"term above":         func(is *pb.InstallSnapshot) { is.LastIncludedTerm = 3 },
		"contradicts commit": func(is *pb.InstallSnapshot) { is.LastIncludedIndex, is.LastIncludedTerm = 2, 1 },
	} {
		is := good()
		mutate(is)
		acts := n.Step(Message{Msg: raftMsg(1, 2, 2, is)})
		if len(actionsOf[Rejected](acts)) != 1 || len(actionsOf[StageChunk](acts)) != 0 {
			t.Errorf("%s: %v, want a rejection", name, describe(acts))
		}
	}
}

// installAll sends node n (a follower of leader 1 in term 2) a one-chunk
// snapshot through meta, stages it and reports it done.
func installAll(t *testing.T, n *Node, meta SnapshotMeta) []Action {
	t.Helper()
	data := []byte("snap")
	crc := crc32.Checksum(data, crc32c)
	acts := n.Step(Message{Msg: raftMsg(1, n.id, 2, &pb.InstallSnapshot{LastIncludedIndex: meta.Index, LastIncludedTerm: meta.Term,
		Offset: 0, Data: data, ChunkCrc: crc, Size: 4, FileCrc: crc, Done: true})})
	if st := actionsOf[StageChunk](acts); len(st) != 1 || !st[0].Done {
		t.Fatalf("the chunk was not staged: %v", describe(acts))
	}
	settle(t, n)
	return n.Step(ChunkStaged{Meta: meta, FileCRC: crc, Offset: 4, Done: true})
}
