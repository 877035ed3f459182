// Package state is the state actor of a ketch node (sloop_state in the
// Erlang original): it applies committed log entries, in index order and
// exactly once per index, to the replicated StateMachine and answers the
// clients waiting for them.
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

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/protocol"
	pb "github.com/ketch-raft/ketch/messages"
)

// StateMachine is what the state actor applies entries to.
// kv.Store implements it.
type StateMachine interface {
	// Apply applies the entry whose index follows Applied() and returns
	// the answer for its client, or nil when nobody waits (a no-op).
	Apply(e *pb.Entry) *pb.ClientResponse
	// Applied is the index of the last entry applied.
	Applied() uint64
	// Read answers a read-only command from the current state.
	Read(cmd *pb.KVCommand) *pb.ClientResponse
}

// Crash makes the actor panic, for fault tests (nodes obey only with --chaos).
type Crash struct{ Reason string }

// Config configures the state actor.
type Config struct {
	// New builds an empty state machine; called at every (re)start.
	New func() StateMachine
	// OnApplied, if set, is called with the applied index after each batch
	// (the node publishes it for `ketch status`). It must not block.
	OnApplied func(index uint64)
	Logger    *slog.Logger
}

// Props returns the props of a state actor.
func Props(cfg Config) *actor.Props {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &stateActor{cfg: cfg, log: cfg.Logger.With("actor", "state")}
	})
}

type stateActor struct {
	cfg Config
	log *slog.Logger
	sm  StateMachine
	gap bool // an ApplyRequest skipped past the applied index was dropped
}

func (a *stateActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.sm = a.cfg.New()
		a.publish()
	case *protocol.ApplyRequest:
		a.apply(ctx, m)
		if ctx.Sender() != nil {
			ctx.Send(ctx.Sender(), &protocol.AppliedInfo{Epoch: m.Epoch, Index: a.sm.Applied()})
		}
	case *protocol.ReadRequest:
		var resp *pb.ClientResponse
		if a.sm.Applied() < m.Index {
			resp = &pb.ClientResponse{Status: pb.ClientStatus_CLIENT_STATUS_UNAVAILABLE, Error: "the state machine is catching up after a restart; retry"}
		} else {
			resp = a.sm.Read(m.Command)
		}
		resp.ClientId, resp.Sequence = m.ClientID, m.SeqNum
		if m.ReplyTo != nil {
			ctx.Send(m.ReplyTo, resp)
		}
	case *protocol.AppliedQuery:
		if ctx.Sender() != nil {
			ctx.Send(ctx.Sender(), &protocol.AppliedInfo{Epoch: m.Epoch, Index: a.sm.Applied()})
		}
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
	applied := false
	for _, e := range m.Entries {
		next := a.sm.Applied() + 1
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
		resp := a.sm.Apply(e)
		applied = true
		for len(w) > 0 && w[0].Index < e.Index {
			w = w[1:]
		}
		for len(w) > 0 && w[0].Index == e.Index {
			if resp != nil && w[0].ReplyTo != nil {
				ctx.Send(w[0].ReplyTo, resp)
			}
			w = w[1:]
		}
	}
	if applied {
		a.gap = false
		a.publish()
	}
}

func (a *stateActor) publish() {
	if a.cfg.OnApplied != nil {
		a.cfg.OnApplied(a.sm.Applied())
	}
}
