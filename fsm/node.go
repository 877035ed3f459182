package fsm

import (
	"fmt"
	"slices"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

// Node is one Raft participant as a pure state machine: Step takes one
// event and returns the actions it causes. It owns no goroutine, clock,
// randomness (beyond Config.Rand) or I/O; the caller carries out the actions
// and feeds back what happened. A Node is not safe for concurrent use.
type Node struct {
	cfg  Config
	id   uint64
	role Role

	// Persistent state (Raft Figure 2), as this node sees it: it is only
	// acted on once durable, see held.
	term uint64
	vote uint64
	log  raftLog

	leader  uint64 // the leader of this term, when known
	commit  uint64 // highest index known committed (relearned after restart)
	applied uint64 // highest index handed to an Apply action
	stateAt uint64 // highest index the state machine reported applied

	// Durability. Every change to term, vote or log is written through a
	// Persist action; the store answers Persisted{Seq} once it is fsynced.
	persistSeq uint64           // seq of the last Persist emitted
	durableSeq uint64           // highest seq reported durable
	inflight   []pendingPersist // Persist actions not yet reported durable
	durable    uint64           // last log index known durable
	// held are messages that promise durable state (a granted vote, an
	// acknowledged append, a term acted on) waiting for the Persist that
	// makes it so (ARCHITECTURE §3 rule 1).
	held []heldMsg

	timerGen [2]uint64 // current generation per Timer

	// Candidate state.
	votes      map[uint64]bool
	selfVoteAt uint64 // seq of the Persist that holds this node's own vote

	// Membership (membership.go): the configuration in effect at the log's
	// floor followed by every configuration entry after it (the latest is
	// the one in use), the voters it makes, the servers this node talks to
	// (every member and C_old voter but itself, and on a leader the servers
	// it catches up or that are leaving), whether Removed was reported, and
	// what the next flush reports in a ConfigChanged.
	confs            []ConfigState
	quorum           quorum
	peers            []uint64 // sorted
	removedAnnounced bool
	configDirty      bool
	configPeers      []*pb.Member
	commitSeen       uint64 // commit index configCommitted last ran at

	// Leader state.
	progress map[uint64]*progress
	// The membership change under way, the servers the leader replicates
	// to that are not (or no longer) in its configuration, and which of
	// them the latest, uncommitted configuration removed.
	change    *pendingChange
	extra     map[uint64]*pb.Member
	leaving   []uint64
	round     uint64 // heartbeat rounds in this term
	proposals []pendingProposal
	// uncommitted is the data (plus pb.EntryOverhead each) of the entries
	// this leader appended in its term that have not committed yet,
	// bounded by Config.MaxUncommittedBytes.
	uncommitted int
	// ReadIndex (thesis §6.4): the latest read round of this term and the
	// reads waiting, in arrival order (rounds and indexes never decrease);
	// forwarded counts those a follower forwarded (MaxForwardedReads).
	readRound uint64
	reads     []pendingRead
	forwarded int
	// Leadership transfer (thesis §3.10): the target, 0 when none, and the
	// leader ticks (election timer firings) it has lasted.
	transferee    uint64
	transferTicks int

	// Follower reads (followerread.go): reads forwarded to the leader, the
	// last request context used, and the ticks of the HeartbeatTimer that
	// bounds how long they may wait.
	fwdReads []forwardedRead
	fwdCtx   uint64
	fwdTick  uint64

	// Lease reads (lease.go): the driver's time of the current Step (0 when
	// it gave none), the leader's timed read rounds, whether a transfer
	// ended leases for this term, and whether this node has yet to see its
	// first election timeout since it started (it grants no votes until
	// then, so a restart cannot shorten a lease it acknowledged).
	now         time.Duration
	leaseRounds []leaseRound
	leaseEnded  bool
	startQuiet  bool
	bugCheckAt  time.Duration // lease-from-check: the last good check

	// Pre-candidate state: the refusals of its pre-vote (the grants are in
	// votes).
	refusals map[uint64]bool

	// Snapshots (snapshot.go): the latest durable snapshot, the snapshot
	// being received (staging: as durable; stagingEnd: as far as chunks
	// were handed to the driver) and the leader that sends it, and the
	// first action of Start when Restore found the log disagreeing with
	// the snapshot.
	snap          SnapshotMeta
	staging       Staging
	stagingEnd    uint64
	stagingLeader uint64
	stagingConf   ConfigState // the configuration the last chunk carried
	startCompact  *Compact

	// Per-Step scratch: what this Step changed and will emit.
	acts      []Action
	hsDirty   bool
	dirtyFrom uint64 // first log index changed in this Step, 0 if none
	toHold    []*pb.RaftMessage
	voteDirty bool // this Step recorded a vote for this node itself
}

type pendingPersist struct {
	seq  uint64
	last uint64 // the log's last index once this Persist is durable
}

type heldMsg struct {
	seq uint64
	msg *pb.RaftMessage
}

type pendingProposal struct {
	index uint64
	id    uint64
}

// pendingRead is a ReadIndex read waiting on the leader.
type pendingRead struct {
	id uint64
	// from is the follower that forwarded the read (0: a local read) and
	// ctx its ReadIndexRequest's context.
	from, ctx uint64
	round     uint64 // the read round that must be confirmed by a quorum
	// index is the read index: the commit index once this term's no-op
	// has committed (set is false until then).
	index uint64
	set   bool
}

// New validates cfg and returns a follower restored from r, the durable
// state as the store has it. Step(Start{}) must be its first event.
func New(cfg Config, r Restore) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Members = slices.Clone(cfg.Members)
	n := &Node{cfg: cfg, id: cfg.ID, extra: map[uint64]*pb.Member{}}
	if hs := r.HardState; hs != nil {
		if hs.Term >= MaxTerm {
			return nil, fmt.Errorf("fsm: restored term %d is out of range (at most %d); the store is corrupt", hs.Term, uint64(MaxTerm-1))
		}
		n.term, n.vote = hs.Term, hs.Vote
	}
	if err := n.restoreLog(r); err != nil {
		return nil, err
	}
	if err := n.restoreConfigs(r); err != nil {
		return nil, err
	}
	// ARCHITECTURE §3 rule 6: start as a follower; the commit index is
	// relearned. Entries the state machine applied were committed, so
	// commit starts there rather than at 0.
	n.commit, n.applied, n.stateAt = r.Applied, r.Applied, r.Applied
	n.commitSeen = n.commit
	n.durable = n.log.lastIndex()
	// thesis §6.4.1: with leases, a node may have acknowledged a leader's
	// heartbeat just before it crashed; it grants no vote before its first
	// election timeout, as if it had just heard from that leader.
	n.startQuiet = cfg.LeaseReads

	return n, nil
}

// restoreLog rebuilds the log from what the store and the state machine
// hold, and checks that they agree: the log starts after Base, the latest
// snapshot covers Base, and the state machine applied no more than the log
// holds. A log that does not hold the snapshot's last entry with its term
// (a crash between installing a snapshot and resetting the log) is
// discarded, as Figure 13 rule 7 would have.
func (n *Node) restoreLog(r Restore) error {
	base := r.Base
	prevTerm := base.Term
	for i, e := range r.Entries {
		if e.Index != base.Index+uint64(i)+1 {
			return fmt.Errorf("fsm: restored log holds index %d at position %d after base %d; the store is corrupt", e.Index, i+1, base.Index)
		}
		if e.Term == 0 || e.Term < prevTerm || e.Term > n.term {
			return fmt.Errorf("fsm: restored entry %d has term %d (previous %d, current term %d); the store is corrupt", e.Index, e.Term, prevTerm, n.term)
		}
		prevTerm = e.Term
	}
	if base.Term > n.term || (base.Index == 0) != (base.Term == 0) {
		return fmt.Errorf("fsm: restored log base %d of term %d (current term %d); the store is corrupt", base.Index, base.Term, n.term)
	}
	if base.Index > 0 {
		n.log.reset(base.Index, base.Term)
	}
	n.log.entries = slices.Clone(r.Entries)
	snap := r.Snapshot
	switch {
	case snap.Index < base.Index:
		return fmt.Errorf("fsm: the log is compacted through %d but the latest snapshot ends at %d; the snapshot the log relies on is missing", base.Index, snap.Index)
	case r.Applied < snap.Index:
		return fmt.Errorf("fsm: the state machine applied %d, before its own snapshot at %d", r.Applied, snap.Index)
	case snap.Index > base.Index && (snap.Index > n.log.lastIndex() || n.log.term(snap.Index) != snap.Term):
		// Figure 13 rule 7, after the fact.
		n.log.reset(snap.Index, snap.Term)
		n.startCompact = &Compact{Through: snap.Index, Term: snap.Term, Reset: true}
	}
	n.snap = snap
	if r.Staging.Meta.Index > 0 {
		n.staging, n.stagingEnd = r.Staging, r.Staging.Offset
	}
	if r.Applied > n.log.lastIndex() {
		return fmt.Errorf("fsm: state machine applied %d but the log ends at %d", r.Applied, n.log.lastIndex())
	}
	return nil
}

// Status reports the node's volatile state.
func (n *Node) Status() Status {
	return Status{
		ID: n.id, Role: n.role, Term: n.term, Vote: n.vote, Leader: n.leader,
		LastIndex: n.log.lastIndex(), LastTerm: n.log.lastTerm(),
		Commit: n.commit, Applied: n.applied, Durable: n.durable,
		Transferee: n.transferee, InMemory: uint64(len(n.log.entries)),
		Snapshot: n.snap, FirstIndex: n.log.floor + 1,
		ConfigIndex: n.config().Index, Voter: n.isVoter(),
		Member: member(n.config().Config, n.id) != nil,
	}
}

// Step applies one event and returns the actions it causes, in the order
// they must be carried out: a Persist first (so the store starts its fsync
// while messages go out), then sends, applies, replies and timers.
func (n *Node) Step(ev Event) []Action {
	switch e := ev.(type) {
	case Start:
		if c := n.startCompact; c != nil {
			n.acts = append(n.acts, *c)
			n.startCompact = nil
		}
		n.announceRemoved()
		n.resetElectionTimer()
	case Message:
		if n.bug(bugUncheckedMessages) && e.Msg != nil || n.checkMessage(e.Msg) {
			n.stepMessage(e.Msg)
		}
	case Timeout:
		n.now = max(e.Now, 0)
		if e.Timer < Timer(len(n.timerGen)) && e.Gen == n.timerGen[e.Timer] {
			n.timeout(e.Timer)
		}
	case Propose:
		n.propose(e.Proposals)
	case Persisted:
		n.persisted(e.Seq)
	case Applied:
		n.stateAt = max(n.stateAt, e.Index)
	case Fetched:
		n.fetched(e)
	case ReadIndex:
		n.now = max(e.Now, 0)
		n.readIndex(e.IDs)
	case TransferLeadership:
		n.transferLeadership(e.To)
	case SnapshotTaken:
		n.snapshotTaken(e.Meta)
	case ChunkRead:
		n.chunkRead(e)
	case ChunkStaged:
		n.chunkStaged(e)
	case ChangeMembers:
		n.changeMembers(e)
	default:
		panic(fmt.Sprintf("fsm: unknown event %T", ev))
	}
	if n.role == Leader {
		n.maybeCaughtUp()
	}
	if n.commit != n.commitSeen {
		n.commitSeen = n.commit
		n.configCommitted()
	}
	n.maybeApply()
	n.serveReads()
	n.serveForwarded()
	n.maybeCompact()
	n.maybeCompactLog()
	n.now = 0
	return n.flush()
}

// stepMessage runs the rules common to every role, then the role's own.
func (n *Node) stepMessage(m *pb.RaftMessage) {
	// Pre-votes change no term, neither the sender's nor the receiver's
	// (thesis §9.6), so they bypass the term rules below.
	if rv := m.GetRequestVote(); rv != nil && rv.PreVote {
		n.handlePreVote(m)
		return
	}
	if r := m.GetRequestVoteResponse(); r != nil && r.PreVote {
		n.handlePreVoteResponse(m)
		return
	}
	if rv := m.GetRequestVote(); rv != nil && m.Term > n.term && !rv.Transfer && n.checkQuorum() && n.inLease() {
		// thesis §4.2.3: a server that heard from a current leader within
		// the election timeout disregards a RequestVote, without raising
		// its term: the leader is alive, the candidate is disruptive. A
		// candidate a leadership transfer started is heard (§3.10).
		return
	}
	switch {
	case m.Term > n.term:
		// Raft §5.1: a server that sees a higher term adopts it and
		// becomes a follower. Only an AppendEntries names the new leader.
		leader := uint64(0)
		if m.GetAppendEntries() != nil || m.GetInstallSnapshot() != nil {
			leader = m.From
		}
		n.becomeFollower(m.Term, leader)
	case m.Term < n.term:
		// Raft §5.1: a request with a stale term is rejected; the answer
		// carries our term so the stale sender steps down. Stale
		// responses are dropped (ARCHITECTURE §3 rule 5).
		switch {
		case m.GetAppendEntries() != nil:
			// No conflict_index: the answer says nothing about this log,
			// and the leader ignores it unless it steps down.
			n.send(m.From, &pb.AppendEntriesResponse{
				RejectIndex:  m.GetAppendEntries().PrevLogIndex,
				LastLogIndex: n.log.lastIndex(),
			}, true)
		case m.GetRequestVote() != nil:
			n.send(m.From, &pb.RequestVoteResponse{}, true)
		case m.GetInstallSnapshot() != nil:
			// Refused, with this node's term: the stale leader steps down.
			is := m.GetInstallSnapshot()
			n.send(m.From, &pb.InstallSnapshotResponse{LastIncludedIndex: is.LastIncludedIndex,
				LastIncludedTerm: is.LastIncludedTerm, FileCrc: is.FileCrc, Refused: true}, true)
		case m.GetReadIndexRequest() != nil:
			n.send(m.From, &pb.ReadIndexResponse{Context: m.GetReadIndexRequest().GetContext(), Rejected: true}, true)
		}
		return
	}
	// thesis §6.4: read index requests and answers mean the same in every
	// role.
	switch {
	case m.GetReadIndexRequest() != nil:
		n.handleReadIndexRequest(m)
		return
	case m.GetReadIndexResponse() != nil:
		n.handleReadIndexResponse(m)
		return
	}
	switch n.role {
	case Follower:
		n.stepFollower(m)
	case Candidate:
		n.stepCandidate(m)
	case Leader:
		n.stepLeader(m)
	case PreCandidate:
		n.stepPreCandidate(m)
	}
}

func (n *Node) timeout(t Timer) {
	switch t {
	case ElectionTimer:
		n.startQuiet = false
		// Raft §5.2: a follower that hears from no leader, or a candidate
		// whose election did not finish, starts a new election; with
		// pre-vote, it first asks whether it could win (thesis §9.6).
		switch {
		case n.role == Leader:
			n.leaderTick()
		case !n.isVoter():
			// thesis §4.2.1, §4.2.3: a learner, a server not yet added and
			// a removed one never campaign. It has heard from no leader
			// for an election timeout.
			n.leader = 0
			n.resetElectionTimer()
		case n.preVote():
			n.becomePreCandidate()
		default:
			n.becomeCandidate(false)
		}
	case HeartbeatTimer:
		if n.role == Leader {
			n.heartbeat()
		} else {
			n.expireForwarded()
		}
	}
}

func (n *Node) propose(ps []Proposal) {
	if len(ps) == 0 {
		return
	}
	if n.role != Leader {
		for _, p := range ps {
			n.acts = append(n.acts, Reply{ID: p.ID, Err: ErrNotLeader, Leader: n.leader})
		}
		return
	}
	if n.transferee != 0 {
		// thesis §3.10: the leader stops accepting client requests while
		// it hands over, or the target might never catch up.
		for _, p := range ps {
			n.acts = append(n.acts, Reply{ID: p.ID, Err: ErrTransferring, Leader: n.transferee})
		}
		return
	}
	var accepted []Proposal
	pending := n.uncommitted
	for _, p := range ps {
		size := entrySize(p.Data)
		switch {
		case len(p.Data) > n.cfg.Limits.MaxEntryBytes:
			n.acts = append(n.acts, Reply{ID: p.ID, Err: ErrTooLarge, Leader: n.id})
		case pending > 0 && pending+size > n.cfg.MaxUncommittedBytes:
			// Backpressure: the followers are not keeping up (or not
			// reachable); refuse rather than queue without bound.
			n.acts = append(n.acts, Reply{ID: p.ID, Err: ErrBusy, Leader: n.id})
		default:
			pending += size
			accepted = append(accepted, p)
		}
	}
	if len(accepted) > 0 {
		n.leaderAppend(accepted)
	}
}

// ---------------------------------------------------------- role changes

func (n *Node) becomeFollower(term, leader uint64) {
	if term > n.term {
		n.term, n.vote = term, 0
		n.hsDirty = true
	}
	if n.role == Leader {
		n.abandonProposals()
		n.abandonReads()
		n.abandonChange()
		n.endTransfers()
		n.timerGen[HeartbeatTimer]++
		n.progress = nil
		n.transferee, n.transferTicks = 0, 0
	}
	n.role = Follower
	n.leader = leader
	n.votes, n.refusals = nil, nil
	n.dropForwarded(false)
	n.resetElectionTimer()
}

// becomePreCandidate starts a pre-vote (thesis §9.6): ask every member
// whether it would grant a vote in the next term, changing neither term
// nor vote, so that a node that cannot win never disrupts the cluster.
// Nothing is persisted, so nothing waits for the store.
func (n *Node) becomePreCandidate() {
	if n.term+1 >= MaxTerm {
		n.termExhausted()
		return
	}
	n.role = PreCandidate
	n.leader = 0
	n.dropForwarded(false)
	n.votes = map[uint64]bool{n.id: true}
	n.refusals = map[uint64]bool{}
	for _, p := range n.voterPeers() {
		n.sendTerm(p, n.term+1, &pb.RequestVote{
			LastLogIndex: n.log.lastIndex(), LastLogTerm: n.log.lastTerm(), PreVote: true,
		}, false)
	}
	n.resetElectionTimer()
	n.maybeWinPreVote()
}

// maybeWinPreVote starts the real election once a quorum, itself
// included, would vote for this node (thesis §9.6).
func (n *Node) maybeWinPreVote() {
	if n.role == PreCandidate && n.quorum.has(func(id uint64) bool { return n.votes[id] }) {
		n.becomeCandidate(false)
	}
}

// becomeCandidate starts an election (Raft §5.2): increment the term, vote
// for itself, and ask every other member for its vote. The RequestVotes
// and the candidate's own vote count only once term and vote are durable.
//
// transfer marks an election a TimeoutNow started (thesis §3.10): it skips
// the pre-vote and its RequestVotes say so, so voters grant despite leader
// stickiness.
func (n *Node) becomeCandidate(transfer bool) {
	if n.term+1 >= MaxTerm {
		n.termExhausted()
		return
	}
	n.role = Candidate
	n.term++
	n.vote = n.id
	n.leader = 0
	n.dropForwarded(false)
	n.hsDirty = true
	n.voteDirty = true
	n.votes = map[uint64]bool{}
	n.refusals = nil
	for _, p := range n.voterPeers() {
		n.send(p, &pb.RequestVote{LastLogIndex: n.log.lastIndex(), LastLogTerm: n.log.lastTerm(), Transfer: transfer}, true)
	}
	n.resetElectionTimer()
}

// termExhausted: the next term would reach MaxTerm, which no node accepts,
// so this node cannot campaign. Only forged messages from a member can have
// pushed a term this far (each raises it by at most MaxTermGap); the node
// stays a follower and says why, every election timeout.
func (n *Node) termExhausted() {
	n.acts = append(n.acts, Rejected{Err: fmt.Errorf("%w: this node's term %d cannot grow further (the limit is %d); it will not campaign", ErrTermOutOfRange, n.term, uint64(MaxTerm))})
	n.resetElectionTimer()
}

// becomeLeader takes over the term (Raft §5.2) and appends a no-op so that
// entries of earlier terms commit through it (Raft §5.4.2, §8).
func (n *Node) becomeLeader() {
	n.role = Leader
	n.leader = n.id
	n.dropForwarded(true) // the HeartbeatTimer is the leader's now
	n.votes, n.refusals = nil, nil
	n.round = 0
	n.readRound, n.reads, n.forwarded = 0, nil, 0
	n.leaseRounds, n.leaseEnded, n.bugCheckAt = nil, false, 0
	n.transferee, n.transferTicks = 0, 0
	n.uncommitted = 0
	if n.checkQuorum() {
		// thesis §6.2: the leader checks every election timeout that a
		// quorum still answers it.
		n.setTimer(ElectionTimer, n.cfg.ElectionTimeout)
	} else {
		n.timerGen[ElectionTimer]++ // a leader needs no election timer
	}
	n.progress = make(map[uint64]*progress, len(n.peers))
	for _, p := range n.peers {
		// Raft Figure 2: nextIndex starts just after the leader's last entry.
		n.progress[p] = &progress{next: n.log.lastIndex() + 1}
	}
	n.change, n.leaving = nil, nil
	n.appendEntries(&pb.Entry{Type: pb.EntryType_ENTRY_TYPE_NOOP})
	for _, p := range n.peers {
		n.sendAppend(p)
	}
	n.setTimer(HeartbeatTimer, n.cfg.HeartbeatInterval)
}

// ------------------------------------------------------------ persistence

// persisted records that every Persist up to seq is durable, releases the
// messages that waited for it, and counts what became durable.
func (n *Node) persisted(seq uint64) {
	if seq <= n.durableSeq {
		return
	}
	if seq > n.persistSeq {
		panic(fmt.Sprintf("invariant: store reports seq %d durable but only %d were issued", seq, n.persistSeq))
	}
	n.durableSeq = seq
	k := 0
	for k < len(n.inflight) && n.inflight[k].seq <= seq {
		n.durable = max(n.durable, n.inflight[k].last)
		k++
	}
	n.inflight = n.inflight[k:]
	k = 0
	for k < len(n.held) && n.held[k].seq <= seq {
		// An answer given in a term this node has since left is dropped:
		// to its receiver that is message loss, which Raft tolerates.
		if m := n.held[k].msg; m.Term == n.term {
			n.acts = append(n.acts, Send{Msg: m})
		}
		k++
	}
	n.held = n.held[k:]
	switch n.role {
	case Candidate:
		if n.selfVoteAt != 0 && n.selfVoteAt <= seq {
			n.votes[n.id] = true
			n.maybeWin()
		}
	case Leader:
		// ARCHITECTURE §3 rule 2: the leader counts itself only for
		// entries its own store has made durable.
		n.maybeCommit()
	}
}

// appendEntries stamps ents with the next indexes and the current term and
// appends them to the leader's log.
func (n *Node) appendEntries(ents ...*pb.Entry) {
	if n.role != Leader {
		panic("invariant: only a leader appends new entries")
	}
	first := n.log.lastIndex() + 1
	for i, e := range ents {
		e.Index, e.Term = first+uint64(i), n.term
		n.uncommitted += entrySize(e.Data)
	}
	n.log.append(ents...)
	n.markDirty(first)
}

// entrySize is what an entry counts against Config.MaxUncommittedBytes.
func entrySize(data []byte) int { return len(data) + pb.EntryOverhead }

// markDirty notes that the log changed from index i on.
func (n *Node) markDirty(i uint64) {
	if n.dirtyFrom == 0 || i < n.dirtyFrom {
		n.dirtyFrom = i
	}
	// What was durable past the change is no longer this log's.
	if n.durable >= i {
		n.durable = i - 1
	}
	for k := range n.inflight {
		n.inflight[k].last = min(n.inflight[k].last, i-1)
	}
	n.logChanged(i)
}

// send queues a message to peer `to`. A message that promises durable state
// waits (is held) until every Persist issued so far is durable.
func (n *Node) send(to uint64, body any, needsDurable bool) {
	n.sendTerm(to, n.term, body, needsDurable)
}

// sendTerm is send with the envelope's term given: pre-votes and granted
// pre-votes carry a term the sender is not in (thesis §9.6).
func (n *Node) sendTerm(to, term uint64, body any, needsDurable bool) {
	m := pb.NewRaftMessage(n.cfg.ClusterID, n.id, to, term, body)
	if needsDurable {
		n.toHold = append(n.toHold, m)
		return
	}
	n.acts = append(n.acts, Send{Msg: m})
}

// flush ends a Step: it turns what changed into one Persist, decides which
// messages must wait for it, and returns the actions.
func (n *Node) flush() []Action {
	acts := n.acts
	if n.configDirty {
		// Before the sends, so the driver knows the new peers' addresses.
		n.configDirty = false
		acts = append([]Action{ConfigChanged{Config: n.config(), Peers: n.configPeers}}, acts...)
	}
	if n.hsDirty || n.dirtyFrom != 0 {
		n.persistSeq++
		p := Persist{Seq: n.persistSeq}
		if n.hsDirty {
			p.HardState = &pb.HardState{Term: n.term, Vote: n.vote}
			if n.bug(bugVoteNotPersisted) && n.vote != n.id {
				p.HardState.Vote = 0
			}
		}
		if n.dirtyFrom != 0 {
			p.Entries = n.log.slice(n.dirtyFrom, n.log.lastIndex()+1)
			if len(p.Entries) == 0 {
				panic("invariant: the log was truncated without new entries")
			}
		}
		n.inflight = append(n.inflight, pendingPersist{seq: n.persistSeq, last: n.log.lastIndex()})
		if n.voteDirty {
			n.selfVoteAt = n.persistSeq
		}
		acts = append([]Action{p}, acts...)
	}
	for _, m := range n.toHold {
		if n.persistSeq > n.durableSeq {
			n.held = append(n.held, heldMsg{seq: n.persistSeq, msg: m})
		} else {
			acts = append(acts, Send{Msg: m})
		}
	}
	n.acts, n.toHold = nil, n.toHold[:0]
	n.hsDirty, n.dirtyFrom, n.voteDirty = false, 0, false
	return acts
}

// ------------------------------------------------------- commit and apply

// maybeApply hands newly committed entries to the state machine, each
// index once and in order, with the proposals they answer.
func (n *Node) maybeApply() {
	if n.commit <= n.applied {
		return
	}
	a := Apply{Entries: n.log.slice(n.applied+1, n.commit+1)}
	k := 0
	for k < len(n.proposals) && n.proposals[k].index <= n.commit {
		a.Refs = append(a.Refs, Ref{ID: n.proposals[k].id, Index: n.proposals[k].index})
		k++
	}
	n.proposals = n.proposals[k:]
	n.applied = n.commit
	n.acts = append(n.acts, a)
}

// maybeCompact drops from memory the entries the node no longer needs
// there, keeping Config.LogCacheEntries of them: only entries that are
// committed, durable and reported applied by the state machine, so they
// are never truncated, never persisted again and never handed to Apply
// again. It compacts in steps of half the cache, not on every entry.
func (n *Node) maybeCompact() {
	keep := uint64(n.cfg.LogCacheEntries)
	upTo := min(n.stateAt, n.durable, n.commit)
	if upTo <= n.log.offset+keep+keep/2 {
		return
	}
	n.log.compact(upTo - keep)
}

// abandonProposals answers every proposal still waiting when leadership is
// lost: its entry may or may not commit under the next leader.
func (n *Node) abandonProposals() {
	for _, p := range n.proposals {
		n.acts = append(n.acts, Reply{ID: p.id, Err: ErrLeadershipLost, Leader: 0})
	}
	n.proposals = nil
}

// ------------------------------------------------------------------ timers

func (n *Node) setTimer(t Timer, after time.Duration) {
	n.timerGen[t]++
	n.acts = append(n.acts, SetTimer{Timer: t, After: after, Gen: n.timerGen[t]})
}

// resetElectionTimer arms the election timer with a random timeout in
// [ElectionTimeout, 2*ElectionTimeout) so that split votes are rare
// (Raft §5.2).
func (n *Node) resetElectionTimer() {
	base := n.cfg.ElectionTimeout
	n.setTimer(ElectionTimer, base+time.Duration(n.cfg.Rand.Int64N(int64(base))))
}

// voterPeers lists the voters of the configuration other than this node:
// whom elections ask (learners' votes would not count).
func (n *Node) voterPeers() []uint64 {
	var vs []uint64
	for _, id := range n.quorum.voters() {
		if id != n.id {
			vs = append(vs, id)
		}
	}
	return vs
}

func (n *Node) preVote() bool     { return !n.cfg.DisablePreVote }
func (n *Node) checkQuorum() bool { return !n.cfg.DisableCheckQuorum }

// inLease reports whether this node believes a leader of its term is alive:
// it is the leader, or a follower that has heard from the leader since its
// election timer last fired (a follower's timer restarts on every
// AppendEntries, so this is "within an election timeout", thesis §4.2.3).
func (n *Node) inLease() bool {
	switch n.role {
	case Leader:
		return true
	case Follower:
		return n.leader != 0 || n.startQuiet
	}
	return false
}
