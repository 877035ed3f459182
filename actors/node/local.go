package node

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/client"
	pb "github.com/ketch-raft/ketch/messages"
)

// Errors of Local.Do; compare with errors.Is.
var (
	// ErrNotLeader: this node is not the leader. The command was not
	// appended; the response names the leader when the node knows it.
	ErrNotLeader = errors.New("this node is not the leader")
	// ErrNotApplied: the node answered, but not with a result (starting,
	// invalid command, leadership lost with the outcome unknown). The
	// response says which.
	ErrNotApplied = errors.New("the command was not applied")
	// ErrBusy: the node refused the command for now (backpressure: too
	// much uncommitted, or too many requests waiting). It was not
	// appended; retry after a pause.
	ErrBusy = errors.New("the node is busy")
)

// Local proposes commands on its node in-process: each call is a
// ClientRequest to the node's own gateway (raft/<group>/gateway) through the
// node's actor system, answered to a reply actor of the Local, without
// serialization or a network hop. It is what benchmarks and embedders use
// instead of the remote client (actors/client) when they run in the
// leader's process.
//
// Like the client, it keeps a pool of sessions (client id + sequence
// counter), since the state machine allows one command in flight per client
// id; each concurrent Do takes its own. It does not retry or follow leader
// hints: a call is one attempt at this node. A Local is safe for concurrent
// use; Close it when done.
type Local struct {
	n     *Node
	reply *actor.PID

	mu       sync.Mutex
	sessions client.SessionPool
	waiting  map[waitKey]chan *pb.ClientResponse
}

type waitKey struct{ client, seq uint64 }

// Local returns a handle that proposes commands on this node in-process.
func (n *Node) Local() *Local {
	l := &Local{n: n, waiting: map[waitKey]chan *pb.ClientResponse{}}
	l.reply = n.system.Root.Spawn(actor.PropsFromFunc(l.receive))
	return l
}

// Close stops the handle's reply actor; calls still waiting end with their
// context.
func (l *Local) Close() { l.n.system.Root.Stop(l.reply) }

func (l *Local) receive(ctx actor.Context) {
	if r, ok := ctx.Message().(*pb.ClientResponse); ok {
		l.mu.Lock()
		ch := l.waiting[waitKey{r.ClientId, r.Sequence}]
		l.mu.Unlock()
		if ch != nil {
			select {
			case ch <- r:
			default:
			}
		}
	}
}

// Do sends cmd to this node's gateway and waits until the state machine has
// applied it (the response carries its result), the node refuses it
// (ErrNotLeader or ErrNotApplied, with the response), or ctx ends (the
// command may still be applied).
func (l *Local) Do(ctx context.Context, cmd *pb.KVCommand) (*pb.ClientResponse, error) {
	return l.send(ctx, &pb.ClientRequest{Command: cmd})
}

// Propose is Do for an opaque command of the node's state machine: the
// response's result, index and term say what it answered and where it was
// applied.
func (l *Local) Propose(ctx context.Context, data []byte) (*pb.ClientResponse, error) {
	return l.send(ctx, &pb.ClientRequest{Data: data})
}

// Query is Do for a read-only query of the node's state machine, served
// through ReadIndex (linearizable) on this node.
func (l *Local) Query(ctx context.Context, q []byte) (*pb.ClientResponse, error) {
	return l.send(ctx, &pb.ClientRequest{Data: q, Query: true})
}

// send fills in req's cluster, client id and sequence and runs it.
func (l *Local) send(ctx context.Context, req *pb.ClientRequest) (*pb.ClientResponse, error) {
	s := l.sessions.Get()
	defer l.sessions.Put(s)
	s.Seq++
	key := waitKey{s.ID, s.Seq}
	ch := make(chan *pb.ClientResponse, 1)
	l.mu.Lock()
	l.waiting[key] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.waiting, key)
		l.mu.Unlock()
	}()

	gw := actor.NewPID(l.n.system.Address(), l.n.ids.Gateway)
	req.ClusterId, req.ClientId, req.Sequence = l.n.cfg.ClusterID, s.ID, s.Seq
	l.n.system.Root.RequestWithCustomSender(gw, req, l.reply)
	select {
	case r := <-ch:
		switch r.Status {
		case pb.ClientStatus_CLIENT_STATUS_OK:
			return r, nil
		case pb.ClientStatus_CLIENT_STATUS_NOT_LEADER:
			return r, fmt.Errorf("node %d: %w (leader %d)", l.n.cfg.ID, ErrNotLeader, r.LeaderId)
		case pb.ClientStatus_CLIENT_STATUS_BUSY:
			return r, fmt.Errorf("node %d: %w: %s", l.n.cfg.ID, ErrBusy, r.Error)
		default:
			return r, fmt.Errorf("node %d: %w: %v %s", l.n.cfg.ID, ErrNotApplied, r.Status, r.Error)
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("node %d: no answer: %w", l.n.cfg.ID, context.Cause(ctx))
	}
}
