// Package fsm is ketch's Raft consensus core: the rules of the Raft paper
// (Ongaro & Ousterhout, "In Search of an Understandable Consensus
// Algorithm", and Ongaro's thesis) as a pure, deterministic state machine.
//
// It must never start a goroutine, read a clock, draw randomness other than
// from Config.Rand, or do I/O. Everything that touches the world lives in the
// actors that drive it. That makes it testable by simulation (tests/sim)
// and lets its actor crash and restart from durable state.
//
// # The contract (gen_statem in Go)
//
//	Step(event) -> []Action
//
//	          events                                actions
//	  Start ─────────────┐                  ┌──▶ Persist{Seq, HardState, Entries} ─▶ store
//	  Message (peer) ────┤                  ├──▶ Send{Msg}                          ─▶ sender
//	  Timeout{…,Now} ────┤   ┌──────────┐   ├──▶ Apply{Entries, Refs}               ─▶ state
//	  Propose ───────────┼──▶│   Node   │───┼──▶ Proposed{ID, Index, Term}         ─▶ client
//	  Persisted{Seq} ────┤   └──────────┘   ├──▶ Reply{ID, Err, Leader}            ─▶ client
//	  Applied{Index} ────┤                  ├──▶ SetTimer{Timer, After, Gen}        ─▶ timers
//	  ReadIndex{IDs,Now}─┤                  ├──▶ ReadReady{ID, Index, Err, Leader}  ─▶ client
//	  Fetched{…} ────────┤                  ├──▶ Fetch{Peer, Term, Lo, Hi}          ─▶ store
//	  TransferLeadership{To}                └──▶ Rejected{From, Err}                ─▶ counters, log
//
// # Validation (validate.go)
//
// Every Message is validated before anything else: the envelope (cluster,
// receiver, a member as sender), terms (below MaxTerm, at most MaxTermGap
// above this node's), indexes (below MaxIndex), entries (contiguous, known
// types, within Config.Limits, terms that never decrease nor exceed the
// sender's), and an AppendEntries must not contradict a committed entry.
// A message that fails is answered with a Rejected action, never an
// assert: nothing a peer sends can crash the node.
//
// # Backpressure
//
// A leader refuses proposals with ErrBusy while it holds
// Config.MaxUncommittedBytes of uncommitted entries, and ones over
// Limits.MaxEntryBytes with ErrTooLarge.
//
// One Step settles the rules common to every role (pre-votes, leader
// stickiness, terms, stale messages; thesis §9.6, §4.2.3, Raft §5.1) and
// then calls the role's function: stepFollower, stepPreCandidate,
// stepCandidate or stepLeader. Roles change only through becomeFollower,
// becomePreCandidate, becomeCandidate and becomeLeader.
//
// # Pre-vote and check-quorum (both on by default)
//
// A follower whose election timer fires becomes a pre-candidate
// (prevote.go): it sends RequestVote{pre_vote} for its term + 1 without
// changing term or vote, and campaigns only if a majority would grant.
// A pre-vote is granted when the log is up to date and the voter has not
// heard from a leader since its election timer last fired; it never changes
// the voter's term or vote. A refusal carries the voter's term, so a node
// that fell behind in term learns it (etcd-io/etcd#8501).
//
// With check-quorum, the leader's election timer fires every election
// timeout and the leader steps down unless a majority, itself included,
// answered it since the last check; and a follower that has a live leader
// ignores RequestVotes of later terms (thesis §4.2.3), except those of an
// election started by a leadership transfer. Config.DisablePreVote and
// Config.DisableCheckQuorum turn them off.
//
// # ReadIndex (readindex.go, thesis §6.4)
//
// ReadIndex{IDs} on the leader starts a read round: every follower gets an
// empty AppendEntries carrying read_round, and echoes it in its answer. A
// read is ready once (1) the leader's no-op of its term has committed (the
// read index is then the commit index), (2) a majority, the leader
// included, echoed a round at or after the read's, and (3) the state
// machine reported Applied >= the read index. Then ReadReady{ID, Index}
// says the read may be served from the local state machine. A non-leader
// answers ReadReady{Err: ErrNotLeader, Leader: hint} at once; reads waiting
// when leadership is lost fail with ErrReadNotConfirmed.
//
// # Follower reads (followerread.go, thesis §6.4 last paragraph)
//
// With Config.FollowerReads (off by default), a follower that knows its
// leader sends it ReadIndexRequest{context} instead of answering
// ErrNotLeader. The leader queues the request with its own reads (same
// no-op and read-round rules) and answers ReadIndexResponse{context, index}
// without waiting for its own state machine; the follower answers
// ReadReady{ID, index} once its state machine reported Applied >= index.
// A refusal (the receiver is not leader of that term), a new term or
// leader, or the follower's own election fails the reads still waiting for
// the answer with ErrReadNotConfirmed, and the HeartbeatTimer (unused on
// non-leaders otherwise) fails every forwarded read after one to two
// election timeouts, so lost messages never leave a read hanging.
//
// # Lease reads (lease.go, thesis §6.4.1)
//
// With Config.LeaseReads (off by default; requires check-quorum) and time
// from the driver (Timeout.Now on every timer firing, ReadIndex.Now on
// reads; a monotonic clock, any origin, 0 meaning none), each timed
// heartbeat is a read round whose sending time the leader remembers. Once a
// quorum echoed a round sent at t, the leader holds a lease until
// t + ElectionTimeout / (1 + MaxClockDrift) on its clock, and serves reads at
// once at the commit index (its term's no-op committed). Why it is safe:
// each follower that echoed the round heard the leader at or after t and,
// with check-quorum, refuses votes and pre-votes until its election timer
// fires, at least ElectionTimeout later on its own clock (a node that
// starts refuses them until its first election timeout too, so a crash
// does not shorten that). A majority of those refusals blocks any other
// election. The clock-drift bound: no node's clock may run more than
// (1 + MaxClockDrift) times as fast as another's (default 0.1), and timers
// must not fire early; a driver that cannot promise that must leave
// LeaseReads off. A leadership transfer ends leases for the rest of the
// term, since its election ignores leader stickiness.
//
// # Leadership transfer (transfer.go, thesis §3.10)
//
// TransferLeadership{To} (0: the most up-to-date voter) makes the leader
// refuse proposals with ErrTransferring, bring the target's log up to date,
// and send it TimeoutNow; the target campaigns at once, skipping the
// pre-vote, with RequestVote{transfer} so that voters grant despite leader
// stickiness. The transfer is abandoned after an election timeout.
//
// # Membership (membership.go, quorum.go, thesis chapter 4)
//
// The configuration is log data: ENTRY_TYPE_CONFIG entries, the latest in
// the log in use from its append (reverted when truncated), the one at the
// floor kept through compactions (Compact.Config, Restore.BaseConfig) and
// snapshots (the last InstallSnapshot chunk). Quorum math is in quorum.go:
// a majority of the voters, or of each half of a joint configuration;
// learners never count. ChangeMembers is accepted on the leader only one at
// a time and after an entry of its term committed; new voters are caught
// up in rounds first; more than one voter changed goes through a joint
// configuration that the leader leaves by itself. The leader reports
// ConfigChanged (the peers to send to, with addresses), MembersChanged (a
// change's answer) and, to a removed node, Removed. A leader that removed
// itself hands over with TimeoutNow once its removal commits, and steps
// down.
//
// # Durability
//
// Every change to term, vote or log leaves a Step as one Persist action
// with a sequence number; the store answers Persisted{Seq} after its fsync.
// A message that promises durable state (a granted vote, an acknowledged
// append, any answer given in a new term) is held inside the Node until that
// Persisted arrives. The leader's own AppendEntries go out at once (thesis
// §10.2.1), but the leader counts itself toward a quorum only for entries
// its store reported durable.
//
// # Time and randomness
//
// The Node asks for timers with SetTimer and learns they fired through
// Timeout events carrying the timer's generation; a superseded timer's
// Timeout is ignored, so the driver never has to cancel anything. Election
// jitter comes from Config.Rand, which a simulator seeds.
//
// # Seeded bugs
//
// PlantBug turns on one of a few classic Raft mistakes, for the simulator to
// prove that it catches them. It exists only in builds with the ketchbugs
// tag (bugs_on.go) and works only inside test binaries; without the tag the
// planted branches compile away.
package fsm
