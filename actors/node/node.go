// Package node assembles one ketch node: an actor system with Proto.Actor
// remote on the node's address, and under it the node supervisor with its
// children (ARCHITECTURE §5):
//
//	raft/<group>               supervisor, rest_for_one, bounded restarts
//	├── raft/<group>/store     the bbolt log (logstore)
//	├── raft/<group>/state     the replicated state machine (actors/state)
//	├── raft/<group>/fsm       consensus (actors/consensus around fsm)
//	├── raft/<group>/sender    delivery to peers (sender)
//	└── raft/<group>/gateway   client boundary (actors/gateway)
//
// Actor ids are stable, so peers address raft/<group>/fsm and clients
// raft/<group>/gateway at a node's address without any lookup; the wire
// guard admits each message type for its actor only (Routes).
//
// Before anything starts, the data dir's identity is checked (identity.go):
// a node never takes part under an identity its disk disagrees with.
//
// It must never hide a fail-stop: when the supervisor gives up, Done is
// closed and Err says why, and the binary exits non-zero; a corrupt data
// file stops the node with an Err wrapping logstore.ErrCorrupt.
package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/consensus"
	"github.com/ketch-raft/ketch/actors/gateway"
	"github.com/ketch-raft/ketch/actors/kv"
	"github.com/ketch-raft/ketch/actors/metrics"
	"github.com/ketch-raft/ketch/actors/state"
	"github.com/ketch-raft/ketch/actors/statemachine"
	"github.com/ketch-raft/ketch/fsm"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
	"github.com/ketch-raft/ketch/supervisor"
	"google.golang.org/protobuf/proto"
)

// Group is the Raft group every node runs for now; actor names carry it so
// that a node can host several groups later.
const Group = 1

// SupervisorName is the name the node supervisor is spawned with.
var SupervisorName = fmt.Sprintf("raft/%d", Group)

// Ids of the actors of a node started with Start (at the root of its own
// actor system).
var (
	SupervisorID = SupervisorName
	FSMID        = supervisor.ChildID(SupervisorID, "fsm")
	GatewayID    = supervisor.ChildID(SupervisorID, "gateway")
)

// Children lists the children in start order; crash requests name them.
var Children = []string{"store", "state", "fsm", "sender", "gateway"}

// ErrBadConfig marks a configuration problem (the CLI exits 2 on it).
var ErrBadConfig = errors.New("bad configuration")

// Config configures a node.
type Config struct {
	// ID is this node's id, a positive integer.
	ID uint64
	// Listen is the host:port this node's remote listens on; peers and
	// clients reach it there.
	Listen string
	// Peers maps the other members' ids to their addresses: the
	// configuration a new cluster is bootstrapped with (every founding
	// member must be given the same). Once the log holds a configuration
	// (a membership change), that is used instead (thesis §4.1).
	Peers map[uint64]string
	// Join starts a server that is not part of the bootstrap: it takes no
	// Peers, knows nobody, and takes part once the cluster's leader adds
	// it (`ketch member add`), before or after it started.
	Join bool
	// DataDir holds the node's bbolt file (ketch-<group>.db).
	DataDir string
	// ClusterID names the cluster. Default "ketch".
	ClusterID string
	// Chaos lets `ketch crash` make this node's actors panic.
	Chaos bool
	// ElectionTimeout and HeartbeatInterval tune the fsm (see fsm.Config).
	ElectionTimeout, HeartbeatInterval time.Duration
	// MaxRestarts within RestartWindow bound the supervisor (defaults 5
	// in 10s); past it the node fail-stops.
	MaxRestarts   int
	RestartWindow time.Duration
	// LeaseReads serves reads on the leader without a heartbeat round
	// while its lease holds (thesis §6.4.1). Safe only while clocks run at
	// rates within fsm.DefaultMaxClockDrift of each other and timers fire
	// on time; off by default. Reads are linearizable either way.
	LeaseReads bool
	// LogCacheEntries is how many applied log entries the fsm keeps in
	// memory (fsm.Config.LogCacheEntries, default 8192); older ones stay
	// on disk only, so memory does not grow with the log.
	LogCacheEntries int
	// Limits bounds keys, entries, messages and batches; zero fields take
	// messages.DefaultLimits. Every node of a cluster must use the same.
	Limits pb.Limits
	// MaxUncommittedBytes bounds the entries a leader holds that have not
	// committed (fsm.Config.MaxUncommittedBytes, default 64 MiB), and
	// MaxPendingRequests the client writes and the client reads waiting on
	// the fsm actor (each, default 16384). Past either, clients are
	// answered BUSY at once and retry after a pause.
	MaxUncommittedBytes int
	MaxPendingRequests  int
	// DisableCheckQuorum turns check-quorum off (fsm.Config): a leader cut
	// off from its followers then keeps leading until it hears of a higher
	// term. Only for tests of that situation; lease reads need it on.
	DisableCheckQuorum bool
	// StateMachine builds the replicated state machine, empty; it is
	// called at every (re)start of the state actor. Nil means the built-in
	// key-value store (actors/kv), the only one typed requests (the CLI's
	// put, get, delete, cas) work with; any other gets opaque commands and
	// queries (client.Propose, client.Query). Every node of a cluster must
	// run the same.
	StateMachine func() statemachine.StateMachine
	// Snapshots (Raft §7): the state machine is snapshotted once
	// SnapshotEntries entries (default 8192; negative: never by count) or
	// SnapshotBytes bytes of log (default 64 MiB; negative: never by
	// size) were applied since the latest and, with a large state, once
	// those bytes add up to SnapshotGrowth times the latest snapshot's
	// size (default 1; negative: no such condition; Raft thesis §5.1.1's
	// expansion factor, which bounds the disk bandwidth snapshots take).
	// The log is then compacted behind it but for SnapshotTrailing entries
	// (default 4096), kept for followers that lag a little. Followers that
	// lag more are sent the snapshot in chunks of SnapshotChunkBytes
	// (default 1 MiB). Snapshots live in DataDir/snapshots.
	// DisableSnapshots keeps none: the log grows forever and a restart
	// replays it all (for comparisons only).
	SnapshotEntries    int
	SnapshotBytes      int64
	SnapshotGrowth     float64
	SnapshotTrailing   int
	SnapshotChunkBytes int
	// SnapshotWindow is how many snapshot chunks the leader keeps in
	// flight to one follower (fsm.Config.MaxSnapshotChunks; 0 takes its
	// default, 1).
	SnapshotWindow   int
	DisableSnapshots bool
	// ExtraRoutes lets the wire guard admit, for an embedder's own actors
	// (StartIn), the protobuf types they receive from the network: actor
	// id -> full message names. A node admits nothing else.
	ExtraRoutes map[string][]string
	// UnsafeNoSync turns fsync off: acknowledged writes can be lost on
	// power failure. For benchmarks of the rest of the path only.
	UnsafeNoSync bool
	// Metrics turns on the node's Prometheus metrics (Node.Metrics; the
	// CLI serves them with --http). Off, the actors record nothing.
	Metrics bool
	// TLS, when its files are given (--tls-ca, --tls-cert, --tls-key),
	// makes every connection to and from the node mutual TLS 1.3: its
	// certificate must name this node of this cluster
	// (ketch://CLUSTER/node/ID, 'ketch certs node'), peers' and clients'
	// must chain to the CA, and Raft messages must come from the node
	// their connection's certificate names. Plaintext is refused.
	TLS    certs.Files
	Logger *slog.Logger
}

// DefaultClusterID is the cluster id when none is given.
const DefaultClusterID = "ketch"

// Validate fills defaults and reports the first problem, wrapped in
// ErrBadConfig.
func (c *Config) Validate() error {
	if c.ClusterID == "" {
		c.ClusterID = DefaultClusterID
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ID == 0 {
		return bad("--id must be a positive integer")
	}
	if len(c.ClusterID) > pb.MaxClusterIDBytes {
		return bad("--cluster-id is %d bytes; the limit is %d", len(c.ClusterID), pb.MaxClusterIDBytes)
	}
	c.Limits = c.Limits.WithDefaults()
	if err := c.Limits.Validate(); err != nil {
		return bad("%v", err)
	}
	if c.LeaseReads && c.DisableCheckQuorum {
		return bad("lease reads need check-quorum")
	}
	if err := checkAddr("--listen", c.Listen); err != nil {
		return err
	}
	if c.ElectionTimeout < 0 || c.HeartbeatInterval < 0 {
		return bad("--election-timeout and --heartbeat must be positive")
	}
	if et, hb := c.ElectionTimeout, c.HeartbeatInterval; et > 0 && hb > 0 && hb*2 > et {
		// Raft §5.6: broadcastTime ≪ electionTimeout; a follower must hear
		// several heartbeats per election timeout or it campaigns for
		// nothing.
		return bad("--heartbeat %v must be at most half the --election-timeout %v (a tenth is usual)", hb, et)
	}
	if c.Join && len(c.Peers) > 0 {
		return bad("--join starts a server that the cluster adds later; it takes no --peers (the cluster's configuration comes from its leader)")
	}
	for id, addr := range c.Peers {
		if id == 0 || id == c.ID {
			return bad("peer id %d: peers must be the other members, with positive ids", id)
		}
		if err := checkAddr(fmt.Sprintf("peer %d's address", id), addr); err != nil {
			return err
		}
		if addr == c.Listen {
			return bad("peer %d has this node's own address %s", id, addr)
		}
	}
	if c.DataDir == "" {
		return bad("--data is required")
	}
	if err := c.TLS.Validate("--tls-ca", "--tls-cert", "--tls-key"); err != nil {
		return bad("%v", err)
	}
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return bad("cannot create data dir: %v", err)
	}
	probe := filepath.Join(c.DataDir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		return bad("data dir %s is not writable: %v", c.DataDir, err)
	}
	_ = os.Remove(probe)
	return nil
}

// checkAddr checks a host:port address whose port is a number in 1..65535.
func checkAddr(what, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad("%s %q is not HOST:PORT", what, addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return bad("%s %q: the port must be a number from 1 to 65535", what, addr)
	}
	if host == "" {
		return bad("%s %q has no host: peers and clients need an address to reach", what, addr)
	}
	return nil
}

// Node is a running ketch node.
type Node struct {
	cfg Config
	ids Names
	// ownSystem: the node made its actor system (Start) and shuts it down
	// on Stop; a node started in a caller's system (StartIn) stops only
	// its own tree and remote.
	ownSystem bool
	system    *actor.ActorSystem
	remote    *remote.Remote
	sup       *supervisor.Supervisor
	sup0      *actor.PID
	send      *sender.Sender

	raft atomic.Pointer[fsm.Status]
	// The leader last seen (only the fsm actor writes it), for
	// leader_changes_total; and the fsm's latest View (for the live view).
	lastLeader uint64
	view       atomic.Pointer[consensus.View]
	metrics    *metrics.Metrics
	// The configuration in use and, on the leader, the match indexes.
	conf    atomic.Pointer[fsm.ConfigState]
	match   atomic.Pointer[map[uint64]uint64]
	applied atomic.Uint64
	// The latest snapshot's index and size (state.Config.OnSnapshot).
	snapIndex, snapBytes atomic.Uint64
	// Counters of refused input, published in Status.
	fsmStats       consensus.Stats
	rejectedClient atomic.Uint64 // by the gateway
	rejectedWire   atomic.Uint64 // by the wire guard

	corrupt atomic.Pointer[error] // the store found the data file corrupt

	stopOnce sync.Once
	done     chan struct{}
	errMu    sync.Mutex
	err      error
}

// Names are the actor ids of one node's tree. Peers address each other's
// fsm at the same id, so every node of a cluster must use the same Names:
// started with Start, or with StartIn under parents of the same id.
type Names struct {
	Supervisor, FSM, Gateway string
}

// NamesUnder returns the ids of a node's actors under a parent actor id
// ("" for the root, as Start uses).
func NamesUnder(parent string) Names {
	sup := SupervisorName
	if parent != "" {
		sup = parent + "/" + SupervisorName
	}
	return Names{Supervisor: sup, FSM: supervisor.ChildID(sup, "fsm"), Gateway: supervisor.ChildID(sup, "gateway")}
}

// Names returns the ids of this node's actors.
func (n *Node) Names() Names { return n.ids }

// Start starts a node in an actor system of its own and returns once its
// children are running.
func Start(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The logger factory quiets protoactor's own logging.
	system := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(cfg.Logger, slog.LevelWarn)))
	n, err := start(system.Root, cfg, true)
	if err != nil {
		system.Shutdown()
		return nil, err
	}
	if err := n.awaitReady(10 * time.Second); err != nil {
		return nil, err
	}
	return n, nil
}

// StartIn starts a node inside the caller's actor system, as a child of
// parent: an actor's context, to put the node's tree under that actor (as
// an OTP application puts ra's servers under its own supervisor), or the
// system's Root. It starts Proto.Actor remote on cfg.Listen in that system
// (a system has one remote; it must not have one yet), with the node's wire
// guard, which admits only the node's messages and cfg.ExtraRoutes. It
// returns once the tree is spawned, without waiting for it to start: wait
// on Ready. Stop stops the node's tree and its remote, not the system.
//
// The supervisor's id is parent's id + "/" + SupervisorName; clients reach
// the gateway at Names().Gateway (client.Config.Gateway), and peers reach
// each other's fsm at the same path, so every node of the cluster must be
// started under a parent of the same id.
func StartIn(parent actor.SpawnerContext, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return start(parent, cfg, false)
}

// Ready is closed once the node's children have all started.
func (n *Node) Ready() <-chan struct{} { return n.sup.Ready() }

func (n *Node) awaitReady(d time.Duration) error {
	select {
	case <-n.sup.Ready():
		return nil
	case <-n.sup.Stopped():
		n.shutdownSystem()
		if err := n.corrupt.Load(); err != nil {
			return *err
		}
		return fmt.Errorf("the node stopped while starting: %s", n.sup.Status().Reason)
	case <-time.After(d):
		n.shutdownSystem()
		return fmt.Errorf("the node's actors did not start within %v", d)
	}
}

func start(parent actor.SpawnerContext, cfg Config, ownSystem bool) (*Node, error) {
	var parentID string
	if self := parent.Self(); self != nil {
		parentID = self.Id
	}
	ids := NamesUnder(parentID)
	host, portStr, _ := net.SplitHostPort(cfg.Listen)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("%w: --listen port %q is not a number", ErrBadConfig, portStr)
	}
	log := cfg.Logger.With("node", cfg.ID)

	dbPath := filepath.Join(cfg.DataDir, fmt.Sprintf("ketch-%d.db", Group))
	// Open the store once here, before anything else: a locked, corrupt or
	// foreign data dir is a clean startup error rather than a crash loop
	// (the store actor reopens the file on every start), and the identity
	// it records decides who this node is. A new identity is recorded only
	// once every other check has passed.
	store, identity, err := openData(dbPath, &cfg, log)
	if err != nil {
		return nil, err
	}
	closeStore := func() {
		if store != nil {
			_ = store.Close()
			store = nil
		}
	}
	defer closeStore()

	members := append(slices.Sorted(maps.Keys(cfg.Peers)), cfg.ID)
	addrs := map[uint64]string{cfg.ID: cfg.Listen}
	maps.Copy(addrs, cfg.Peers)
	// The bootstrap configuration: the founding members, all voters; none
	// for a server that joins (it learns the configuration from the log).
	bootstrap := &pb.Configuration{}
	if !cfg.Join {
		for _, m := range memberList(addrs) {
			bootstrap.Members = append(bootstrap.Members, &pb.Member{Id: m.Id, Address: m.Address, Role: pb.MemberRole_MEMBER_ROLE_VOTER})
		}
	} else {
		members = nil
	}
	raftCfg := fsm.Config{
		ID: cfg.ID, ClusterID: cfg.ClusterID, Bootstrap: bootstrap,
		ElectionTimeout: cfg.ElectionTimeout, HeartbeatInterval: cfg.HeartbeatInterval,
		FollowerReads: true, LeaseReads: cfg.LeaseReads, DisableCheckQuorum: cfg.DisableCheckQuorum,
		LogCacheEntries:     cfg.LogCacheEntries,
		Limits:              cfg.Limits,
		MaxUncommittedBytes: cfg.MaxUncommittedBytes,
		SnapshotTrailing:    cfg.SnapshotTrailing,
		SnapshotChunkBytes:  cfg.SnapshotChunkBytes,
		MaxSnapshotChunks:   cfg.SnapshotWindow,
	}
	// Validate the raft config now, so a bad one is a startup error (the
	// fsm actor supplies Rand).
	check := raftCfg
	check.Rand = nopRand{}
	if err := check.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}

	n := &Node{cfg: cfg, ids: ids, ownSystem: ownSystem, system: parent.ActorSystem(), done: make(chan struct{})}
	if cfg.Metrics {
		n.metrics = metrics.New(n.metricsSource())
	}
	var remoteTLS []sender.RemoteOption
	var probeTLS *tls.Config
	var verifyDial func(string, tls.ConnectionState) error
	if cfg.TLS.Enabled() {
		t, err := certs.NewTLS(cfg.TLS, cfg.ClusterID, certs.AcceptNodesAndClients, log)
		if err != nil {
			return nil, bad("%v", err)
		}
		if err := ownCertificate(cfg); err != nil {
			return nil, err
		}
		// Who answers at a member's address must be that member (the
		// sender's peer table says whose it is).
		verifyDial = func(addr string, cs tls.ConnectionState) error { return t.VerifyDialed(addr, cs, n.send.PeerAt) }
		remoteTLS = append(remoteTLS, sender.WithTLS(sender.TLS{Server: t.Server, Client: t.Client, Authenticate: t.Authenticate,
			VerifyDial: verifyDial, Logger: log}))
		probeTLS = t.Client
	}
	n.send, err = sender.New(sender.Config{
		ProbeTLS:      probeTLS,
		ProbeVerify:   verifyDial,
		OnSent:        n.metrics.Sent,
		OnDropped:     n.metrics.Dropped,
		Peers:         cfg.Peers,
		Self:          cfg.ID,
		SelfAddr:      cfg.Listen,
		Target:        func(_ uint64, addr string) *actor.PID { return actor.NewPID(addr, ids.FSM) },
		MaxBatchBytes: cfg.Limits.MaxBatchBytes,
		Logger:        log,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	routes := RoutesFor(ids)
	for id, types := range cfg.ExtraRoutes {
		if _, taken := routes[id]; taken {
			return nil, bad("ExtraRoutes names %s, an actor of the node", id)
		}
		routes[id] = types
	}
	remoteOpts := append(remoteTLS, sender.WithGuard(sender.GuardConfig{
		MaxMessageBytes: cfg.Limits.MaxBatchBytes,
		Routes:          routes,
		Logger:          log,
		OnReject: func(r sender.Rejection) {
			n.rejectedWire.Add(uint64(max(r.Dropped, 1)))
			n.metrics.Rejected("wire", max(r.Dropped, 1))
		},
	}), sender.WithMaxRecvMsgBytes(sender.RecvMsgBytesFor(cfg.Limits)))
	n.remote, err = sender.StartRemote(n.system, host, port, remoteOpts...)
	if err != nil {
		n.remote = nil
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if identity != nil {
		// Durable before the node takes part.
		if err := store.SetIdentity(identity); err != nil {
			n.shutdownSystem()
			return nil, storeError(err)
		}
	}
	closeStore() // the store actor opens it
	pid := func(name string) *actor.PID {
		return actor.NewPID(n.system.Address(), supervisor.ChildID(ids.Supervisor, name))
	}

	snapDir := filepath.Join(cfg.DataDir, "snapshots")
	if cfg.DisableSnapshots {
		snapDir = ""
	}
	newSM, typed := cfg.StateMachine, (func([]byte, *pb.ClientResponse))(nil)
	if newSM == nil {
		newSM, typed = kv.NewStateMachine, kv.FillResponse
	}
	crash := map[string]any{
		"store":   &logstore.Crash{Reason: "ketch crash"},
		"state":   &state.Crash{Reason: "ketch crash"},
		"fsm":     &consensus.Crash{Reason: "ketch crash"},
		"sender":  &sender.Crash{Reason: "ketch crash"},
		"gateway": nil,
	}
	children := []supervisor.Child{
		{Name: "store", Props: logstore.PropsWithConfig(func() (logstore.Store, error) {
			return logstore.OpenBolt(dbPath, logstore.BoltOptions{UnsafeNoSync: cfg.UnsafeNoSync,
				OnSync: n.metrics.Fsync, OnCheckpoint: n.metrics.Checkpoint})
		}, logstore.Config{Logger: log, OnCorrupt: n.storeCorrupt})},
		{Name: "state", Props: state.Props(state.Config{
			New:             newSM,
			Typed:           typed,
			OnApplied:       n.applied.Store,
			Dir:             snapDir,
			SnapshotEntries: cfg.SnapshotEntries,
			SnapshotBytes:   cfg.SnapshotBytes,
			SnapshotGrowth:  cfg.SnapshotGrowth,
			ClusterID:       cfg.ClusterID,
			Members:         bootstrap.Members,
			FSM:             pid("fsm"),
			OnSnapshot: func(index, bytes uint64) {
				n.snapIndex.Store(index)
				n.snapBytes.Store(bytes)
			},
			OnCorrupt:    n.storeCorrupt,
			UnsafeNoSync: cfg.UnsafeNoSync,
			Metrics:      n.metrics,
			Logger:       log,
		})},
		{Name: "fsm", Props: consensus.Props(consensus.Config{
			Raft:  raftCfg,
			Peers: addrs,
			Store: pid("store"), State: pid("state"), Sender: pid("sender"),
			MaxPendingWrites: cfg.MaxPendingRequests, MaxPendingReads: cfg.MaxPendingRequests,
			Stats:    &n.fsmStats,
			OnStatus: n.onStatus,
			OnView:   func(v consensus.View) { n.view.Store(&v) },
			Metrics:  n.metrics,
			OnConfig: func(c fsm.ConfigState, match map[uint64]uint64) {
				n.conf.Store(&c)
				n.match.Store(&match)
			},
			Logger: log,
		})},
		{Name: "sender", Props: n.send.Props()},
		{Name: "gateway", Props: gateway.Props(gateway.Config{
			ClusterID: cfg.ClusterID, NodeID: cfg.ID, FSM: pid("fsm"), Chaos: cfg.Chaos,
			Limits: cfg.Limits, Typed: typed != nil, Rejected: &n.rejectedClient,
			State:  pid("state"),
			Status: n.StatusDetail,
			Crash: func(child string) error {
				msg, ok := crash[child]
				if !ok || msg == nil {
					return fmt.Errorf("unknown actor %q; crashable actors are store, state, fsm and sender", child)
				}
				n.system.Root.Send(pid(child), msg)
				return nil
			},
			Logger: log,
		})},
	}

	n.sup, err = supervisor.New(supervisor.Config{
		MaxRestarts: cfg.MaxRestarts, Within: cfg.RestartWindow,
		OnFailStop: func(reason string) {
			n.metrics.FailStop()
			n.finish(errors.New(reason))
		},
		Logger: log,
	}, children...)
	if err != nil {
		n.shutdownSystem()
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	n.sup0, err = parent.SpawnNamed(n.sup.Props(), SupervisorName)
	if err != nil {
		n.shutdownSystem()
		return nil, fmt.Errorf("cannot spawn the node supervisor: %w", err)
	}
	if n.sup0.Id != ids.Supervisor {
		panic(fmt.Sprintf("invariant: the node supervisor is %s, not %s", n.sup0.Id, ids.Supervisor))
	}
	log.Info("node started", "listen", n.system.Address(), "cluster", cfg.ClusterID, "members", members, "supervisor", ids.Supervisor)
	return n, nil
}

// Routes is what the wire guard lets each of a node's actors receive from
// the network (for a node started with Start): peers' RaftBatches for the
// fsm actor, the client protocol for the gateway, and nothing for any
// other actor.
func Routes() map[string][]string { return RoutesFor(NamesUnder("")) }

// RoutesFor is Routes for a node whose actors have the ids of ids.
func RoutesFor(ids Names) map[string][]string {
	name := func(m proto.Message) string { return string(proto.MessageName(m)) }
	return map[string][]string{
		ids.FSM: {name(&pb.RaftBatch{})},
		ids.Gateway: {name(&pb.ClientRequest{}), name(&pb.StatusRequest{}),
			name(&pb.CrashRequest{}), name(&pb.TransferRequest{}), name(&pb.SnapshotRequest{}),
			name(&pb.MemberRequest{})},
	}
}

// memberList is the members in a snapshot's header, sorted by id.
func memberList(addrs map[uint64]string) []*pb.Member {
	out := make([]*pb.Member, 0, len(addrs))
	for _, id := range slices.Sorted(maps.Keys(addrs)) {
		out = append(out, &pb.Member{Id: id, Address: addrs[id]})
	}
	return out
}

type nopRand struct{}

func (nopRand) Int64N(int64) int64 { return 0 }

// Address is the node's remote address.
func (n *Node) Address() string { return n.system.Address() }

// ownCertificate checks that the node's certificate names this node: a
// node must not take part under another's identity.
func ownCertificate(cfg Config) error {
	pair, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return bad("--tls-cert %s, --tls-key %s: %v", cfg.TLS.Cert, cfg.TLS.Key, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return bad("--tls-cert %s: %v", cfg.TLS.Cert, err)
	}
	id, err := certs.ParseIdentity(leaf)
	if err != nil {
		return bad("--tls-cert %s: %v", cfg.TLS.Cert, err)
	}
	if id.Kind != certs.KindNode || id.NodeID != cfg.ID || id.ClusterID != cfg.ClusterID {
		return bad("--tls-cert %s names %s, not node %d of cluster %q: issue one with 'ketch certs node --cluster-id %s --id %d --host ...'",
			cfg.TLS.Cert, id, cfg.ID, cfg.ClusterID, cfg.ClusterID, cfg.ID)
	}
	return nil
}

// onStatus publishes the fsm's status; it runs on the fsm actor.
func (n *Node) onStatus(st fsm.Status) {
	n.raft.Store(&st)
	if st.Leader != 0 && st.Leader != n.lastLeader {
		n.lastLeader = st.Leader
		n.metrics.LeaderChanged()
	}
}

// electionTimeout is the base election timeout in use.
func (n *Node) electionTimeout() time.Duration {
	if n.cfg.ElectionTimeout > 0 {
		return n.cfg.ElectionTimeout
	}
	return fsm.DefaultElectionTimeout
}

// Metrics is the node's metrics, nil unless Config.Metrics.
func (n *Node) Metrics() *metrics.Metrics { return n.metrics }

// metricsSource is what the scrape-time gauges read.
func (n *Node) metricsSource() metrics.Source {
	return metrics.Source{
		Raft: func() metrics.Raft {
			r := metrics.Raft{Applied: n.applied.Load(), SnapshotIndex: n.snapIndex.Load(), SnapshotBytes: n.snapBytes.Load()}
			if st := n.raft.Load(); st != nil {
				// Raft thesis §4.2.3's test for leader stickiness: this node
				// leads, or heard from its leader within an election
				// timeout (past that, its own election is due).
				heard := time.Since(time.Unix(0, n.fsmStats.LeaderHeard.Load()))
				r.IsLeader, r.Member = st.Role == fsm.Leader, st.Member
				r.HasLeader = r.IsLeader || st.Leader != 0 && heard < n.electionTimeout()
				r.Term, r.Commit, r.Last, r.FirstIndex, r.ConfigurationIndex = st.Term, st.Commit, st.LastIndex, st.FirstIndex, st.ConfigIndex
			}
			return r
		},
		Match: func() map[uint64]uint64 {
			if st := n.raft.Load(); st == nil || st.Role != fsm.Leader {
				return nil
			}
			if m := n.match.Load(); m != nil {
				return *m
			}
			return nil
		},
		Inflight: func() map[uint64]int {
			st, v := n.raft.Load(), n.view.Load()
			if st == nil || st.Role != fsm.Leader || v == nil {
				return nil
			}
			out := make(map[uint64]int, len(v.Progress))
			for _, p := range v.Progress {
				out[p.ID] = p.Inflight
			}
			return out
		},
		Restarts: func() map[string]int {
			out := map[string]int{}
			for _, c := range n.sup.Status().Children {
				out[c.Name] = c.Restarts
			}
			return out
		},
		Pending: func() (int, int) {
			return int(n.fsmStats.PendingWrites.Load()), int(n.fsmStats.PendingReads.Load())
		},
	}
}

// Status reports the node's status, as `ketch status` shows it.
func (n *Node) Status() *pb.NodeStatus { return n.StatusDetail(false) }

// StatusDetail is Status, with NodeStatus.detail (the live view's
// figures) when detail is set.
func (n *Node) StatusDetail(detail bool) *pb.NodeStatus {
	st := &pb.NodeStatus{Id: n.cfg.ID, Address: n.cfg.Listen, Role: "starting", Applied: n.applied.Load(), Children: map[string]*pb.ChildStatus{}}
	if r := n.raft.Load(); r != nil {
		st.Role, st.Term, st.Leader, st.LastIndex, st.Commit = r.Role.String(), r.Term, r.Leader, r.LastIndex, r.Commit
		st.LogInMemory = r.InMemory
		st.FirstIndex = r.FirstIndex
		st.NotMember = !r.Member
	}
	if c := n.conf.Load(); c != nil {
		st.Configuration, st.ConfigurationIndex = c.Config, c.Index
	}
	if m := n.match.Load(); m != nil && st.Role == fsm.Leader.String() {
		st.Match = maps.Clone(*m)
	}
	st.SnapshotIndex, st.SnapshotBytes = n.snapIndex.Load(), n.snapBytes.Load()
	st.RejectedPeerMessages = n.fsmStats.RejectedPeer.Load()
	st.RejectedClientRequests = n.fsmStats.RejectedClient.Load() + n.rejectedClient.Load()
	st.RejectedWireMessages = n.rejectedWire.Load()
	st.BusyRefusals = n.fsmStats.Busy.Load()
	sup := n.sup.Status()
	if sup.State != supervisor.Running {
		st.Role = sup.State.String()
		st.Error = sup.Reason
	}
	for _, c := range sup.Children {
		cs := &pb.ChildStatus{Restarts: uint64(c.Restarts), LastCrash: c.LastCrash, Crashes: uint64(c.Crashes)}
		if !c.LastCrashAt.IsZero() {
			cs.LastCrashUnixMillis = c.LastCrashAt.UnixMilli()
		}
		st.Children[c.Name] = cs
	}
	if detail {
		st.Detail = n.detail()
	}
	return st
}

// detail is NodeStatus.detail: the fsm's latest View and the traffic
// counters of the sender (sent) and the fsm actor (received).
func (n *Node) detail() *pb.NodeDetail {
	d := &pb.NodeDetail{Chaos: n.cfg.Chaos, UnixMillis: time.Now().UnixMilli(), Children: slices.Clone(Children), Supervisor: n.ids.Supervisor}
	if r := n.raft.Load(); r != nil {
		d.Durable, d.Transferee = r.Durable, r.Transferee
	}
	if v := n.view.Load(); v != nil {
		for _, e := range v.Recent {
			d.Recent = append(d.Recent, &pb.EntryInfo{Index: e.Index, Term: e.Term, Type: e.Type, Bytes: uint32(min(e.Bytes, math.MaxUint32))})
		}
		if r := n.raft.Load(); r != nil && r.Role == fsm.Leader {
			for _, p := range v.Progress {
				d.Progress = append(d.Progress, &pb.PeerProgress{Id: p.ID, Match: p.Match, Next: p.Next, State: p.State,
					Inflight: uint32(p.Inflight), Active: p.Active, SilentRounds: p.SilentRounds})
			}
		}
	}
	sent := n.send.Stats().Peers
	recv := n.fsmStats.ReceivedFrom()
	ids := slices.Sorted(maps.Keys(sent))
	for id := range recv {
		if _, ok := sent[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		s, r := sent[id], recv[id]
		d.Traffic = append(d.Traffic, &pb.PeerTraffic{Peer: id, SentMessages: s.SentMessages, SentBytes: s.SentBytes,
			ReceivedMessages: r[0], ReceivedBytes: r[1], Reachable: s.Reachable})
	}
	return d
}

// Done is closed when the node has stopped: by Stop, or by fail-stop.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is why the node stopped: nil after Stop, the supervisor's reason
// after a fail-stop, and an error wrapping logstore.ErrCorrupt when it
// stopped because its data file is corrupt.
func (n *Node) Err() error {
	if err := n.corrupt.Load(); err != nil {
		return *err
	}
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// storeCorrupt stops the node once its store found the data file corrupt:
// no restart can help, and the node must not take part with that log.
func (n *Node) storeCorrupt(err error) {
	if !n.corrupt.CompareAndSwap(nil, &err) {
		return
	}
	n.cfg.Logger.Error("the data file is corrupt; stopping the node", "node", n.cfg.ID, "err", err)
	go n.Stop()
}

// openData opens the data file: it must open, load and agree with the
// identity it records (which fills in cfg.Peers when none were given). It
// returns the open store and the identity to record (nil when recorded).
func openData(path string, cfg *Config, log *slog.Logger) (*logstore.BoltStore, *pb.NodeIdentity, error) {
	st, err := logstore.OpenBolt(path, logstore.BoltOptions{UnsafeNoSync: cfg.UnsafeNoSync})
	if err != nil {
		return nil, nil, storeError(err)
	}
	loaded, err := st.Load()
	if err != nil {
		_ = st.Close()
		return nil, nil, storeError(err)
	}
	if why := inconsistency(loaded); why != "" {
		// Every record passed its checksum, but bbolt's pages have none: a
		// damaged branch page can drop a key (the hard state) without any
		// record failing. Such a log must not reach the fsm, which would
		// crash on it until the node fail-stops (exit 3); it is corrupt
		// (exit 4), and the operator told what to do.
		_ = st.Close()
		return nil, nil, fmt.Errorf("%w: data file %s: %s; this node must not rejoin with it: stop it, move its data dir aside and start it again with an empty one, and it catches up from its peers",
			logstore.ErrCorrupt, path, why)
	}
	id, err := resolveIdentity(st, cfg, log)
	if err != nil {
		_ = st.Close()
		return nil, nil, storeError(err)
	}
	return st, id, nil
}

// inconsistency says what in a loaded log breaks Raft's invariants on
// stored state (Figure 2: no entry, and no base, of a term above the
// current term; terms never decrease along the log), or "".
func inconsistency(st logstore.State) string {
	term := st.HardState.GetTerm()
	if st.Base.Term > term {
		return fmt.Sprintf("the log base is of term %d, above the stored current term %d", st.Base.Term, term)
	}
	prev := st.Base.Term
	for _, e := range st.Entries {
		switch {
		case e.Term > term:
			return fmt.Sprintf("entry %d is of term %d, above the stored current term %d", e.Index, e.Term, term)
		case e.Term < prev:
			return fmt.Sprintf("entry %d is of term %d, below the term %d of the entry before it", e.Index, e.Term, prev)
		}
		prev = e.Term
	}
	return ""
}

// storeError keeps a corrupt data file's error as it is (the CLI exits 4
// on it); every other failure to open one is ErrBadConfig.
func storeError(err error) error {
	if errors.Is(err, logstore.ErrCorrupt) || errors.Is(err, ErrBadConfig) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrBadConfig, err)
}

// Stop stops the node's actors in reverse order, then its remote.
func (n *Node) Stop() {
	n.system.Root.Send(n.sup0, &supervisor.Shutdown{})
	select {
	case <-n.sup.Stopped():
	case <-time.After(10 * time.Second):
	}
	n.finish(nil)
}

func (n *Node) finish(err error) {
	n.stopOnce.Do(func() {
		n.errMu.Lock()
		n.err = err
		n.errMu.Unlock()
		go func() {
			n.shutdownSystem()
			close(n.done)
		}()
	})
}

func (n *Node) shutdownSystem() {
	if n.remote != nil {
		n.remote.Shutdown(true)
	}
	if n.ownSystem {
		n.system.Shutdown()
	} else if n.sup0 != nil {
		n.system.Root.Stop(n.sup0)
	}
}

// System is the actor system the node runs in.
func (n *Node) System() *actor.ActorSystem { return n.system }

// ID is the node's id, and ClusterID its cluster's.
func (n *Node) ID() uint64        { return n.cfg.ID }
func (n *Node) ClusterID() string { return n.cfg.ClusterID }

// Chaos reports whether the node obeys crash requests (--chaos).
func (n *Node) Chaos() bool { return n.cfg.Chaos }
