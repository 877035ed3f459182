package fsm

// progress is the leader's view of one follower (Raft Figure 2, "volatile
// state on leaders": nextIndex and matchIndex), plus the flow control that
// lets the leader pipeline AppendEntries without flooding the follower.
//
// A follower is in one of three states, after etcd-io/raft's tracker:
//   - probe: the leader does not know where the logs match. It sends one
//     AppendEntries at a time and waits for the answer (or the next
//     heartbeat) before sending another, backing off on rejections.
//   - replicate: the logs are known to match up to match. The leader sends
//     new entries as soon as it has them, optimistically advancing next,
//     with at most MaxInflight messages unacknowledged.
//   - snapshot: the follower needs entries this leader compacted away
//     (Raft §7). The leader sends its latest snapshot in chunks
//     (snapshot.go) and nothing else; once the follower installed it, the
//     leader probes from the snapshot's last index.
type progress struct {
	match uint64 // highest index known durable and matching on the follower
	next  uint64 // next index to send

	state progressState
	// xfer is the snapshot transfer under way, in snapshot state.
	xfer *snapshotSend
	// probeSent: in probe state, a probe is out and unanswered.
	probeSent bool
	// inflight holds the last index of each unacknowledged AppendEntries
	// sent in replicate state, ascending.
	inflight []uint64
	// fetching: a Fetch for this follower is out (its next entries are no
	// longer in memory); fetchRound is the heartbeat round it was issued
	// in, so that a lost one is issued again.
	fetching   bool
	fetchRound uint64
	// stallRound is the heartbeat round since which the follower has had
	// unacknowledged entries without acknowledging any progress.
	stallRound uint64

	// active: the follower answered in this term since the leader's last
	// check-quorum tick (thesis §6.2).
	active bool
	// readAck is the highest ReadIndex round the follower has echoed in
	// this term (thesis §6.4).
	readAck uint64
	// heard is the heartbeat round the follower last answered in (a new
	// voter that stays silent fails its change, thesis §4.2.1).
	heard uint64
}

// progressState is a follower's replication state, as the leader sees it.
type progressState uint8

const (
	stateProbe progressState = iota
	stateReplicate
	stateSnapshot
)

func (s progressState) String() string {
	return [...]string{"probe", "replicate", "snapshot"}[s]
}

func (pr *progress) becomeProbe(next uint64) {
	pr.state, pr.xfer = stateProbe, nil
	pr.probeSent = false
	pr.inflight = pr.inflight[:0]
	pr.next = next
}

func (pr *progress) becomeReplicate() {
	pr.state, pr.xfer = stateReplicate, nil
	pr.probeSent = false
	pr.inflight = pr.inflight[:0]
	pr.next = pr.match + 1
}

func (pr *progress) becomeSnapshot(x *snapshotSend) {
	pr.state, pr.xfer = stateSnapshot, x
	pr.probeSent = false
	pr.inflight = pr.inflight[:0]
	pr.fetching = false
}

// ack frees every in-flight message the follower has acknowledged through
// index match.
func (pr *progress) ack(match uint64) {
	n := 0
	for n < len(pr.inflight) && pr.inflight[n] <= match {
		n++
	}
	pr.inflight = append(pr.inflight[:0], pr.inflight[n:]...)
}
