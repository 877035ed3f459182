// Package gateway is the client-facing actor of a ketch node: clients and
// the ketch CLI send it ClientRequest, StatusRequest, CrashRequest,
// TransferRequest and SnapshotRequest as remote actor messages. It is the one boundary for
// client traffic: the wire guard routes client messages to it alone, and
// the fsm actor takes client work only as the protocol.Command and
// protocol.Transfer the gateway builds. It checks the cluster id, the
// client's identity and the request: a typed key-value command's shape, key
// (UTF-8, within Limits.MaxKeyBytes) and encoded size (within
// Limits.MaxEntryBytes), or an opaque command's or query's size; it answers
// what is wrong in one line, and forwards only well-formed requests, naming
// the client so the answer goes straight back to it. Typed commands are
// refused when the node's state machine is not the key-value store.
//
// It holds no state worth keeping, so it sits last in the node's
// rest_for_one order and its crash restarts nothing else. It must never
// block and never let a malformed request reach the fsm.
package gateway

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/kv"
	"github.com/ketch-raft/ketch/actors/protocol"
	pb "github.com/ketch-raft/ketch/messages"
)

// Config configures the gateway.
type Config struct {
	ClusterID string
	NodeID    uint64
	// FSM is the fsm actor that proposes client commands.
	FSM *actor.PID
	// Limits bounds a command's key and encoded size; zero fields take
	// messages.DefaultLimits. It must be the node's.
	Limits pb.Limits
	// Typed says the node's state machine is the key-value store, so typed
	// requests (ClientRequest.command) are accepted.
	Typed bool
	// State is the state actor, which takes snapshots (SnapshotRequest).
	State *actor.PID
	// Rejected, if set, counts the requests refused as invalid.
	Rejected *atomic.Uint64
	// Status builds this node's status report, with NodeStatus.detail
	// when asked for it.
	Status func(detail bool) *pb.NodeStatus
	// Chaos allows CrashRequest; without it every CrashRequest is refused.
	Chaos bool
	// Crash makes the named child (store, state, fsm, sender) panic.
	Crash func(child string) error
	// Logger is the node's (it already carries node=ID).
	Logger *slog.Logger
}

// Props returns the props of a gateway actor.
func Props(cfg Config) *actor.Props {
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Rejected == nil {
		cfg.Rejected = &atomic.Uint64{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &gatewayActor{cfg: cfg, log: cfg.Logger.With("actor", "gateway")}
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
			g.cfg.Rejected.Add(1)
			g.respond(ctx, &pb.ClientResponse{ClientId: m.ClientId, Sequence: m.Sequence,
				Status: pb.ClientStatus_CLIENT_STATUS_INVALID, Error: err.Error()})
			return
		}
		if ctx.Sender() == nil {
			g.cfg.Rejected.Add(1) // nobody to answer: not a client
			return
		}
		ctx.Send(g.cfg.FSM, &protocol.Command{Req: m, ReplyTo: ctx.Sender()})
	case *pb.StatusRequest:
		st := g.cfg.Status(m.Detail)
		if m.ClusterId != g.cfg.ClusterID {
			st = &pb.NodeStatus{Id: g.cfg.NodeID, Error: g.wrongCluster(m.ClusterId)}
		}
		g.respond(ctx, st)
	case *pb.CrashRequest:
		g.respond(ctx, g.crash(m))
	case *pb.SnapshotRequest:
		switch {
		case m.ClusterId != g.cfg.ClusterID:
			g.cfg.Rejected.Add(1)
			g.respond(ctx, &pb.SnapshotResponse{Error: g.wrongCluster(m.ClusterId)})
		case ctx.Sender() == nil || g.cfg.State == nil:
			g.respond(ctx, &pb.SnapshotResponse{Error: "this node takes no snapshots"})
		default:
			ctx.Send(g.cfg.State, &protocol.SnapshotNow{ReplyTo: ctx.Sender()})
		}
	case *pb.MemberRequest:
		if err := g.checkMembers(m); err != nil {
			g.cfg.Rejected.Add(1)
			g.respond(ctx, &pb.MemberResponse{Error: err.Error()})
			return
		}
		if ctx.Sender() == nil {
			g.cfg.Rejected.Add(1)
			return
		}
		ctx.Send(g.cfg.FSM, &protocol.Members{Req: m, ReplyTo: ctx.Sender()})
	case *pb.TransferRequest:
		if m.ClusterId != g.cfg.ClusterID {
			g.cfg.Rejected.Add(1)
			g.respond(ctx, &pb.TransferResponse{Error: g.wrongCluster(m.ClusterId)})
			return
		}
		ctx.Send(g.cfg.FSM, &protocol.Transfer{To: m.To, ReplyTo: ctx.Sender()})
	}
}

func (g *gatewayActor) check(m *pb.ClientRequest) error {
	if m.ClusterId != g.cfg.ClusterID {
		return fmt.Errorf("%s", g.wrongCluster(m.ClusterId))
	}
	if m.ClientId == 0 || m.Sequence == 0 {
		return fmt.Errorf("client_id and sequence must be positive (got %d, %d)", m.ClientId, m.Sequence)
	}
	if m.Command == nil {
		if g.cfg.Typed && len(m.Data) == 0 {
			// Empty data is an empty KVCommand, which the store cannot run.
			return fmt.Errorf("the request has no command (put, get, delete or cas) and no data")
		}
		return g.cfg.Limits.CheckData(m.ClientId, m.Sequence, m.Data, m.Query)
	}
	if !g.cfg.Typed {
		return fmt.Errorf("node %d does not run the key-value store; send the command as data for its state machine", g.cfg.NodeID)
	}
	if len(m.Data) > 0 || m.Query {
		return fmt.Errorf("the request has both a key-value command and data; send one")
	}
	return kv.ValidateRequest(m, g.cfg.Limits)
}

// maxMemberChanges bounds the servers one MemberRequest names.
const maxMemberChanges = 64

// checkMembers validates a MemberRequest: the cluster, the operation, and
// for a change: something to change, positive ids, host:port addresses,
// the role voter or learner for each server to add.
func (g *gatewayActor) checkMembers(m *pb.MemberRequest) error {
	if m.ClusterId != g.cfg.ClusterID {
		return fmt.Errorf("%s", g.wrongCluster(m.ClusterId))
	}
	switch m.Op {
	case pb.MemberOp_MEMBER_OP_LIST:
		if len(m.Add)+len(m.Promote)+len(m.Remove) > 0 {
			return fmt.Errorf("a member list names no servers")
		}
		return nil
	case pb.MemberOp_MEMBER_OP_CHANGE:
	default:
		return fmt.Errorf("unknown member operation %v", m.Op)
	}
	n := len(m.Add) + len(m.Promote) + len(m.Remove)
	switch {
	case n == 0:
		return fmt.Errorf("the change names no server to add, promote or remove")
	case n > maxMemberChanges:
		return fmt.Errorf("the change names %d servers; at most %d at once", n, maxMemberChanges)
	}
	for _, s := range m.Add {
		switch {
		case s == nil || s.Id == 0:
			return fmt.Errorf("a server to add needs a positive id")
		case s.Role != pb.MemberRole_MEMBER_ROLE_VOTER && s.Role != pb.MemberRole_MEMBER_ROLE_LEARNER:
			return fmt.Errorf("server %d needs the role voter or learner", s.Id)
		}
		if host, port, err := net.SplitHostPort(s.Address); err != nil || host == "" || port == "" || len(s.Address) > 256 {
			return fmt.Errorf("server %d's address %.64q is not host:port", s.Id, s.Address)
		}
	}
	for _, id := range append(slices.Clone(m.Promote), m.Remove...) {
		if id == 0 {
			return fmt.Errorf("server ids are positive integers")
		}
	}
	return nil
}

func (g *gatewayActor) wrongCluster(got string) string {
	return fmt.Sprintf("node %d is in cluster %q, not %.*q; check --cluster-id", g.cfg.NodeID, g.cfg.ClusterID, pb.MaxClusterIDBytes, got)
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
