package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// gauges is the scrape-time collector: it reads what the actors publish
// (Source) and reports it as const metrics, so nothing on the hot path
// updates these.
type gauges struct{ src Source }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("ketch_"+name, help, labels, nil)
}

var (
	dHasLeader  = desc("has_leader", "1 if this node leads, or follows a leader it heard from within an election timeout (leader stickiness, Raft thesis 4.2.3); else 0.")
	dIsLeader   = desc("is_leader", "1 if this node is the leader, else 0.")
	dIsMember   = desc("is_member", "1 if this node is in the configuration it knows, else 0 (removed, or joining).")
	dTerm       = desc("term", "The node's current term (Raft Figure 2).")
	dCommit     = desc("commit_index", "The highest log index known committed.")
	dApplied    = desc("applied_index", "The highest log index handed to the state machine.")
	dLast       = desc("last_index", "The last index of the node's log.")
	dFirst      = desc("first_index", "The first index the node's log still holds (earlier ones are in snapshots).")
	dSnapIndex  = desc("snapshot_index", "The last index of the latest durable snapshot (0: none).")
	dSnapBytes  = desc("snapshot_bytes", "The size of the latest durable snapshot.")
	dConfIndex  = desc("configuration_index", "The log index of the configuration in use (0: the bootstrap one).")
	dPendingW   = desc("proposals_pending", "Client writes waiting on the fsm actor (queued, proposed, not yet committed).")
	dPendingR   = desc("reads_pending", "Client reads waiting on the fsm actor for their read index.")
	dMatch      = desc("peer_match_index", "On the leader: the highest index known replicated on each other member (Raft Figure 2).", "peer")
	dInflight   = desc("peer_inflight_appends", "On the leader: AppendEntries sent to each follower and not yet acknowledged.", "peer")
	dRestarts   = desc("child_restarts_total", "Restarts of each child of the node supervisor, its own crashes and rest_for_one restarts alike.", "child")
	boolFloat   = map[bool]float64{false: 0, true: 1}
	allGaugeDsc = []*prometheus.Desc{dHasLeader, dIsLeader, dIsMember, dTerm, dCommit, dApplied, dLast, dFirst,
		dSnapIndex, dSnapBytes, dConfIndex, dPendingW, dPendingR, dMatch, dInflight, dRestarts}
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allGaugeDsc {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if g.src.Raft != nil {
		r := g.src.Raft()
		gauge(dHasLeader, boolFloat[r.HasLeader])
		gauge(dIsLeader, boolFloat[r.IsLeader])
		gauge(dIsMember, boolFloat[r.Member])
		gauge(dTerm, float64(r.Term))
		gauge(dCommit, float64(r.Commit))
		gauge(dApplied, float64(r.Applied))
		gauge(dLast, float64(r.Last))
		gauge(dFirst, float64(r.FirstIndex))
		gauge(dSnapIndex, float64(r.SnapshotIndex))
		gauge(dSnapBytes, float64(r.SnapshotBytes))
		gauge(dConfIndex, float64(r.ConfigurationIndex))
	}
	if g.src.Pending != nil {
		w, r := g.src.Pending()
		gauge(dPendingW, float64(w))
		gauge(dPendingR, float64(r))
	}
	if g.src.Match != nil {
		for id, v := range g.src.Match() {
			gauge(dMatch, float64(v), strconv.FormatUint(id, 10))
		}
	}
	if g.src.Inflight != nil {
		for id, v := range g.src.Inflight() {
			gauge(dInflight, float64(v), strconv.FormatUint(id, 10))
		}
	}
	if g.src.Restarts != nil {
		for name, v := range g.src.Restarts() {
			ch <- prometheus.MustNewConstMetric(dRestarts, prometheus.CounterValue, float64(v), name)
		}
	}
}
