package fsm

import (
	"errors"
	"fmt"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

// Errors a proposal can be answered with (in a Reply action).
var (
	// ErrNotLeader: this node is not the leader; Reply.Leader hints at the
	// one it believes is (0 when it knows none). The proposal was not
	// appended anywhere, so the caller may send it elsewhere.
	ErrNotLeader = errors.New("not the leader")
	// ErrLeadershipLost: the proposal was appended while this node was
	// leader, but leadership was lost before it committed. Its outcome is
	// unknown: it may still commit under a later leader. Retry with the same
	// client sequence number so the state machine applies it at most once.
	ErrLeadershipLost = errors.New("leadership lost before the proposal committed; outcome unknown")
	// ErrTransferring: the leader is handing leadership over (thesis
	// §3.10) and accepts no proposals meanwhile. The proposal was not
	// appended; Reply.Leader names the transfer's target. Retry shortly.
	ErrTransferring = errors.New("leadership transfer in progress; retry shortly")
	// ErrReadNotConfirmed: a ReadIndex read could not be confirmed before
	// this node lost leadership (or stopped hearing from a quorum), or, for
	// a read a follower forwarded (Config.FollowerReads), the leader it
	// asked refused or did not answer in time, or the follower stopped
	// following it. Nothing was read; the read may be retried anywhere.
	ErrReadNotConfirmed = errors.New("leadership lost before the read was confirmed; retry")
	// ErrBusy: the leader holds Config.MaxUncommittedBytes of entries that
	// have not committed yet (its followers are slow or unreachable). The
	// proposal was not appended; retry after a pause.
	ErrBusy = errors.New("too many uncommitted proposals")
	// ErrTooLarge: the proposal's data exceeds Config.Limits.MaxEntryBytes.
	// It was not appended; retrying will not help.
	ErrTooLarge = errors.New("proposal too large")
)

// Role is the role a node plays in its current term (Raft §5.1, Figure 4).
type Role uint8

const (
	Follower Role = iota
	Candidate
	Leader
	// PreCandidate: a follower whose election timer fired asks whether it
	// could win before it disrupts the cluster with a new term (thesis §9.6).
	PreCandidate
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	case PreCandidate:
		return "pre-candidate"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Timer names one of the node's timers. The fsm asks for timers with
// SetTimer actions and learns that one fired through a Timeout event.
type Timer uint8

const (
	// ElectionTimer fires when a follower or candidate has heard from no
	// leader for a randomized election timeout (Raft §5.2). On a leader it
	// fires every ElectionTimeout while check-quorum is on or a leadership
	// transfer is under way, to check both.
	ElectionTimer Timer = iota
	// HeartbeatTimer fires on the leader every heartbeat interval (Raft §5.2).
	HeartbeatTimer
)

func (t Timer) String() string {
	switch t {
	case ElectionTimer:
		return "election"
	case HeartbeatTimer:
		return "heartbeat"
	}
	return fmt.Sprintf("timer(%d)", uint8(t))
}

// Rand is the source of randomness the fsm uses for election jitter.
// *math/rand/v2.Rand satisfies it; a simulator passes a seeded one.
type Rand interface {
	Int64N(n int64) int64
}

// Config is a node's configuration. Zero durations and limits take the
// defaults documented on each field; Validate reports what is wrong.
type Config struct {
	// ID is this node's id, a positive integer unique in the cluster.
	ID uint64
	// ClusterID names the cluster; it is stamped on every outbound message.
	ClusterID string
	// Members lists the ids of the voters a new cluster is bootstrapped
	// with, this node included, when Bootstrap is nil. Empty (with
	// Bootstrap nil) for a server that joins an existing cluster: it
	// takes part once a leader adds it. Either is only the configuration
	// of a log that holds no configuration entry yet (thesis §4.1): once
	// the log (or a snapshot) has one, the latest is used.
	Members []uint64
	// Bootstrap, if set, is that configuration with the members'
	// addresses and roles, instead of Members.
	Bootstrap *pb.Configuration
	// MaxCatchUpRounds bounds the rounds a new voter is given to catch up
	// before a change that adds it is refused (thesis §4.2.1). Default 10.
	MaxCatchUpRounds int
	// CatchUpTimeout: a new voter that has not answered the leader for
	// this long fails the change that adds it (ErrUnreachable). Default
	// 10 election timeouts.
	CatchUpTimeout time.Duration
	// ElectionTimeout is the base election timeout; each election timer is
	// set to a random duration in [ElectionTimeout, 2*ElectionTimeout)
	// (Raft §5.2). Default 300ms.
	ElectionTimeout time.Duration
	// HeartbeatInterval is how often a leader sends heartbeats; it must be
	// well below ElectionTimeout (Raft §5.6). Default 50ms.
	HeartbeatInterval time.Duration
	// MaxInflight bounds the AppendEntries in flight to one follower while
	// it is being replicated to in pipeline. Default 64.
	MaxInflight int
	// MaxMsgBytes bounds the entry bytes (framing included) packed into
	// one AppendEntries; a single larger entry is still sent alone. At
	// most Limits.AppendBudget(). Default 1 MiB.
	MaxMsgBytes int
	// Limits bounds what the node accepts and sends: proposals over
	// Limits.MaxEntryBytes are refused (ErrTooLarge), AppendEntries carry
	// at most Limits.MaxEntriesPerMessage entries, and peer messages over
	// either bound are rejected. Zero fields take messages.DefaultLimits.
	// Every node of a cluster must use the same Limits.
	Limits pb.Limits
	// MaxUncommittedBytes bounds the data of the entries a leader has
	// appended in its term that have not committed yet (etcd-io/raft's
	// MaxUncommittedEntriesSize). Past it, proposals are refused with
	// ErrBusy until commits catch up, so a leader cut off from its
	// followers does not grow without bound. A proposal is always
	// accepted while nothing is uncommitted, however large. Default 64 MiB.
	MaxUncommittedBytes int
	// MaxForwardedReads bounds the reads followers forwarded to this
	// leader (Config.FollowerReads) that wait for their read round; past
	// it a ReadIndexRequest is refused at once and the follower fails
	// its reads with ErrReadNotConfirmed (its clients retry). Local reads
	// are bounded by the driver. Default 16384.
	MaxForwardedReads int
	// LogCacheEntries is how many applied entries the node keeps in memory
	// beyond those it still needs (not yet durable, committed or applied).
	// Older entries are dropped from memory (only their terms are kept)
	// and, when a follower lags that far behind, read back from the store
	// with a Fetch action, so a slow or dead follower does not make the
	// leader's memory grow. Default 8192.
	LogCacheEntries int
	// SnapshotTrailing is how many entries the log keeps behind the latest
	// snapshot when it compacts (SnapshotTaken), so that a follower that
	// lags by fewer is caught up from the log rather than by a snapshot.
	// Default 4096.
	SnapshotTrailing int
	// SnapshotChunkBytes is the size of one InstallSnapshot chunk. At most
	// Limits.AppendBudget(). Default 1 MiB (or less, to fit the limits).
	SnapshotChunkBytes int
	// MaxSnapshotChunks bounds the chunks in flight to one follower (read
	// from disk or sent, not yet acknowledged). Default 1: on one machine
	// (tests/process, a learner caught up by a 32 MiB snapshot under
	// load) the cluster's commit p99 during the transfer was 2.2-2.8x its
	// baseline with 4 in flight, 1.5-2.4x with 2 and 1.5-1.9x with 1, and
	// the transfer was no slower (600 ms against 700-870 ms). Raise it for
	// followers far away: one chunk per round trip and fsync bounds the
	// transfer's rate.
	MaxSnapshotChunks int
	// RetransmitRounds is how many heartbeat intervals a pipelined follower
	// may go without acknowledging progress before the leader assumes the
	// in-flight messages were lost and probes again. Default 4.
	RetransmitRounds int
	// Rand supplies election jitter. Required.
	Rand Rand
	// DisablePreVote turns off the pre-vote (thesis §9.6), which is on by
	// default: a node whose election timer fires first asks the others
	// whether they would vote for it, without raising any term, and
	// campaigns only if a majority would. It keeps a node that was cut off
	// from disrupting a healthy leader when it comes back.
	DisablePreVote bool
	// DisableCheckQuorum turns off check-quorum, which is on by default: a
	// leader that has not heard from a majority (itself included) for an
	// election timeout steps down, and a follower that heard from its leader
	// within an election timeout ignores RequestVotes (leader stickiness,
	// thesis §4.2.3, §6.2), except from a candidate a leadership transfer
	// started.
	DisableCheckQuorum bool
	// FollowerReads lets a follower that knows its leader serve ReadIndex
	// reads itself (thesis §6.4, last paragraph): it asks the leader for a
	// read index with a ReadIndexRequest message and answers ReadReady once
	// its own state machine has applied that index. Reads the leader does
	// not confirm fail with ErrReadNotConfirmed when this node stops
	// following that leader, and within two election timeouts at the latest
	// (the HeartbeatTimer, unused on followers otherwise, bounds the wait).
	// Off by default until every driver's message validation accepts the
	// ReadIndexRequest and ReadIndexResponse bodies; off, a follower answers
	// reads with ErrNotLeader and a leader hint.
	FollowerReads bool
	// LeaseReads lets the leader serve ReadIndex reads without a heartbeat
	// round while it holds a lease (thesis §6.4.1). Off by default; it
	// requires check-quorum (Validate refuses DisableCheckQuorum) and time
	// from the driver: a monotonic clock reading in Timeout.Now (every
	// HeartbeatTimer firing) and ReadIndex.Now. Without time, reads take the
	// ReadIndex path. The lease lasts ElectionTimeout / (1 + MaxClockDrift)
	// on the leader's clock from the sending of the latest heartbeat a
	// quorum acknowledged, and holds only if no node's clock runs more than
	// MaxClockDrift faster than another's over an election timeout, and
	// timers fire no earlier than asked. With it on, a node grants no vote
	// until its first election timeout after it starts.
	//
	// A driver reads its monotonic clock just before it calls Step, for
	// every Timeout and ReadIndex (e.g. time.Since(start) + 1, never 0).
	// Timeout.Now may be earlier than the Step (the lease then starts
	// earlier than the heartbeat's sending, which is safe), but ReadIndex.Now
	// must not be: a time taken when the read arrived in the mailbox could
	// let a leader deposed since serve it under an expired lease.
	LeaseReads bool
	// MaxClockDrift bounds the relative clock rates of any two nodes, as a
	// fraction: over any interval, no node's clock advances more than
	// (1 + MaxClockDrift) times as far as another's. Used only by
	// LeaseReads. Zero takes the default, 0.1 (10%); it must be in [0, 1].
	MaxClockDrift float64

	// bugs are seeded faults for the simulator; see bugs.go.
	bugs bugSet
}

// Defaults.
const (
	DefaultElectionTimeout   = 300 * time.Millisecond
	DefaultHeartbeatInterval = 50 * time.Millisecond
	DefaultMaxInflight       = 64
	DefaultMaxMsgBytes       = 1 << 20
	DefaultRetransmitRounds  = 4
	DefaultLogCacheEntries   = 8192
	DefaultSnapshotTrailing  = 4096
	DefaultSnapshotChunk     = 1 << 20
	DefaultMaxSnapshotChunks = 1
	DefaultMaxClockDrift     = 0.1
	// DefaultMaxUncommittedBytes is Config.MaxUncommittedBytes's default.
	DefaultMaxUncommittedBytes = 64 << 20
	// DefaultMaxForwardedReads is Config.MaxForwardedReads's default.
	DefaultMaxForwardedReads = 16384
)

func (c *Config) setDefaults() {
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.RetransmitRounds == 0 {
		c.RetransmitRounds = DefaultRetransmitRounds
	}
	if c.LogCacheEntries == 0 {
		c.LogCacheEntries = DefaultLogCacheEntries
	}
	if c.MaxClockDrift == 0 {
		c.MaxClockDrift = DefaultMaxClockDrift
	}
	c.Limits = c.Limits.WithDefaults()
	if c.MaxUncommittedBytes == 0 {
		c.MaxUncommittedBytes = DefaultMaxUncommittedBytes
	}
	if c.MaxForwardedReads == 0 {
		c.MaxForwardedReads = DefaultMaxForwardedReads
	}
	if c.MaxMsgBytes == 0 {
		c.MaxMsgBytes = min(DefaultMaxMsgBytes, c.Limits.AppendBudget())
	}
	if c.SnapshotTrailing == 0 {
		c.SnapshotTrailing = DefaultSnapshotTrailing
	}
	if c.SnapshotChunkBytes == 0 {
		c.SnapshotChunkBytes = min(DefaultSnapshotChunk, c.Limits.AppendBudget())
	}
	if c.MaxSnapshotChunks == 0 {
		c.MaxSnapshotChunks = DefaultMaxSnapshotChunks
	}
	if c.MaxCatchUpRounds == 0 {
		c.MaxCatchUpRounds = DefaultMaxCatchUpRounds
	}
	if c.CatchUpTimeout == 0 {
		c.CatchUpTimeout = DefaultCatchUpTimeout * c.ElectionTimeout
	}
}

// Validate reports the first problem with the configuration, after filling
// in defaults for zero fields.
func (c *Config) Validate() error {
	c.setDefaults()
	if c.ID == 0 {
		return errors.New("fsm: node id must be a positive integer")
	}
	if len(c.ClusterID) > pb.MaxClusterIDBytes {
		return fmt.Errorf("fsm: the cluster id is %d bytes; the limit is %d", len(c.ClusterID), pb.MaxClusterIDBytes)
	}
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("fsm: %w", err)
	}
	if c.MaxMsgBytes > c.Limits.AppendBudget() {
		return fmt.Errorf("fsm: MaxMsgBytes %d exceeds what one message may carry (%d, Limits.MaxMessageBytes less the envelope)", c.MaxMsgBytes, c.Limits.AppendBudget())
	}
	if c.MaxUncommittedBytes < 1 || c.MaxForwardedReads < 1 {
		return errors.New("fsm: MaxUncommittedBytes and MaxForwardedReads must be positive")
	}
	seen := map[uint64]bool{}
	self := false
	for _, m := range c.Members {
		if m == 0 {
			return errors.New("fsm: member ids must be positive integers")
		}
		if seen[m] {
			return fmt.Errorf("fsm: member %d is listed twice", m)
		}
		seen[m] = true
		if m == c.ID {
			self = true
		}
	}
	if len(c.Members) > 0 && !self {
		return fmt.Errorf("fsm: members %v must include this node's id %d", c.Members, c.ID)
	}
	if c.Bootstrap != nil {
		if len(c.Members) > 0 {
			return errors.New("fsm: give Members or Bootstrap, not both")
		}
		if why := checkConfiguration(c.Bootstrap); why != "" {
			return fmt.Errorf("fsm: the bootstrap configuration: %s", why)
		}
		if len(c.Bootstrap.Members) > 0 && member(c.Bootstrap, c.ID) == nil {
			return fmt.Errorf("fsm: the bootstrap configuration must include this node's id %d", c.ID)
		}
	}
	if c.MaxCatchUpRounds < 1 || c.CatchUpTimeout <= 0 {
		return errors.New("fsm: MaxCatchUpRounds and CatchUpTimeout must be positive")
	}
	if c.HeartbeatInterval >= c.ElectionTimeout {
		return fmt.Errorf("fsm: heartbeat interval %v must be below the election timeout %v", c.HeartbeatInterval, c.ElectionTimeout)
	}
	if c.MaxInflight < 1 || c.MaxMsgBytes < 1 || c.RetransmitRounds < 1 || c.LogCacheEntries < 1 {
		return errors.New("fsm: MaxInflight, MaxMsgBytes, RetransmitRounds and LogCacheEntries must be positive")
	}
	if c.SnapshotTrailing < 1 || c.SnapshotChunkBytes < 1 || c.MaxSnapshotChunks < 1 {
		return errors.New("fsm: SnapshotTrailing, SnapshotChunkBytes and MaxSnapshotChunks must be positive")
	}
	if c.SnapshotChunkBytes > c.Limits.AppendBudget() {
		return fmt.Errorf("fsm: SnapshotChunkBytes %d exceeds what one message may carry (%d)", c.SnapshotChunkBytes, c.Limits.AppendBudget())
	}
	if c.Rand == nil {
		return errors.New("fsm: a Rand source for election jitter is required")
	}
	if !(c.MaxClockDrift >= 0 && c.MaxClockDrift <= 1) {
		return fmt.Errorf("fsm: MaxClockDrift %v must be a fraction in [0, 1]", c.MaxClockDrift)
	}
	if c.LeaseReads && c.DisableCheckQuorum {
		// thesis §6.4.1: a lease holds only because followers that heard
		// from the leader refuse votes for an election timeout.
		return errors.New("fsm: LeaseReads needs check-quorum; turn DisableCheckQuorum off or LeaseReads off")
	}
	return nil
}

// Restore is the durable state a node starts from (ARCHITECTURE §3 rule 6):
// term, vote and log as the store has them on disk, and the index the state
// machine has already applied (0 if it starts empty). Commit index and
// leadership are never restored; they are relearned.
type Restore struct {
	HardState *pb.HardState
	// Base is where the stored log starts: the entries through Base.Index
	// were compacted into a snapshot (zero when the log never was).
	Base SnapshotMeta
	// Entries is the whole durable log after Base, indexes Base.Index+1..n
	// in order.
	Entries []*pb.Entry
	// Snapshot is the latest durable snapshot of the state machine (zero
	// when there is none); Base.Index <= Snapshot.Index <= Applied. When
	// the log does not hold Snapshot's last entry with its term (a crash
	// during an install), the log is discarded (Figure 13 rule 7) and a
	// Compact{Reset} is the first action of Start.
	Snapshot SnapshotMeta
	// Staging is the snapshot being received, as far as its file on disk
	// holds it (zero when there is none).
	Staging Staging
	// Applied is the state machine's applied index; entries up to it are
	// known committed and are not handed to Apply again.
	Applied uint64
	// BaseConfig is the configuration in effect at Base (the store
	// records it with every compaction); nil Config: the bootstrap one.
	BaseConfig ConfigState
	// SnapshotConfig is the configuration Snapshot's header records, used
	// when the log is discarded for the snapshot (see Snapshot).
	SnapshotConfig ConfigState
}

// SnapshotMeta names a snapshot by the last log entry whose effects it
// holds (Raft §7, Figure 13's lastIncludedIndex and lastIncludedTerm).
type SnapshotMeta struct{ Index, Term uint64 }

// Staging is a snapshot file being received from a leader: which snapshot
// (its meta, size and whole-file checksum) and how many of its bytes are
// durable (Offset).
type Staging struct {
	Meta    SnapshotMeta
	Size    uint64
	FileCRC uint32
	Offset  uint64
}

// Proposal is a command a client wants appended to the log.
type Proposal struct {
	// ID is chosen by the caller and comes back in the Apply (as a Ref) or
	// Reply that settles the proposal. 0 means nobody waits for the result.
	ID   uint64
	Data []byte
}

// ---------------------------------------------------------------- events

// Event is something that happened to the node: the input of Step.
type Event interface{ isEvent() }

// Start is the first event a new Node gets: it arms the election timer.
type Start struct{}

// Message is a peer message, as it came from the network: Step validates
// it (validate.go) and answers one that fails with a Rejected action.
type Message struct{ Msg *pb.RaftMessage }

// Timeout reports that a timer set by SetTimer fired. Gen must be the
// generation the SetTimer carried; firings of superseded timers are ignored.
type Timeout struct {
	Timer Timer
	Gen   uint64
	// Now is the driver's monotonic clock when the timer fired (any fixed
	// origin, e.g. time.Since(start)), or 0 for none. Only Config.LeaseReads
	// uses it: a HeartbeatTimer firing with a time starts a lease round.
	Now time.Duration
}

// Propose asks the node to append commands to the log.
type Propose struct{ Proposals []Proposal }

// Persisted reports that every Persist action up to and including Seq is
// durable (fsynced). The store reports in order.
type Persisted struct{ Seq uint64 }

// Applied reports the state machine's applied index.
type Applied struct{ Index uint64 }

// Fetched answers a Fetch: the entries the store holds from Lo on (as
// many as it read, at least one when the store has index Lo), or none if
// the read failed. Term and Peer are the Fetch's.
type Fetched struct {
	Peer, Term, Lo uint64
	Entries        []*pb.Entry
}

// SnapshotTaken reports that the state machine's snapshot through Meta is
// durable. The node compacts its log behind it (keeping
// Config.SnapshotTrailing entries) with a Compact action, and sends it to
// followers that need compacted entries. Meta.Index is at most what was
// handed to Apply.
type SnapshotTaken struct{ Meta SnapshotMeta }

// ChunkRead answers a ReadChunk: Data is the snapshot file's bytes from
// Offset (exactly min(MaxBytes, Size-Offset) of them), Size and FileCRC the
// whole file's (as its trailer records). Err says the snapshot could not be
// read (it is gone: a newer one replaced it); the transfer then starts over
// with the latest snapshot.
type ChunkRead struct {
	Peer    uint64
	Meta    SnapshotMeta
	Offset  uint64
	Data    []byte
	Size    uint64
	FileCRC uint32
	Err     error
}

// ChunkStaged answers a StageChunk: the staged file of Meta (with FileCRC)
// now holds Offset bytes durably. With Done, the file is complete, matched
// its size and checksum, and is now this node's latest snapshot on disk.
// Err says the chunk could not be staged or the complete file failed its
// check; the staged file was discarded.
type ChunkStaged struct {
	Meta    SnapshotMeta
	FileCRC uint32
	Offset  uint64
	Done    bool
	Err     error
}

// ReadIndex asks for linearizable reads (thesis §6.4). Each ID is chosen
// by the caller and comes back in one ReadReady. All the reads of one event
// share one heartbeat round. With Config.FollowerReads, a follower that
// knows its leader asks it for a read index and answers once it has applied
// that index itself. Otherwise, on a node that is not leader every read is
// answered at once with ErrNotLeader and a leader hint (the actor layer may
// forward the client's request).
type ReadIndex struct {
	IDs []uint64
	// Now is the driver's monotonic clock (the same one as Timeout.Now),
	// or 0 for none. With Config.LeaseReads, a leader that holds a lease
	// at Now serves the reads without a heartbeat round (thesis §6.4.1).
	Now time.Duration
}

// TransferLeadership asks the leader to hand leadership to member To, or
// with To = 0 to the voter with the most up-to-date log (thesis §3.10). The
// leader stops accepting proposals (ErrTransferring), brings the target's
// log up to date, and sends it TimeoutNow. The transfer is abandoned after
// an election timeout. It is ignored on a node that is not leader, for a
// target that is not a peer, and while a transfer to the same target runs.
type TransferLeadership struct{ To uint64 }

func (Start) isEvent()     {}
func (Message) isEvent()   {}
func (Timeout) isEvent()   {}
func (Propose) isEvent()   {}
func (Persisted) isEvent() {}
func (Applied) isEvent()   {}
func (Fetched) isEvent()   {}

func (ReadIndex) isEvent()          {}
func (SnapshotTaken) isEvent()      {}
func (ChunkRead) isEvent()          {}
func (ChunkStaged) isEvent()        {}
func (TransferLeadership) isEvent() {}

// ---------------------------------------------------------------- actions

// Action is something the node asks its environment to do: the output of
// Step. Actions must be carried out in the order they are returned.
type Action interface{ isAction() }

// Persist asks the store to make state durable and then report
// Persisted{Seq}. HardState is nil when it did not change. When Entries is
// not empty, every stored entry with index >= Entries[0].Index is deleted
// and Entries are written in its place (a plain append when Entries[0]
// follows the last stored entry). Seq increases by one with every Persist.
type Persist struct {
	Seq       uint64
	HardState *pb.HardState
	Entries   []*pb.Entry
}

// Send asks for Msg to be delivered to node Msg.To. Delivery is best
// effort: Raft tolerates loss, duplication and reordering.
type Send struct{ Msg *pb.RaftMessage }

// Proposed reports where the leader appended a proposal: the log index and
// the term it assigned (Raft §5.3). The entry may still be lost if this
// leader is deposed before it commits; once applied, the entry at Index has
// Term, so the answer to the client can name both (as hashicorp/raft's
// ApplyFuture.Index does). Only proposals with an ID are reported.
type Proposed struct {
	ID, Index, Term uint64
}

// Ref ties a committed entry to the proposal that created it on this node.
type Ref struct {
	ID    uint64
	Index uint64
}

// Apply hands committed entries, in index order and each exactly once per
// Node incarnation, to the state machine. Refs names the entries that answer
// proposals made to this node, so their callers can be told the result.
type Apply struct {
	Entries []*pb.Entry
	Refs    []Ref
}

// Reply settles a proposal that will not be applied through this node:
// Err is ErrNotLeader (Leader hints at the leader, 0 if unknown),
// ErrTransferring (not appended; Leader names the transfer's target),
// ErrBusy or ErrTooLarge (not appended), or ErrLeadershipLost (outcome
// unknown).
type Reply struct {
	ID     uint64
	Err    error
	Leader uint64
}

// SetTimer asks for a Timeout{Timer, Gen} event after the given duration,
// replacing any earlier timer of the same kind.
type SetTimer struct {
	Timer Timer
	After time.Duration
	Gen   uint64
}

// ReadReady answers a read of a ReadIndex event. With Err nil the read is
// linearizable at Index: this node, or the leader a follower asked (Config.
// FollowerReads), was leader of its term after the read arrived (a quorum
// answered a heartbeat round started after it), its term's no-op had
// committed, and this node's state machine has reported Applied >= Index, so
// the read may be served from the local state machine now. A lease read
// (Config.LeaseReads) replaces the heartbeat round with the leader's lease.
// Otherwise Err is ErrNotLeader (Leader hints at the leader, 0 if unknown)
// or ErrReadNotConfirmed, and nothing was read.
type ReadReady struct {
	ID     uint64
	Index  uint64
	Err    error
	Leader uint64
}

func (ReadReady) isAction() {}

// Fetch asks the driver to read durable entries Lo..Hi-1 from the store,
// at most MaxBytes of them (but at least one), and step Fetched with them.
// The leader needs them for follower Peer, which lags behind what the
// node keeps in memory (Config.LogCacheEntries). Every entry asked for is
// committed and durable, so the store's copy is the log's.
type Fetch struct {
	Peer, Term, Lo, Hi uint64
	MaxBytes           int
}

func (Fetch) isAction() {}

// Rejected reports a peer message the node dropped without acting on it
// (validate.go): Err wraps ErrNotForUs, ErrMalformed, ErrTermOutOfRange or
// ErrImpossible and says what was wrong. From is the sender the message
// claimed. No correct peer of the cluster sends such a message; the
// driver counts it and logs it, rate-limited.
type Rejected struct {
	From uint64
	Err  error
}

func (Rejected) isAction() {}

// Compact tells the store that the log's entries through Through (of term
// Term) are in a durable snapshot and may be deleted; the stored log then
// starts after Through. With Reset, every entry is deleted (Figure 13
// rule 7: the log disagrees with an installed snapshot). Through is never
// past what the state machine reported applied, what is durable, or the
// latest snapshot.
type Compact struct {
	Through, Term uint64
	Reset         bool
	// Config is the configuration in effect at Through: the store records
	// it, so that a restart knows the membership without the compacted
	// entries (Restore.BaseConfig).
	Config ConfigState
}

// ReadChunk asks the driver to read bytes [Offset, Offset+MaxBytes) of the
// node's snapshot Meta for follower Peer and step ChunkRead with them. The
// snapshot is pinned for Peer (kept readable even once a newer one
// replaces it) until EndTransfer{Peer} or a ReadChunk for Peer of another
// snapshot.
type ReadChunk struct {
	Peer     uint64
	Meta     SnapshotMeta
	Offset   uint64
	MaxBytes int
}

// EndTransfer says the snapshot transfer to Peer is over (installed,
// abandoned, or leadership lost): its snapshot may be unpinned.
type EndTransfer struct{ Peer uint64 }

// StageChunk asks the driver to write Data at Offset of the staged file of
// snapshot Meta (Size bytes, checksum FileCRC), make it durable and step
// ChunkStaged. Offset 0 starts a new staged file, discarding any other;
// otherwise Offset is where the staged file ends. With Done, the chunk is
// the last: the driver checks the whole file against Size and FileCRC and
// makes it the node's latest snapshot before it answers.
type StageChunk struct {
	Meta    SnapshotMeta
	Size    uint64
	FileCRC uint32
	Offset  uint64
	Data    []byte
	Done    bool
}

// InstallSnapshot tells the state machine to restore the snapshot Meta
// (already the latest on disk): its applied index becomes Meta.Index. A
// Compact for Meta precedes it; Apply actions that follow start after
// Meta.Index.
type InstallSnapshot struct{ Meta SnapshotMeta }

func (Compact) isAction()         {}
func (ReadChunk) isAction()       {}
func (EndTransfer) isAction()     {}
func (StageChunk) isAction()      {}
func (InstallSnapshot) isAction() {}

func (Proposed) isAction() {}
func (Persist) isAction()  {}
func (Send) isAction()     {}
func (Apply) isAction()    {}
func (Reply) isAction()    {}
func (SetTimer) isAction() {}

// Status is a snapshot of the node's volatile state, for status reports,
// tests and the simulator's invariant checks.
type Status struct {
	ID        uint64
	Role      Role
	Term      uint64
	Vote      uint64
	Leader    uint64 // 0 when unknown
	LastIndex uint64
	LastTerm  uint64
	Commit    uint64
	Applied   uint64 // the last index handed to Apply
	Durable   uint64 // the last log index known durable on this node
	// InMemory is how many log entries the node holds in memory: the
	// tail that is not yet applied, plus up to Config.LogCacheEntries
	// (and half as many again, as it compacts in steps) applied ones.
	InMemory uint64
	// Transferee is the target of the leadership transfer under way, 0
	// when none is.
	Transferee uint64
	// Snapshot is the latest durable snapshot this node knows of (its
	// own or one it installed), and FirstIndex the first index its log
	// holds (entries before it are compacted into snapshots).
	Snapshot   SnapshotMeta
	FirstIndex uint64
	// ConfigIndex is the index of the configuration entry in use (0: the
	// bootstrap configuration); Voter and Member say whether this node
	// votes in it and whether it is in it at all (Configuration has it).
	ConfigIndex   uint64
	Voter, Member bool
}
