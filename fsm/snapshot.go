package fsm

import (
	"fmt"
	"hash/crc32"
	"slices"

	pb "github.com/ketch-raft/ketch/messages"
)

// Log compaction and InstallSnapshot (Raft §7, Figure 13).
//
// Taking a snapshot is the state machine's job: the driver reports a
// durable one with SnapshotTaken, and the node compacts its log behind it
// (maybeCompactLog), keeping Config.SnapshotTrailing entries for followers
// that lag a little. A follower that needs an entry the leader compacted
// away is sent the leader's latest snapshot instead, in chunks:
//
//	leader                                   follower
//	ReadChunk{off} ─▶ driver                   │
//	ChunkRead{data} ◀─ driver                  │
//	InstallSnapshot{off, data, crc} ─────────▶ StageChunk{off} ─▶ driver
//	                                           ChunkStaged{end} ◀─ driver
//	  ◀───────── InstallSnapshotResponse{next_offset: end}
//	... until the chunk with done ...          the driver checks the whole
//	                                           file: ChunkStaged{Done}
//	                                           Figure 13 rules 6, 7:
//	                                           Compact, InstallSnapshot
//	  ◀───────── InstallSnapshotResponse{installed}
//	probe from the snapshot's last index + 1
//
// The node sees offsets and checksums, never files. A follower stages a
// chunk only where its staged file ends, and answers every chunk with how
// much it holds durably, so a lost, duplicated or reordered chunk, a
// follower restart or another leader offering the same snapshot (same
// index, term, size and checksum) resumes from there. A transfer that
// makes no progress for an election timeout (at least RetransmitRounds
// heartbeats) is resent from the acknowledged offset, one chunk at a time
// until the follower acknowledges again; one that makes none for two
// election timeouts is abandoned, and the follower probed again.

// snapshotSend is a leader's snapshot transfer to one follower.
type snapshotSend struct {
	meta SnapshotMeta
	// size and crc: the file's, learned from the first chunk read (size
	// 0 until then).
	size uint64
	crc  uint32
	// acked: the follower holds [0, acked) durably. sent: chunks up to
	// there were asked of the driver or sent. reads: offsets asked of the
	// driver, not yet read. inflight: chunks sent, not yet acknowledged.
	acked, sent uint64
	reads       []uint64
	inflight    []chunkSpan
	// progressRound: the heartbeat round acked last grew (or the transfer
	// started).
	progressRound uint64
	// resending: a chunk was resent (go-back-N, or no progress for an
	// election timeout); one chunk at a time until acked grows again. The
	// chunks sent before may still be on their way (in the sender's queue
	// or the network), holding memory: refilling the whole window at once
	// would hold twice the window, and more after every timeout.
	resending bool
}

type chunkSpan struct{ start, end uint64 }

// crc32c is the Castagnoli table; snapshot chunks and files use it.
var crc32c = crc32.MakeTable(crc32.Castagnoli)

// ------------------------------------------------------------ compaction

// snapshotTaken records a durable snapshot of the state machine.
func (n *Node) snapshotTaken(m SnapshotMeta) {
	if m.Index <= n.snap.Index {
		return // not newer than what this node has
	}
	if m.Index > n.applied {
		panic(fmt.Sprintf("invariant: a snapshot through %d, but only %d was handed to Apply", m.Index, n.applied))
	}
	if m.Index >= n.log.floor {
		if t := n.log.term(m.Index); t != m.Term {
			panic(fmt.Sprintf("invariant: a snapshot through %d of term %d, but the log holds term %d there", m.Index, m.Term, t))
		}
	}
	n.snap = m
}

// maybeCompactLog lets the store drop the entries the latest snapshot holds,
// but for Config.SnapshotTrailing of them: only entries the state machine
// reported applied (Raft §7: the snapshot replaces them), that are durable
// (the store has them, so it can drop them) and that the snapshot covers.
func (n *Node) maybeCompactLog() {
	trailing := uint64(n.cfg.SnapshotTrailing)
	if n.snap.Index <= trailing {
		return
	}
	through := min(n.snap.Index-trailing, n.stateAt, n.durable)
	if n.bug(bugCompactUnapplied) {
		through = min(n.commit, n.durable)
	}
	if through <= n.log.floor {
		return
	}
	t := n.log.term(through)
	n.log.compactTo(through, t)
	n.pruneConfigs()
	n.acts = append(n.acts, Compact{Through: through, Term: t, Config: n.configAt(through)})
}

// -------------------------------------------------------------- leader

// startSnapshot puts follower p, which needs entries at or below the floor,
// into snapshot state with this node's latest snapshot.
func (n *Node) startSnapshot(p uint64, pr *progress) {
	if n.snap.Index < n.log.floor {
		panic(fmt.Sprintf("invariant: the log is compacted through %d but the latest snapshot is at %d", n.log.floor, n.snap.Index))
	}
	pr.becomeSnapshot(&snapshotSend{meta: n.snap, progressRound: n.round})
	n.pumpSnapshot(p, pr)
}

// endSnapshot ends follower p's transfer and probes it from next.
func (n *Node) endSnapshot(p uint64, pr *progress, next uint64) {
	n.acts = append(n.acts, EndTransfer{Peer: p})
	pr.becomeProbe(next)
}

// pumpSnapshot asks the driver for the next chunks while the window has
// room: Config.MaxSnapshotChunks read or sent and unacknowledged. Until the
// first chunk tells the file's size, one read at a time.
func (n *Node) pumpSnapshot(p uint64, pr *progress) {
	x := pr.xfer
	chunk := uint64(n.cfg.SnapshotChunkBytes)
	window := n.cfg.MaxSnapshotChunks
	if x.resending {
		window = 1
	}
	for len(x.reads)+len(x.inflight) < window {
		if x.size == 0 && len(x.reads) > 0 || x.size != 0 && x.sent >= x.size {
			return
		}
		n.acts = append(n.acts, ReadChunk{Peer: p, Meta: x.meta, Offset: x.sent, MaxBytes: int(chunk)})
		x.reads = append(x.reads, x.sent)
		x.sent += chunk
		if x.size != 0 {
			x.sent = min(x.sent, x.size)
		}
	}
}

// chunkRead sends a chunk the driver read to its follower.
func (n *Node) chunkRead(c ChunkRead) {
	pr := n.progress[c.Peer]
	if n.role != Leader || pr == nil || pr.state != stateSnapshot || pr.xfer.meta != c.Meta {
		return // an answer to an earlier transfer
	}
	x := pr.xfer
	k := slices.Index(x.reads, c.Offset)
	if k < 0 {
		return // a read the transfer no longer waits for (it was resent)
	}
	x.reads = slices.Delete(x.reads, k, k+1)
	if c.Err != nil {
		// The snapshot is gone (replaced by a newer one): start over with
		// the latest, at the next heartbeat (if it cannot be read either,
		// the leader does not spin on it).
		n.endSnapshot(c.Peer, pr, pr.match+1)
		pr.probeSent = true
		return
	}
	if x.size == 0 {
		x.size, x.crc = c.Size, c.FileCRC
		x.sent = min(x.sent, x.size)
	}
	want := min(uint64(n.cfg.SnapshotChunkBytes), x.size-min(c.Offset, x.size))
	if c.Size != x.size || c.FileCRC != x.crc || uint64(len(c.Data)) != want || want == 0 {
		panic(fmt.Sprintf("invariant: the driver read %d bytes at %d of snapshot %v (size %d, crc %08x); the transfer expects %d of size %d, crc %08x",
			len(c.Data), c.Offset, c.Meta, c.Size, c.FileCRC, want, x.size, x.crc))
	}
	end := c.Offset + want
	is := &pb.InstallSnapshot{
		LastIncludedIndex: x.meta.Index, LastIncludedTerm: x.meta.Term,
		Offset: c.Offset, Data: c.Data, ChunkCrc: crc32.Checksum(c.Data, crc32c),
		Size: x.size, FileCrc: x.crc, Done: end == x.size,
	}
	if is.Done {
		// thesis §4.1: the snapshot carries the configuration at its last
		// index (the floor is at or below it, so the node knows it).
		conf := n.configAt(x.meta.Index)
		is.Configuration, is.ConfigurationIndex = conf.Config, conf.Index
	}
	n.send(c.Peer, is, false)
	x.inflight = append(x.inflight, chunkSpan{c.Offset, end})
	n.pumpSnapshot(c.Peer, pr)
}

// handleSnapshotResponse takes a follower's answer to a chunk.
func (n *Node) handleSnapshotResponse(from uint64, r *pb.InstallSnapshotResponse) {
	pr := n.progress[from]
	if pr == nil {
		return
	}
	pr.active, pr.heard = true, n.round // thesis §6.2: the follower recognizes this leader
	if r.MatchIndex != 0 {
		// The follower needs no snapshot: it holds committed entries
		// through MatchIndex.
		if r.MatchIndex > n.log.lastIndex() {
			n.reject(from, ErrImpossible, "holds index %d, but this leader's log ends at %d", r.MatchIndex, n.log.lastIndex())
			return
		}
		if pr.state != stateSnapshot || pr.xfer.meta.Index != r.LastIncludedIndex || pr.xfer.meta.Term != r.LastIncludedTerm {
			return // stale: the transfer it answers is over
		}
		pr.match = max(pr.match, r.MatchIndex)
		n.endSnapshot(from, pr, pr.match+1)
		n.maybeCommit()
		n.sendAppend(from)
		return
	}
	x := pr.xfer
	if pr.state != stateSnapshot || x.meta.Index != r.LastIncludedIndex || x.meta.Term != r.LastIncludedTerm || x.size == 0 || r.FileCrc != x.crc {
		return // an answer to another transfer
	}
	if r.NextOffset > x.size {
		n.reject(from, ErrImpossible, "holds %d bytes of a snapshot of %d", r.NextOffset, x.size)
		return
	}
	if r.Installed {
		if x.meta.Index > n.log.lastIndex() {
			panic(fmt.Sprintf("invariant: a snapshot through %d beyond this leader's log (%d)", x.meta.Index, n.log.lastIndex()))
		}
		pr.match = max(pr.match, x.meta.Index)
		n.endSnapshot(from, pr, pr.match+1)
		n.maybeCommit()
		n.sendAppend(from)
		return
	}
	o := r.NextOffset
	if o > x.acked {
		x.acked, x.progressRound, x.resending = o, n.round, false
	}
	// Drop what the follower holds from the window.
	k := 0
	for k < len(x.inflight) && x.inflight[k].end <= o {
		k++
	}
	x.inflight = slices.Delete(x.inflight, 0, k)
	switch {
	case o > x.sent:
		// The follower holds more than was sent (staged from another
		// leader, or before a restart): go on from there.
		x.sent, x.reads, x.inflight = o, nil, nil
	case r.Refused && !slices.ContainsFunc(x.inflight, func(c chunkSpan) bool { return c.start == o }) && !slices.Contains(x.reads, o):
		// The chunk at o is lost (the follower refused a later one):
		// resend from o (go-back-N).
		x.sent, x.reads, x.inflight, x.resending = o, nil, nil, true
	}
	n.pumpSnapshot(from, pr)
}

// snapshotTick runs on each heartbeat for a follower in snapshot state: a
// transfer without progress for an election timeout (at least
// RetransmitRounds heartbeats) is resent, one chunk first, from what the
// follower acknowledged (a chunk or its answer was lost), and one without
// progress for two election timeouts is abandoned: the follower is probed
// again, which starts a new transfer if it still needs one.
func (n *Node) snapshotTick(p uint64, pr *progress) {
	x := pr.xfer
	idle := n.round - x.progressRound
	abandon := 2 * uint64((n.cfg.ElectionTimeout+n.cfg.HeartbeatInterval-1)/n.cfg.HeartbeatInterval)
	// A chunk is large and the follower fsyncs each before it answers, so
	// a transfer waits longer than an AppendEntries before it resends: at
	// least an election timeout's worth of rounds (half of abandon).
	retransmit := max(uint64(n.cfg.RetransmitRounds), abandon/2)
	switch {
	case idle >= abandon:
		n.endSnapshot(p, pr, pr.match+1)
		n.sendAppend(p)
	case idle > 0 && idle%retransmit == 0:
		x.sent, x.reads, x.inflight, x.resending = x.acked, nil, nil, true
		n.pumpSnapshot(p, pr)
	}
}

// ------------------------------------------------------------ follower

// handleInstallSnapshot takes a chunk of the leader's snapshot (Figure 13,
// receiver rules 2-5): a chunk that starts where the staged file ends is
// handed to the driver to stage, and answered once it is durable
// (chunkStaged); any other is answered at once with what the follower
// holds.
func (n *Node) handleInstallSnapshot(m *pb.RaftMessage) {
	is := m.GetInstallSnapshot()
	meta := SnapshotMeta{Index: is.LastIncludedIndex, Term: is.LastIncludedTerm}
	if meta.Index <= n.commit && !n.bug(bugInstallStaleSnapshot) {
		// This node holds every entry the snapshot does, committed: it
		// needs no snapshot (a stale or duplicated transfer). It tells
		// the leader what it holds durably and committed, if anything yet.
		if held := n.heldCommitted(); held > 0 {
			n.send(m.From, &pb.InstallSnapshotResponse{LastIncludedIndex: meta.Index, LastIncludedTerm: meta.Term,
				FileCrc: is.FileCrc, MatchIndex: held}, true)
		}
		return
	}
	same := n.staging.Meta == meta && n.staging.Size == is.Size && n.staging.FileCRC == is.FileCrc
	if !same && is.Offset == 0 {
		// Figure 13 rule 2: offset 0 begins a new snapshot file.
		n.staging = Staging{Meta: meta, Size: is.Size, FileCRC: is.FileCrc}
		n.stagingEnd, same = 0, true
	}
	if !same || is.Offset != n.stagingEnd && !n.bug(bugSnapshotChunkUnchecked) {
		// Not where the staged file ends (lost, duplicated or reordered,
		// or of another snapshot than the one staged): say what is held.
		held := uint64(0)
		if same {
			held = n.staging.Offset
		}
		n.send(m.From, &pb.InstallSnapshotResponse{LastIncludedIndex: meta.Index, LastIncludedTerm: meta.Term,
			FileCrc: is.FileCrc, NextOffset: held, Refused: true}, true)
		return
	}
	// Answers carry this node's term, so they are sent only once it is
	// durable (send(..., true), ARCHITECTURE §3 rule 1).
	//
	// Figure 13 rules 3-4: write the chunk at its offset (here: only at
	// the end of the file), durably, before answering.
	n.stagingLeader = m.From
	n.stagingEnd = is.Offset + uint64(len(is.Data))
	if is.Done {
		n.stagingConf = ConfigState{Config: is.Configuration, Index: is.ConfigurationIndex}
	}
	n.acts = append(n.acts, StageChunk{Meta: meta, Size: is.Size, FileCRC: is.FileCrc,
		Offset: is.Offset, Data: is.Data, Done: is.Done})
}

// chunkStaged takes the driver's answer to a StageChunk.
func (n *Node) chunkStaged(c ChunkStaged) {
	if c.Meta != n.staging.Meta || c.FileCRC != n.staging.FileCRC || n.staging.Meta.Index == 0 {
		return // of a staged file since replaced
	}
	resp := &pb.InstallSnapshotResponse{LastIncludedIndex: c.Meta.Index, LastIncludedTerm: c.Meta.Term, FileCrc: c.FileCRC}
	switch {
	case c.Err != nil:
		// The driver discarded the staged file: start over.
		n.staging, n.stagingEnd = Staging{}, 0
		resp.Refused = true
	case c.Done:
		if c.Offset != n.staging.Size {
			panic(fmt.Sprintf("invariant: a staged snapshot done at %d of %d bytes", c.Offset, n.staging.Size))
		}
		resp.NextOffset = c.Offset
		resp.Installed = n.installSnapshot(c.Meta)
		if !resp.Installed {
			resp.NextOffset, resp.MatchIndex = 0, n.heldCommitted()
		}
	default:
		n.staging.Offset = max(n.staging.Offset, c.Offset)
		n.stagingEnd = max(n.stagingEnd, n.staging.Offset)
		resp.NextOffset = n.staging.Offset
	}
	if to := n.stagingLeader; to != 0 {
		// Like every message, it waits until the term it carries is
		// durable (ARCHITECTURE §3 rule 1).
		n.send(to, resp, true)
	}
}

// heldCommitted is the last index this node holds durably and committed:
// what it may tell a leader it matches without an AppendEntries. Entries
// through the floor are in its snapshot.
func (n *Node) heldCommitted() uint64 { return max(min(n.commit, n.durable), n.log.floor) }

// endTransfers ends every snapshot transfer of a leader that steps down.
func (n *Node) endTransfers() {
	for _, p := range n.peers {
		if pr := n.progress[p]; pr != nil && pr.state == stateSnapshot {
			n.endSnapshot(p, pr, pr.match+1)
		}
	}
}

// installSnapshot replaces the state with a received snapshot, now the
// node's latest on disk (Figure 13 rules 6-8), and reports whether it did:
// a snapshot that the node's commit index has passed meanwhile is not
// installed (it would move the state back).
func (n *Node) installSnapshot(meta SnapshotMeta) bool {
	n.staging, n.stagingEnd = Staging{}, 0
	if meta.Index > n.snap.Index {
		n.snap = meta
	}
	if meta.Index <= n.commit && !n.bug(bugInstallStaleSnapshot) {
		return false
	}
	// Rule 6: if the log holds the snapshot's last entry (same index and
	// term), keep the entries that follow it. Rule 7: otherwise discard the
	// whole log.
	keep := meta.Index <= n.log.lastIndex() && n.log.term(meta.Index) == meta.Term
	if n.bug(bugSnapshotKeepsConflict) {
		keep = meta.Index <= n.log.lastIndex()
	}
	if keep {
		n.durable = max(n.durable, meta.Index) // the snapshot holds them
		if n.bug(bugSnapshotKeepsConflict) && n.log.term(meta.Index) != meta.Term {
			// The planted bug: make the conflicting entry look like the
			// snapshot's, and keep what follows it.
			n.log.compact(meta.Index)
			n.log.floor, n.log.floorTerm = meta.Index, meta.Term
			n.log.runs = []termRun{{first: meta.Index, term: meta.Term}}
		} else {
			n.log.compactTo(meta.Index, meta.Term)
		}
	} else {
		n.log.reset(meta.Index, meta.Term)
		// What was durable past the snapshot is no longer this log's; the
		// snapshot itself is durable.
		n.durable = meta.Index
		for k := range n.inflight {
			n.inflight[k].last = min(n.inflight[k].last, meta.Index)
		}
	}
	// thesis §4.1: the snapshot's configuration is the one in effect at
	// its last index; configuration entries kept after it (rule 6) follow.
	conf := n.stagingConf
	if conf.Config == nil {
		panic("invariant: a snapshot installed without the configuration its last chunk carries (validation requires one)")
	}
	kept := []ConfigState{conf}
	if keep {
		for _, c := range n.confs {
			if c.Index > meta.Index {
				kept = append(kept, c)
			}
		}
	}
	n.confs = kept
	n.recomputeConfig()
	n.acts = append(n.acts, Compact{Through: meta.Index, Term: meta.Term, Reset: !keep, Config: conf}, InstallSnapshot{Meta: meta})
	// Rule 8: the state machine takes the snapshot's state: its contents
	// are committed and applied through its last index.
	if n.bug(bugInstallStaleSnapshot) {
		n.commit, n.applied = meta.Index, meta.Index
	} else {
		n.commit, n.applied = max(n.commit, meta.Index), max(n.applied, meta.Index)
	}
	return true
}
