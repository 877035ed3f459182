package fsm

// Seeded bugs. Each switch plants one classic Raft mistake so the
// simulator can prove it would catch it (a checker that never fails proves
// nothing). They are compiled only into builds with the build tag
// ketchbugs (bugs_on.go), which only tests use: without it PlantBug does
// not exist and bugsCompiled is false, so the compiler drops every planted
// branch and no flag, config file or message can turn one on in a real
// node (.ci/test checks that the ketch binary does not link "testing").
type bugSet uint32

const (
	// commit-old-term: the leader commits an entry of an earlier term by
	// counting replicas, which Raft §5.4.2 (Figure 8) forbids.
	bugCommitOldTerm bugSet = 1 << iota
	// vote-not-persisted: a vote is granted before it is durable and is
	// not written to disk at all, so a restarted node forgets it.
	bugVoteNotPersisted
	// vote-stale-log: votes go to candidates whose log is less
	// up-to-date than the voter's (ignores Raft §5.4.1).
	bugVoteStaleLog
	// truncate-on-stale: the follower replaces its log after prevLogIndex
	// with the message's entries even when nothing conflicts, so a stale
	// or duplicated AppendEntries deletes acknowledged entries.
	bugTruncateOnStale
	// commit-beyond-sent: the follower advances its commit index up to its
	// own last index instead of the last entry the leader's message
	// covered (Figure 2, AppendEntries rule 5).
	bugCommitBeyondSent
	// ack-before-durable: the follower acknowledges appended entries
	// before the store reports them durable.
	bugAckBeforeDurable
	// read-before-noop: the leader takes a read index before its term's
	// no-op has committed, when its commit index may still lag what
	// earlier leaders committed (thesis §6.4 step 1).
	bugReadBeforeNoop
	// read-without-quorum: the leader serves a read without confirming
	// with a quorum that it is still leader, so a deposed leader serves
	// stale reads (thesis §6.4 step 2).
	bugReadWithoutQuorum
	// prevote-bumps-term: a node receiving a pre-vote adopts its term, as
	// for a real vote, which pre-vote exists to prevent (thesis §9.6).
	bugPreVoteBumpsTerm
	// follower-read-unapplied: a follower serves a forwarded read as soon
	// as the leader answers, at what its state machine has applied, before
	// that reaches the read index (thesis §6.4, last paragraph).
	bugFollowerReadUnapplied
	// lease-from-check: the leader renews its lease from the time its
	// check-quorum tick found a quorum active, instead of from the sending of
	// a heartbeat a quorum echoed; the answers that tick counted may be an
	// election timeout old, or late, so the lease outlives what followers
	// promised (thesis §6.4.1).
	bugLeaseFromCheck
	// unchecked-messages: peer messages reach the role functions without
	// validation (validate.go), as when a driver trusts the network.
	bugUncheckedMessages
	// snapshot-discards-tail: on installing a snapshot, the follower keeps
	// the entries after its last index even when the log's entry there has
	// another term (Figure 13 rule 7 says discard the whole log), so a
	// deposed leader's entries survive beside the snapshot.
	bugSnapshotKeepsConflict
	// compact-unapplied: the node compacts its log through its commit
	// index, past what the state machine applied and snapshotted (Raft §7:
	// only entries a snapshot holds may go).
	bugCompactUnapplied
	// install-stale-snapshot: the follower installs a snapshot older than
	// its commit index, moving its applied and commit index backwards.
	bugInstallStaleSnapshot
	// snapshot-chunk-unchecked: the follower stages a chunk wherever its
	// offset says, not only where the staged file ends.
	bugSnapshotChunkUnchecked
	// config-no-term-barrier: the leader accepts a membership change
	// before an entry of its own term has committed (the single-server
	// bug Ongaro described on raft-dev in 2015).
	bugConfigNoTermBarrier
	// two-changes-inflight: the leader accepts a membership change while
	// another is uncommitted, so two configurations that differ by two
	// voters can each have a majority (thesis §4.1).
	bugTwoChangesInflight
	// learner-counts: the leader counts learners toward commit.
	bugLearnerCounts
	// config-no-revert: a node keeps using a configuration whose entry was
	// truncated from its log (thesis §4.1 says revert to the previous one).
	bugConfigNoRevert
)

var bugNames = []struct {
	name string
	bug  bugSet
}{
	{"commit-old-term", bugCommitOldTerm},
	{"vote-not-persisted", bugVoteNotPersisted},
	{"vote-stale-log", bugVoteStaleLog},
	{"truncate-on-stale", bugTruncateOnStale},
	{"commit-beyond-sent", bugCommitBeyondSent},
	{"ack-before-durable", bugAckBeforeDurable},
	{"read-before-noop", bugReadBeforeNoop},
	{"read-without-quorum", bugReadWithoutQuorum},
	{"prevote-bumps-term", bugPreVoteBumpsTerm},
	{"follower-read-unapplied", bugFollowerReadUnapplied},
	{"lease-from-check", bugLeaseFromCheck},
	{"unchecked-messages", bugUncheckedMessages},
	{"snapshot-discards-tail", bugSnapshotKeepsConflict},
	{"compact-unapplied", bugCompactUnapplied},
	{"install-stale-snapshot", bugInstallStaleSnapshot},
	{"snapshot-chunk-unchecked", bugSnapshotChunkUnchecked},
	{"config-no-term-barrier", bugConfigNoTermBarrier},
	{"two-changes-inflight", bugTwoChangesInflight},
	{"learner-counts", bugLearnerCounts},
	{"config-no-revert", bugConfigNoRevert},
}

// BugNames lists the bugs PlantBug knows, in a fixed order.
func BugNames() []string {
	names := make([]string, len(bugNames))
	for i, b := range bugNames {
		names[i] = b.name
	}
	return names
}

func (n *Node) bug(b bugSet) bool { return bugsCompiled && n.cfg.bugs&b != 0 }
