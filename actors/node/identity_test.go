package node

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// The rules of identity.go, one case each, at the lowest layer: a store and
// a Config.
func TestResolveIdentity(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	peers := map[uint64]string{2: "h:2", 3: "h:3"}
	base := func() *Config {
		return &Config{ID: 1, Listen: "h:1", ClusterID: "c", Peers: clonePeers(peers)}
	}
	open := func(t *testing.T, record *pb.NodeIdentity, legacyLog bool) *logstore.BoltStore {
		t.Helper()
		st, err := logstore.OpenBolt(filepath.Join(t.TempDir(), "ketch-1.db"), logstore.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		if legacyLog {
			if err := st.Write([]logstore.Update{{HardState: &pb.HardState{Term: 3}, Entries: []*pb.Entry{{Index: 1, Term: 1}}}}); err != nil {
				t.Fatal(err)
			}
		}
		if record != nil {
			if err := st.SetIdentity(record); err != nil {
				t.Fatal(err)
			}
		}
		return st
	}
	recorded := identityOf(base())
	for _, tc := range []struct {
		name      string
		record    *pb.NodeIdentity
		legacyLog bool
		edit      func(*Config)
		refuse    string // in the error; "" for accepted
		want      *pb.NodeIdentity
		peers     map[uint64]string // cfg.Peers afterwards
	}{
		{"new data dir: the flags are recorded", nil, false, nil, "", recorded, peers},
		{"new data dir without --peers: a one-node cluster", nil, false, func(c *Config) { c.Peers = nil }, "",
			&pb.NodeIdentity{ClusterId: "c", NodeId: 1, Members: []*pb.Member{{Id: 1, Address: "h:1"}}}, nil},
		{"recorded: the same flags", recorded, false, nil, "", nil, peers},
		{"recorded: no --peers uses the record", recorded, false, func(c *Config) { c.Peers = nil }, "", nil, peers},
		{"recorded: another --id", recorded, false, func(c *Config) { c.ID = 2 }, "belongs to node 1", nil, nil},
		{"recorded: another --cluster-id", recorded, false, func(c *Config) { c.ClusterID = "d" }, `belongs to cluster "c"`, nil, nil},
		{"recorded: another --listen", recorded, false, func(c *Config) { c.Listen = "h:9" }, "--listen h:1", nil, nil},
		{"recorded: other --peers", recorded, false, func(c *Config) { c.Peers = map[uint64]string{2: "h:2"} }, "omit --peers", nil, nil},
		{"recorded: --peers \"\" on a cluster of three", recorded, false, func(c *Config) { c.Peers = map[uint64]string{} }, "disagrees", nil, nil},
		{"older data dir without --peers", nil, true, func(c *Config) { c.Peers = nil }, `--peers ""`, nil, nil},
		{"older data dir with its --peers", nil, true, nil, "", recorded, peers},
		{"older one-node data dir with --peers \"\"", nil, true, func(c *Config) { c.Peers = map[uint64]string{} }, "",
			&pb.NodeIdentity{ClusterId: "c", NodeId: 1, Members: []*pb.Member{{Id: 1, Address: "h:1"}}}, map[uint64]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := open(t, tc.record, tc.legacyLog)
			cfg := base()
			if tc.edit != nil {
				tc.edit(cfg)
			}
			got, err := resolveIdentity(st, cfg, quiet)
			if tc.refuse != "" {
				if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.refuse) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("got %v, want one line of ErrBadConfig saying %q", err, tc.refuse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("identity to record %v, want %v", got, tc.want)
			}
			if len(cfg.Peers) != len(tc.peers) {
				t.Fatalf("peers %v, want %v", cfg.Peers, tc.peers)
			}
			if id, err := st.Identity(); err != nil || !proto.Equal(id, tc.record) {
				t.Fatalf("resolveIdentity wrote %v to the store (%v); it must only check", id, err)
			}
		})
	}
}

func clonePeers(m map[uint64]string) map[uint64]string {
	out := map[uint64]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// A first start refused for another reason (here: the port is taken)
// records no identity, so fixing the flag is enough: the next start, with
// another port, is a first start again.
func TestRefusedFirstStartRecordsNothing(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	cfg := Config{ID: 1, Listen: taken.Addr().String(), Peers: map[uint64]string{}, DataDir: dir,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if _, err := Start(cfg); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("start on a taken port: %v, want ErrBadConfig", err)
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = free.Addr().String()
	_ = free.Close()
	n, err := Start(cfg)
	if err != nil {
		t.Fatalf("the corrected first start was refused: %v", err)
	}
	n.Stop()
	<-n.Done()
}

// TestConfigChecksAddressesAndTimeouts: a port out of range, an address
// without a host and a heartbeat too close to the election timeout are
// each refused with one line (issue 16, item 5).
func TestConfigChecksAddressesAndTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"listen port 99999", func(c *Config) { c.Listen = "127.0.0.1:99999" }, "port must be a number from 1 to 65535"},
		{"peer port 0", func(c *Config) { c.Peers = map[uint64]string{2: "127.0.0.1:0"} }, "peer 2's address"},
		{"peer without a host", func(c *Config) { c.Peers = map[uint64]string{2: ":7002"} }, "has no host"},
		{"heartbeat near the election timeout", func(c *Config) { c.ElectionTimeout, c.HeartbeatInterval = 100*time.Millisecond, 60*time.Millisecond }, "at most half"},
		{"negative timeout", func(c *Config) { c.ElectionTimeout = -time.Second }, "must be positive"},
	} {
		c := Config{ID: 1, Listen: "127.0.0.1:7001", DataDir: t.TempDir()}
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Validate = %v, want one line with %q", tc.name, err, tc.want)
		}
	}
	ok := Config{ID: 1, Listen: "127.0.0.1:7001", DataDir: t.TempDir(), ElectionTimeout: 300 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond,
		Peers: map[uint64]string{2: "127.0.0.1:7002"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a good configuration: %v", err)
	}
}

// TestInconsistentLogIsCorrupt: a loaded log that breaks Raft's invariants
// on stored state (what a damaged bbolt page that lost the hard state
// looks like) is reported, not handed to the fsm.
func TestInconsistentLogIsCorrupt(t *testing.T) {
	ents := func(terms ...uint64) []*pb.Entry {
		var out []*pb.Entry
		for i, tm := range terms {
			out = append(out, &pb.Entry{Index: uint64(i + 1), Term: tm})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		st   logstore.State
		bad  bool
	}{
		{"empty", logstore.State{}, false},
		{"a good log", logstore.State{HardState: &pb.HardState{Term: 3}, Entries: ents(1, 1, 3)}, false},
		{"the hard state lost", logstore.State{Entries: ents(1)}, true},
		{"an entry above the term", logstore.State{HardState: &pb.HardState{Term: 2}, Entries: ents(1, 3)}, true},
		{"terms going down", logstore.State{HardState: &pb.HardState{Term: 3}, Entries: ents(2, 1)}, true},
		{"a base above the term", logstore.State{HardState: &pb.HardState{Term: 1}, Base: logstore.Base{Index: 5, Term: 2}}, true},
	} {
		if got := inconsistency(tc.st); (got != "") != tc.bad {
			t.Errorf("%s: inconsistency = %q, want bad %v", tc.name, got, tc.bad)
		}
	}
}
