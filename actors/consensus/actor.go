// Package consensus is the fsm actor of a ketch node (sloop_fsm in the
// Erlang original, ra_server_proc in RabbitMQ's ra): a thin actor around
// the pure Raft core of package fsm. It turns the world into fsm events —
// peer messages, timer firings, client requests, the store's durability
// reports — and carries out the actions each Step returns: writes go to the
// store actor, messages to the sender actor, committed entries to the state
// actor, timers to the Go runtime.
//
// It must never block: not on I/O (the store does that), not on a peer (the
// sender does that), not on a future. Everything it waits for comes back as
// a message. Peer messages go to the fsm as they come; the fsm validates
// them (fsm/validate.go) and the actor counts and logs what it rejects.
// Client requests arrive only as protocol.Command from the gateway, which
// validated them; a raw ClientRequest is refused.
//
// It bounds what waits on it (backpressure): at most MaxPendingWrites
// proposals and MaxPendingReads reads; past that, and when the fsm refuses
// a proposal because too much is uncommitted (fsm.ErrBusy), the client is
// answered BUSY at once.
//
// On (re)start it asks the store for the durable log and the state actor
// for its applied index, and until both answer it drops peer messages
// (Raft tolerates loss) and answers clients UNAVAILABLE. Each incarnation
// has an epoch: every answer it waits for carries it (Durable, Fenced,
// Loaded, EntriesRead's tag, AppliedInfo, timers), and answers of an
// earlier incarnation are ignored.
package consensus

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/metrics"
	"github.com/ketch-raft/ketch/actors/protocol"
	"github.com/ketch-raft/ketch/fsm"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
	"google.golang.org/protobuf/proto"
)

// Config configures the fsm actor.
type Config struct {
	// Raft is the fsm's configuration; Rand is supplied by the actor.
	Raft fsm.Config
	// Peers maps every bootstrap member's id to its address (host:port),
	// this node's included. From the start on, the addresses come from the
	// configuration in the log (fsm.ConfigChanged) and from peers that
	// introduce themselves (RaftBatch.from_address); they are used for
	// the sender's peer table and for leader hints to clients.
	Peers map[uint64]string
	// Store, State and Sender are the sibling actors.
	Store, State, Sender *actor.PID
	// MaxPendingWrites and MaxPendingReads bound the client writes and
	// reads waiting on the fsm actor (queued, proposed and not yet
	// committed, or waiting for their read index). Past them a request is
	// answered BUSY at once. Defaults DefaultMaxPendingWrites and
	// DefaultMaxPendingReads.
	MaxPendingWrites, MaxPendingReads int
	// Stats receives the actor's counters; it outlives restarts. Optional.
	Stats *Stats
	// OnStatus, if set, is called with the fsm's status after every
	// message (the node publishes it for `ketch status`). It must not block.
	OnStatus func(fsm.Status)
	// OnConfig, if set, is called with the configuration in use whenever
	// it changes, and with the leader's match indexes (nil on other
	// nodes) at every timer firing. It must not block.
	OnConfig func(fsm.ConfigState, map[uint64]uint64)
	// OnView, if set, is called with the leader's progress per follower
	// and the tail of the log, at most every ViewInterval and at every
	// role change (the live view draws them). It must not block.
	OnView func(View)
	// Metrics receives commit and read latencies, proposal outcomes and
	// the traffic from each peer; nil records nothing.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// View is what OnView publishes.
type View struct {
	Progress []fsm.PeerView
	Recent   []fsm.EntryView
	Durable  uint64
}

// ViewInterval is how often at most the actor publishes a View, and
// ViewEntries how many of the log's last entries it holds.
const (
	ViewInterval = 100 * time.Millisecond
	ViewEntries  = 32
)

// Defaults of Config.
const (
	DefaultMaxPendingWrites = 16384
	DefaultMaxPendingReads  = 16384
)

// Stats are the fsm actor's counters. They are safe to read from any
// goroutine and survive the actor's restarts.
type Stats struct {
	// RejectedPeer counts peer messages the fsm rejected (fsm.Rejected).
	RejectedPeer atomic.Uint64
	// RejectedClient counts client requests refused as invalid here: a
	// ClientRequest or TransferRequest that did not come through the
	// gateway, or a proposal over the entry size limit.
	RejectedClient atomic.Uint64
	// Busy counts client requests answered BUSY.
	Busy atomic.Uint64
	// PendingWrites and PendingReads are the client requests waiting on
	// the actor now (MaxPendingWrites, MaxPendingReads).
	PendingWrites, PendingReads atomic.Int64
	// LeaderHeard is when (Unix nanoseconds) a batch last came from the
	// leader this node follows (for ketch_has_leader).
	LeaderHeard atomic.Int64

	recvMu sync.Mutex
	recv   map[uint64]*Received
}

// Received counts the Raft messages received from one peer (bytes only
// when the actor has Metrics: measuring them costs a walk of the batch).
type Received struct{ Messages, Bytes atomic.Uint64 }

// From returns the counters of peer, made on first use.
func (s *Stats) From(peer uint64) *Received {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	if s.recv == nil {
		s.recv = map[uint64]*Received{}
	}
	r := s.recv[peer]
	if r == nil {
		r = &Received{}
		s.recv[peer] = r
	}
	return r
}

// ReceivedFrom reports the messages and bytes received from each peer.
func (s *Stats) ReceivedFrom() map[uint64][2]uint64 {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	out := make(map[uint64][2]uint64, len(s.recv))
	for id, r := range s.recv {
		out[id] = [2]uint64{r.Messages.Load(), r.Bytes.Load()}
	}
	return out
}

// Crash makes the actor panic, for fault tests (nodes obey only with --chaos).
type Crash struct{ Reason string }

// timeout is a fired timer, addressed to the incarnation that set it.
type timeout struct {
	epoch uint64
	timer fsm.Timer
	gen   uint64
}

// waiter is a client whose proposal or read the fsm is deciding.
type waiter struct {
	replyTo          *actor.PID
	clientID, seqNum uint64
	typed            bool   // a typed key-value request (protocol.Waiter.Typed)
	reading          bool   // a read-only query, served through ReadIndex
	query            []byte // the query, for reads
	// index and term are where the leader appended the command (Proposed).
	index, term uint64
	// at is when the request reached the actor (commit and read latency).
	at time.Time
}

func (w waiter) isRead() bool { return w.reading }

// flushReads is sent to self when the first read of a batch arrives; by the
// time it is handled, every read queued before it is in the batch, and one
// heartbeat round confirms them all (thesis §6.4).
type flushReads struct{}

// fetchTag rides on a ReadEntries to the store and back, so the answer
// reaches the fsm as the Fetched of the Fetch that asked for it (and of
// this incarnation).
type fetchTag struct{ epoch, peer, term, lo uint64 }

// flushProposals is flushReads for writes: sent to self when the first
// proposal of a batch arrives, it steps every proposal queued before it as
// one fsm.Propose, so a burst of client writes costs one Persist and one
// AppendEntries per follower instead of one each (the mailbox is the batch).
type flushProposals struct{}

// Props returns the props of an fsm actor.
func Props(cfg Config) *actor.Props {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPendingWrites == 0 {
		cfg.MaxPendingWrites = DefaultMaxPendingWrites
	}
	if cfg.MaxPendingReads == 0 {
		cfg.MaxPendingReads = DefaultMaxPendingReads
	}
	if cfg.Stats == nil {
		cfg.Stats = &Stats{}
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &fsmActor{cfg: cfg, log: cfg.Logger.With("actor", "fsm")}
	})
}

type fsmActor struct {
	cfg Config
	log *slog.Logger

	epoch   uint64
	born    time.Time // start of the monotonic clock handed to the fsm
	node    *fsm.Node // nil until the store and state have answered
	loaded  *logstore.Loaded
	applied *protocol.AppliedInfo

	timers  [2]*time.Timer
	waiters map[uint64]waiter
	nextID  uint64
	// pendingReads and pendingWrites count the waiters of each kind, for
	// MaxPendingReads and MaxPendingWrites.
	pendingReads, pendingWrites int

	reads     []uint64       // reads waiting for the next flushReads
	proposals []fsm.Proposal // writes waiting for the next flushProposals

	warn     rateLimit // rejected peer messages
	warnCli  rateLimit // refused client requests
	lastStat fsm.Status
	lastView time.Time
	// recv caches the Stats counters of each peer (Stats.From locks).
	recv     map[uint64]*Received
	outbound []*pb.RaftMessage

	// The address book: the configuration's members' addresses (conf)
	// and those of servers that introduced themselves in a RaftBatch
	// (learned: a leader this node's configuration does not name yet).
	conf    fsm.ConfigState
	book    map[uint64]string
	learned map[uint64]string
	// peersAfterStep: the sender's table still holds peers the
	// configuration let go of; the step sends it the book once its
	// messages are out.
	peersAfterStep bool
	// members waits for the answers to membership changes.
	members map[uint64]*actor.PID
}

// maxLearned bounds the addresses learned from RaftBatches.
const maxLearned = 64

// rateLimit lets one log line through per second and counts the others.
type rateLimit struct {
	last       time.Time
	suppressed int
}

func (r *rateLimit) allow() (suppressed int, ok bool) {
	if now := time.Now(); now.Sub(r.last) >= time.Second {
		suppressed, r.last, r.suppressed = r.suppressed, now, 0
		return suppressed, true
	}
	r.suppressed++
	return 0, false
}

func (a *fsmActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		a.stopTimers()
	case *logstore.Loaded:
		if a.node == nil && m.Epoch == a.epoch {
			if m.Err != nil {
				panic(fmt.Sprintf("fsm: the store cannot load the log: %v", m.Err))
			}
			a.loaded = m
			a.maybeInit(ctx)
		}
	case *protocol.AppliedInfo:
		// An AppliedInfo of another epoch answers an earlier incarnation,
		// possibly from a state actor that has restarted since: taking it
		// could make this incarnation skip entries the state still needs.
		switch {
		case m.Epoch != a.epoch:
		case a.node == nil:
			a.applied = m
			a.maybeInit(ctx)
		default:
			a.step(ctx, fsm.Applied{Index: m.Index})
		}
	case *logstore.EntriesRead:
		if f, ok := m.Tag.(fetchTag); ok && a.node != nil && f.epoch == a.epoch && m.Err == nil {
			a.step(ctx, fsm.Fetched{Peer: f.peer, Term: f.term, Lo: f.lo, Entries: m.Entries})
		}
	case *protocol.SnapshotTaken:
		if a.node != nil {
			a.step(ctx, fsm.SnapshotTaken{Meta: m.Meta})
		}
	case *protocol.ChunkRead:
		if a.node != nil && m.Epoch == a.epoch {
			a.step(ctx, m.ChunkRead)
		}
	case *protocol.ChunkStaged:
		if a.node != nil && m.Epoch == a.epoch {
			a.step(ctx, m.ChunkStaged)
		}
	case *logstore.Durable:
		if a.node != nil && m.Epoch == a.epoch {
			a.step(ctx, fsm.Persisted{Seq: m.Seq})
		}
	case *logstore.Fenced:
		// The store crashed and lost writes of this incarnation that were
		// not yet durable: what this fsm believes is on disk no longer is.
		// Crash, and restart from what the store actually holds.
		if m.Epoch == a.epoch {
			panic(fmt.Sprintf("fsm: the store lost unsynced writes of this incarnation (seq %d refused); restarting from disk", m.Seq))
		}
	case *timeout:
		if a.node != nil && m.epoch == a.epoch {
			a.step(ctx, fsm.Timeout{Timer: m.timer, Gen: m.gen, Now: a.now()})
		}
	case *pb.RaftBatch:
		a.countReceived(m)
		if a.introduces(m) {
			a.learn(ctx, m.From, m.FromAddress)
		}
		for _, msg := range m.Messages {
			// Every message of a batch is from the batch's sender: with
			// mutual TLS the wire guard checked that the batch's from is
			// the node its connection's certificate names, so this is what
			// keeps node 2's certificate from speaking as node 3.
			if msg != nil && m.From != 0 && msg.From != m.From {
				a.rejectPeer(msg.From, fmt.Errorf("a message from node %d in a batch from node %d", msg.From, m.From))
				continue
			}
			a.peerMessage(ctx, msg)
		}
		if m.From != 0 && m.From == a.lastStat.Leader {
			a.cfg.Stats.LeaderHeard.Store(time.Now().UnixNano())
		}
	case *pb.RaftMessage:
		a.peerMessage(ctx, m)
	case *protocol.Command:
		a.command(ctx, m.Req, m.ReplyTo)
	case *pb.ClientRequest:
		// Not from the gateway (the wire guard routes none here, so it
		// came from inside this process): nothing checked it.
		a.refuseClient(ctx, ctx.Sender(), m.ClientId, m.Sequence, "client requests go to the gateway ("+gatewayName(ctx)+"), not to the fsm actor")
	case *flushReads:
		if a.node != nil && len(a.reads) > 0 {
			ids := a.reads
			a.reads = nil
			// The clock is read now, as the event is stepped, never when
			// the reads arrived: an earlier reading could let a deposed
			// leader serve under a lease that has already run out.
			a.step(ctx, fsm.ReadIndex{IDs: ids, Now: a.now()})
		}
	case *flushProposals:
		if a.node != nil && len(a.proposals) > 0 {
			ps := a.proposals
			a.proposals = nil
			a.step(ctx, fsm.Propose{Proposals: ps})
		}
	case *protocol.Transfer:
		a.transfer(ctx, m)
	case *protocol.Members:
		a.memberRequest(ctx, m)
	case *pb.TransferRequest:
		a.cfg.Stats.RejectedClient.Add(1)
		if ctx.Sender() != nil {
			ctx.Send(ctx.Sender(), &pb.TransferResponse{Error: "transfer requests go to the gateway (" + gatewayName(ctx) + "), not to the fsm actor"})
		}
	case *Crash:
		panic(fmt.Sprintf("crash requested: %s", m.Reason))
	}
}

// start begins an incarnation: a fresh epoch, and the questions whose
// answers rebuild the fsm (ARCHITECTURE §3 rule 6).
func (a *fsmActor) start(ctx actor.Context) {
	// The epoch only has to differ from the previous incarnation's; the
	// clock gives that without shared state.
	a.epoch = uint64(time.Now().UnixNano())
	a.born = time.Now()
	a.waiters = map[uint64]waiter{}
	a.members = map[uint64]*actor.PID{}
	a.book = maps.Clone(a.cfg.Peers)
	a.learned = map[uint64]string{}
	ctx.Request(a.cfg.Store, &logstore.LoadRequest{Epoch: a.epoch})
	ctx.Request(a.cfg.State, &protocol.AppliedQuery{Epoch: a.epoch})
}

func (a *fsmActor) maybeInit(ctx actor.Context) {
	if a.loaded == nil || a.applied == nil {
		return
	}
	cfg := a.cfg.Raft
	cfg.Rand = rand.New(rand.NewPCG(a.epoch, uint64(cfg.ID)))
	applied := a.applied
	if last := a.loaded.State.LastIndex(); applied.Index > max(last, applied.Snapshot.Index) {
		// The state machine applied entries the store does not have (and
		// its snapshot does not hold): the store lost committed entries
		// (or the state is not this node's). Never clamp: crash, and let
		// the supervisor restart from disk.
		panic(fmt.Sprintf("fsm: the state machine applied index %d but the store's log ends at %d; the store lost committed entries", applied.Index, last))
	}
	base := a.loaded.State.Base
	node, err := fsm.New(cfg, fsm.Restore{
		HardState:      a.loaded.State.HardState,
		Base:           fsm.SnapshotMeta{Index: base.Index, Term: base.Term},
		BaseConfig:     fsm.ConfigState{Config: base.Config, Index: base.ConfigIndex},
		SnapshotConfig: applied.SnapshotConfig,
		Entries:        a.loaded.State.Entries,
		Snapshot:       applied.Snapshot,
		Staging:        applied.Staging,
		Applied:        applied.Index,
	})
	if err != nil {
		panic(fmt.Sprintf("fsm: cannot restore from the store: %v", err))
	}
	a.node, a.loaded, a.applied = node, nil, nil
	st := node.Status()
	a.log.Info("fsm started", "term", st.Term, "last_index", st.LastIndex, "applied", st.Applied)
	a.step(ctx, fsm.Start{})
}

func (a *fsmActor) peerMessage(ctx actor.Context, m *pb.RaftMessage) {
	if a.node == nil {
		return // still loading: Raft tolerates the loss
	}
	a.step(ctx, fsm.Message{Msg: m})
}

// command takes a client request the gateway validated: a read joins the
// next ReadIndex batch, a write the next proposal batch, unless too many of
// its kind wait already (BUSY).
func (a *fsmActor) command(ctx actor.Context, r *pb.ClientRequest, replyTo *actor.PID) {
	if a.node == nil {
		a.answer(ctx, replyTo, &pb.ClientResponse{ClientId: r.ClientId, Sequence: r.Sequence,
			Status: pb.ClientStatus_CLIENT_STATUS_UNAVAILABLE, Error: "the node is starting; retry shortly"})
		return
	}
	typed := r.Command != nil
	var body []byte // the command or query as the state machine sees it
	if typed {
		b, err := proto.Marshal(r.Command)
		if err != nil {
			a.refuseClient(ctx, replyTo, r.ClientId, r.Sequence, "cannot encode the command: "+err.Error())
			return
		}
		body = b
	} else {
		body = r.Data
	}
	if typed && r.Command.GetGet() != nil || !typed && r.Query {
		// Reads do not go through the log: ReadIndex (thesis §6.4).
		if a.pendingReads >= a.cfg.MaxPendingReads {
			a.busy(ctx, replyTo, r.ClientId, r.Sequence, fmt.Sprintf("node %d has %d reads waiting (the limit)", a.cfg.Raft.ID, a.pendingReads))
			return
		}
		id := a.wait(waiter{replyTo: replyTo, clientID: r.ClientId, seqNum: r.Sequence, typed: typed, reading: true, query: body})
		if len(a.reads) == 0 {
			ctx.Send(ctx.Self(), &flushReads{})
		}
		a.reads = append(a.reads, id)
		return
	}
	if a.pendingWrites >= a.cfg.MaxPendingWrites {
		a.cfg.Metrics.ProposalFailed()
		a.busy(ctx, replyTo, r.ClientId, r.Sequence, fmt.Sprintf("node %d has %d writes waiting (the limit)", a.cfg.Raft.ID, a.pendingWrites))
		return
	}
	// The log holds who sent the command with its bytes, so that every
	// replica's state actor deduplicates retries alike (thesis §6.3).
	data, err := proto.Marshal(&pb.ClientCommand{ClientId: r.ClientId, Sequence: r.Sequence, Data: body})
	if err != nil {
		a.refuseClient(ctx, replyTo, r.ClientId, r.Sequence, "cannot encode the command: "+err.Error())
		return
	}
	id := a.wait(waiter{replyTo: replyTo, clientID: r.ClientId, seqNum: r.Sequence, typed: typed})
	if len(a.proposals) == 0 {
		ctx.Send(ctx.Self(), &flushProposals{})
	}
	a.proposals = append(a.proposals, fsm.Proposal{ID: id, Data: data})
}

// wait registers a waiter and returns its id.
func (a *fsmActor) wait(w waiter) uint64 {
	a.nextID++
	w.at = time.Now()
	a.waiters[a.nextID] = w
	if w.isRead() {
		a.pendingReads++
		a.cfg.Stats.PendingReads.Store(int64(a.pendingReads))
	} else {
		a.pendingWrites++
		a.cfg.Stats.PendingWrites.Store(int64(a.pendingWrites))
	}
	return a.nextID
}

// settle removes waiter id and returns it.
func (a *fsmActor) settle(id uint64) (waiter, bool) {
	w, ok := a.waiters[id]
	if !ok {
		return w, false
	}
	delete(a.waiters, id)
	if w.isRead() {
		a.pendingReads--
		a.cfg.Stats.PendingReads.Store(int64(a.pendingReads))
	} else {
		a.pendingWrites--
		a.cfg.Stats.PendingWrites.Store(int64(a.pendingWrites))
	}
	return w, true
}

// busy answers BUSY: the request was not taken; the client retries later.
func (a *fsmActor) busy(ctx actor.Context, to *actor.PID, clientID, seq uint64, why string) {
	a.cfg.Stats.Busy.Add(1)
	a.answer(ctx, to, &pb.ClientResponse{ClientId: clientID, Sequence: seq,
		Status: pb.ClientStatus_CLIENT_STATUS_BUSY, Error: why + "; retry after a pause"})
}

// refuseClient answers INVALID and counts the refusal.
func (a *fsmActor) refuseClient(ctx actor.Context, to *actor.PID, clientID, seq uint64, why string) {
	a.cfg.Stats.RejectedClient.Add(1)
	a.cfg.Metrics.Rejected("client", 1)
	if n, ok := a.warnCli.allow(); ok {
		a.log.Warn("refused a client request", "client", clientID, "err", why, "suppressed", n)
	}
	a.answer(ctx, to, &pb.ClientResponse{ClientId: clientID, Sequence: seq, Status: pb.ClientStatus_CLIENT_STATUS_INVALID, Error: why})
}

// gatewayName is the gateway's actor id beside this fsm actor.
func gatewayName(ctx actor.Context) string {
	id := ctx.Self().Id
	if i := len(id) - len("fsm"); i > 0 && id[i:] == "fsm" {
		return id[:i] + "gateway"
	}
	return "the gateway"
}

// step runs one event through the fsm and carries out its actions in order.
func (a *fsmActor) step(ctx actor.Context, ev fsm.Event) {
	for _, act := range a.node.Step(ev) {
		switch x := act.(type) {
		case fsm.Persist:
			ctx.Request(a.cfg.Store, &logstore.WriteRequest{Epoch: a.epoch, Seq: x.Seq, HardState: x.HardState, Entries: x.Entries})
		case fsm.Send:
			a.outbound = append(a.outbound, x.Msg)
		case fsm.Proposed:
			if w, ok := a.waiters[x.ID]; ok {
				w.index, w.term = x.Index, x.Term
				a.waiters[x.ID] = w
			}
		case fsm.Apply:
			a.apply(ctx, x)
		case fsm.Reply:
			a.reply(ctx, x)
		case fsm.ReadReady:
			a.readReady(ctx, x)
		case fsm.SetTimer:
			a.setTimer(ctx, x)
		case fsm.Fetch:
			ctx.Request(a.cfg.Store, &logstore.ReadEntries{Lo: x.Lo, Hi: x.Hi, MaxBytes: x.MaxBytes,
				Tag: fetchTag{epoch: a.epoch, peer: x.Peer, term: x.Term, lo: x.Lo}})
		case fsm.Compact:
			ctx.Request(a.cfg.Store, &logstore.CompactRequest{Epoch: a.epoch, Through: x.Through, Term: x.Term, Reset: x.Reset,
				Config: x.Config.Config, ConfigIndex: x.Config.Index})
		case fsm.ReadChunk:
			ctx.Request(a.cfg.State, &protocol.ReadChunk{Epoch: a.epoch, ReadChunk: x})
		case fsm.EndTransfer:
			ctx.Send(a.cfg.State, &protocol.EndTransfer{Peer: x.Peer})
		case fsm.StageChunk:
			ctx.Request(a.cfg.State, &protocol.StageChunk{Epoch: a.epoch, StageChunk: x})
		case fsm.InstallSnapshot:
			a.log.Info("installing a snapshot from the leader", "index", x.Meta.Index, "term", x.Meta.Term)
			ctx.Request(a.cfg.State, &protocol.InstallSnapshot{Epoch: a.epoch, Meta: x.Meta})
		case fsm.ConfigChanged:
			a.configChanged(ctx, x)
		case fsm.MembersChanged:
			a.membersChanged(ctx, x)
		case fsm.Removed:
			a.log.Warn("this node was removed from the cluster: it no longer votes or campaigns; stop it and retire its data dir (its id is never reused)", "index", x.Index)
		case fsm.Rejected:
			a.rejectPeer(x.From, x.Err)
		}
	}
	if len(a.outbound) > 0 {
		ctx.Send(a.cfg.Sender, &sender.Outbound{Msgs: a.outbound})
		a.outbound = nil
	}
	if a.peersAfterStep {
		a.peersAfterStep = false
		a.sendPeers(ctx)
	}
	if _, ok := ev.(fsm.Timeout); ok && a.cfg.OnConfig != nil {
		a.cfg.OnConfig(a.conf, a.node.Matches())
	}
	st := a.node.Status()
	roleChanged := st.Role != a.lastStat.Role || st.Leader != a.lastStat.Leader
	if st != a.lastStat {
		a.logRoleChange(st)
		a.lastStat = st
		if a.cfg.OnStatus != nil {
			a.cfg.OnStatus(st)
		}
	}
	if a.cfg.OnView != nil {
		if now := time.Now(); roleChanged || now.Sub(a.lastView) >= ViewInterval {
			a.lastView = now
			a.cfg.OnView(View{Progress: a.node.Progress(), Recent: a.node.Recent(ViewEntries), Durable: st.Durable})
		}
	}
}

// rejectPeer counts and logs (rate limited) a refused peer message.
func (a *fsmActor) rejectPeer(from uint64, err error) {
	a.cfg.Stats.RejectedPeer.Add(1)
	a.cfg.Metrics.Rejected("peer", 1)
	if n, ok := a.warn.allow(); ok {
		a.log.Warn("rejected a peer message", "peer", from, "err", err,
			"suppressed", n, "rejected_total", a.cfg.Stats.RejectedPeer.Load())
	}
}

// countReceived counts a batch from a peer the address book knows (so the
// counters stay bounded by the members and learned leaders).
func (a *fsmActor) countReceived(b *pb.RaftBatch) {
	if _, known := a.book[b.From]; !known || b.From == a.cfg.Raft.ID {
		return
	}

	r := a.recv[b.From]
	if r == nil {
		if a.recv == nil {
			a.recv = map[uint64]*Received{}
		}
		r = a.cfg.Stats.From(b.From)
		a.recv[b.From] = r
	}
	r.Messages.Add(uint64(len(b.Messages)))
	if a.cfg.Metrics != nil {
		n := proto.Size(b)
		r.Bytes.Add(uint64(n))
		a.cfg.Metrics.Received(b.From, len(b.Messages), n)
	}
}

func (a *fsmActor) apply(ctx actor.Context, x fsm.Apply) {
	req := &protocol.ApplyRequest{Epoch: a.epoch, Entries: x.Entries}
	for _, ref := range x.Refs {
		if w, ok := a.settle(ref.ID); ok {
			a.cfg.Metrics.Committed(w.at)
			req.Waiters = append(req.Waiters, protocol.Waiter{Index: ref.Index, ReplyTo: w.replyTo, Typed: w.typed})
		}
	}
	ctx.Request(a.cfg.State, req)
}

func (a *fsmActor) reply(ctx actor.Context, x fsm.Reply) {
	w, ok := a.settle(x.ID)
	if !ok {
		return
	}
	a.cfg.Metrics.ProposalFailed()
	switch {
	case errors.Is(x.Err, fsm.ErrNotLeader), errors.Is(x.Err, fsm.ErrTransferring):
		// Neither was appended: the client may send it elsewhere.
		a.answer(ctx, w.replyTo, &pb.ClientResponse{ClientId: w.clientID, Sequence: w.seqNum,
			Status: pb.ClientStatus_CLIENT_STATUS_NOT_LEADER, LeaderId: x.Leader, LeaderAddress: a.book[x.Leader]})
	case errors.Is(x.Err, fsm.ErrBusy):
		a.busy(ctx, w.replyTo, w.clientID, w.seqNum, fmt.Sprintf("node %d: %v", a.cfg.Raft.ID, x.Err))
	case errors.Is(x.Err, fsm.ErrTooLarge):
		a.refuseClient(ctx, w.replyTo, w.clientID, w.seqNum, fmt.Sprintf("the command is over the entry limit of %d bytes", a.cfg.Raft.Limits.WithDefaults().MaxEntryBytes))
	default:
		// ErrLeadershipLost: appended, outcome unknown; say where.
		why := x.Err.Error()
		if w.index != 0 {
			why = fmt.Sprintf("%s (it was appended at index %d of term %d)", why, w.index, w.term)
		}
		a.answer(ctx, w.replyTo, &pb.ClientResponse{ClientId: w.clientID, Sequence: w.seqNum,
			Status: pb.ClientStatus_CLIENT_STATUS_UNKNOWN, Error: why, Index: w.index, Term: w.term})
	}
}

// readReady hands a confirmed read to the state actor, which has applied
// at least its index, or tells the client why it was not served.
func (a *fsmActor) readReady(ctx actor.Context, x fsm.ReadReady) {
	w, ok := a.settle(x.ID)
	if !ok {
		return
	}
	switch x.Err {
	case nil:
		a.cfg.Metrics.ReadConfirmed(w.at)
		ctx.Send(a.cfg.State, &protocol.ReadRequest{Index: x.Index, Query: w.query, Typed: w.typed, ReplyTo: w.replyTo, ClientID: w.clientID, SeqNum: w.seqNum})
	case fsm.ErrNotLeader:
		a.answer(ctx, w.replyTo, &pb.ClientResponse{ClientId: w.clientID, Sequence: w.seqNum,
			Status: pb.ClientStatus_CLIENT_STATUS_NOT_LEADER, LeaderId: x.Leader, LeaderAddress: a.book[x.Leader]})
	default: // not confirmed: nothing was read, so the client may retry
		a.answer(ctx, w.replyTo, &pb.ClientResponse{ClientId: w.clientID, Sequence: w.seqNum,
			Status: pb.ClientStatus_CLIENT_STATUS_UNAVAILABLE, Error: x.Err.Error()})
	}
}

// transfer starts a leadership transfer (thesis §3.10) if this node leads.
func (a *fsmActor) transfer(ctx actor.Context, m *protocol.Transfer) {
	resp := &pb.TransferResponse{}
	switch {
	case a.node == nil:
		resp.Error = "the node is starting; retry shortly"
	case a.node.Status().Role != fsm.Leader:
		st := a.node.Status()
		resp.Error = fmt.Sprintf("node %d is not the leader; ask the leader (node %d)", a.cfg.Raft.ID, st.Leader)
		resp.LeaderId, resp.LeaderAddress = st.Leader, a.book[st.Leader]
	case m.To == a.cfg.Raft.ID:
		resp.Error = fmt.Sprintf("node %d already leads; there is nothing to transfer", m.To)
	case m.To != 0 && !isVoter(a.conf, m.To):
		resp.Error = fmt.Sprintf("node %d is not another voter of the cluster", m.To)
	case m.To == 0 && !hasOtherVoter(a.conf, a.cfg.Raft.ID):
		resp.Error = fmt.Sprintf("node %d is the only voter; there is no one to hand leadership to (add a voter with 'ketch member add')", a.cfg.Raft.ID)
	default:
		a.step(ctx, fsm.TransferLeadership{To: m.To})
		resp.Ok = true
	}
	if m.ReplyTo != nil {
		ctx.Send(m.ReplyTo, resp)
	}
}

func (a *fsmActor) answer(ctx actor.Context, to *actor.PID, resp *pb.ClientResponse) {
	if to != nil {
		ctx.Send(to, resp)
	}
}

func (a *fsmActor) setTimer(ctx actor.Context, x fsm.SetTimer) {
	if t := a.timers[x.Timer]; t != nil {
		t.Stop()
	}
	self, system, msg := ctx.Self(), ctx.ActorSystem(), &timeout{epoch: a.epoch, timer: x.Timer, gen: x.Gen}
	a.timers[x.Timer] = time.AfterFunc(x.After, func() { system.Root.Send(self, msg) })
}

func (a *fsmActor) stopTimers() {
	for i, t := range a.timers {
		if t != nil {
			t.Stop()
			a.timers[i] = nil
		}
	}
}

// now is the fsm's monotonic clock (never 0, which means "no time"): the
// fsm uses it only for lease reads (thesis §6.4.1).
func (a *fsmActor) now() time.Duration { return time.Since(a.born) + 1 }

// logRoleChange logs elections and leadership changes once each, at Info.
func (a *fsmActor) logRoleChange(st fsm.Status) {
	if st.Role == a.lastStat.Role && st.Leader == a.lastStat.Leader {
		return
	}
	switch st.Role {
	case fsm.Leader:
		a.log.Info("became leader", "term", st.Term, "last_index", st.LastIndex)
	case fsm.Candidate:
		a.log.Info("starting an election", "term", st.Term)
	default:
		if st.Leader != 0 && st.Leader != a.lastStat.Leader {
			a.log.Info("following", "leader", st.Leader, "term", st.Term)
		}
	}
}

// ------------------------------------------------------------ membership

// configChanged takes the configuration in use (thesis §4.1): the sender's
// peer table and the address book follow it.
func (a *fsmActor) configChanged(ctx actor.Context, x fsm.ConfigChanged) {
	a.conf = x.Config
	book := map[uint64]string{a.cfg.Raft.ID: a.cfg.Peers[a.cfg.Raft.ID]}
	for _, m := range x.Peers {
		if m.Address != "" {
			book[m.Id] = m.Address
		}
	}
	for id, addr := range a.learned {
		if _, ok := book[id]; ok {
			delete(a.learned, id) // the configuration names it now
			continue
		}
		book[id] = addr
	}
	// The fsm reports the change before the step's messages, so that the
	// sender knows new peers when their messages come; but the step may
	// also send the last heartbeat to a server the configuration lets go
	// of (carrying the commit index that tells it it was removed). So the
	// peers that leave stay in the sender's table until this step's
	// messages are out (see step).
	union := maps.Clone(book)
	for id, addr := range a.book {
		if _, ok := book[id]; !ok {
			union[id] = addr
			a.peersAfterStep = true
			a.cfg.Metrics.Forget(id) // its series go: labels stay bounded by the members
		}
	}
	a.book = book
	a.sendPeerTable(ctx, union)
	if a.cfg.OnConfig != nil {
		a.cfg.OnConfig(a.conf, a.node.Matches())
	}
}

// introduces reports whether a batch may teach this node its sender's
// address: it holds a leader's or a candidate's message of this cluster,
// from the batch's sender, at this node's term or later. (Not proof: peers
// are not authenticated. But a batch of another cluster, or one claiming
// another sender than its messages, teaches nothing.)
func (a *fsmActor) introduces(b *pb.RaftBatch) bool {
	if a.node == nil || b.From == 0 || b.FromAddress == "" {
		return false
	}
	term := a.node.Status().Term
	for _, m := range b.Messages {
		if m == nil || m.ClusterId != a.cfg.Raft.ClusterID || m.From != b.From || m.To != a.cfg.Raft.ID || m.Term < term || m.Term >= fsm.MaxTerm {
			continue
		}
		if m.GetAppendEntries() != nil || m.GetInstallSnapshot() != nil || m.GetTimeoutNow() != nil || m.GetRequestVote() != nil {
			return true
		}
	}
	return false
}

// learn records the address of a server that introduced itself in a
// RaftBatch and that the configuration does not name (a leader of a
// configuration this node has not received yet; any leader, for a server
// that is joining), so that this node can answer it.
func (a *fsmActor) learn(ctx actor.Context, id uint64, addr string) {
	if id == 0 || id == a.cfg.Raft.ID || addr == "" || a.book[id] == addr {
		return
	}
	if _, named := a.book[id]; named && a.learned[id] == "" {
		return // the configuration names it: that address stands
	}
	if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" || len(addr) > 256 {
		return
	}
	for other, known := range a.book {
		if known == addr && other != id {
			return // another server's address
		}
	}
	if _, ok := a.learned[id]; !ok && len(a.learned) >= maxLearned {
		// Full: forget a learned address other than the leader's.
		leader := a.node.Status().Leader
		for old := range a.learned {
			if old != leader {
				delete(a.learned, old)
				delete(a.book, old)
				break
			}
		}
	}
	a.learned[id] = addr
	a.book[id] = addr
	a.log.Info("learned a peer's address from its messages", "peer", id, "addr", addr)
	a.sendPeers(ctx)
}

func (a *fsmActor) sendPeers(ctx actor.Context) {
	a.sendPeerTable(ctx, a.book)
}

func (a *fsmActor) sendPeerTable(ctx actor.Context, book map[uint64]string) {
	peers := maps.Clone(book)
	delete(peers, a.cfg.Raft.ID)
	ctx.Send(a.cfg.Sender, &sender.SetPeers{Peers: peers})
}

// isVoter reports whether id votes in the configuration c.
// hasOtherVoter reports whether the configuration has a voter other than
// self (in either half of a joint configuration).
func hasOtherVoter(c fsm.ConfigState, self uint64) bool {
	if c.Config == nil {
		return false
	}
	for _, ms := range [][]*pb.Member{c.Config.Members, c.Config.Outgoing} {
		for _, m := range ms {
			if m.Id != self && isVoter(c, m.Id) {
				return true
			}
		}
	}
	return false
}

func isVoter(c fsm.ConfigState, id uint64) bool {
	if c.Config == nil {
		return false
	}
	for _, m := range c.Config.Members {
		if m.Id == id && m.Role == pb.MemberRole_MEMBER_ROLE_VOTER {
			return true
		}
	}
	for _, m := range c.Config.Outgoing { // C_old's voters, during a joint change
		if m.Id == id {
			return true
		}
	}
	return false
}

// memberRequest lists the configuration or starts a change (only the
// leader can; the fsm answers with MembersChanged).
func (a *fsmActor) memberRequest(ctx actor.Context, m *protocol.Members) {
	if a.node == nil {
		a.answerMembers(ctx, m.ReplyTo, &pb.MemberResponse{Error: "the node is starting; retry shortly", Retry: true})
		return
	}
	if m.Req.Op == pb.MemberOp_MEMBER_OP_LIST {
		c := a.node.Configuration()
		a.answerMembers(ctx, m.ReplyTo, &pb.MemberResponse{Ok: true, Configuration: c.Config, ConfigurationIndex: c.Index,
			LeaderId: a.node.Status().Leader, LeaderAddress: a.book[a.node.Status().Leader]})
		return
	}
	a.nextID++
	a.members[a.nextID] = m.ReplyTo
	a.step(ctx, fsm.ChangeMembers{ID: a.nextID, Add: m.Req.Add, Promote: m.Req.Promote, Remove: m.Req.Remove, ExpectIndex: m.Req.ExpectIndex})
}

// membersChanged answers a membership change.
func (a *fsmActor) membersChanged(ctx actor.Context, x fsm.MembersChanged) {
	to, ok := a.members[x.ID]
	if !ok {
		return
	}
	delete(a.members, x.ID)
	resp := &pb.MemberResponse{Ok: x.Err == nil, Configuration: x.Config.Config, ConfigurationIndex: x.Config.Index}
	if x.Err != nil {
		resp.Error = x.Err.Error()
		resp.Retry = errors.Is(x.Err, fsm.ErrNotLeader) || errors.Is(x.Err, fsm.ErrConfigNotReady) ||
			errors.Is(x.Err, fsm.ErrTransferring) || errors.Is(x.Err, fsm.ErrConfigChanging)
		if errors.Is(x.Err, fsm.ErrLeadershipLost) {
			resp.Error = "leadership was lost after the new configuration was appended: the change may or may not take effect; check with 'ketch member list'"
		}
		if errors.Is(x.Err, fsm.ErrNotLeader) {
			resp.Error = fmt.Sprintf("node %d is not the leader; ask the leader (node %d)", a.cfg.Raft.ID, x.Leader)
			resp.LeaderId, resp.LeaderAddress = x.Leader, a.book[x.Leader]
		}
	}
	a.answerMembers(ctx, to, resp)
}

func (a *fsmActor) answerMembers(ctx actor.Context, to *actor.PID, resp *pb.MemberResponse) {
	if to != nil {
		ctx.Send(to, resp)
	}
}
