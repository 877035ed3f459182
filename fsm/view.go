package fsm

import (
	"maps"
	"slices"

	pb "github.com/ketch-raft/ketch/messages"
)

// PeerView is the leader's view of one follower (Raft Figure 2's
// nextIndex and matchIndex, with the replication state of progress.go),
// for observers such as the live view. It is a copy.
type PeerView struct {
	ID, Match, Next uint64
	// State is "probe", "replicate" or "snapshot".
	State string
	// Inflight counts AppendEntries sent and not yet acknowledged.
	Inflight int
	// Active: the follower answered since the last check-quorum tick;
	// SilentRounds: heartbeat rounds since it last answered (0: in this
	// round).
	Active       bool
	SilentRounds uint64
}

// EntryView is a log entry's metadata, without its data.
type EntryView struct {
	Index, Term uint64
	Type        pb.EntryType
	Bytes       int
}

// Progress reports the leader's view of each follower, by id; nil on a
// node that does not lead. It does not change the node.
func (n *Node) Progress() []PeerView {
	if n.role != Leader {
		return nil
	}
	out := make([]PeerView, 0, len(n.progress))
	for _, id := range slices.Sorted(maps.Keys(n.progress)) {
		pr := n.progress[id]
		out = append(out, PeerView{ID: id, Match: pr.match, Next: pr.next, State: pr.state.String(),
			Inflight: len(pr.inflight), Active: pr.active, SilentRounds: n.round - min(pr.heard, n.round)})
	}
	return out
}

// Recent reports the metadata of up to k of the last entries the node's log
// holds in memory, oldest first. It does not change the node.
func (n *Node) Recent(k int) []EntryView {
	ents := n.log.entries
	if len(ents) > k {
		ents = ents[len(ents)-k:]
	}
	out := make([]EntryView, len(ents))
	for i, e := range ents {
		out[i] = EntryView{Index: e.Index, Term: e.Term, Type: e.Type, Bytes: len(e.Data)}
	}
	return out
}
