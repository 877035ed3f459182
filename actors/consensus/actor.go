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
// a message. Everything from the network is validated before it reaches the
// fsm.
//
// On (re)start it asks the store for the durable log and the state actor
// for its applied index, and until both answer it drops peer messages
// (Raft tolerates loss) and answers clients UNAVAILABLE. Each incarnation
// has an epoch; durability reports and timers of an earlier incarnation are
// ignored.
package consensus

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/state"
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
	// Peers maps every member's id to its address (host:port), this node's
	// included; it is used for leader hints to clients.
	Peers map[uint64]string
	// Store, State and Sender are the sibling actors.
	Store, State, Sender *actor.PID
	// Limits bounds peer messages.
	Limits Limits
	// OnStatus, if set, is called with the fsm's status after every
	// message (the node publishes it for `ketch status`). It must not block.
	OnStatus func(fsm.Status)
	Logger   *slog.Logger
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
	read             *pb.KVCommand // the read-only command, for reads
}

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
	cfg.Limits.setDefaults()
	members := map[uint64]bool{}
	for _, m := range cfg.Raft.Members {
		members[m] = true
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &fsmActor{cfg: cfg, members: members, log: cfg.Logger.With("actor", "fsm", "node", cfg.Raft.ID)}
	})
}

type fsmActor struct {
	cfg     Config
	members map[uint64]bool
	log     *slog.Logger

	epoch   uint64
	born    time.Time // start of the monotonic clock handed to the fsm
	node    *fsm.Node // nil until the store and state have answered
	loaded  *logstore.Loaded
	applied *uint64

	timers  [2]*time.Timer
	waiters map[uint64]waiter
	nextID  uint64

	reads     []uint64       // reads waiting for the next flushReads
	proposals []fsm.Proposal // writes waiting for the next flushProposals

	rejected uint64 // peer messages refused at the boundary
	lastWarn time.Time
	lastStat fsm.Status
	outbound []*pb.RaftMessage
}

func (a *fsmActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		a.stopTimers()
	case *logstore.Loaded:
		if a.node == nil {
			if m.Err != nil {
				panic(fmt.Sprintf("fsm: the store cannot load the log: %v", m.Err))
			}
			a.loaded = m
			a.maybeInit(ctx)
		}
	case *state.AppliedInfo:
		if a.node == nil {
			idx := m.Index
			a.applied = &idx
			a.maybeInit(ctx)
		} else {
			a.step(ctx, fsm.Applied{Index: m.Index})
		}
	case *logstore.EntriesRead:
		if f, ok := m.Tag.(fetchTag); ok && a.node != nil && f.epoch == a.epoch && m.Err == nil {
			a.step(ctx, fsm.Fetched{Peer: f.peer, Term: f.term, Lo: f.lo, Entries: m.Entries})
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
		for _, msg := range m.Messages {
			a.peerMessage(ctx, msg)
		}
	case *pb.RaftMessage:
		a.peerMessage(ctx, m)
	case *pb.ClientRequest:
		a.clientRequest(ctx, m)
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
	case *pb.TransferRequest:
		a.transfer(ctx, m)
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
	ctx.Request(a.cfg.Store, &logstore.LoadRequest{})
	ctx.Request(a.cfg.State, &state.AppliedQuery{})
}

func (a *fsmActor) maybeInit(ctx actor.Context) {
	if a.loaded == nil || a.applied == nil {
		return
	}
	cfg := a.cfg.Raft
	cfg.Rand = rand.New(rand.NewPCG(a.epoch, uint64(cfg.ID)))
	node, err := fsm.New(cfg, fsm.Restore{
		HardState: a.loaded.State.HardState,
		Entries:   a.loaded.State.Entries,
		Applied:   min(*a.applied, uint64(len(a.loaded.State.Entries))),
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
	if err := validatePeer(m, a.cfg.Raft.ClusterID, a.cfg.Raft.ID, a.members, a.cfg.Limits); err != nil {
		a.rejected++
		if now := time.Now(); now.Sub(a.lastWarn) > time.Second {
			a.lastWarn = now
			a.log.Warn("rejected peer message", "peer", m.GetFrom(), "err", err, "rejected_total", a.rejected)
		}
		return
	}
	a.step(ctx, fsm.Message{Msg: m})
}

func (a *fsmActor) clientRequest(ctx actor.Context, r *pb.ClientRequest) {
	if a.node == nil {
		a.answer(ctx, ctx.Sender(), &pb.ClientResponse{ClientId: r.ClientId, Sequence: r.Sequence,
			Status: pb.ClientStatus_CLIENT_STATUS_UNAVAILABLE, Error: "the node is starting; retry shortly"})
		return
	}
	if r.Command.GetGet() != nil {
		// Reads do not go through the log: ReadIndex (thesis §6.4).
		a.nextID++
		a.waiters[a.nextID] = waiter{replyTo: ctx.Sender(), clientID: r.ClientId, seqNum: r.Sequence, read: r.Command}
		if len(a.reads) == 0 {
			ctx.Send(ctx.Self(), &flushReads{})
		}
		a.reads = append(a.reads, a.nextID)
		return
	}
	data, err := proto.Marshal(&pb.KVEntry{ClientId: r.ClientId, Sequence: r.Sequence, Command: r.Command})
	if err != nil {
		a.answer(ctx, ctx.Sender(), &pb.ClientResponse{ClientId: r.ClientId, Sequence: r.Sequence,
			Status: pb.ClientStatus_CLIENT_STATUS_INVALID, Error: "cannot encode the command: " + err.Error()})
		return
	}
	a.nextID++
	a.waiters[a.nextID] = waiter{replyTo: ctx.Sender(), clientID: r.ClientId, seqNum: r.Sequence}
	if len(a.proposals) == 0 {
		ctx.Send(ctx.Self(), &flushProposals{})
	}
	a.proposals = append(a.proposals, fsm.Proposal{ID: a.nextID, Data: data})
}

// step runs one event through the fsm and carries out its actions in order.
func (a *fsmActor) step(ctx actor.Context, ev fsm.Event) {
	for _, act := range a.node.Step(ev) {
		switch x := act.(type) {
		case fsm.Persist:
			ctx.Request(a.cfg.Store, &logstore.WriteRequest{Epoch: a.epoch, Seq: x.Seq, HardState: x.HardState, Entries: x.Entries})
		case fsm.Send:
			a.outbound = append(a.outbound, x.Msg)
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
		}
	}
	if len(a.outbound) > 0 {
		ctx.Send(a.cfg.Sender, &sender.Outbound{Msgs: a.outbound})
		a.outbound = nil
	}
	if st := a.node.Status(); st != a.lastStat {
		a.logRoleChange(st)
		a.lastStat = st
		if a.cfg.OnStatus != nil {
			a.cfg.OnStatus(st)
		}
	}
}

func (a *fsmActor) apply(ctx actor.Context, x fsm.Apply) {
	req := &state.ApplyRequest{Entries: x.Entries}
	for _, ref := range x.Refs {
		if w, ok := a.waiters[ref.ID]; ok {
			delete(a.waiters, ref.ID)
			req.Waiters = append(req.Waiters, state.Waiter{Index: ref.Index, ReplyTo: w.replyTo})
		}
	}
	ctx.Request(a.cfg.State, req)
}

func (a *fsmActor) reply(ctx actor.Context, x fsm.Reply) {
	w, ok := a.waiters[x.ID]
	if !ok {
		return
	}
	delete(a.waiters, x.ID)
	resp := &pb.ClientResponse{ClientId: w.clientID, Sequence: w.seqNum}
	switch x.Err {
	case fsm.ErrNotLeader, fsm.ErrTransferring:
		// Neither was appended: the client may send it elsewhere.
		resp.Status = pb.ClientStatus_CLIENT_STATUS_NOT_LEADER
		resp.LeaderId = x.Leader
		resp.LeaderAddress = a.cfg.Peers[x.Leader]
	default:
		resp.Status = pb.ClientStatus_CLIENT_STATUS_UNKNOWN
		resp.Error = x.Err.Error()
	}
	a.answer(ctx, w.replyTo, resp)
}

// readReady hands a confirmed read to the state actor, which has applied
// at least its index, or tells the client why it was not served.
func (a *fsmActor) readReady(ctx actor.Context, x fsm.ReadReady) {
	w, ok := a.waiters[x.ID]
	if !ok {
		return
	}
	delete(a.waiters, x.ID)
	switch x.Err {
	case nil:
		ctx.Send(a.cfg.State, &state.ReadRequest{Index: x.Index, Command: w.read, ReplyTo: w.replyTo, ClientID: w.clientID, SeqNum: w.seqNum})
	case fsm.ErrNotLeader:
		a.answer(ctx, w.replyTo, &pb.ClientResponse{ClientId: w.clientID, Sequence: w.seqNum,
			Status: pb.ClientStatus_CLIENT_STATUS_NOT_LEADER, LeaderId: x.Leader, LeaderAddress: a.cfg.Peers[x.Leader]})
	default: // not confirmed: nothing was read, so the client may retry
		a.answer(ctx, w.replyTo, &pb.ClientResponse{ClientId: w.clientID, Sequence: w.seqNum,
			Status: pb.ClientStatus_CLIENT_STATUS_UNAVAILABLE, Error: x.Err.Error()})
	}
}

// transfer starts a leadership transfer (thesis §3.10) if this node leads.
func (a *fsmActor) transfer(ctx actor.Context, m *pb.TransferRequest) {
	resp := &pb.TransferResponse{}
	switch {
	case a.node == nil:
		resp.Error = "the node is starting; retry shortly"
	case a.node.Status().Role != fsm.Leader:
		st := a.node.Status()
		resp.Error = fmt.Sprintf("node %d is not the leader; ask the leader (node %d)", a.cfg.Raft.ID, st.Leader)
		resp.LeaderId, resp.LeaderAddress = st.Leader, a.cfg.Peers[st.Leader]
	case m.To == a.cfg.Raft.ID || m.To != 0 && a.cfg.Peers[m.To] == "":
		resp.Error = fmt.Sprintf("node %d is not another member of the cluster", m.To)
	default:
		a.step(ctx, fsm.TransferLeadership{To: m.To})
		resp.Ok = true
	}
	if ctx.Sender() != nil {
		ctx.Send(ctx.Sender(), resp)
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
