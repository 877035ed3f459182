package sim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// simNode is one simulated server: an fsm core, the disk beneath it, and
// what the simulator observes of it for the invariant checks.
type simNode struct {
	idx int    // position in Sim.nodes
	id  uint64 // fsm node id, idx+1
	cfg fsm.Config
	fsm *fsm.Node // nil while crashed
	up  bool
	// stopped: shut down for good (removed from the cluster, or its
	// addition refused); it never restarts.
	stopped bool
	// inc is the incarnation, bumped by every crash. Events scheduled for
	// an older incarnation (timers, fsyncs, apply reports) are dropped.
	inc uint32

	disk     disk        // survives crashes
	unsynced []diskWrite // emitted, not yet durable, in order; lost by a crash
	syncing  int         // how many of unsynced the fsync in progress covers; 0 when idle
	lastSeq  uint64      // Seq of the last Persist of this incarnation

	// Snapshots (snapshot.go), of this incarnation: a snapshot is being
	// written; the Compacts of the step in progress (checked at its end);
	// the snapshots pinned for peers; where the staged file will end once
	// the chunks handed over are written, and when the last of them is;
	// the index installed in the step in progress (0: none).
	snapshotting bool
	compacted    []fsm.Compact
	pinned       map[uint64]*simSnap
	stagingEnd   uint64
	stageBusy    time.Duration
	installed    uint64

	// mirror is the node's in-memory log, rebuilt from its Persist
	// actions as they are emitted (same replace-the-suffix semantics as
	// the disk). A crash resets it to the disk's log.
	mirror logChain

	timerGen [2]uint64 // the live generation of each fsm.Timer
	// rate is how fast the node's clock runs against virtual time, within
	// 1 ± maxDrift: timers it sets last After/rate, and the times it is
	// given (Timeout.Now, ReadIndex.Now) are clock(s.now).
	rate float64

	// Observations of this incarnation, for the invariants.
	status        fsm.Status // Status() after the last step
	commit        uint64     // highest commit index seen
	applied       uint64     // last index handed to Apply
	appliedHash   uint64     // rolling hash of the applied prefix
	appliedQueued bool       // an evApplied is scheduled
	reported      uint64     // the last index reported to the fsm by Applied
	leaderTerm    uint64     // the term it was leader in at its last step, 0 if it was not
	leaderLast    uint64     // its last index then
	leaderHash    uint64     // and the rolling hash there
	// appliedConf is the state machine's configuration: the latest
	// configuration entry applied (zero: the bootstrap one), which its
	// snapshots record.
	appliedConf fsm.ConfigState

	// Membership (membership.go), of this incarnation: the configuration
	// of the last ConfigChanged and the ids it may send to, the ids it
	// heard from (it may answer them too), whether it reported Removed
	// (and the index, until checked at the end of the step), the changes
	// it answered as done in the step in progress, and whether the step
	// in progress appended a configuration entry on a leader.
	conf         fsm.ConfigState
	peerMask     uint64
	stepPeers    uint64 // peerMask when the step in progress began
	heardMask    uint64
	removedSeen  bool
	removedAt    uint64
	doneChanges  []doneChange
	appendedConf bool
	singleVoter  bool // and it changes one voter

	// lease is what the checks of lease reads saw of its read rounds as
	// leader (reads.go).
	lease leaseRounds
}

func newSimNode(idx int, cfg fsm.Config) *simNode {
	return &simNode{idx: idx, id: cfg.ID, cfg: cfg, disk: newDisk(), mirror: newChain()}
}

// clock is the node's monotonic clock at virtual time now; it starts at 1s
// so that it is never 0 (no time).
func (n *simNode) clock(now time.Duration) time.Duration {
	return time.Second + time.Duration(float64(now)*n.rate)
}

// forget drops what the node's incarnation knew: everything but the disk.
func (n *simNode) forget() {
	n.fsm, n.up = nil, false
	n.inc++
	n.unsynced, n.syncing, n.lastSeq = nil, 0, 0
	n.snapshotting, n.compacted, n.pinned, n.stagingEnd, n.stageBusy, n.installed = false, nil, nil, 0, 0, 0
	n.timerGen = [2]uint64{}
	n.status = fsm.Status{}
	n.commit, n.applied, n.appliedHash, n.appliedQueued, n.reported = 0, 0, 0, false, 0
	n.leaderTerm, n.leaderLast, n.leaderHash = 0, 0, 0
	n.appliedConf = fsm.ConfigState{}
	n.conf, n.peerMask, n.heardMask = fsm.ConfigState{}, 0, 0
	n.removedSeen, n.removedAt, n.doneChanges, n.appendedConf, n.singleVoter = false, 0, nil, false, false
	n.lease = leaseRounds{}
}

// start creates the node's fsm from its disk and steps Start, at time 0 or
// when it restarts after a crash (ARCHITECTURE §3 rule 6: term, vote and
// log come from the store; the state machine restores its latest snapshot,
// or starts empty, so Applied is the snapshot's index or 0).
func (s *Sim) start(n *simNode) {
	r := n.disk.restore()
	n.pinned = map[uint64]*simSnap{}
	if f := n.disk.staged; f != nil {
		n.stagingEnd = uint64(len(f.data))
	}
	if sn := n.disk.snap; sn != nil {
		n.applied, n.appliedHash, n.reported = sn.meta.Index, sn.hash, sn.meta.Index
		n.appliedConf = sn.conf
		// Its contents were committed: the commit index starts there.
		n.commit = sn.meta.Index
	}
	f, err := newNode(n.cfg, r)
	if err != nil {
		s.fail("fsm-contract", "n%d cannot start from its disk (term %d, vote %d, %d entries): %v",
			n.id, n.disk.hs.GetTerm(), n.disk.hs.GetVote(), len(n.disk.entries), err)
		return
	}
	n.fsm, n.up = f, true
	s.trace.add(record{at: s.now, kind: recStart, node: n.id,
		a: n.disk.chain.last(), b: n.disk.hs.GetTerm(), c: n.disk.hs.GetVote()})
	s.step(n, fsm.Start{})
}

// newNode is fsm.New with a panic turned into an error.
func newNode(cfg fsm.Config, r fsm.Restore) (f *fsm.Node, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fsm.New(cfg, r)
}

// step feeds one event to n's fsm, carries out the actions in the order
// they come, and checks the invariants. It is the only caller of Step.
func (s *Sim) step(n *simNode, ev fsm.Event) {
	s.steps++
	s.traceEvent(n, ev)
	if m, ok := ev.(fsm.Message); ok {
		n.heardMask |= idBit(m.Msg.GetFrom()) // it may answer the sender
		s.leaseEcho(n, m.Msg)
	}
	n.stepPeers = n.peerMask
	acts, ok := s.callStep(n, ev)
	if !ok {
		return
	}
	// Election safety first: two leaders in a term would otherwise show
	// up as a less telling violation while their actions are carried out.
	if st := n.fsm.Status(); st.Role == fsm.Leader {
		s.checkElectionSafety(n, st.Term)
		if s.violation != nil {
			return
		}
	}
	hardState := false // a Persist of this step changes term or vote
	for _, a := range acts {
		switch a := a.(type) {
		case fsm.Persist:
			hardState = hardState || a.HardState != nil
			s.onPersist(n, a)
		case fsm.Send:
			s.onSend(n, a.Msg)
		case fsm.Apply:
			s.onApply(n, a)
		case fsm.Reply:
			s.onReply(n, a)
		case fsm.SetTimer:
			s.onSetTimer(n, a)
		case fsm.ReadReady:
			s.onReadReady(n, a)
		case fsm.Fetch:
			s.onFetch(n, a)
		case fsm.Rejected:
			s.onRejected(n, a)
		case fsm.Proposed:
			s.onProposed(n, a)
		case fsm.Compact:
			s.onCompact(n, a)
		case fsm.ReadChunk:
			s.onReadChunk(n, a)
		case fsm.EndTransfer:
			delete(n.pinned, a.Peer)
		case fsm.StageChunk:
			s.onStageChunk(n, a)
		case fsm.InstallSnapshot:
			s.onInstallSnapshot(n, a, len(n.compacted) > 0 && !n.compacted[len(n.compacted)-1].Reset)
		case fsm.ConfigChanged:
			s.onConfigChanged(n, a)
		case fsm.MembersChanged:
			s.onMembersChanged(n, a)
		case fsm.Removed:
			s.onRemoved(n, a)
		default:
			s.fail("fsm-contract", "n%d returned an action of unknown type %T", n.id, a)
		}
		if s.violation != nil {
			return
		}
	}
	s.checkCompaction(n)
	if s.violation != nil {
		return
	}
	wasLeader := n.status.Role == fsm.Leader
	s.checkNode(n, ev)
	n.installed = 0
	newLeader := !wasLeader && n.status.Role == fsm.Leader
	if s.violation == nil {
		s.checkMembership(n, newLeader)
	}
	if s.violation == nil {
		s.maybeAwkwardCrash(n, hardState, newLeader)
	}
}

// callStep calls Step, turning a panic (the fsm asserts its own
// invariants) into a violation.
func (s *Sim) callStep(n *simNode, ev fsm.Event) (acts []fsm.Action, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			s.fail("fsm-assertion", "n%d panicked stepping %T: %v (%s)", n.id, ev, p, fsmFrames(debug.Stack()))
			ok = false
		}
	}()
	return n.fsm.Step(ev), true
}

// fsmFrames condenses a goroutine stack to the fsm's frames, innermost
// first: "roles.go:253 sendAppend < roles.go:440 handleAppendResponse".
func fsmFrames(stack []byte) string {
	lines := strings.Split(string(stack), "\n")
	var frames []string
	for i := 0; i+1 < len(lines) && len(frames) < 6; i++ {
		fn := lines[i]
		k := strings.Index(fn, "/fsm.")
		if k < 0 || !strings.Contains(lines[i+1], "/fsm/") {
			continue
		}
		fn = fn[k+len("/fsm."):]
		if j := strings.LastIndex(fn, "("); j > 0 {
			fn = fn[:j]
		}
		fn = fn[strings.LastIndex(fn, ".")+1:]
		loc := strings.TrimSpace(lines[i+1])
		loc = loc[strings.LastIndex(loc, "/")+1:]
		if j := strings.Index(loc, " "); j > 0 {
			loc = loc[:j]
		}
		frames = append(frames, loc+" "+fn)
	}
	return strings.Join(frames, " < ")
}

// ------------------------------------------------------------------ disk

// onPersist queues a Persist for the disk and updates the log mirror at
// once: the fsm's in-memory log changes when the action is emitted, its
// disk only when an fsync completes.
func (s *Sim) onPersist(n *simNode, p fsm.Persist) {
	if n.lastSeq != 0 && p.Seq != n.lastSeq+1 {
		s.fail("fsm-contract", "n%d emitted Persist seq %d after seq %d; seqs must increase by one", n.id, p.Seq, n.lastSeq)
		return
	}
	n.lastSeq = p.Seq
	p = copyPersist(p)
	s.tracePersist(n, p)
	if len(p.Entries) > 0 && !s.updateMirror(n, p.Entries) {
		return
	}
	n.unsynced = append(n.unsynced, diskWrite{Persist: p})
	if n.syncing == 0 {
		s.startFsync(n)
	}
}

// onFetch checks a Fetch against the fsm's contract (only durable entries
// it has compacted away, for a peer, in its current term) and schedules the
// disk's answer, 0.1-2 ms of virtual time later.
func (s *Sim) onFetch(n *simNode, f fsm.Fetch) {
	st := n.fsm.Status()
	switch {
	case st.Role != fsm.Leader || f.Term != st.Term:
		s.fail("fsm-contract", "n%d emitted a Fetch for term %d as %v of term %d", n.id, f.Term, st.Role, st.Term)
	case f.Peer == n.id || f.Peer == 0 || f.Peer > uint64(len(s.nodes)):
		s.fail("fsm-contract", "n%d emitted a Fetch for peer %d", n.id, f.Peer)
	case f.Lo == 0 || f.Lo >= f.Hi || f.Hi-1 > uint64(len(n.disk.entries)) || f.Hi-1 > st.Commit:
		s.fail("fsm-contract", "n%d fetches [%d,%d) but its disk ends at %d and it committed %d", n.id, f.Lo, f.Hi, len(n.disk.entries), st.Commit)
	case f.Lo <= st.FirstIndex-1:
		s.fail("fsm-contract", "n%d fetches [%d,%d) but its log was compacted through %d", n.id, f.Lo, f.Hi, st.FirstIndex-1)
	case f.MaxBytes < 1:
		s.fail("fsm-contract", "n%d fetches with MaxBytes %d", n.id, f.MaxBytes)
	}
	if s.violation != nil {
		return
	}
	s.push(event{at: s.after(s.between(100*time.Microsecond, 2*time.Millisecond)), kind: evFetch, node: n.idx, inc: n.inc, fetch: &f})
}

// fetchDone answers a Fetch from the disk as it is now, with copies.
func (s *Sim) fetchDone(ev *event) {
	n := s.nodes[ev.node]
	if !n.up || n.inc != ev.inc {
		return
	}
	f := ev.fetch
	var ents []*pb.Entry
	size := 0
	// A compaction may have overtaken the Fetch: the store then has none
	// of it.
	for i := f.Lo; i < f.Hi && i <= uint64(len(n.disk.entries)) && i > n.disk.base; i++ {
		e := copyEntry(n.disk.entries[i-1])
		size += len(e.Data) + 16
		if len(ents) > 0 && size > f.MaxBytes {
			break
		}
		ents = append(ents, e)
	}
	s.stats.Fetches += uint64(len(ents))
	s.step(n, fsm.Fetched{Peer: f.Peer, Term: f.Term, Lo: f.Lo, Entries: ents})
}

// startFsync begins an fsync covering every Persist queued so far (a group
// commit); it takes 0.2-3 ms of virtual time.
func (s *Sim) startFsync(n *simNode) {
	n.syncing = len(n.unsynced)
	s.push(event{at: s.after(s.between(200*time.Microsecond, 3*time.Millisecond)), kind: evFsync, node: n.idx, inc: n.inc})
}

// fsyncDone makes the fsync's Persists durable, in order, and reports the
// last one to the fsm.
func (s *Sim) fsyncDone(ev *event) {
	n := s.nodes[ev.node]
	if !n.up || n.inc != ev.inc {
		return
	}
	seq := uint64(0)
	for _, w := range n.unsynced[:n.syncing] {
		s.diskWrite(n, w)
		seq = max(seq, w.Seq)
	}
	n.unsynced = append(n.unsynced[:0], n.unsynced[n.syncing:]...)
	n.syncing = 0
	if seq != 0 {
		s.step(n, fsm.Persisted{Seq: seq})
	}
	if n.up && n.syncing == 0 && len(n.unsynced) > 0 {
		s.startFsync(n)
	}
}

// diskWrite makes one write durable.
func (s *Sim) diskWrite(n *simNode, w diskWrite) {
	if w.compact != nil {
		n.disk.compact(*w.compact, s.committedChain)
		return
	}
	n.disk.write(w.Persist)
}

// onProposed checks where the leader says it appended a proposal.
func (s *Sim) onProposed(n *simNode, p fsm.Proposed) {
	pr := s.proposal(p.ID)
	switch {
	case pr == nil || pr.node != n.idx:
		s.fail("fsm-contract", "n%d reports proposal %d appended, which is not waiting on it", n.id, p.ID)
	case n.fsm.Status().Role != fsm.Leader || p.Term != n.fsm.Status().Term:
		s.fail("fsm-contract", "n%d reports proposal %d appended in term %d as %v of term %d", n.id, p.ID, p.Term, n.fsm.Status().Role, n.fsm.Status().Term)
	}
	if t, ok := n.mirror.termAt(p.Index); s.violation == nil && (!ok || t != p.Term) {
		s.fail("fsm-contract", "n%d reports proposal %d at index %d of term %d, which its log does not hold", n.id, p.ID, p.Index, p.Term)
	}
}

// updateMirror applies a Persist's entries to the mirror of n's log and
// checks the indexes that changed. It reports whether the run goes on.
func (s *Sim) updateMirror(n *simNode, ents []*pb.Entry) bool {
	first, last := ents[0].GetIndex(), n.mirror.last()
	if first == 0 || first > last+1 {
		s.fail("fsm-contract", "n%d persisted entries from index %d but its log ends at %d", n.id, first, last)
		return false
	}
	for k, e := range ents {
		if e.GetIndex() != first+uint64(k) {
			s.fail("fsm-contract", "n%d persisted index %d at position %d of entries starting at %d", n.id, e.GetIndex(), k, first)
			return false
		}
	}
	// Skip the entries the log already holds unchanged: only the rest is
	// new and needs checking.
	i, k := first, 0
	for ; k < len(ents) && i <= last; i, k = i+1, k+1 {
		if entryHash(n.mirror.hashes[i-1], ents[k]) != n.mirror.hashes[i] {
			break
		}
	}
	// Everything from i on is replaced or deleted.
	if i <= last && i <= n.commit {
		s.fail("commit-stability", "n%d replaced its entries from index %d (term %d) but it had announced commit index %d",
			n.id, i, n.mirror.terms[i], n.commit)
		return false
	}
	if i > last && k == len(ents) {
		return true // nothing changed
	}
	n.mirror.truncate(i - 1)
	for _, e := range ents[k:] {
		n.mirror.append(e)
		if e.GetType() == pb.EntryType_ENTRY_TYPE_CONFIG && n.mirror.confAt(e.GetIndex()) == nil {
			s.fail("fsm-contract", "n%d persisted configuration entry %d, which does not decode", n.id, e.GetIndex())
			return false
		}
	}
	s.checkLogMatching(n, i, n.mirror.last())
	return s.violation == nil
}

// ------------------------------------------------------------------ timers

// onSetTimer schedules the Timeout. SetTimer replaces the earlier timer of
// the same kind, so only the live generation normally fires.
func (s *Sim) onSetTimer(n *simNode, t fsm.SetTimer) {
	if int(t.Timer) >= len(n.timerGen) {
		s.fail("fsm-contract", "n%d set unknown timer %d", n.id, t.Timer)
		return
	}
	n.timerGen[t.Timer] = t.Gen
	s.push(event{at: s.after(time.Duration(float64(max(t.After, 0)) / n.rate)), kind: evTimer, node: n.idx, inc: n.inc, a: uint64(t.Timer), b: t.Gen})
}

// staleTimerOdds: one superseded timer in this many still fires, as when a
// timer's firing was already in the actor's mailbox when it was replaced.
// The fsm must ignore it (fsm.Timeout).
const staleTimerOdds = 32

func (s *Sim) fireTimer(ev *event) {
	n := s.nodes[ev.node]
	if !n.up || n.inc != ev.inc {
		return
	}
	t := fsm.Timer(ev.a)
	if ev.b != n.timerGen[t] && s.rng.IntN(staleTimerOdds) != 0 {
		return
	}
	s.step(n, fsm.Timeout{Timer: t, Gen: ev.b, Now: n.clock(s.now)})
}

// ----------------------------------------------------------- state machine

// onApply checks what n applies against every other node (state machine
// safety) and settles the proposals the Apply acknowledges.
func (s *Sim) onApply(n *simNode, a fsm.Apply) {
	if len(a.Entries) == 0 {
		s.fail("fsm-contract", "n%d emitted an Apply without entries", n.id)
		return
	}
	for _, e := range a.Entries {
		i := e.GetIndex()
		if i != n.applied+1 {
			s.fail("state-machine-safety", "n%d applied index %d after index %d; an incarnation applies each index once, in order", n.id, i, n.applied)
			return
		}
		n.appliedHash = entryHash(n.appliedHash, e)
		n.applied = i
		if h, ok := n.mirror.hashAt(i); !ok || h != n.appliedHash {
			s.fail("state-machine-safety", "n%d applied index %d (term %d) but its log holds something else there", n.id, i, e.GetTerm())
			return
		}
		if e.GetType() == pb.EntryType_ENTRY_TYPE_CONFIG {
			n.appliedConf = fsm.ConfigState{Config: n.mirror.confAt(i), Index: i}
		}
		s.recordApplied(n, e)
		if s.violation != nil {
			return
		}
	}
	s.trace.add(record{at: s.now, kind: recApply, node: n.id, a: a.Entries[0].GetIndex(), b: n.applied, c: uint64(len(a.Refs))})
	first := a.Entries[0].GetIndex()
	for _, r := range a.Refs {
		p := s.proposal(r.ID)
		switch {
		case p == nil:
			s.fail("fsm-contract", "n%d acknowledged proposal %d, which no client made", n.id, r.ID)
		case p.ackIndex != 0:
			s.fail("ack-safety", "proposal %d acknowledged twice: at index %d and by n%d at index %d", r.ID, p.ackIndex, n.id, r.Index)
		case p.node != n.idx || p.settled:
			s.fail("fsm-contract", "n%d acknowledged proposal %d, which is not waiting on it", n.id, r.ID)
		case r.Index < first || r.Index > n.applied:
			s.fail("fsm-contract", "n%d acknowledged proposal %d at index %d, outside its Apply [%d, %d]", n.id, r.ID, r.Index, first, n.applied)
		case !bytes.Equal(a.Entries[r.Index-first].GetData(), p.data):
			s.fail("ack-safety", "n%d acknowledged proposal %d at index %d, which holds another command", n.id, r.ID, r.Index)
		}
		if s.violation != nil {
			return
		}
		p.settled, p.ackIndex = true, r.Index
		s.maxAcked = max(s.maxAcked, r.Index)
		s.stats.Acked++
		s.clients[p.client].heard(n.idx, s.now)
	}
	// The state machine reports its progress a little later, in order.
	if !n.appliedQueued {
		n.appliedQueued = true
		s.push(event{at: s.after(randDuration(s.rng, 2*time.Millisecond)), kind: evApplied, node: n.idx, inc: n.inc})
	}
}

// recordApplied compares the entry n applied at index e.Index (n's applied
// prefix, through its rolling hash) with what the first node to apply that
// index applied (Raft §5.4.3, State Machine Safety).
func (s *Sim) recordApplied(n *simNode, e *pb.Entry) {
	i := e.GetIndex()
	var conf *pb.Configuration
	if e.GetType() == pb.EntryType_ENTRY_TYPE_CONFIG {
		conf = n.mirror.confAt(i)
	}
	if i < uint64(len(s.applied)) {
		switch first := s.applied[i]; {
		case first.hash == n.appliedHash:
		case conf != nil && first.conf != nil && !proto.Equal(conf, first.conf):
			// Applied means committed: two configurations committed at
			// one index.
			s.fail("config-safety", "n%d applied configuration %s at index %d (term %d), but n%d applied %s there (term %d)",
				n.id, confString(fsm.ConfigState{Config: conf, Index: i}), i, e.GetTerm(),
				first.node, confString(fsm.ConfigState{Config: first.conf, Index: i}), first.term)
		default:
			s.fail("state-machine-safety", "n%d applied index %d (term %d) but n%d applied a different entry there (term %d)",
				n.id, i, e.GetTerm(), first.node, first.term)
		}
		return
	}
	// A node applies i only after i-1, so the table grows one by one.
	s.applied = append(s.applied, appliedEntry{hash: n.appliedHash, term: e.GetTerm(), node: n.id, conf: conf})
	if e.GetType() != pb.EntryType_ENTRY_TYPE_NORMAL {
		return
	}
	// Every command is a client's proposal and is applied at one index
	// only: clients retry only after ErrNotLeader, which promises the
	// proposal was not appended anywhere.
	p := s.proposal(proposalID(e.GetData()))
	switch {
	case p == nil || !bytes.Equal(p.data, e.GetData()):
		s.fail("state-machine-safety", "n%d applied index %d, a command no client proposed", n.id, i)
	case p.appliedAt != 0:
		s.fail("duplicate-apply", "proposal %d was applied at index %d and again at index %d", proposalID(p.data), p.appliedAt, i)
	default:
		p.appliedAt = i
	}
}

// proposalID reads the proposal id every client command starts with.
func proposalID(data []byte) uint64 {
	if len(data) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(data)
}

// onReply settles a proposal the fsm answered without applying it.
func (s *Sim) onReply(n *simNode, r fsm.Reply) {
	s.trace.add(record{at: s.now, kind: recReply, node: n.id, a: r.ID, b: replyCode(r.Err), c: r.Leader})
	p := s.proposal(r.ID)
	switch {
	case p == nil:
		s.fail("fsm-contract", "n%d answered proposal %d, which no client made", n.id, r.ID)
		return
	case p.node != n.idx || p.settled:
		s.fail("fsm-contract", "n%d answered proposal %d, which is not waiting on it", n.id, r.ID)
		return
	}
	p.settled = true
	switch {
	case errors.Is(r.Err, fsm.ErrNotLeader), errors.Is(r.Err, fsm.ErrTransferring):
		// Not appended anywhere: send it again, to the hinted node.
		s.notLeader(p, n, r.Leader)
	case errors.Is(r.Err, fsm.ErrBusy):
		// Not appended: the leader is full of uncommitted entries. Try
		// again later, at the same node.
		s.stats.Busy++
		s.retryBusy(p, n)
	case errors.Is(r.Err, fsm.ErrLeadershipLost):
		// Outcome unknown: the entry may still commit. The client gives
		// up on it (and never resends it, see duplicate-apply).
		s.stats.Unknown++
	default:
		s.fail("fsm-contract", "n%d answered proposal %d with unexpected error %v", n.id, r.ID, r.Err)
	}
}

func replyCode(err error) uint64 {
	switch {
	case errors.Is(err, fsm.ErrNotLeader):
		return 1
	case errors.Is(err, fsm.ErrLeadershipLost):
		return 2
	case errors.Is(err, fsm.ErrTransferring):
		return 4
	case errors.Is(err, fsm.ErrReadNotConfirmed):
		return 5
	case errors.Is(err, fsm.ErrBusy):
		return 6
	case err == nil:
		return 0
	}
	return 3
}
