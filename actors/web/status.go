package web

import (
	pb "github.com/ketch-raft/ketch/messages"
)

// StatusJSON is one node in `ketch status --json`; the keys are a contract.
type StatusJSON struct {
	ID        uint64               `json:"id"`
	Role      string               `json:"role"`
	Term      uint64               `json:"term"`
	Leader    uint64               `json:"leader"`
	LastIndex uint64               `json:"last_index"`
	Commit    uint64               `json:"commit"`
	Applied   uint64               `json:"applied"`
	Children  map[string]ChildJSON `json:"children"`
	Address   string               `json:"address"`
	// LogInMemory: log entries the node's fsm holds in memory (bounded by
	// its log cache); added after the first release, so not in the
	// original contract, but never renamed.
	LogInMemory uint64 `json:"log_in_memory"`
	// Refused input since the node started (issue 11): peer messages that
	// failed validation, client requests refused as invalid, envelopes the
	// wire guard dropped, and requests answered BUSY.
	RejectedPeerMessages   uint64 `json:"rejected_peer_messages"`
	RejectedClientRequests uint64 `json:"rejected_client_requests"`
	RejectedWireMessages   uint64 `json:"rejected_wire_messages"`
	BusyRefusals           uint64 `json:"busy_refusals"`
	// Snapshots (issue 12): the latest snapshot's last included index (0:
	// none) and size, and the first index the log still holds.
	SnapshotIndex uint64 `json:"snapshot_index"`
	SnapshotBytes uint64 `json:"snapshot_bytes"`
	FirstIndex    uint64 `json:"first_index"`
	// Membership (issue 13): the configuration this node uses, with each
	// member's role, the index of its entry, whether this node is not in
	// it (removed, or joining and not added yet), and on the leader every
	// other member's match index.
	Members            []MemberJSON      `json:"members"`
	ConfigurationIndex uint64            `json:"configuration_index"`
	NotMember          bool              `json:"not_member,omitempty"`
	Match              map[uint64]uint64 `json:"match,omitempty"`
	Error              string            `json:"error,omitempty"`
}

// ChildJSON is one child of the node supervisor in StatusJSON.
type ChildJSON struct {
	Restarts  uint64 `json:"restarts"`
	LastCrash string `json:"last_crash"`
}

// FromStatus is the StatusJSON of a node's status, as reached at addr (err:
// why it was not).
func FromStatus(st *pb.NodeStatus, addr string, err error) StatusJSON {
	s := StatusJSON{Address: addr, Children: map[string]ChildJSON{}, Role: "unreachable", Members: []MemberJSON{}}
	if st != nil {
		s = StatusJSON{ID: st.Id, Role: st.Role, Term: st.Term, Leader: st.Leader, LastIndex: st.LastIndex,
			Commit: st.Commit, Applied: st.Applied, Address: addr, Error: st.Error, Children: map[string]ChildJSON{},
			LogInMemory: st.LogInMemory, RejectedPeerMessages: st.RejectedPeerMessages, RejectedClientRequests: st.RejectedClientRequests,
			RejectedWireMessages: st.RejectedWireMessages, BusyRefusals: st.BusyRefusals,
			SnapshotIndex: st.SnapshotIndex, SnapshotBytes: st.SnapshotBytes, FirstIndex: st.FirstIndex,
			Members: MembersOf(st.Configuration), ConfigurationIndex: st.ConfigurationIndex, NotMember: st.NotMember, Match: st.Match}
		for name, c := range st.Children {
			s.Children[name] = ChildJSON{Restarts: c.Restarts, LastCrash: c.LastCrash}
		}
	}
	if err != nil && s.Error == "" {
		s.Error = err.Error()
	}
	return s
}

// MemberJSON is one member in 'ketch member list --json' (a JSON array).
type MemberJSON struct {
	ID      uint64 `json:"id"`
	Address string `json:"address"`
	Role    string `json:"role"`
}

// RoleName is a member role as status and member list print it.
func RoleName(r pb.MemberRole) string {
	switch r {
	case pb.MemberRole_MEMBER_ROLE_VOTER:
		return "voter"
	case pb.MemberRole_MEMBER_ROLE_LEARNER:
		return "learner"
	}
	return "unknown"
}

// MembersOf lists a configuration's members (never nil, for JSON's []).
func MembersOf(c *pb.Configuration) []MemberJSON {
	out := []MemberJSON{}
	if c == nil {
		return out
	}
	for _, m := range c.Members {
		out = append(out, MemberJSON{ID: m.Id, Address: m.Address, Role: RoleName(m.Role)})
	}
	return out
}
