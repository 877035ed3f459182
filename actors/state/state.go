// Package state is the state actor of a ketch node (sloop_state in the
// Erlang original): it applies committed log entries, in index order and
// exactly once per index, to the replicated state machine (a
// statemachine.StateMachine: the user's, or the built-in key-value store)
// and answers the clients waiting for them.
//
// It owns what the log's entries mean beyond Raft: each normal entry is a
// pb.ClientCommand (who sent it, with which sequence number, and the
// command's bytes). Client sessions (Raft thesis §6.3) live here, not in
// the state machine: a command whose client and sequence number were
// applied before is answered with the result it got then and not handed
// to the state machine again. Consecutive commands go to the state machine
// as one batch.
//
// The state lives in memory and is rebuilt by replay when the actor
// restarts: a restarted state actor starts empty, and the supervisor's
// rest_for_one strategy restarts the fsm after it, which hands every
// committed entry over again from the state's applied index
// (ARCHITECTURE §3 rule 7, §5).
//
// It must never apply an entry out of order or twice, and never answer a
// client for an entry it has not applied.
package state

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/metrics"
	"github.com/ketch-raft/ketch/actors/protocol"
	"github.com/ketch-raft/ketch/actors/statemachine"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Crash makes the actor panic, for fault tests (nodes obey only with --chaos).
type Crash struct{ Reason string }

// Config configures the state actor.
type Config struct {
	// New builds an empty state machine; called at every (re)start.
	New func() statemachine.StateMachine
	// Typed fills the answer of a typed key-value request (a Waiter or
	// ReadRequest with Typed) from the state machine's result: kv.
	// FillResponse for the built-in store. Nil when the state machine is
	// not the key-value store; the gateway then refuses typed requests,
	// and any that arrive get the raw result.
	Typed func(result []byte, resp *pb.ClientResponse)
	// MaxSessions bounds the client sessions remembered; default
	// DefaultMaxSessions. Every node of a cluster must use the same.
	MaxSessions int
	// OnApplied, if set, is called with the applied index after each batch
	// (the node publishes it for `ketch status`). It must not block.
	OnApplied func(index uint64)

	// Dir is the snapshot directory (snapshots.go); "" keeps no snapshots
	// (the state is rebuilt from the whole log at every start).
	Dir string
	// SnapshotEntries and SnapshotBytes: a snapshot is taken once this many
	// entries, or this many bytes of log (data and overhead), were applied
	// since the latest (0 or negative: never by that measure). Defaults
	// DefaultSnapshotEntries and DefaultSnapshotBytes.
	SnapshotEntries int
	SnapshotBytes   int64
	// SnapshotGrowth: and only once the log applied since the latest
	// snapshot adds up to this many times its size (see snapshotDue). Zero
	// means DefaultSnapshotGrowth; negative drops the condition.
	SnapshotGrowth float64
	// ClusterID goes into every snapshot's header, with the configuration
	// in effect at its last index: the configuration entries the state
	// applies, or before any (and before any snapshot) Members, the
	// bootstrap configuration (with roles; empty for a joining server).
	ClusterID string
	Members   []*pb.Member
	// FSM is told of every durable snapshot (protocol.SnapshotTaken).
	FSM *actor.PID
	// OnSnapshot, if set, is called with the latest snapshot's index and
	// size whenever it changes. It must not block.
	OnSnapshot func(index, bytes uint64)
	// OnCorrupt, if set, is called before the actor crashes on a
	// snapshot file that fails its checks (the node then stops).
	OnCorrupt func(error)
	// UnsafeNoSync skips fsyncs of snapshot files (benchmarks only).
	UnsafeNoSync bool
	// Metrics receives apply durations and snapshot counts; nil records
	// nothing.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Defaults of Config.
const (
	DefaultSnapshotEntries = 8192
	DefaultSnapshotBytes   = 64 << 20
	DefaultSnapshotGrowth  = 1.0
)

// Props returns the props of a state actor.
func Props(cfg Config) *actor.Props {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.SnapshotEntries == 0 {
		cfg.SnapshotEntries = DefaultSnapshotEntries
	}
	if cfg.SnapshotBytes == 0 {
		cfg.SnapshotBytes = DefaultSnapshotBytes
	}
	if cfg.SnapshotGrowth == 0 {
		cfg.SnapshotGrowth = DefaultSnapshotGrowth
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &stateActor{cfg: cfg, log: cfg.Logger.With("actor", "state")}
	})
}

type stateActor struct {
	cfg      Config
	log      *slog.Logger
	sm       statemachine.StateMachine
	sessions *sessions
	// applied and appliedTerm are the index and term of the last entry
	// applied.
	applied, appliedTerm uint64
	// conf is the configuration in effect at applied (thesis §4.1) and
	// confIndex its entry's index (0: the bootstrap one).
	conf      *pb.Configuration
	confIndex uint64
	gap       bool // an ApplyRequest skipped past the applied index was dropped

	batch   []pending           // commands for the next sm.Apply
	inBatch map[uint64]struct{} // the clients with a command in batch

	// Snapshots (snapshots.go): this incarnation's id, the latest durable
	// snapshot, a writer running and how to release its views, who waits
	// for it (and whether one more was asked for while it ran), the
	// log bytes applied since the latest (and, while one is written, the
	// count it was started with), the files kept
	// open for followers' transfers, and the snapshot being received.
	inc         uint64
	latest      *snapFile
	writing     bool
	release     func()
	snapWaiters []*actor.PID
	snapNext    []*actor.PID // asked while a write ran: wait for the next
	snapAsked   bool
	bytesSince  int64
	bytesTaken  int64
	pins        map[uint64]*pin
	staged      *staged
}

// pending is a command of the batch being built, with who waits for it.
type pending struct {
	cmd     statemachine.Command
	client  uint64
	seq     uint64
	waiters []protocol.Waiter
}

func (a *stateActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.sm = a.cfg.New()
		a.sessions = newSessions(a.cfg.MaxSessions)
		a.inBatch = map[uint64]struct{}{}
		a.inc = uint64(time.Now().UnixNano())
		a.pins = map[uint64]*pin{}
		a.conf, a.confIndex = &pb.Configuration{}, 0
		for _, m := range a.cfg.Members {
			role := m.Role
			if role == pb.MemberRole_MEMBER_ROLE_UNSPECIFIED {
				role = pb.MemberRole_MEMBER_ROLE_VOTER
			}
			a.conf.Members = append(a.conf.Members, &pb.Member{Id: m.Id, Address: m.Address, Role: role})
		}
		if a.cfg.Dir != "" {
			if err := a.startSnapshots(); err != nil {
				a.corrupt(err)
			}
		}
		a.publish()
	case *actor.Stopping, *actor.Restarting:
		a.closeFiles()
	case *protocol.ApplyRequest:
		began := time.Now()
		a.apply(ctx, m)
		a.cfg.Metrics.Applied(time.Since(began))
		if ctx.Sender() != nil {
			ctx.Send(ctx.Sender(), &protocol.AppliedInfo{Epoch: m.Epoch, Index: a.applied})
		}
		a.maybeSnapshot(ctx)
	case *protocol.ReadRequest:
		a.read(ctx, m)
	case *protocol.AppliedQuery:
		if ctx.Sender() != nil {
			info := &protocol.AppliedInfo{Epoch: m.Epoch, Index: a.applied,
				Snapshot: a.snapMeta(), Staging: a.stagingInfo()}
			if a.latest != nil {
				info.SnapshotConfig = a.latest.config()
			}
			ctx.Send(ctx.Sender(), info)
		}
	case *snapshotWritten:
		a.snapshotWritten(ctx, m)
	case *protocol.SnapshotNow:
		a.snapshotNow(ctx, m)
	case *protocol.ReadChunk:
		a.readChunk(ctx, m)
	case *protocol.EndTransfer:
		a.unpin(m.Peer)
	case *protocol.StageChunk:
		a.stageChunk(ctx, m)
	case *protocol.InstallSnapshot:
		a.install(ctx, m)
	case *Crash:
		panic(fmt.Sprintf("crash requested: %s", m.Reason))
	}
}

// apply applies the entries that follow the applied index. Entries at or
// below it are replays after a restart and are skipped (ARCHITECTURE §3
// rule 7). Entries past a gap come from an fsm incarnation that is being
// replaced (its restart follows ours): they are dropped, and the new fsm
// resends them from our applied index.
func (a *stateActor) apply(ctx actor.Context, m *protocol.ApplyRequest) {
	w := m.Waiters
	progressed := false
	for _, e := range m.Entries {
		next := a.applied + 1
		if e.Index < next {
			continue
		}
		if e.Index > next {
			if !a.gap {
				a.log.Warn("dropping entries past a gap; the restarted fsm will resend them", "index", e.Index, "applied", next-1)
				a.gap = true
			}
			break
		}
		for len(w) > 0 && w[0].Index < e.Index {
			w = w[1:]
		}
		k := 0
		for k < len(w) && w[k].Index == e.Index {
			k++
		}
		a.entry(ctx, e, w[:k])
		// What the log holds, every entry counted (no-ops and retries
		// too): the measure the snapshot policy bounds.
		a.bytesSince += int64(len(e.Data)) + pb.EntryOverhead
		w = w[k:]
		a.applied, a.appliedTerm = e.Index, e.Term
		progressed = true
	}
	a.flush(ctx)
	if progressed {
		a.gap = false
		a.publish()
	}
}

// entry takes one committed entry: a client command joins the batch unless
// its session says it was applied before (thesis §6.3); anything else (a
// leader's no-op) changes nothing.
func (a *stateActor) entry(ctx actor.Context, e *pb.Entry, waiters []protocol.Waiter) {
	if e.Type == pb.EntryType_ENTRY_TYPE_CONFIG {
		// The fsm validated it before it was appended; a snapshot through
		// this index records it.
		c := &pb.Configuration{}
		if err := proto.Unmarshal(e.Data, c); err != nil {
			panic(fmt.Sprintf("invariant: committed configuration entry %d does not decode: %v", e.Index, err))
		}
		a.conf, a.confIndex = c, e.Index
		return
	}
	if e.Type != pb.EntryType_ENTRY_TYPE_NORMAL {
		return
	}
	var c pb.ClientCommand
	if err := proto.Unmarshal(e.Data, &c); err != nil {
		// The same on every replica: the log holds what the leader built.
		for _, wt := range waiters {
			a.send(ctx, wt.ReplyTo, &pb.ClientResponse{Status: pb.ClientStatus_CLIENT_STATUS_INVALID,
				Error: "undecodable command in the log", Index: e.Index, Term: e.Term})
		}
		return
	}
	if c.ClientId != 0 {
		if _, ok := a.inBatch[c.ClientId]; ok {
			// The client's earlier command is in this batch: apply it
			// first, so that its session decides about this one.
			a.flush(ctx)
		}
		if ss, ok := a.sessions.get(c.ClientId); ok {
			switch {
			case c.Sequence == ss.seq:
				// A retry of the command applied last: its answer again.
				for _, wt := range waiters {
					a.answer(ctx, wt, c.ClientId, c.Sequence, ss.index, ss.term, ss.result)
				}
				return
			case c.Sequence < ss.seq:
				for _, wt := range waiters {
					a.send(ctx, wt.ReplyTo, &pb.ClientResponse{ClientId: c.ClientId, Sequence: c.Sequence,
						Status: pb.ClientStatus_CLIENT_STATUS_INVALID, Index: e.Index, Term: e.Term,
						Error: fmt.Sprintf("sequence %d is older than the client's last (%d); it was answered already", c.Sequence, ss.seq)})
				}
				return
			}
		}
	}
	if c.ClientId != 0 {
		a.inBatch[c.ClientId] = struct{}{}
	}
	a.batch = append(a.batch, pending{
		cmd:    statemachine.Command{Index: e.Index, Term: e.Term, Data: c.Data},
		client: c.ClientId, seq: c.Sequence, waiters: waiters,
	})
}

// flush applies the batch as one call to the state machine and answers
// its clients.
func (a *stateActor) flush(ctx actor.Context) {
	if len(a.batch) == 0 {
		return
	}
	cmds := make([]statemachine.Command, len(a.batch))
	for i, p := range a.batch {
		cmds[i] = p.cmd
	}
	results := a.sm.Apply(cmds)
	if len(results) != len(cmds) {
		panic(fmt.Sprintf("invariant: the state machine returned %d results for %d commands (indexes %d..%d)",
			len(results), len(cmds), cmds[0].Index, cmds[len(cmds)-1].Index))
	}
	for i, p := range a.batch {
		if p.client != 0 {
			a.sessions.remember(p.client, session{seq: p.seq, index: p.cmd.Index, term: p.cmd.Term, result: results[i]})
		}
		for _, wt := range p.waiters {
			a.answer(ctx, wt, p.client, p.seq, p.cmd.Index, p.cmd.Term, results[i])
		}
	}
	clear(a.batch)
	a.batch = a.batch[:0]
	clear(a.inBatch)
}

// read answers a confirmed read from the current state.
func (a *stateActor) read(ctx actor.Context, m *protocol.ReadRequest) {
	resp := &pb.ClientResponse{ClientId: m.ClientID, Sequence: m.SeqNum, Index: a.applied, Term: a.appliedTerm}
	if a.applied < m.Index {
		resp.Status, resp.Error = pb.ClientStatus_CLIENT_STATUS_UNAVAILABLE, "the state machine is catching up after a restart; retry"
		a.send(ctx, m.ReplyTo, resp)
		return
	}
	result, err := a.sm.Query(m.Query)
	if err != nil {
		resp.Status, resp.Error = pb.ClientStatus_CLIENT_STATUS_INVALID, err.Error()
		a.send(ctx, m.ReplyTo, resp)
		return
	}
	resp.Status = pb.ClientStatus_CLIENT_STATUS_OK
	a.fill(m.Typed, result, resp)
	a.send(ctx, m.ReplyTo, resp)
}

// answer tells a waiting client the result of its command.
func (a *stateActor) answer(ctx actor.Context, wt protocol.Waiter, client, seq, index, term uint64, result []byte) {
	resp := &pb.ClientResponse{ClientId: client, Sequence: seq, Status: pb.ClientStatus_CLIENT_STATUS_OK, Index: index, Term: term}
	a.fill(wt.Typed, result, resp)
	a.send(ctx, wt.ReplyTo, resp)
}

func (a *stateActor) fill(typed bool, result []byte, resp *pb.ClientResponse) {
	if typed && a.cfg.Typed != nil {
		a.cfg.Typed(result, resp)
		return
	}
	resp.Result = result
}

func (a *stateActor) send(ctx actor.Context, to *actor.PID, resp *pb.ClientResponse) {
	if to != nil {
		ctx.Send(to, resp)
	}
}

func (a *stateActor) publish() {
	if a.cfg.OnApplied != nil {
		a.cfg.OnApplied(a.applied)
	}
}
