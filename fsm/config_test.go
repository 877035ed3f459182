package fsm

// Configuration (CONVENTIONS: "configuration is a struct with documented
// defaults and a Validate()") and the fsm's own invariants (CONVENTIONS:
// "Invariants are asserted (panic with a message naming the invariant)").

import (
	pb "github.com/ketch-raft/ketch/messages"
	"slices"
	"strings"
	"testing"
)

// CONVENTIONS ("configuration is a struct with documented defaults and a
// Validate()") and api.go: Validate reports the first problem, and New
// refuses to build a node from a config that fails it. Raft §5.6 asks for
// broadcastTime ≪ electionTimeout, hence the heartbeat bound.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(c *Config)
		wantErr string // a fragment of the error; "" for none
	}{
		{"valid", func(c *Config) {}, ""},
		{"single node", func(c *Config) { c.Members = []uint64{1} }, ""},
		{"id 0", func(c *Config) { c.ID = 0 }, "positive"},
		{"self missing from members", func(c *Config) { c.Members = []uint64{2, 3} }, "must include"},
		{"no members: a server that joins", func(c *Config) { c.Members = nil }, ""},
		{"members and a bootstrap configuration", func(c *Config) { c.Bootstrap = &pb.Configuration{} }, "not both"},
		{"a bootstrap configuration without this node", func(c *Config) {
			c.Members, c.Bootstrap = nil, &pb.Configuration{Members: []*pb.Member{{Id: 2, Role: pb.MemberRole_MEMBER_ROLE_VOTER}}}
		}, "must include"},
		{"duplicate member", func(c *Config) { c.Members = []uint64{1, 2, 2} }, "twice"},
		{"member 0", func(c *Config) { c.Members = []uint64{1, 0, 3} }, "positive"},
		{"heartbeat equal to election timeout", func(c *Config) { c.HeartbeatInterval = c.ElectionTimeout }, "heartbeat"},
		{"heartbeat above election timeout", func(c *Config) { c.HeartbeatInterval = 2 * c.ElectionTimeout }, "heartbeat"},
		{"default heartbeat above election timeout", func(c *Config) {
			c.HeartbeatInterval, c.ElectionTimeout = 0, DefaultHeartbeatInterval
		}, "heartbeat"},
		{"nil Rand", func(c *Config) { c.Rand = nil }, "Rand"},
		{"negative MaxInflight", func(c *Config) { c.MaxInflight = -1 }, "MaxInflight"},
		{"negative MaxMsgBytes", func(c *Config) { c.MaxMsgBytes = -1 }, "MaxMsgBytes"},
		{"negative RetransmitRounds", func(c *Config) { c.RetransmitRounds = -1 }, "RetransmitRounds"},
		// thesis §6.4.1: a lease rests on followers refusing votes.
		{"lease reads without check-quorum", func(c *Config) { c.LeaseReads = true }, "check-quorum"},
		{"lease reads with check-quorum", func(c *Config) { c.LeaseReads, c.DisableCheckQuorum = true, false }, ""},
		{"negative MaxClockDrift", func(c *Config) { c.MaxClockDrift = -0.1 }, "MaxClockDrift"},
		{"MaxClockDrift above 1", func(c *Config) { c.MaxClockDrift = 1.5 }, "MaxClockDrift"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(1)
			tt.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate: %v, want an error mentioning %q", err, tt.wantErr)
			}
			// New validates too, and builds no node from a bad config.
			n, nerr := New(cfg, Restore{})
			if (nerr == nil) != (err == nil) || (nerr != nil && n != nil) {
				t.Fatalf("New: node %v error %v; Validate said %v", n != nil, nerr, err)
			}
		})
	}
}

// api.go: zero durations and limits take the documented defaults.
func TestConfigDefaults(t *testing.T) {
	cfg := Config{ID: 1, Members: []uint64{1}, Rand: seededRand(1)}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"ElectionTimeout", cfg.ElectionTimeout, DefaultElectionTimeout},
		{"HeartbeatInterval", cfg.HeartbeatInterval, DefaultHeartbeatInterval},
		{"MaxInflight", cfg.MaxInflight, DefaultMaxInflight},
		{"MaxMsgBytes", cfg.MaxMsgBytes, DefaultMaxMsgBytes},
		{"RetransmitRounds", cfg.RetransmitRounds, DefaultRetransmitRounds},
	} {
		if f.got != f.want {
			t.Errorf("%s defaults to %v, want %v", f.name, f.got, f.want)
		}
	}
	if DefaultHeartbeatInterval >= DefaultElectionTimeout/2 {
		t.Fatalf("default heartbeat %v is not well below the election timeout %v (Raft §5.6)", DefaultHeartbeatInterval, DefaultElectionTimeout)
	}
}

// New keeps its own copy of the members, so the caller's slice can change.
func TestNewCopiesMembers(t *testing.T) {
	cfg := testConfig(1)
	n := newNode(t, cfg, Restore{})
	cfg.Members[1] = 9
	if n.cfg.Members[1] != 2 || !slices.Equal(n.peers, []uint64{2, 3}) {
		t.Fatalf("members %v peers %v changed with the caller's slice", n.cfg.Members, n.peers)
	}
}

// Role and Timer names appear in logs and status output.
func TestRoleAndTimerNames(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{Follower.String(), "follower"}, {Candidate.String(), "candidate"}, {Leader.String(), "leader"},
		{PreCandidate.String(), "pre-candidate"}, {Role(9).String(), "role(9)"},
		{ElectionTimer.String(), "election"}, {HeartbeatTimer.String(), "heartbeat"}, {Timer(9).String(), "timer(9)"},
	} {
		if tt.got != tt.want {
			t.Errorf("name %q, want %q", tt.got, tt.want)
		}
	}
}

// bogusEvent is an Event the fsm does not know.
type bogusEvent struct{}

func (bogusEvent) isEvent() {}

// Invariants: the store reports only what it was asked to persist; an event
// type the fsm does not know is a programming error. Both panic with a
// message naming the problem.
func TestInvariantViolationsPanic(t *testing.T) {
	tests := []struct {
		name string
		f    func(n *Node)
		want string
	}{
		{"Persisted before any Persist", func(n *Node) { n.Step(Persisted{Seq: 1}) }, "invariant"},
		{"Persisted beyond the last Persist", func(n *Node) {
			fireElection(t, n) // Persist seq 1
			n.Step(Persisted{Seq: 2})
		}, "invariant"},
		{"unknown event", func(n *Node) { n.Step(bogusEvent{}) }, "unknown event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), Restore{})
			mustPanic(t, tt.want, func() { tt.f(n) })
		})
	}
}

// Persisted reports "everything up to Seq"; a report of a seq already known
// durable (a repeat, or a late smaller one) changes nothing.
func TestPersistedAlreadyReportedIgnored(t *testing.T) {
	n := newNode(t, testConfig(1), Restore{})
	fireElection(t, n)
	fireElection(t, n) // Persist seqs 1 and 2
	if acts := n.Step(Persisted{Seq: 2}); len(sent(acts)) == 0 {
		t.Fatalf("Persisted{2} released nothing: %v", describe(acts))
	}
	for _, seq := range []uint64{2, 1, 0} {
		before := n.Status()
		if acts := n.Step(Persisted{Seq: seq}); len(acts) != 0 || n.Status() != before {
			t.Fatalf("repeated Persisted{%d} caused %v", seq, describe(acts))
		}
	}
}
