package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func fullSource() Source {
	return Source{
		Raft: func() Raft {
			return Raft{HasLeader: true, IsLeader: true, Member: true, Term: 3, Commit: 10, Applied: 9, Last: 11, SnapshotIndex: 4, SnapshotBytes: 100, FirstIndex: 2, ConfigurationIndex: 1}
		},
		Match:    func() map[uint64]uint64 { return map[uint64]uint64{2: 10, 3: 8} },
		Inflight: func() map[uint64]int { return map[uint64]int{2: 1, 3: 0} },
		Restarts: func() map[string]int { return map[string]int{"store": 0, "fsm": 2} },
		Pending:  func() (int, int) { return 5, 1 },
	}
}

// exercise updates every metric once.
func exercise(m *Metrics) {
	now := time.Now()
	m.LeaderChanged()
	m.Committed(now)
	m.ProposalFailed()
	m.ReadConfirmed(now)
	m.Fsync(time.Millisecond)
	m.Checkpoint(time.Millisecond)
	m.Applied(time.Microsecond)
	m.Sent(2, 3, 300)
	m.Received(2, 1, 50)
	m.Dropped(3, 4)
	m.Rejected("peer", 1)
	m.FailStop()
	m.SnapshotTaken(1000)
	m.SnapshotChunkSent(500)
	m.SnapshotSent()
	m.SnapshotChunkReceived(500)
	m.SnapshotReceived()
}

// TestMetricsFollowPrometheusConventions lints every metric as promtool
// check metrics does (names, suffixes, units, help), and checks the ones
// issue 14 names are there.
func TestMetricsFollowPrometheusConventions(t *testing.T) {
	m := New(fullSource())
	exercise(m)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{} // name -> how many series
	for _, f := range families {
		series[f.GetName()] = len(f.GetMetric())
		if !strings.HasPrefix(f.GetName(), "ketch_") && !strings.HasPrefix(f.GetName(), "go_") && !strings.HasPrefix(f.GetName(), "process_") {
			t.Errorf("metric %s is not ketch_*, go_* or process_*", f.GetName())
		}
	}
	for _, name := range []string{
		"ketch_has_leader", "ketch_is_leader", "ketch_term", "ketch_commit_index", "ketch_applied_index", "ketch_snapshot_index",
		"ketch_leader_changes_total", "ketch_proposals_committed_total", "ketch_proposals_failed_total", "ketch_proposals_pending",
		"ketch_commit_latency_seconds", "ketch_journal_fsync_duration_seconds", "ketch_bbolt_checkpoint_duration_seconds",
		"ketch_apply_duration_seconds", "ketch_read_index_latency_seconds", "ketch_peer_match_index", "ketch_peer_inflight_appends",
		"ketch_messages_sent_total", "ketch_message_sent_bytes_total", "ketch_messages_received_total", "ketch_message_received_bytes_total",
		"ketch_messages_dropped_total", "ketch_messages_rejected_total", "ketch_child_restarts_total", "ketch_fail_stops_total",
		"ketch_snapshots_taken_total", "ketch_snapshot_taken_bytes_total", "ketch_snapshots_sent_total", "ketch_snapshot_sent_bytes_total",
		"ketch_snapshots_received_total", "ketch_snapshot_received_bytes_total", "go_goroutines", "process_resident_memory_bytes",
	} {
		if series[name] == 0 {
			t.Errorf("no metric %s", name)
		}
	}
	if v := testutil.ToFloat64(m.leaderChanges); v != 1 {
		t.Errorf("leader_changes_total = %v after one change", v)
	}
	if n := series["ketch_peer_match_index"]; n != 2 {
		t.Errorf("peer_match_index has %d series, want one per follower (2)", n)
	}
}

// TestForgetDropsAPeersSeries: a removed member's series go, so the labels
// stay bounded by the member set.
func TestForgetDropsAPeersSeries(t *testing.T) {
	m := New(Source{})
	m.Sent(7, 1, 10)
	m.Received(7, 1, 10)
	if n := testutil.CollectAndCount(m.sentMsgs); n != 1 {
		t.Fatalf("%d series before Forget", n)
	}
	m.Forget(7)
	if n := testutil.CollectAndCount(m.sentMsgs) + testutil.CollectAndCount(m.recvMsgs); n != 0 {
		t.Fatalf("%d series after Forget", n)
	}
}

// TestNilMetricsRecordNothing: a node without metrics holds a nil *Metrics.
func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	exercise(m)
	m.Forget(2)
}

// BenchmarkCommitted is the hot path's cost per committed proposal.
func BenchmarkCommitted(b *testing.B) {
	m := New(Source{})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m.Committed(now)
	}
}

// BenchmarkSent is the cost per RaftBatch handed to the transport.
func BenchmarkSent(b *testing.B) {
	m := New(Source{})
	b.ReportAllocs()
	for b.Loop() {
		m.Sent(2, 10, 1000)
	}
}
