package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Buckets of the latency histograms, in seconds: 50 µs to 10 s, a factor
// of about 2 apart, which covers an fdatasync on a fast SSD and a commit
// under a slow disk alike.
var latencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Metrics is one node's metrics. Make it with New.
type Metrics struct {
	reg *prometheus.Registry

	leaderChanges      prometheus.Counter
	proposalsCommitted prometheus.Counter
	proposalsFailed    prometheus.Counter
	failStops          prometheus.Counter

	commitLatency prometheus.Histogram
	readLatency   prometheus.Histogram
	fsync         prometheus.Histogram
	checkpoint    prometheus.Histogram
	apply         prometheus.Histogram

	sentMsgs, sentBytes, recvMsgs, recvBytes, dropped *prometheus.CounterVec
	rejected                                          *prometheus.CounterVec

	snapTaken, snapTakenBytes prometheus.Counter
	snapSent, snapSentBytes   prometheus.Counter
	snapRecv, snapRecvBytes   prometheus.Counter

	mu    sync.Mutex
	peers map[uint64]*peerCounters // cached label children
}

type peerCounters struct {
	sentMsgs, sentBytes, recvMsgs, recvBytes, dropped prometheus.Counter
}

// Source is what the scrape-time gauges read. Every field is optional; each
// function must be safe to call from any goroutine and must not block.
type Source struct {
	// Raft reports the fsm's published status.
	Raft func() Raft
	// Match reports, on the leader, each other member's match index.
	Match func() map[uint64]uint64
	// Inflight reports, on the leader, each follower's unacknowledged
	// AppendEntries.
	Inflight func() map[uint64]int
	// Restarts reports each child's restart count (by name).
	Restarts func() map[string]int
	// Pending reports the client writes and reads waiting on the fsm actor.
	Pending func() (writes, reads int)
}

// Raft is the fsm status the gauges show.
type Raft struct {
	HasLeader, IsLeader, Member    bool
	Term, Commit, Applied, Last    uint64
	SnapshotIndex, SnapshotBytes   uint64
	FirstIndex, ConfigurationIndex uint64
}

// New makes a node's metrics, registered, with the Go and process
// collectors, in a registry of their own (Registry).
func New(src Source) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), peers: map[uint64]*peerCounters{}}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ketch", Name: name, Help: help})
	}
	hist := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "ketch", Name: name, Help: help, Buckets: latencyBuckets})
	}
	peerVec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ketch", Name: name, Help: help}, []string{"peer"})
	}
	m.leaderChanges = counter("leader_changes_total", "Times this node saw a new leader (a leader other than the last one it knew).")
	m.proposalsCommitted = counter("proposals_committed_total", "Client writes this node proposed as leader that committed and were handed to the state machine.")
	m.proposalsFailed = counter("proposals_failed_total", "Client writes this node took that were answered with an error (not leader, busy, too large, leadership lost).")
	m.failStops = counter("fail_stops_total", "Times the node supervisor gave up (restart intensity exceeded) and stopped the node.")
	m.commitLatency = hist("commit_latency_seconds", "From a client write reaching the leader's fsm actor to its entry committing.")
	m.readLatency = hist("read_index_latency_seconds", "From a linearizable read reaching the fsm actor to its read index being confirmed (thesis §6.4).")
	m.fsync = hist("journal_fsync_duration_seconds", "One write-ahead journal append with its fdatasync (the store's group commit).")
	m.checkpoint = hist("bbolt_checkpoint_duration_seconds", "One background checkpoint of a full journal file into bbolt (one synced transaction).")
	m.apply = hist("apply_duration_seconds", "The state actor applying one batch of committed entries.")
	m.sentMsgs = peerVec("messages_sent_total", "Raft messages handed to the transport, by destination peer.")
	m.sentBytes = peerVec("message_sent_bytes_total", "Encoded bytes of the Raft messages handed to the transport, by destination peer.")
	m.recvMsgs = peerVec("messages_received_total", "Raft messages received, by sending peer.")
	m.recvBytes = peerVec("message_received_bytes_total", "Encoded bytes of the Raft messages received, by sending peer.")
	m.dropped = peerVec("messages_dropped_total", "Raft messages the sender dropped from the full queue of an unreachable peer, by peer.")
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ketch", Name: "messages_rejected_total",
		Help: "Input the node refused: peer messages failing validation (peer), invalid client requests (client), envelopes dropped by the wire guard (wire)."}, []string{"source"})
	m.snapTaken = counter("snapshots_taken_total", "Snapshots of the state machine this node wrote.")
	m.snapTakenBytes = counter("snapshot_taken_bytes_total", "Bytes of the snapshots this node wrote.")
	m.snapSent = counter("snapshots_sent_total", "Snapshot transfers this node (as leader) completed to a follower.")
	m.snapSentBytes = counter("snapshot_sent_bytes_total", "Snapshot chunk bytes this node read to send to followers.")
	m.snapRecv = counter("snapshots_received_total", "Snapshots this node received from a leader and installed.")
	m.snapRecvBytes = counter("snapshot_received_bytes_total", "Snapshot chunk bytes this node received and staged.")
	for _, source := range []string{"peer", "client", "wire"} {
		m.rejected.WithLabelValues(source) // present at 0 from the start
	}
	m.reg.MustRegister(
		m.leaderChanges, m.proposalsCommitted, m.proposalsFailed, m.failStops,
		m.commitLatency, m.readLatency, m.fsync, m.checkpoint, m.apply,
		m.sentMsgs, m.sentBytes, m.recvMsgs, m.recvBytes, m.dropped, m.rejected,
		m.snapTaken, m.snapTakenBytes, m.snapSent, m.snapSentBytes, m.snapRecv, m.snapRecvBytes,
		&gauges{src: src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry is the registry the node's metrics are in (for promhttp).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) peer(id uint64) *peerCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[id]
	if p == nil {
		l := strconv.FormatUint(id, 10)
		p = &peerCounters{
			sentMsgs: m.sentMsgs.WithLabelValues(l), sentBytes: m.sentBytes.WithLabelValues(l),
			recvMsgs: m.recvMsgs.WithLabelValues(l), recvBytes: m.recvBytes.WithLabelValues(l),
			dropped: m.dropped.WithLabelValues(l),
		}
		m.peers[id] = p
	}
	return p
}

// Forget removes a peer's series, once it left the configuration (so the
// label set stays bounded by the member set).
func (m *Metrics) Forget(id uint64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.peers[id]; !ok {
		return
	}
	delete(m.peers, id)
	l := strconv.FormatUint(id, 10)
	for _, v := range []*prometheus.CounterVec{m.sentMsgs, m.sentBytes, m.recvMsgs, m.recvBytes, m.dropped} {
		v.DeleteLabelValues(l)
	}
}

// LeaderChanged counts a new leader seen.
func (m *Metrics) LeaderChanged() {
	if m != nil {
		m.leaderChanges.Inc()
	}
}

// Committed counts n proposals committed, each proposed at one of since.
func (m *Metrics) Committed(since time.Time) {
	if m != nil {
		m.proposalsCommitted.Inc()
		m.commitLatency.Observe(time.Since(since).Seconds())
	}
}

// ProposalFailed counts a proposal answered with an error.
func (m *Metrics) ProposalFailed() {
	if m != nil {
		m.proposalsFailed.Inc()
	}
}

// ReadConfirmed observes a read index confirmed for a read taken at since.
func (m *Metrics) ReadConfirmed(since time.Time) {
	if m != nil {
		m.readLatency.Observe(time.Since(since).Seconds())
	}
}

// Fsync observes one journal append and fdatasync.
func (m *Metrics) Fsync(d time.Duration) {
	if m != nil {
		m.fsync.Observe(d.Seconds())
	}
}

// Checkpoint observes one bbolt checkpoint.
func (m *Metrics) Checkpoint(d time.Duration) {
	if m != nil {
		m.checkpoint.Observe(d.Seconds())
	}
}

// Applied observes one applied batch.
func (m *Metrics) Applied(d time.Duration) {
	if m != nil {
		m.apply.Observe(d.Seconds())
	}
}

// Sent counts msgs messages of bytes encoded bytes handed over for peer.
func (m *Metrics) Sent(peer uint64, msgs, bytes int) {
	if m != nil {
		p := m.peer(peer)
		p.sentMsgs.Add(float64(msgs))
		p.sentBytes.Add(float64(bytes))
	}
}

// Received counts msgs messages of bytes encoded bytes from peer.
func (m *Metrics) Received(peer uint64, msgs, bytes int) {
	if m != nil {
		p := m.peer(peer)
		p.recvMsgs.Add(float64(msgs))
		p.recvBytes.Add(float64(bytes))
	}
}

// Dropped counts n messages for peer the sender dropped.
func (m *Metrics) Dropped(peer uint64, n int) {
	if m != nil {
		m.peer(peer).dropped.Add(float64(n))
	}
}

// Rejected counts n refused inputs of a source: "peer", "client" or "wire".
func (m *Metrics) Rejected(source string, n int) {
	if m != nil {
		m.rejected.WithLabelValues(source).Add(float64(n))
	}
}

// FailStop counts the node stopping because its children crashed too often.
func (m *Metrics) FailStop() {
	if m != nil {
		m.failStops.Inc()
	}
}

// SnapshotTaken counts a snapshot written, of bytes bytes.
func (m *Metrics) SnapshotTaken(bytes uint64) {
	if m != nil {
		m.snapTaken.Inc()
		m.snapTakenBytes.Add(float64(bytes))
	}
}

// SnapshotChunkSent counts bytes of a snapshot read for a follower.
func (m *Metrics) SnapshotChunkSent(bytes int) {
	if m != nil {
		m.snapSentBytes.Add(float64(bytes))
	}
}

// SnapshotSent counts a transfer to a follower completed.
func (m *Metrics) SnapshotSent() {
	if m != nil {
		m.snapSent.Inc()
	}
}

// SnapshotChunkReceived counts bytes of a snapshot received and staged.
func (m *Metrics) SnapshotChunkReceived(bytes int) {
	if m != nil {
		m.snapRecvBytes.Add(float64(bytes))
	}
}

// SnapshotReceived counts a snapshot from the leader installed.
func (m *Metrics) SnapshotReceived() {
	if m != nil {
		m.snapRecv.Inc()
	}
}
