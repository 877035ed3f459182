package web

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
)

// Frame is one picture of the cluster, as /view.json and /events serve it
// (a JSON contract the page reads; keys are never renamed).
type Frame struct {
	ClusterID string `json:"cluster_id"`
	// Self is the node whose page this is.
	Self uint64 `json:"self"`
	// Chaos: the page offers buttons that crash a node's child (the server
	// was started with chaos; each node obeys only if it runs --chaos).
	Chaos bool `json:"chaos"`
	// AtUnixMillis is when the frame was made; IntervalMillis how often
	// the viewer asks the nodes.
	AtUnixMillis   int64 `json:"at_unix_millis"`
	IntervalMillis int64 `json:"interval_millis"`
	// Nodes, by id: every member of the configuration Self uses, and Self.
	Nodes []NodeView `json:"nodes"`
	// Events are the latest things that happened (elections, leader
	// changes, crashes, restarts), oldest first, at most MaxEvents.
	Events []Event `json:"events"`
}

// NodeView is one node in a Frame.
type NodeView struct {
	ID      uint64 `json:"id"`
	Address string `json:"address"`
	// Reachable: it answered within the last few intervals; AgeMillis is
	// how old its latest answer is (the fields below are that answer).
	Reachable bool  `json:"reachable"`
	AgeMillis int64 `json:"age_millis"`

	Role       string `json:"role"`
	Term       uint64 `json:"term"`
	Leader     uint64 `json:"leader"`
	FirstIndex uint64 `json:"first_index"`
	LastIndex  uint64 `json:"last_index"`
	Durable    uint64 `json:"durable"`
	Commit     uint64 `json:"commit"`
	Applied    uint64 `json:"applied"`
	// SnapshotIndex is the latest snapshot's last index (0: none).
	SnapshotIndex uint64 `json:"snapshot_index"`
	SnapshotBytes uint64 `json:"snapshot_bytes"`
	Transferee    uint64 `json:"transferee"`
	NotMember     bool   `json:"not_member"`
	// Members is the configuration this node uses; Outgoing C_old's voters
	// during a joint change.
	Members            []MemberJSON `json:"members"`
	Outgoing           []MemberJSON `json:"outgoing"`
	ConfigurationIndex uint64       `json:"configuration_index"`
	// Recent is the tail of its log, oldest first.
	Recent []EntryView `json:"recent"`
	// Progress is, on the leader, its view of each follower.
	Progress []ProgressView `json:"progress"`
	// Traffic counts the Raft messages exchanged with each peer since the
	// node started (the page draws rates from two frames).
	Traffic []TrafficView `json:"traffic"`
	// Children is the supervision tree under the node supervisor, in start
	// (rest_for_one) order.
	Children []ChildView `json:"children"`
	// Supervisor is the node supervisor's actor id (raft/1).
	Supervisor string `json:"supervisor"`
	Chaos      bool   `json:"chaos"`
	Error      string `json:"error,omitempty"`
}

// EntryView is one log entry's metadata: type is normal, noop or config.
type EntryView struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	Type  string `json:"type"`
	Bytes uint32 `json:"bytes"`
}

// ProgressView is the leader's view of one follower: match and next (Raft
// Figure 2), the state (probe, replicate, snapshot) and the AppendEntries
// in flight.
type ProgressView struct {
	ID       uint64 `json:"id"`
	Match    uint64 `json:"match"`
	Next     uint64 `json:"next"`
	State    string `json:"state"`
	Inflight uint32 `json:"inflight"`
	Active   bool   `json:"active"`
	// SilentRounds: heartbeat rounds since the follower last answered.
	SilentRounds uint64 `json:"silent_rounds"`
}

// TrafficView counts the messages exchanged with one peer.
type TrafficView struct {
	Peer             uint64 `json:"peer"`
	SentMessages     uint64 `json:"sent_messages"`
	SentBytes        uint64 `json:"sent_bytes"`
	ReceivedMessages uint64 `json:"received_messages"`
	ReceivedBytes    uint64 `json:"received_bytes"`
	Reachable        bool   `json:"reachable"`
}

// ChildView is one child of the node supervisor.
type ChildView struct {
	Name                string `json:"name"`
	Restarts            uint64 `json:"restarts"`
	Crashes             uint64 `json:"crashes"`
	LastCrash           string `json:"last_crash"`
	LastCrashUnixMillis int64  `json:"last_crash_unix_millis"`
}

// Event is one thing that happened, in words.
type Event struct {
	AtUnixMillis int64 `json:"at_unix_millis"`
	// Kind is election, leader, crash, restart, membership or down.
	Kind string `json:"kind"`
	Node uint64 `json:"node"`
	Text string `json:"text"`
}

// MaxEvents bounds Frame.Events.
const MaxEvents = 50

func entryType(t pb.EntryType) string {
	switch t {
	case pb.EntryType_ENTRY_TYPE_NORMAL:
		return "normal"
	case pb.EntryType_ENTRY_TYPE_NOOP:
		return "noop"
	case pb.EntryType_ENTRY_TYPE_CONFIG:
		return "config"
	}
	return "unknown"
}

// ViewOf turns a node's status (with detail, if it has it) into its
// NodeView, as reached at addr.
func ViewOf(st *pb.NodeStatus, addr string) NodeView {
	v := NodeView{ID: st.Id, Address: addr, Role: st.Role, Term: st.Term, Leader: st.Leader,
		FirstIndex: st.FirstIndex, LastIndex: st.LastIndex, Commit: st.Commit, Applied: st.Applied,
		SnapshotIndex: st.SnapshotIndex, SnapshotBytes: st.SnapshotBytes, NotMember: st.NotMember,
		Members: MembersOf(st.Configuration), Outgoing: []MemberJSON{}, ConfigurationIndex: st.ConfigurationIndex,
		Recent: []EntryView{}, Progress: []ProgressView{}, Traffic: []TrafficView{}, Children: []ChildView{}, Error: st.Error}
	if c := st.Configuration; c != nil {
		for _, m := range c.Outgoing {
			v.Outgoing = append(v.Outgoing, MemberJSON{ID: m.Id, Address: m.Address, Role: RoleName(m.Role)})
		}
	}
	// The supervisor's start order: the detail's, or this version's
	// (node.Children), then any other name.
	order := slices.Clone(node.Children)
	for _, name := range slices.Sorted(maps.Keys(st.Children)) {
		if !slices.Contains(order, name) {
			order = append(order, name)
		}
	}
	if d := st.Detail; d != nil {
		v.Durable, v.Transferee, v.Chaos, v.Supervisor = d.Durable, d.Transferee, d.Chaos, d.Supervisor
		for _, e := range d.Recent {
			v.Recent = append(v.Recent, EntryView{Index: e.Index, Term: e.Term, Type: entryType(e.Type), Bytes: e.Bytes})
		}
		for _, p := range d.Progress {
			v.Progress = append(v.Progress, ProgressView{ID: p.Id, Match: p.Match, Next: p.Next, State: p.State, Inflight: p.Inflight, Active: p.Active, SilentRounds: p.SilentRounds})
		}
		for _, t := range d.Traffic {
			v.Traffic = append(v.Traffic, TrafficView{Peer: t.Peer, SentMessages: t.SentMessages, SentBytes: t.SentBytes,
				ReceivedMessages: t.ReceivedMessages, ReceivedBytes: t.ReceivedBytes, Reachable: t.Reachable})
		}
		if len(d.Children) > 0 {
			order = d.Children
		}
	}
	for _, name := range order {
		if c := st.Children[name]; c != nil {
			v.Children = append(v.Children, ChildView{Name: name, Restarts: c.Restarts, Crashes: c.Crashes,
				LastCrash: c.LastCrash, LastCrashUnixMillis: c.LastCrashUnixMillis})
		}
	}
	return v
}

// Changes reports what happened between two pictures of the same node, in
// words: an election started, a new leader, a child that crashed or was
// restarted, a new configuration. The viewer and `ketch demo` announce
// them.
func Changes(prev, cur NodeView, at int64) []Event {
	var out []Event
	ev := func(kind, format string, a ...any) {
		out = append(out, Event{AtUnixMillis: at, Kind: kind, Node: cur.ID, Text: fmt.Sprintf(format, a...)})
	}
	switch {
	case cur.Role == "leader" && (prev.Role != "leader" || prev.Term != cur.Term):
		ev("leader", "node %d became leader of term %d", cur.ID, cur.Term)
	case cur.Role == "candidate" && (prev.Role != "candidate" || prev.Term != cur.Term):
		ev("election", "node %d started an election for term %d", cur.ID, cur.Term)
	case cur.Role == "pre-candidate" && prev.Role != "pre-candidate":
		ev("election", "node %d heard from no leader for an election timeout: it asks for pre-votes for term %d (thesis §9.6)", cur.ID, cur.Term+1)
	}
	if cur.Role == "stopped" || cur.Role == "stopping" {
		if prev.Role != cur.Role {
			ev("down", "node %d %s: %s", cur.ID, cur.Role, firstLine(cur.Error))
		}
	}
	before := map[string]ChildView{}
	for _, c := range prev.Children {
		before[c.Name] = c
	}
	var restarted []string
	for _, c := range cur.Children {
		b, ok := before[c.Name]
		if !ok {
			continue
		}
		if c.Crashes > b.Crashes {
			ev("crash", "node %d: %s crashed (%s)", cur.ID, c.Name, firstLine(c.LastCrash))
		}
		if c.Restarts > b.Restarts {
			restarted = append(restarted, c.Name)
		}
	}
	if len(restarted) > 0 {
		ev("restart", "node %d: the supervisor restarted %s (rest_for_one: the crashed child and those started after it)", cur.ID, strings.Join(restarted, ", "))
	}
	if prev.ConfigurationIndex != cur.ConfigurationIndex && cur.ConfigurationIndex != 0 && prev.ID != 0 {
		var ms []string
		for _, m := range cur.Members {
			ms = append(ms, fmt.Sprintf("%d=%s", m.ID, m.Role))
		}
		joint := ""
		if len(cur.Outgoing) > 0 {
			joint = " (joint)"
		}
		ev("membership", "node %d uses configuration %d%s: %s", cur.ID, cur.ConfigurationIndex, joint, strings.Join(ms, " "))
	}
	return out
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
