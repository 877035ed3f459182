// Package gateway is the client-facing actor of a ketch node: clients and
// the ketch CLI send it ClientRequest, StatusRequest and CrashRequest as
// remote actor messages. It is the boundary for client traffic: it checks
// the cluster id, the client's identity and the command's shape and size,
// answers what is wrong in one line, and forwards only well-formed requests
// to the fsm actor, with the client as the sender so the answer goes
// straight back to it.
//
// It holds no state worth keeping, so it sits last in the node's
// rest_for_one order and its crash restarts nothing else. It must never
// block and never let a malformed request reach the fsm.
package gateway

import (
	"fmt"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/kv"
	pb "github.com/ketch-raft/ketch/messages"
)

// Config configures the gateway.
type Config struct {
	ClusterID string
	NodeID    uint64
	// FSM is the fsm actor that proposes client commands.
	FSM *actor.PID
	// MaxKeyBytes and MaxValueBytes bound a command's key and values.
	// Defaults 4 KiB and 1 MiB minus 4 KiB (so one entry fits a peer message).
	MaxKeyBytes, MaxValueBytes int
	// Status builds this node's status report.
	Status func() *pb.NodeStatus
	// Chaos allows CrashRequest; without it every CrashRequest is refused.
	Chaos bool
	// Crash makes the named child (store, state, fsm, sender) panic.
	Crash  func(child string) error
	Logger *slog.Logger
}

// Props returns the props of a gateway actor.
func Props(cfg Config) *actor.Props {
	if cfg.MaxKeyBytes == 0 {
		cfg.MaxKeyBytes = 4 << 10
	}
	if cfg.MaxValueBytes == 0 {
		cfg.MaxValueBytes = 1<<20 - 4<<10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &gatewayActor{cfg: cfg, log: cfg.Logger.With("actor", "gateway", "node", cfg.NodeID)}
	})
}

type gatewayActor struct {
	cfg Config
	log *slog.Logger
}

func (g *gatewayActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *pb.ClientRequest:
		if err := g.check(m); err != nil {
			g.respond(ctx, &pb.ClientResponse{ClientId: m.ClientId, Sequence: m.Sequence,
				Status: pb.ClientStatus_CLIENT_STATUS_INVALID, Error: err.Error()})
			return
		}
		ctx.RequestWithCustomSender(g.cfg.FSM, m, ctx.Sender())
	case *pb.StatusRequest:
		st := g.cfg.Status()
		if m.ClusterId != g.cfg.ClusterID {
			st = &pb.NodeStatus{Id: g.cfg.NodeID, Error: g.wrongCluster(m.ClusterId)}
		}
		g.respond(ctx, st)
	case *pb.CrashRequest:
		g.respond(ctx, g.crash(m))
	case *pb.TransferRequest:
		if m.ClusterId != g.cfg.ClusterID {
			g.respond(ctx, &pb.TransferResponse{Error: g.wrongCluster(m.ClusterId)})
			return
		}
		ctx.RequestWithCustomSender(g.cfg.FSM, m, ctx.Sender())
	}
}

func (g *gatewayActor) check(m *pb.ClientRequest) error {
	if m.ClusterId != g.cfg.ClusterID {
		return fmt.Errorf("%s", g.wrongCluster(m.ClusterId))
	}
	if m.ClientId == 0 || m.Sequence == 0 {
		return fmt.Errorf("client_id and sequence must be positive (got %d, %d)", m.ClientId, m.Sequence)
	}
	return kv.ValidateCommand(m.Command, g.cfg.MaxKeyBytes, g.cfg.MaxValueBytes)
}

func (g *gatewayActor) wrongCluster(got string) string {
	return fmt.Sprintf("node %d is in cluster %q, not %q; check --cluster-id", g.cfg.NodeID, g.cfg.ClusterID, got)
}

func (g *gatewayActor) crash(m *pb.CrashRequest) *pb.CrashResponse {
	switch {
	case m.ClusterId != g.cfg.ClusterID:
		return &pb.CrashResponse{Error: g.wrongCluster(m.ClusterId)}
	case !g.cfg.Chaos:
		return &pb.CrashResponse{Error: fmt.Sprintf("node %d was not started with --chaos; it refuses to crash its actors", g.cfg.NodeID)}
	}
	if err := g.cfg.Crash(m.Actor); err != nil {
		return &pb.CrashResponse{Error: err.Error()}
	}
	g.log.Warn("crashing a child on request", "child", m.Actor)
	return &pb.CrashResponse{Ok: true}
}

func (g *gatewayActor) respond(ctx actor.Context, msg any) {
	if ctx.Sender() != nil {
		ctx.Respond(msg)
	}
}
