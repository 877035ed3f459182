package sim

import (
	"encoding/binary"
	"hash/crc32"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	"google.golang.org/protobuf/proto"
)

// Snapshots and compaction in the simulator (Raft §7).
//
// The state machine of a simulated node is the rolling hash of the entries
// it applied and the latest configuration entry it applied, so a snapshot
// through index i is that hash (the digest) and that configuration (thesis
// §4.1: a snapshot records the configuration in effect at its last index),
// written into a file of a few chunks whose header holds both and whose
// other bytes follow from the digest: two nodes' snapshots of the same
// state are the same file, as ketch's are. Each node takes one every few applied entries (a threshold drawn
// per seed), in the background: the file becomes durable a little later,
// and a crash before that loses it. Chunks of a received snapshot are
// staged in order, each durable a little after the fsm hands it over; a
// crash keeps the durable part, which the restarted node resumes from.
//
// The invariants of this file:
//   - snapshot-digest: nodes that applied the same index hold the same
//     state machine digest, also when one of them got there by a snapshot.
//   - compaction: a node never compacts its log past what its state
//     machine applied or what its latest durable snapshot holds.
//   - snapshot-rollback: installing a snapshot never moves a node's
//     applied or commit index backwards.
//   - snapshot-tail: a node that keeps its log after installing a
//     snapshot (Figure 13 rule 6) holds the snapshot's entries there.
//   - chunk-offset: the fsm stages a chunk only where the staged file
//     ends (or at 0, to begin a new file).
// and the fsm's contract on ReadChunk, StageChunk, InstallSnapshot and
// Compact (fsm-contract): a Compact's Config is the configuration the
// committed log has in effect at Through (the latest committed
// configuration entry at or below it; index 0, the node's bootstrap
// configuration, when there is none), and an installed snapshot's
// configuration is the one its file's header records.

// simSnap is one snapshot file.
type simSnap struct {
	meta fsm.SnapshotMeta
	hash uint64          // the state machine's digest at meta.Index
	conf fsm.ConfigState // the configuration in effect at meta.Index (zero: the bootstrap one)
	data []byte
	crc  uint32
}

// stagedFile is a snapshot being received: the durable part.
type stagedFile struct {
	meta fsm.SnapshotMeta
	size uint64
	crc  uint32
	data []byte
}

// snapshotHeader is the size of the fixed part of a simulated snapshot's
// header: index, term, digest, the configuration's index and the length of
// the encoded configuration that follows (0: the bootstrap one).
const snapshotHeader = 36

// makeSnap builds the snapshot file of a state: a header naming it and its
// configuration, then bytes that follow from the digest, 1 to 4 chunks in
// all.
func (s *Sim) makeSnap(meta fsm.SnapshotMeta, hash uint64, conf fsm.ConfigState) *simSnap {
	var cb []byte
	if conf.Index != 0 && conf.Config != nil {
		var err error
		if cb, err = (proto.MarshalOptions{Deterministic: true}).Marshal(conf.Config); err != nil {
			panic(err)
		}
	} else {
		conf = fsm.ConfigState{}
	}
	head := snapshotHeader + len(cb)
	size := head + int(mix64(hash)%uint64(4*s.stats.SnapshotChunk))
	data := make([]byte, size)
	binary.BigEndian.PutUint64(data[0:], meta.Index)
	binary.BigEndian.PutUint64(data[8:], meta.Term)
	binary.BigEndian.PutUint64(data[16:], hash)
	binary.BigEndian.PutUint64(data[24:], conf.Index)
	binary.BigEndian.PutUint32(data[32:], uint32(len(cb)))
	copy(data[snapshotHeader:], cb)
	h := hash
	for i := head; i < size; i++ {
		h = mix64(h + uint64(i))
		data[i] = byte(h)
	}
	return &simSnap{meta: meta, hash: hash, conf: conf, data: data, crc: crc32.Checksum(data, crc32c)}
}

// parseSnap reads the digest and the configuration from a snapshot
// file's header; ok is false when the header is cut short or garbled.
func parseSnap(data []byte) (hash uint64, conf fsm.ConfigState, ok bool) {
	if len(data) < snapshotHeader {
		return 0, conf, false
	}
	hash = binary.BigEndian.Uint64(data[16:])
	conf.Index = binary.BigEndian.Uint64(data[24:])
	l := int(binary.BigEndian.Uint32(data[32:]))
	if l > len(data)-snapshotHeader {
		return 0, conf, false
	}
	if l > 0 {
		if conf.Config = decodeConf(data[snapshotHeader : snapshotHeader+l]); conf.Config == nil {
			return 0, conf, false
		}
	}
	return hash, conf, true
}

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// committedChain is the log chain 0..i of the committed entries, for a
// node whose log a snapshot through i replaced.
func (s *Sim) committedChain(i uint64) logChain {
	c := logChain{terms: make([]uint64, i+1), hashes: make([]uint64, i+1)}
	for k := uint64(1); k <= i; k++ {
		c.terms[k], c.hashes[k] = s.committed[k].term, s.committed[k].hash
	}
	for _, cs := range s.confLog[1:] {
		if cs.Index > i {
			break
		}
		c.confs = append(c.confs, chainConf{index: cs.Index, conf: cs.Config})
	}
	return c
}

// snapIndex is the last index n's latest durable snapshot holds.
func (n *simNode) snapIndex() uint64 {
	if n.disk.snap == nil {
		return 0
	}
	return n.disk.snap.meta.Index
}

// ------------------------------------------------------- taking snapshots

// maybeSnapshot starts writing a snapshot of n's state machine once it
// applied the seed's threshold of entries since its latest one.
func (s *Sim) maybeSnapshot(n *simNode) {
	if s.stats.SnapshotEvery == 0 || n.snapshotting || n.applied < n.snapIndex()+uint64(s.stats.SnapshotEvery) {
		return
	}
	t, ok := n.mirror.termAt(n.applied)
	if !ok {
		s.fail("simulator", "n%d applied %d beyond its log", n.id, n.applied)
		return
	}
	n.snapshotting = true
	sn := s.makeSnap(fsm.SnapshotMeta{Index: n.applied, Term: t}, n.appliedHash, n.appliedConf)
	s.push(event{at: s.after(s.between(time.Millisecond, 20*time.Millisecond)), kind: evSnapshotDone, node: n.idx, inc: n.inc, snap: sn})
}

// snapshotDone makes a snapshot durable (written, fsynced, renamed) and
// tells the fsm.
func (s *Sim) snapshotDone(ev *event) {
	n := s.nodes[ev.node]
	if !n.up || n.inc != ev.inc {
		return
	}
	n.snapshotting = false
	if ev.snap.meta.Index <= n.snapIndex() {
		return // an installed snapshot overtook it
	}
	n.disk.snap = ev.snap
	s.stats.Snapshots++
	s.step(n, fsm.SnapshotTaken{Meta: ev.snap.meta})
}

// onCompact checks a Compact and queues it for the disk, where it takes
// effect with the next fsync (a crash may lose it). The checks against
// the state machine wait for the end of the step (checkCompaction): an
// install resets the applied index in the same step.
func (s *Sim) onCompact(n *simNode, c fsm.Compact) {
	s.trace.add(record{at: s.now, kind: recCompact, node: n.id, a: c.Through, b: c.Term, c: c.Config.Index, flag: uint8(btoi(c.Reset))})
	switch {
	case c.Reset && c.Through != n.snapIndex():
		s.fail("fsm-contract", "n%d resets its log to %d, but its latest snapshot ends at %d", n.id, c.Through, n.snapIndex())
		return
	case c.Reset:
		n.mirror = s.committedChain(c.Through)
	case c.Through > n.mirror.last():
		s.fail("fsm-contract", "n%d compacts through %d beyond its log (%d)", n.id, c.Through, n.mirror.last())
		return
	default:
		if t, _ := n.mirror.termAt(c.Through); t != c.Term {
			s.fail("fsm-contract", "n%d compacts through %d of term %d, but its log holds term %d there", n.id, c.Through, c.Term, t)
			return
		}
	}
	if c.Config.Config == nil && c.Config.Index != 0 {
		// A nil Config is the bootstrap one (as in fsm.Restore), at index 0.
		s.fail("fsm-contract", "n%d compacts through %d without the configuration in effect there (index %d)", n.id, c.Through, c.Config.Index)
		return
	}
	if !s.opts.SafetyOnly {
		// The store keeps Config for the restart (Restore.BaseConfig):
		// it must be what the committed log has in effect at Through.
		if c.Through >= uint64(len(s.committed)) {
			s.fail("fsm-contract", "n%d compacts through %d, which no node has seen committed", n.id, c.Through)
			return
		}
		if want := s.committedConfAt(c.Through); !sameConf(c.Config, want) {
			s.fail("fsm-contract", "n%d compacts through %d recording the configuration %s, but the committed log has %s in effect there",
				n.id, c.Through, confString(c.Config), confString(want))
			return
		}
	}
	c.Config = cloneConf(c.Config)
	n.compacted = append(n.compacted, c)
	n.unsynced = append(n.unsynced, diskWrite{compact: &c})
	if n.syncing == 0 {
		s.startFsync(n)
	}
}

// checkCompaction checks, after a step, the Compacts it emitted (Raft §7:
// only what a durable snapshot holds may go, and the snapshot holds only
// what the state machine applied).
func (s *Sim) checkCompaction(n *simNode) {
	for _, c := range n.compacted {
		if c.Through > n.applied || c.Through > n.snapIndex() {
			s.fail("compaction", "n%d compacted its log through %d, but its state machine applied %d and its latest snapshot ends at %d",
				n.id, c.Through, n.applied, n.snapIndex())
			break
		}
	}
	n.compacted = n.compacted[:0]
}

// ---------------------------------------------------------- the leader

// onReadChunk reads a chunk of a snapshot n holds (its latest, or the one
// pinned for the peer) a little later, and pins it.
func (s *Sim) onReadChunk(n *simNode, r fsm.ReadChunk) {
	if r.Peer == n.id || r.Peer == 0 || r.Peer > uint64(len(s.nodes)) || r.MaxBytes < 1 {
		s.fail("fsm-contract", "n%d reads a chunk for peer %d of %d bytes", n.id, r.Peer, r.MaxBytes)
		return
	}
	sn := n.pinned[r.Peer]
	if sn == nil || sn.meta != r.Meta {
		sn = n.disk.snap
	}
	c := fsm.ChunkRead{Peer: r.Peer, Meta: r.Meta, Offset: r.Offset}
	switch {
	case sn == nil || sn.meta != r.Meta:
		c.Err = errSnapshotGone
	case r.Offset >= uint64(len(sn.data)):
		s.fail("fsm-contract", "n%d reads a chunk at %d of a snapshot of %d bytes", n.id, r.Offset, len(sn.data))
		return
	default:
		n.pinned[r.Peer] = sn
		end := min(r.Offset+uint64(r.MaxBytes), uint64(len(sn.data)))
		c.Data = append([]byte(nil), sn.data[r.Offset:end]...)
		c.Size, c.FileCRC = uint64(len(sn.data)), sn.crc
	}
	s.push(event{at: s.after(s.between(50*time.Microsecond, time.Millisecond)), kind: evChunkRead, node: n.idx, inc: n.inc, chunk: &c})
}

type simError string

func (e simError) Error() string { return string(e) }

const errSnapshotGone = simError("sim: the snapshot is gone")

func (s *Sim) chunkReadDone(ev *event) {
	if n := s.nodes[ev.node]; n.up && n.inc == ev.inc {
		s.step(n, *ev.chunk)
	}
}

// ------------------------------------------------------- the follower

// onStageChunk checks that the chunk goes where the staged file ends and
// schedules its write; chunks are written in order, each durable a little
// after the one before.
func (s *Sim) onStageChunk(n *simNode, c fsm.StageChunk) {
	if c.Offset != 0 && c.Offset != n.stagingEnd {
		s.fail("chunk-offset", "n%d stages %d bytes at offset %d of snapshot %v, but its staged file ends at %d",
			n.id, len(c.Data), c.Offset, c.Meta, n.stagingEnd)
		return
	}
	n.stagingEnd = c.Offset + uint64(len(c.Data))
	c.Data = append([]byte(nil), c.Data...)
	at := max(s.now, n.stageBusy) + s.between(100*time.Microsecond, 3*time.Millisecond)
	n.stageBusy = at
	s.push(event{at: at, kind: evStaged, node: n.idx, inc: n.inc, stage: &c})
}

// stagedDone makes a chunk durable. The last one completes the file: it is
// checked against its size and checksum and becomes the node's latest
// snapshot.
func (s *Sim) stagedDone(ev *event) {
	n := s.nodes[ev.node]
	if !n.up || n.inc != ev.inc {
		return
	}
	c := ev.stage
	f := n.disk.staged
	if c.Offset == 0 || f == nil || f.meta != c.Meta || f.crc != c.FileCRC {
		f = &stagedFile{meta: c.Meta, size: c.Size, crc: c.FileCRC}
		n.disk.staged = f
	}
	if uint64(len(f.data)) != c.Offset {
		s.fail("chunk-offset", "n%d wrote a chunk at %d of a staged file of %d bytes", n.id, c.Offset, len(f.data))
		return
	}
	f.data = append(f.data, c.Data...)
	staged := fsm.ChunkStaged{Meta: c.Meta, FileCRC: c.FileCRC, Offset: uint64(len(f.data))}
	if c.Done {
		n.disk.staged = nil
		if uint64(len(f.data)) != f.size || crc32.Checksum(f.data, crc32c) != f.crc {
			staged.Err = simError("sim: the staged snapshot fails its check")
		} else if hash, conf, ok := parseSnap(f.data); !ok {
			staged.Err = simError("sim: the staged snapshot's header is garbled")
		} else {
			n.disk.snap = &simSnap{meta: c.Meta, hash: hash, conf: conf, data: f.data, crc: f.crc}
			staged.Done = true
		}
	}
	s.step(n, staged)
}

// onInstallSnapshot checks an install and carries it out on the simulated
// state machine: its digest becomes the snapshot's.
func (s *Sim) onInstallSnapshot(n *simNode, in fsm.InstallSnapshot, keptLog bool) {
	sn := n.disk.snap
	switch {
	case sn == nil || sn.meta != in.Meta:
		s.fail("fsm-contract", "n%d installs snapshot %v, which is not its latest on disk", n.id, in.Meta)
	case in.Meta.Index <= n.applied || in.Meta.Index < n.commit:
		s.fail("snapshot-rollback", "n%d installs a snapshot through %d, having applied %d and committed %d",
			n.id, in.Meta.Index, n.applied, n.commit)
	case in.Meta.Index < uint64(len(s.applied)) && s.applied[in.Meta.Index].hash != sn.hash:
		s.fail("snapshot-digest", "n%d installs a snapshot through %d whose state differs from what n%d applied there",
			n.id, in.Meta.Index, s.applied[in.Meta.Index].node)
	case keptLog && !s.mirrorHolds(n, in.Meta.Index, sn.hash):
		s.fail("snapshot-tail", "n%d kept its log after installing a snapshot through %d (term %d), but its log differs there",
			n.id, in.Meta.Index, in.Meta.Term)
	case len(n.compacted) == 0:
		s.fail("fsm-contract", "n%d installs snapshot %v without a Compact before it", n.id, in.Meta)
	case !sameConf(n.compacted[len(n.compacted)-1].Config, sn.conf) && !s.opts.SafetyOnly:
		s.fail("fsm-contract", "n%d installs snapshot %v with the configuration %s, but the snapshot's header records %s",
			n.id, in.Meta, confString(n.compacted[len(n.compacted)-1].Config), confString(sn.conf))
	}
	if s.violation != nil {
		return
	}
	n.applied, n.appliedHash, n.appliedConf = in.Meta.Index, sn.hash, sn.conf
	n.installed = in.Meta.Index
	s.stats.Installs++
	if !n.appliedQueued {
		n.appliedQueued = true
		s.push(event{at: s.after(randDuration(s.rng, 2*time.Millisecond)), kind: evApplied, node: n.idx, inc: n.inc})
	}
}

func (s *Sim) mirrorHolds(n *simNode, i, hash uint64) bool {
	h, ok := n.mirror.hashAt(i)
	return ok && h == hash
}
