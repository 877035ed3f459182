package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Options configures one simulation run. Zero fields take the defaults
// documented on each; Validate fills them in.
type Options struct {
	// Nodes is the cluster size, 1 to 8: the voters it is bootstrapped
	// with. Default: drawn from the seed, so that a batch of seeds mixes
	// sizes: 3, 4 (half the time) or 5 when the membership changes (most
	// seeds), 3, 5 or 7 when it does not.
	Nodes int
	// NoMembership turns the membership changes off (membership.go);
	// they are on in three seeds of four otherwise (never for clusters of
	// fewer than 3 nodes).
	NoMembership bool
	// ChaosMin and ChaosMax bound the chaos phase, during which faults
	// are injected; the seed draws its length between them. Defaults 4s
	// and 8s of virtual time.
	ChaosMin, ChaosMax time.Duration
	// LeaderDeadline is how soon after the heal a leader must exist.
	// Default 5s.
	LeaderDeadline time.Duration
	// LivenessTimeout is how soon after the heal every acknowledged
	// proposal must be applied on every node. Default 10s.
	LivenessTimeout time.Duration
	// ClientsAfterHeal is how long the clients keep proposing after the
	// heal. Default 1s.
	ClientsAfterHeal time.Duration
	// Clients is the number of simulated clients. Default 3.
	Clients int
	// Intensity scales the fault rates, in (0, 1]. Default: drawn from
	// the seed, so that some seeds are mild and some harsh. Even the
	// mildest seed has the faults of the simulator's specification:
	// 0-27 ms delays, 10% of requests and of replies dropped, 2%
	// duplicated, 5% of replies 200-2200 ms late, crashes and partitions.
	Intensity float64
	// Bug names a seeded fsm bug (fsm.BugNames) to plant on every node.
	Bug string
	// SafetyOnly turns off the checks of the fsm's contract that catch
	// bugs at their cause (durable before ack, the commit rules, Status
	// agreeing with the actions; see check.go) and keeps Raft's safety
	// properties and liveness. It shows whether the faults drive a
	// planted bug all the way to a safety violation.
	SafetyOnly bool
	// TraceSize is how many trace records the ring buffer keeps for the
	// report of a failure. Default 256.
	TraceSize int
	// KeepTrace formats the trace into Result.Trace even when the run
	// passes.
	KeepTrace bool
	// MaxSteps stops a run that steps more often than this, which means
	// the fsm livelocks (for example with zero-length timers). Default
	// 5,000,000.
	MaxSteps uint64
}

// Validate fills in the defaults and reports the first invalid field.
func (o *Options) Validate() error {
	if o.ChaosMin == 0 {
		o.ChaosMin = 4 * time.Second
	}
	if o.ChaosMax == 0 {
		o.ChaosMax = max(8*time.Second, o.ChaosMin)
	}
	if o.LeaderDeadline == 0 {
		o.LeaderDeadline = 5 * time.Second
	}
	if o.LivenessTimeout == 0 {
		o.LivenessTimeout = 10 * time.Second
	}
	if o.ClientsAfterHeal == 0 {
		o.ClientsAfterHeal = time.Second
	}
	if o.Clients == 0 {
		o.Clients = 3
	}
	if o.TraceSize == 0 {
		o.TraceSize = 256
	}
	if o.MaxSteps == 0 {
		o.MaxSteps = 5_000_000
	}
	switch {
	case o.Nodes < 0 || o.Nodes > 8:
		return fmt.Errorf("sim: %d nodes: use 1 to 8, or 0 to let the seed choose", o.Nodes)
	case o.ChaosMin < 0 || o.ChaosMax < o.ChaosMin:
		return fmt.Errorf("sim: chaos phase bounds %v..%v are not an interval", o.ChaosMin, o.ChaosMax)
	case o.Intensity < 0 || o.Intensity > 1:
		return fmt.Errorf("sim: intensity %v: use a value in (0, 1], or 0 to let the seed choose", o.Intensity)
	case o.LeaderDeadline < 0 || o.LivenessTimeout < o.LeaderDeadline:
		return errors.New("sim: the liveness timeout must not be shorter than the leader deadline")
	case o.Clients < 0 || o.TraceSize < 1 || o.ClientsAfterHeal < 0:
		return errors.New("sim: clients, trace size and client time after heal must not be negative")
	}
	return nil
}

// Result is the outcome of one run.
type Result struct {
	Seed uint64
	// Nodes is the cluster size the run was bootstrapped with (Stats.Spawned
	// servers joined later).
	Nodes     int
	Intensity float64
	// Steps counts the Step calls on every node.
	Steps uint64
	// Digest hashes every trace record of the run: the same seed and
	// options must always give the same digest.
	Digest uint64
	// Violation is the first invariant broken, nil when the run passed.
	Violation *Violation
	// Trace holds the last trace lines, oldest first, when the run failed
	// or Options.KeepTrace asked for them.
	Trace []string
	Stats Stats
	// Err reports options the run could not start with (an unknown bug,
	// an invalid field).
	Err error
}

// Violation describes the first invariant a run broke.
type Violation struct {
	// Invariant names the property: election-safety, log-matching,
	// leader-completeness, state-machine-safety, leader-append-only,
	// monotonic-commit, and the others listed in check.go.
	Invariant string
	Detail    string
	At        time.Duration // virtual time
}

func (v *Violation) String() string { return v.Invariant + ": " + v.Detail }

// Stats are the figures of one run, for reports.
type Stats struct {
	Virtual     time.Duration // virtual time simulated
	Chaos       time.Duration // length of the chaos phase
	Messages    uint64        // messages sent
	Dropped     uint64        // of which lost, cut by a partition or sent to a crashed node
	Crashes     uint64
	Partitions  uint64 // partition changes made by the nemesis
	Proposals   uint64 // distinct proposals made by clients
	Acked       uint64 // proposals acknowledged as committed
	Unknown     uint64 // answered ErrLeadershipLost: outcome unknown
	Lost        uint64 // sent to a node that was down
	GaveUp      uint64 // answered ErrNotLeader maxTries times
	Reads       uint64 // reads issued by clients
	ReadsOK     uint64 // of which served (ReadReady without error)
	FollowerOK  uint64 // of which served by a node that was not leader
	LeaseOK     uint64 // of which served at once, under a leader lease
	Transfers   uint64 // leadership transfers the nemesis asked for
	MaxAcked    uint64 // highest index acknowledged
	Leaders     int    // terms that had a leader
	MaxMsgBytes int    // the fsm tuning this seed drew (0: default)
	MaxInflight int
	// BaseElections: this seed runs with pre-vote and check-quorum off
	// (one seed in two), so the base protocol of Raft §5 stays covered, and
	// with it the frequent elections that drive the cluster into states
	// such as Figure 8 (pre-vote and check-quorum make them rare).
	BaseElections bool
	// LeaseReads: this seed runs with Config.LeaseReads (only with
	// check-quorum, so never with BaseElections).
	LeaseReads bool
	// LogCache is the fsm's LogCacheEntries: 0 (the default, 8192) or a
	// tiny cache, so that leaders fetch old entries from the disk for
	// lagging followers all the time.
	LogCache int
	Fetches  uint64 // entries read back from disk for lagging followers
	// Hostile counts the forged messages delivered (hostile.go), all of
	// which were rejected; HostileEvery is their mean spacing (0: none).
	Hostile      uint64
	HostileEvery time.Duration
	// MaxUncommitted is the fsm's MaxUncommittedBytes this seed drew (0:
	// the default); Busy counts proposals refused with ErrBusy.
	MaxUncommitted int
	Busy           uint64
	// Snapshots (snapshot.go): a node snapshots every SnapshotEvery
	// applied entries (0: never), keeps SnapshotTrailing entries behind,
	// and sends chunks of SnapshotChunk bytes, SnapshotWindow at a time.
	// Snapshots counts the snapshots taken, Installs those installed.
	SnapshotEvery, SnapshotTrailing, SnapshotChunk, SnapshotWindow int
	Snapshots, Installs                                            uint64
	// Membership (membership.go): this seed changes the membership;
	// Changes counts the changes asked, ChangesOK those answered as done,
	// ChangesRefused those refused (nothing appended), ChangesUnknown
	// those answered ErrLeadershipLost (outcome unknown).
	// ConfigsCommitted counts the configuration entries committed,
	// JointCommitted the joint ones among them; RemovedLeaders counts the
	// changes done that removed the leader that was asked. Spawned and
	// Stopped count the servers started to be added and those shut down
	// for good; RemovedReported the Removed actions; RejectedRemoved the
	// messages of removed servers that members rejected; ConfigCuts the
	// leaders cut off right after they appended a configuration entry.
	Membership                                         bool
	Changes, ChangesOK, ChangesRefused, ChangesUnknown uint64
	ConfigsCommitted, JointCommitted, RemovedLeaders   uint64
	Spawned, Stopped, RemovedReported, RejectedRemoved uint64
	ConfigCuts                                         uint64
	// LastWords counts messages to servers that stopped being peers in
	// the same step (see onSend): the last ones to a removed server.
	LastWords uint64
	// Answers counts the answers to changes by their error (changeCode).
	Answers [changeOther + 1]uint64
	// Converged is how long after the heal the liveness condition held;
	// negative when it did not.
	Converged time.Duration
}

// Summary is the one-line report of a run.
func (r *Result) Summary() string {
	switch {
	case r.Err != nil:
		return fmt.Sprintf("seed=%d error=%v", r.Seed, r.Err)
	case r.Violation != nil:
		return fmt.Sprintf("seed=%d nodes=%d violation=%s at %s", r.Seed, r.Nodes, r.Violation, fmtTime(r.Violation.At))
	}
	return fmt.Sprintf("seed=%d nodes=%d ok", r.Seed, r.Nodes)
}

// Run simulates one seed and checks every invariant along the way.
func Run(seed uint64, opts Options) Result {
	if err := opts.Validate(); err != nil {
		return Result{Seed: seed, Err: err}
	}
	s, err := newSim(seed, opts)
	if err != nil {
		return Result{Seed: seed, Nodes: s.bootNodes, Err: err}
	}
	s.run()
	return s.result()
}

// phase is where a run is: faults first, then calm while liveness is
// checked.
type phase uint8

const (
	phaseChaos phase = iota
	phaseLiveness
)

// Sim is the state of one run: the cluster, its environment and what the
// invariant checks remember. Nothing in it is shared with other runs.
type Sim struct {
	opts Options
	seed uint64
	rng  *rand.Rand // the one source of randomness of the run
	now  time.Duration
	// readNow is the read whose ReadIndex is being stepped, 0 outside.
	readNow uint64
	queue   agenda

	nodes     []*simNode
	bootNodes int // the nodes the cluster was bootstrapped with
	down      int // nodes down, not counting stopped ones

	// Membership (membership.go): the schedule, the changes asked (change
	// ID i is changes[i-1]) and the configurations of the committed log in
	// order, the bootstrap one (index 0) first.
	member  membership
	changes []change
	confLog []fsm.ConfigState
	lost    lostChange
	second  bool // the change being stepped is the second of two back to back
	// nemesisHold: the nemesis does not act before then (holdNemesis).
	nemesisHold time.Duration

	phase    phase
	chaosEnd time.Duration
	healAt   time.Duration
	leaderAt time.Duration // first time a leader existed after the heal; -1 before
	faults   faultRates
	weights  [numOps]int // the nemesis's preferences, drawn per seed
	cut      [][]bool    // cut[a][b]: messages from node a to node b are lost

	clients   []client
	clientsOn bool
	proposals []proposal // proposal ID i is proposals[i-1]
	reads     []read     // read ID i is reads[i-1]

	// What the invariant checks remember, across nodes and incarnations.
	leaders   map[uint64]uint64 // term -> the leader seen in it
	committed []committedEntry  // index -> the entry first seen committed there; [0] is a sentinel
	applied   []appliedEntry    // index -> the entry first applied there; [0] is a sentinel
	maxAcked  uint64

	// The hostile sender (hostile.go): the mean spacing of its deliveries,
	// whether the step in progress delivers one, and whether it was
	// rejected.
	hostileEvery    time.Duration
	hostileNow      bool
	hostileRejected bool

	steps     uint64
	trace     tracer
	violation *Violation
	done      bool // liveness held: the run is over
	stats     Stats
}

func newSim(seed uint64, opts Options) (*Sim, error) {
	s := &Sim{
		opts:      opts,
		seed:      seed,
		rng:       rand.New(rand.NewPCG(seed, 0x6b657463682d7369)), // "ketch-si"
		leaders:   map[uint64]uint64{},
		committed: make([]committedEntry, 1, 256),
		applied:   make([]appliedEntry, 1, 256),
		leaderAt:  -1,
		clientsOn: true,
	}
	s.trace.init(opts.TraceSize)
	s.stats.Converged = -1

	s.stats.Membership = !opts.NoMembership && s.rng.IntN(4) != 0 && (opts.Nodes == 0 || opts.Nodes >= 3)
	n := opts.Nodes
	if n == 0 {
		n = []int{3, 5, 7}[s.rng.IntN(3)]
		if s.stats.Membership {
			// Even sizes half the time: there, two single-server changes
			// that each overlap their predecessor can miss each other
			// (Ongaro, raft-dev 2015).
			n = []int{3, 4, 4, 5}[s.rng.IntN(4)]
		}
	}
	x := opts.Intensity
	if x == 0 {
		x = s.rng.Float64()
	}
	s.faults = chaosRates(x)
	s.stats.Chaos = opts.ChaosMin + randDuration(s.rng, opts.ChaosMax-opts.ChaosMin)
	s.chaosEnd = s.stats.Chaos
	for op := range s.weights {
		s.weights[op] = 1 + s.rng.IntN(3)
	}
	// Vary the replication tuning too: one entry per AppendEntries and a
	// narrow pipeline reach states the defaults rarely do (for example a
	// follower acknowledging an old-term entry before the new leader's
	// no-op, Raft §5.4.2 Figure 8).
	switch s.rng.IntN(4) {
	case 2:
		s.stats.MaxMsgBytes = 1 // one entry per message
	case 3:
		s.stats.MaxMsgBytes = 64 + s.rng.IntN(512)
		s.stats.MaxInflight = 1 + s.rng.IntN(8)
	}

	s.stats.BaseElections = s.rng.IntN(2) == 0
	// thesis §6.4.1: three seeds in four with check-quorum serve lease
	// reads (a lease that outlives what followers promised shows only at
	// the right moment of a partition, so it takes many seeds).
	s.stats.LeaseReads = !s.stats.BaseElections && s.rng.IntN(4) != 0
	if s.rng.IntN(2) == 0 {
		s.stats.LogCache = 1 + s.rng.IntN(12)
	}
	// Backpressure: a quarter of the seeds bound uncommitted entries to a
	// few of them, so partitioned leaders refuse proposals with ErrBusy.
	if s.rng.IntN(4) == 0 {
		s.stats.MaxUncommitted = (4 + s.rng.IntN(16)) * (pb.EntryOverhead + 16)
	}
	// Snapshots: most seeds snapshot every few entries and keep few behind,
	// so that lagging and restarted followers are caught up by
	// InstallSnapshot; a few never snapshot.
	s.stats.SnapshotChunk = 8 + s.rng.IntN(120)
	s.stats.SnapshotWindow = 1 + s.rng.IntN(4)
	s.stats.SnapshotTrailing = 1 + s.rng.IntN(12)
	if s.rng.IntN(8) != 0 {
		s.stats.SnapshotEvery = 2 + s.rng.IntN(40)
	}
	maxMsgBytes := s.stats.MaxMsgBytes
	if maxMsgBytes == 0 {
		maxMsgBytes = simLimits.AppendBudget()
	}
	s.hostileEvery = s.hostileInterval()
	s.stats.HostileEvery = s.hostileEvery

	s.bootNodes = n
	var members []uint64
	boot := &pb.Configuration{}
	for i := range n {
		id := uint64(i + 1)
		members = append(members, id)
		boot.Members = append(boot.Members, &pb.Member{Id: id, Address: nodeAddress(id), Role: pb.MemberRole_MEMBER_ROLE_VOTER})
	}
	// Half the membership seeds bootstrap with addresses (Config.Bootstrap),
	// and then with up to two learners, the others with the voters' ids
	// only (Config.Members).
	withAddresses := s.stats.Membership && s.rng.IntN(2) == 0
	total := n
	if withAddresses {
		for range s.rng.IntN(3) {
			total++
			id := uint64(total)
			boot.Members = append(boot.Members, &pb.Member{Id: id, Address: nodeAddress(id), Role: pb.MemberRole_MEMBER_ROLE_LEARNER})
		}
	} else {
		for _, m := range boot.Members {
			m.Address = ""
		}
	}
	s.confLog = []fsm.ConfigState{{Config: boot}}
	s.cut = make([][]bool, total)
	for i := range total {
		s.cut[i] = make([]bool, total)
	}
	for i := range total {
		cfg := fsm.Config{
			ID:                uint64(i + 1),
			ClusterID:         clusterID,
			Members:           slices.Clone(members),
			ElectionTimeout:   150 * time.Millisecond,
			HeartbeatInterval: 30 * time.Millisecond,
			MaxMsgBytes:       maxMsgBytes,
			MaxInflight:       s.stats.MaxInflight,
			Limits:            simLimits,
			// 0 takes the default, far above what a seed proposes.
			MaxUncommittedBytes: s.stats.MaxUncommitted,
			Rand:                rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())),

			DisablePreVote:     s.stats.BaseElections,
			DisableCheckQuorum: s.stats.BaseElections,
			// thesis §6.4: followers serve reads with a read index from
			// the leader; clients send reads to followers too.
			FollowerReads:      true,
			LeaseReads:         s.stats.LeaseReads,
			LogCacheEntries:    s.stats.LogCache,
			SnapshotTrailing:   s.stats.SnapshotTrailing,
			SnapshotChunkBytes: s.stats.SnapshotChunk,
			MaxSnapshotChunks:  s.stats.SnapshotWindow,
			// Node clocks run at rates within ±maxDrift of real time, so
			// one runs at most (1+maxDrift)/(1-maxDrift) ≈ 1.094 times as
			// fast as another: within the default MaxClockDrift of 0.1.
		}
		if opts.Bug != "" {
			if err := plantBug(&cfg, opts.Bug); err != nil {
				return s, err
			}
		}
		if i == 0 {
			s.member.template = cfg
		}
		if withAddresses {
			cfg.Members, cfg.Bootstrap = nil, proto.Clone(boot).(*pb.Configuration)
		}
		sn := newSimNode(i, cfg)
		sn.rate = 1 + maxDrift*(2*s.rng.Float64()-1)
		s.nodes = append(s.nodes, sn)
	}
	for i := range opts.Clients {
		s.clients = append(s.clients, client{target: s.rng.IntN(n)})
		s.push(event{at: randDuration(s.rng, 40*time.Millisecond), kind: evClientTick, node: i})
	}
	s.push(event{at: s.nemesisInterval(), kind: evNemesis})
	s.initMembership(s.stats.Membership)
	s.scheduleMembership()
	s.scheduleHostile()
	s.push(event{at: s.chaosEnd, kind: evHeal})
	return s, nil
}

// maxDrift bounds how far a node's clock rate strays from real time.
const maxDrift = 0.045

// clusterID is stamped on every message of the simulated cluster.
const clusterID = "sim"

// run starts every node and processes events until the run is decided.
func (s *Sim) run() {
	for _, n := range s.nodes {
		if s.violation != nil {
			break
		}
		s.start(n)
	}
	for s.violation == nil && !s.done {
		ev, ok := s.queue.pop()
		if !ok {
			s.fail("liveness", "nothing left to happen at %s: no timer is armed on any node", fmtTime(s.now))
			break
		}
		s.now = ev.at
		s.dispatch(&ev)
		if s.steps >= s.opts.MaxSteps {
			s.fail("livelock", "%d steps by %s of virtual time", s.steps, fmtTime(s.now))
		}
	}
	if s.violation == nil {
		s.selfCheck()
	}
}

// selfCheck verifies, at the end of a passing run, an assumption the
// incremental checks rest on: commit terms never decrease along the
// committed indexes (see checkLeader). A failure is a simulator bug.
func (s *Sim) selfCheck() {
	for i := 2; i < len(s.committed); i++ {
		if s.committed[i].commitTerm < s.committed[i-1].commitTerm {
			s.fail("simulator", "commit terms decrease from index %d (%d) to %d (%d)",
				i-1, s.committed[i-1].commitTerm, i, s.committed[i].commitTerm)
			return
		}
	}
}

func (s *Sim) dispatch(ev *event) {
	switch ev.kind {
	case evDeliver:
		s.deliver(ev)
	case evTimer:
		s.fireTimer(ev)
	case evFsync:
		s.fsyncDone(ev)
	case evApplied:
		if n := s.nodes[ev.node]; n.up && n.inc == ev.inc {
			n.appliedQueued = false
			n.reported = n.applied
			s.step(n, fsm.Applied{Index: n.applied})
			if n.up && s.violation == nil {
				s.maybeSnapshot(n)
			}
		}
	case evPropose:
		s.proposeArrives(ev)
	case evRead:
		s.readArrives(ev)
	case evFetch:
		s.fetchDone(ev)
	case evHostile:
		s.hostile()
	case evSnapshotDone:
		s.snapshotDone(ev)
	case evChunkRead:
		s.chunkReadDone(ev)
	case evStaged:
		s.stagedDone(ev)
	case evClientTick:
		s.clientTick(ev.node)
	case evNemesis:
		s.nemesis()
	case evRestart:
		if n := s.nodes[ev.node]; !n.up && !n.stopped && n.inc == ev.inc {
			s.restart(n)
		}
	case evMembership:
		s.membershipEvent(ev)
	case evStop:
		s.stop(s.nodes[ev.node])
	case evHeal:
		s.heal()
	case evStopClients:
		s.clientsOn = false
	case evCheckLiveness:
		s.checkLiveness()
	}
}

func (s *Sim) push(e event) { s.queue.push(e) }

// after returns the virtual time d from now.
func (s *Sim) after(d time.Duration) time.Duration { return s.now + d }

// fail records the first violation; the run stops after the current step.
func (s *Sim) fail(invariant, format string, args ...any) {
	if s.violation != nil {
		return
	}
	s.violation = &Violation{Invariant: invariant, Detail: fmt.Sprintf(format, args...), At: s.now}
}

func (s *Sim) result() Result {
	s.stats.Virtual = s.now
	s.stats.Leaders = len(s.leaders)
	s.stats.MaxAcked = s.maxAcked
	r := Result{
		Seed:      s.seed,
		Nodes:     s.bootNodes,
		Intensity: s.faults.intensity,
		Steps:     s.steps,
		Digest:    s.trace.digest,
		Violation: s.violation,
		Stats:     s.stats,
	}
	if s.violation != nil || s.opts.KeepTrace {
		r.Trace = s.trace.lines()
		if s.violation != nil {
			r.Trace = append(r.Trace, fmt.Sprintf("%s VIOLATION %s", fmtTime(s.violation.At), s.violation))
		}
	}
	return r
}

// randDuration draws a duration in [0, d).
func randDuration(r *rand.Rand, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(r.Int64N(int64(d)))
}

// between draws a duration in [lo, hi).
func (s *Sim) between(lo, hi time.Duration) time.Duration {
	return lo + randDuration(s.rng, hi-lo)
}

// fmtTime prints a virtual time as seconds with microseconds.
func fmtTime(t time.Duration) string {
	us := t.Microseconds()
	return fmt.Sprintf("%d.%06ds", us/1e6, us%1e6)
}
