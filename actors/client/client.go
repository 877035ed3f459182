// Package client is ketch's Go client: typed Put, Get, Delete and
// CompareAndSwap calls on the built-in key-value store, and opaque Propose
// and Query calls for any state machine (actors/statemachine), sent as
// remote actor messages to the nodes' gateway actors. A Propose's answer
// names the log index and term its command was applied at.
//
// It finds the leader by following the hints that followers return, retries
// a command with the same client id and sequence number until it gets an
// answer or the context ends (the state machine applies a retried command
// at most once, Raft thesis §6.3), and bounds every attempt by a timeout. A
// node that answers BUSY (backpressure) is asked again after a pause that
// doubles up to a second, within the call's deadline. Reads are
// linearizable (ReadIndex, thesis §6.4).
//
// It checks every command before sending it, as the gateway will: keys are
// non-empty UTF-8 strings of at most Limits.MaxKeyBytes, and a command must
// fit one log entry. A command that fails is refused at once with
// ErrInvalid; nothing is sent.
//
// A Client is safe for concurrent use. The state machine remembers one last
// sequence number per client id, which allows one command in flight per id;
// so a Client keeps a pool of sessions (client id + sequence counter) and
// each concurrent call takes its own.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/kv"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
	"google.golang.org/protobuf/proto"
)

// Sentinel errors; compare with errors.Is.
var (
	// ErrNotFound: Get found no such key.
	ErrNotFound = errors.New("not found")
	// ErrTimeout: the context ended before the cluster answered. A write
	// that timed out may or may not have been applied.
	ErrTimeout = errors.New("timed out waiting for the cluster")
	// ErrInvalid: the request is malformed or too large (refused by the
	// client itself or by the cluster); retrying will not help.
	ErrInvalid = errors.New("invalid request")
	// ErrBusy: the cluster answered BUSY until the call's deadline (its
	// leader holds too much that has not committed, or too many requests
	// wait). The command was not applied.
	ErrBusy = errors.New("the cluster is busy")
)

// GatewayName is the actor name of every node's gateway. Its address is
// the node's --listen address.
const GatewayName = "raft/1/gateway"

// Config configures a Client.
type Config struct {
	// Cluster lists the nodes' addresses (host:port); any subset that
	// includes a live node works.
	Cluster []string
	// ClusterID must match the nodes' --cluster-id. Default "ketch".
	ClusterID string
	// ListenHost is where the client's own actor system listens for
	// answers; the nodes must be able to reach it. Default: the local
	// address this machine uses to reach the first cluster address
	// (127.0.0.1 for a cluster on loopback).
	ListenHost string
	// AttemptTimeout bounds one attempt at one node; when it passes, the
	// client tries the next node with the same sequence number. It bounds
	// how long a dead leader costs a caller, so it is short. Default 300ms.
	AttemptTimeout time.Duration
	// Timeout bounds a whole call when its context has no deadline.
	// Default 10s.
	Timeout time.Duration
	// Limits are the cluster's (zero fields: messages.DefaultLimits); the
	// client refuses commands over them before sending.
	Limits pb.Limits
	// Gateway is the actor id of the nodes' gateways: GatewayName (the
	// default) for nodes started by `ketch node` or node.Start, and
	// node.Names().Gateway for nodes embedded with node.StartIn.
	Gateway string
	// TLS, when its files are given, makes the client speak mutual TLS to
	// nodes started with TLS (see actors/certs): its certificate (from
	// 'ketch certs client', or a node's) and the cluster's CA. Its reply
	// listener then accepts only the cluster's nodes.
	TLS    certs.Files
	Logger *slog.Logger
}

// DefaultClusterID is the cluster id nodes and clients use by default.
const DefaultClusterID = "ketch"

func (c *Config) validate() error {
	if len(c.Cluster) == 0 {
		return errors.New("client: no cluster addresses given (pass --cluster HOST:PORT,HOST:PORT)")
	}
	if c.ClusterID == "" {
		c.ClusterID = DefaultClusterID
	}
	if len(c.ClusterID) > pb.MaxClusterIDBytes {
		return fmt.Errorf("client: the cluster id is %d bytes; the limit is %d", len(c.ClusterID), pb.MaxClusterIDBytes)
	}
	c.Limits = c.Limits.WithDefaults()
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if c.ListenHost == "" {
		c.ListenHost = listenHostFor(c.Cluster[0])
	}
	if c.Gateway == "" {
		c.Gateway = GatewayName
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = 300 * time.Millisecond
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// listenHostFor returns the local address that routes to addr, so that a
// node there can answer: a UDP "connection" picks the route without
// sending anything. It falls back to 127.0.0.1.
func listenHostFor(addr string) string {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return "127.0.0.1"
	}
	defer conn.Close()
	host, _, err := net.SplitHostPort(conn.LocalAddr().String())
	if err != nil {
		return "127.0.0.1"
	}
	return host
}

// Client talks to one ketch cluster.
type Client struct {
	cfg    Config
	system *actor.ActorSystem
	reply  *actor.PID
	// With TLS, what Probe dials with and checks.
	probeTLS    *tls.Config
	probeVerify func(string, tls.ConnectionState) error

	mu     sync.Mutex
	leader string
	next   int // round-robin position in cfg.Cluster
	// down records when a node last failed to answer an attempt. Right
	// after a leader dies the followers still name it in their hints; the
	// client neither follows such a hint nor picks the node in turn until
	// downFor has passed, or it would wait out another attempt timeout.
	down     map[string]time.Time
	sessions SessionPool
	waiting  map[waitKey]chan *pb.ClientResponse
}

type waitKey struct{ client, seq uint64 }

// New starts a client: a small actor system of its own, listening on an
// ephemeral port of cfg.ListenHost for the nodes' answers.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, waiting: map[waitKey]chan *pb.ClientResponse{}, down: map[string]time.Time{}}
	c.system = actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(cfg.Logger, slog.LevelError)))
	// The client's actors take nothing from the wire but the nodes' answers.
	guard := sender.GuardConfig{
		MaxMessageBytes: cfg.Limits.MaxBatchBytes,
		Routes:          map[string][]string{},
		OtherTargets:    ResponseTypes(),
		Logger:          cfg.Logger,
	}
	opts := []sender.RemoteOption{sender.WithGuard(guard), sender.WithMaxRecvMsgBytes(sender.RecvMsgBytesFor(cfg.Limits))}
	if cfg.TLS.Enabled() {
		if err := cfg.TLS.Validate("--cacert", "--cert", "--key"); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		t, err := certs.NewTLS(cfg.TLS, cfg.ClusterID, certs.AcceptNodes, cfg.Logger)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		c.probeTLS = t.Client
		c.probeVerify = func(addr string, cs tls.ConnectionState) error { return t.VerifyDialed(addr, cs, nil) }
		opts = append(opts, sender.WithTLS(sender.TLS{Server: t.Server, Client: t.Client, Authenticate: t.Authenticate,
			VerifyDial: c.probeVerify, Logger: cfg.Logger}))
	}
	if _, err := sender.StartRemote(c.system, cfg.ListenHost, 0, opts...); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c.reply = c.system.Root.Spawn(actor.PropsFromFunc(c.receive))
	return c, nil
}

// ErrNoNode: no address of Config.Cluster has a ketch node answering
// (Probe); the error says why for each.
var ErrNoNode = errors.New("no ketch node answers at any --cluster address")

// Probe checks, within d, that a ketch node answers at one of the
// cluster's addresses at least, the way nodes check each other (with TLS
// when the client has it). When none does it returns an error wrapping
// ErrNoNode that names each address and why (connection refused, not a
// ketch node, a TLS mismatch), so a caller can fail at once instead of
// waiting out its timeout.
func (c *Client) Probe(d time.Duration) error {
	errs := make([]error, len(c.cfg.Cluster))
	var wg sync.WaitGroup
	for i, addr := range c.cfg.Cluster {
		wg.Go(func() { errs[i] = sender.ProbeNode(addr, d, c.probeTLS, c.probeVerify) })
	}
	wg.Wait()
	var why []string
	for _, err := range errs {
		if err == nil {
			return nil
		}
		why = append(why, err.Error())
	}
	return fmt.Errorf("%w: %s", ErrNoNode, strings.Join(why, "; "))
}

// ResponseTypes are the messages a client receives: the gateway's answers.
func ResponseTypes() []string {
	var names []string
	for _, m := range []proto.Message{&pb.ClientResponse{}, &pb.NodeStatus{}, &pb.CrashResponse{}, &pb.TransferResponse{}, &pb.SnapshotResponse{}, &pb.MemberResponse{}} {
		names = append(names, string(proto.MessageName(m)))
	}
	return names
}

// Close stops the client's actor system.
func (c *Client) Close() {
	c.system.Root.Stop(c.reply)
	c.system.Shutdown()
}

// receive runs in the reply actor: it hands each answer to its caller.
func (c *Client) receive(ctx actor.Context) {
	if r, ok := ctx.Message().(*pb.ClientResponse); ok {
		c.mu.Lock()
		ch := c.waiting[waitKey{r.ClientId, r.Sequence}]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- r:
			default: // a duplicate answer to a retried attempt
			}
		}
	}
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key string, value []byte) error {
	_, err := c.Do(ctx, &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: key, Value: value}}})
	return err
}

// Get returns the value of key, or ErrNotFound.
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	r, err := c.Do(ctx, &pb.KVCommand{Op: &pb.KVCommand_Get{Get: &pb.Get{Key: key}}})
	if err != nil {
		return nil, err
	}
	if !r.Found {
		return nil, fmt.Errorf("get %q: %w", key, ErrNotFound)
	}
	return r.Value, nil
}

// Delete removes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key string) (bool, error) {
	r, err := c.Do(ctx, &pb.KVCommand{Op: &pb.KVCommand_Delete{Delete: &pb.Delete{Key: key}}})
	if err != nil {
		return false, err
	}
	return r.Found, nil
}

// CompareAndSwap sets key to value if its current value is old; with old
// nil it swaps only if the key is absent. It reports whether it swapped
// and, if not, the current value (nil and found=false when absent).
func (c *Client) CompareAndSwap(ctx context.Context, key string, old, value []byte) (swapped bool, current []byte, found bool, err error) {
	r, err := c.Do(ctx, &pb.KVCommand{Op: &pb.KVCommand_Cas{Cas: &pb.CompareAndSwap{Key: key, Expected: old, ExpectAbsent: old == nil, Value: value}}})
	if err != nil {
		return false, nil, false, err
	}
	return r.Swapped, r.Value, r.Found, nil
}

// Result is what the cluster answered a Propose or a Query.
type Result struct {
	// Data is the state machine's result (statemachine.StateMachine's
	// Apply or Query).
	Data []byte
	// Index and Term are where the command was applied in the log (Raft
	// §5.3), for a Propose; for a Query, the index the state had reached
	// when it answered and that entry's term.
	Index, Term uint64
}

// Propose sends an opaque command to the cluster's state machine and waits
// until it is applied: the result says what the state machine answered
// and at which log index and term. It retries like Do; a retried command
// is applied at most once.
func (c *Client) Propose(ctx context.Context, cmd []byte) (Result, error) {
	r, err := c.send(ctx, func(id, seq uint64) *pb.ClientRequest {
		return &pb.ClientRequest{ClusterId: c.cfg.ClusterID, ClientId: id, Sequence: seq, Data: cmd}
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Data: r.Result, Index: r.Index, Term: r.Term}, nil
}

// Query sends a read-only query to the cluster's state machine and returns
// its answer, linearizable (ReadIndex, thesis §6.4): it reflects every
// command applied before the call began.
func (c *Client) Query(ctx context.Context, q []byte) (Result, error) {
	r, err := c.send(ctx, func(id, seq uint64) *pb.ClientRequest {
		return &pb.ClientRequest{ClusterId: c.cfg.ClusterID, ClientId: id, Sequence: seq, Data: q, Query: true}
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Data: r.Result, Index: r.Index, Term: r.Term}, nil
}

// Do sends one command of the key-value store and waits for its answer,
// retrying with the same sequence number across nodes and leader changes
// until it succeeds, the cluster calls it invalid, or ctx ends (ErrTimeout).
func (c *Client) Do(ctx context.Context, cmd *pb.KVCommand) (*pb.ClientResponse, error) {
	return c.send(ctx, func(id, seq uint64) *pb.ClientRequest {
		return &pb.ClientRequest{ClusterId: c.cfg.ClusterID, ClientId: id, Sequence: seq, Command: cmd}
	})
}

// send runs one request, built by build for a session's id and next
// sequence number, until it gets an answer.
func (c *Client) send(ctx context.Context, build func(id, seq uint64) *pb.ClientRequest) (*pb.ClientResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	s := c.sessions.Get()
	defer c.sessions.Put(s)
	req := build(s.ID, s.Seq+1)
	// protoactor drops a message it cannot serialize (a key that is not
	// UTF-8) without a word, and the wire guard one over the size limit:
	// refuse them here, at once, with the gateway's reasons.
	var err error
	if req.Command != nil {
		err = kv.ValidateRequest(req, c.cfg.Limits)
	} else {
		err = c.cfg.Limits.CheckData(req.ClientId, req.Sequence, req.Data, req.Query)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.Seq++

	ch := make(chan *pb.ClientResponse, 1)
	key := waitKey{s.ID, s.Seq}
	c.mu.Lock()
	c.waiting[key] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, key)
		c.mu.Unlock()
	}()

	backoff := 10 * time.Millisecond
	busyFor := 20 * time.Millisecond // the pause after a BUSY, doubling
	var busy *pb.ClientResponse      // the last BUSY answer, if the call ends in one
	for {
		addr := c.target()
		c.system.Root.RequestWithCustomSender(actor.NewPID(addr, c.cfg.Gateway), req, c.reply)
		attempt := time.NewTimer(c.cfg.AttemptTimeout)
		var r *pb.ClientResponse
		select {
		case r = <-ch:
			attempt.Stop()
		case <-attempt.C:
			c.failed(addr) // no answer: try another node
			continue
		case <-ctx.Done():
			attempt.Stop()
			// The node did not answer in time either: the next call
			// should not start with it.
			c.failed(addr)
			return nil, c.timeoutError(ctx, busy)
		}
		switch r.Status {
		case pb.ClientStatus_CLIENT_STATUS_OK:
			c.succeeded(addr)
			return r, nil
		case pb.ClientStatus_CLIENT_STATUS_INVALID:
			return nil, fmt.Errorf("%w: %s: %s", ErrInvalid, addr, r.Error)
		case pb.ClientStatus_CLIENT_STATUS_NOT_LEADER:
			if r.LeaderAddress != "" && r.LeaderAddress != addr && !c.isDown(r.LeaderAddress) {
				c.follow(r.LeaderAddress)
				continue // straight to the hinted leader
			}
			c.skip(addr) // no usable hint: ask another node after a pause
		case pb.ClientStatus_CLIENT_STATUS_BUSY:
			// Not appended: the same node again, once it had time to
			// commit what it holds.
			busy = r
			c.follow(addr)
			if !sleep(ctx, jitter(busyFor)) {
				return nil, c.timeoutError(ctx, busy)
			}
			busyFor = min(2*busyFor, time.Second)
			continue
		default: // UNKNOWN, UNAVAILABLE: the same request again, after a pause
		}
		busy = nil
		if !sleep(ctx, backoff) {
			return nil, c.timeoutError(ctx, nil)
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// timeoutError is the error of a call whose context ended: ErrBusy when
// the last answer was BUSY, ErrTimeout otherwise.
func (c *Client) timeoutError(ctx context.Context, busy *pb.ClientResponse) error {
	if busy != nil {
		return fmt.Errorf("%w: %s (%v)", ErrBusy, busy.Error, context.Cause(ctx))
	}
	return fmt.Errorf("%w (%v)", ErrTimeout, context.Cause(ctx))
}

// sleep waits for d or the end of ctx, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter spreads d over [d/2, d), so that clients refused together do not
// come back together.
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// target is the node to try next: the known leader, or the next in turn
// that has not just failed (any node, if all have).
func (c *Client) target() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader != "" {
		return c.leader
	}
	n := len(c.cfg.Cluster)
	for i := range n {
		addr := c.cfg.Cluster[(c.next+i)%n]
		if !c.isDownLocked(addr) {
			c.next += i + 1
			return addr
		}
	}
	addr := c.cfg.Cluster[c.next%n]
	c.next++
	return addr
}

// SetCluster replaces the addresses the client tries (Config.Cluster), for
// a cluster whose membership changed: the servers added since, the removed
// ones left out. It is safe to call while requests are under way.
func (c *Client) SetCluster(addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("client: SetCluster needs at least one address")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg.Cluster = slices.Clone(addrs)
	if c.leader != "" && !slices.Contains(addrs, c.leader) {
		c.leader = ""
	}
	return nil
}

// cluster returns the addresses the client tries.
func (c *Client) cluster() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Cluster
}

// downFor is how long a node that failed an attempt is passed over.
func (c *Client) downFor() time.Duration { return 3 * c.cfg.AttemptTimeout }

func (c *Client) isDown(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.isDownLocked(addr)
}

func (c *Client) isDownLocked(addr string) bool {
	at, ok := c.down[addr]
	return ok && time.Since(at) < c.downFor()
}

// skip forgets addr as leader without marking it down: it answered, but
// cannot serve.
func (c *Client) skip(addr string) {
	c.mu.Lock()
	if c.leader == addr {
		c.leader = ""
	}
	c.mu.Unlock()
}

func (c *Client) follow(addr string) {
	c.mu.Lock()
	c.leader = addr
	c.mu.Unlock()
}

func (c *Client) succeeded(addr string) {
	c.mu.Lock()
	c.leader = addr
	delete(c.down, addr)
	c.mu.Unlock()
}

// failed marks addr as not answering: it is no longer the leader, and it
// is passed over for a while.
func (c *Client) failed(addr string) {
	c.mu.Lock()
	if c.leader == addr {
		c.leader = ""
	}
	c.down[addr] = time.Now()
	c.mu.Unlock()
}

// Status asks the node at addr for its status.
func (c *Client) Status(ctx context.Context, addr string) (*pb.NodeStatus, error) {
	r, err := c.ask(ctx, addr, &pb.StatusRequest{ClusterId: c.cfg.ClusterID})
	if err != nil {
		return nil, err
	}
	st, ok := r.(*pb.NodeStatus)
	if !ok {
		return nil, fmt.Errorf("node %s answered %T to a status request", addr, r)
	}
	if st.Error != "" {
		return st, errors.New(st.Error)
	}
	return st, nil
}

// Crash asks the node at addr to crash one of its children (store, state,
// fsm or sender). Only nodes started with --chaos obey.
func (c *Client) Crash(ctx context.Context, addr, child string) error {
	r, err := c.ask(ctx, addr, &pb.CrashRequest{ClusterId: c.cfg.ClusterID, Actor: child})
	if err != nil {
		return err
	}
	cr, ok := r.(*pb.CrashResponse)
	if !ok {
		return fmt.Errorf("node %s answered %T to a crash request", addr, r)
	}
	if !cr.Ok {
		return errors.New(cr.Error)
	}
	return nil
}

// Snapshot asks the node at addr to take a snapshot now and compact its log
// behind it, and returns once the snapshot is durable: its last included
// index and term, and its size.
func (c *Client) Snapshot(ctx context.Context, addr string) (*pb.SnapshotResponse, error) {
	r, err := c.ask(ctx, addr, &pb.SnapshotRequest{ClusterId: c.cfg.ClusterID})
	if err != nil {
		return nil, err
	}
	sr, ok := r.(*pb.SnapshotResponse)
	if !ok {
		return nil, fmt.Errorf("node %s answered %T to a snapshot request", addr, r)
	}
	if !sr.Ok {
		return nil, fmt.Errorf("node %s: %s", addr, sr.Error)
	}
	return sr, nil
}

// ask sends one request to one node and waits for its answer, through a
// one-shot actor so that answers without a sequence number find their way.
func (c *Client) ask(ctx context.Context, addr string, req any) (any, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.AttemptTimeout*2)
		defer cancel()
	}
	ch := make(chan any, 1)
	pid := c.system.Root.Spawn(actor.PropsFromFunc(func(actx actor.Context) {
		switch m := actx.Message().(type) {
		case *pb.NodeStatus, *pb.CrashResponse, *pb.TransferResponse, *pb.SnapshotResponse, *pb.MemberResponse:
			select {
			case ch <- m:
			default:
			}
		}
	}))
	defer c.system.Root.Stop(pid)
	c.system.Root.RequestWithCustomSender(actor.NewPID(addr, c.cfg.Gateway), req, pid)
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("node %s: %w (%v)", addr, ErrTimeout, context.Cause(ctx))
	}
}

// ErrTransferFailed: leadership did not move to another node in time.
var ErrTransferFailed = errors.New("leadership transfer did not complete")

// Transfer asks the leader to hand leadership to node to (0: the most
// up-to-date voter, Raft thesis §3.10) and waits until another node leads.
// It returns the old and the new leader's ids; when node to already leads,
// both are to and nothing is asked of the cluster.
func (c *Client) Transfer(ctx context.Context, to uint64) (from, now uint64, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	leader, addr, term, err := c.findLeader(ctx)
	if err != nil {
		return 0, 0, err
	}
	if to == leader {
		// Already where it was asked to go: nothing to do, and no reason
		// to fail a script that makes sure node X leads.
		return leader, leader, nil
	}
	r, err := c.ask(ctx, addr, &pb.TransferRequest{ClusterId: c.cfg.ClusterID, To: to})
	if err != nil {
		return leader, 0, err
	}
	if tr, ok := r.(*pb.TransferResponse); !ok || !tr.Ok {
		if ok {
			return leader, 0, fmt.Errorf("%w: %s", ErrTransferFailed, tr.Error)
		}
		return leader, 0, fmt.Errorf("node %s answered %T to a transfer request", addr, r)
	}
	for {
		if id, _, t, err := c.findLeader(ctx); err == nil && id != leader && t > term && (to == 0 || id == to) {
			return leader, id, nil
		}
		select {
		case <-ctx.Done():
			return leader, 0, fmt.Errorf("%w: node %d still leads (%v)", ErrTransferFailed, leader, context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// findLeader asks every node for its status and returns the leader of the
// highest term seen; when none of them leads, it asks the leader they name,
// at the address their configuration gives (a server added since the
// client was configured).
func (c *Client) findLeader(ctx context.Context) (id uint64, addr string, term uint64, err error) {
	type answer struct {
		st   *pb.NodeStatus
		addr string
	}
	ask := func(addrs []string) []answer {
		ch := make(chan answer, len(addrs))
		for _, a := range addrs {
			go func() {
				actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
				defer cancel()
				st, err := c.Status(actx, a)
				if err != nil {
					st = nil
				}
				ch <- answer{st, a}
			}()
		}
		out := make([]answer, 0, len(addrs))
		for range addrs {
			out = append(out, <-ch)
		}
		return out
	}
	answers := ask(c.cluster())
	pick := func(answers []answer) {
		for _, a := range answers {
			if a.st != nil && a.st.Role == "leader" && a.st.Term >= term {
				id, addr, term = a.st.Id, a.addr, a.st.Term
			}
		}
	}
	pick(answers)
	if id == 0 {
		// The leader may be a server added since the client was
		// configured: the nodes' configurations name its address.
		asked := map[string]bool{}
		for _, a := range c.cluster() {
			asked[a] = true
		}
		var more []string
		for _, a := range answers {
			if a.st == nil || a.st.Leader == 0 || a.st.Configuration == nil {
				continue
			}
			for _, m := range a.st.Configuration.Members {
				if m.Id == a.st.Leader && m.Address != "" && !asked[m.Address] {
					asked[m.Address] = true
					more = append(more, m.Address)
				}
			}
		}
		pick(ask(more))
	}
	if id == 0 {
		return 0, "", 0, errors.New("no node reports itself leader; is a majority up?")
	}
	return id, addr, term, nil
}

// ErrMemberChange: the leader refused a membership change, or it failed
// (the new server did not catch up, the configuration changed since the
// expected index, the change is invalid); the configuration is unchanged.
// The one exception says so: leadership was lost after the configuration
// was appended, and the change may or may not take effect.
var ErrMemberChange = errors.New("membership change refused")

// Members returns the cluster's configuration as the leader knows it (the
// latest) and the index of its entry. While no leader answers (an election)
// it keeps asking until ctx ends; then it returns the most recent
// configuration any node knows, which may not have committed.
func (c *Client) Members(ctx context.Context) (*pb.MemberResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	req := &pb.MemberRequest{ClusterId: c.cfg.ClusterID, Op: pb.MemberOp_MEMBER_OP_LIST}
	list := func(ctx context.Context, addr string) (*pb.MemberResponse, error) {
		mr, err := c.askMembers(ctx, addr, req)
		if err == nil && !mr.Ok {
			err = fmt.Errorf("node %s: %s", addr, mr.Error)
		}
		return mr, err
	}
	// The leader's, while there is time to find one.
	deadline, _ := ctx.Deadline()
	lctx, cancel := context.WithDeadline(ctx, deadline.Add(-time.Until(deadline)/4))
	defer cancel()
	for lctx.Err() == nil {
		if _, addr, _, err := c.findLeader(lctx); err == nil {
			if mr, err := list(lctx, addr); err == nil {
				return mr, nil
			}
		}
		select {
		case <-lctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	// No leader: the latest configuration any node holds.
	var best *pb.MemberResponse
	var last error
	for _, addr := range c.cluster() {
		mr, err := list(ctx, addr)
		if err != nil {
			last = err
			continue
		}
		if best == nil || mr.ConfigurationIndex > best.ConfigurationIndex {
			best = mr
		}
	}
	if best == nil {
		return nil, last
	}
	return best, nil
}

// ChangeMembers asks the leader to change the configuration (add, promote,
// remove; thesis chapter 4) and waits until the new configuration has
// committed. New voters are caught up first, which takes at least a round
// trip and, for a server far behind, a snapshot transfer: give ctx room.
// A refusal wraps ErrMemberChange.
func (c *Client) ChangeMembers(ctx context.Context, req *pb.MemberRequest) (*pb.MemberResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	req = proto.Clone(req).(*pb.MemberRequest)
	req.ClusterId, req.Op = c.cfg.ClusterID, pb.MemberOp_MEMBER_OP_CHANGE
	var addr string
	for {
		// Ask the leader; a refusal that says "not now" (no leader yet, a
		// new leader that has not committed its no-op, a transfer) is
		// retried until ctx ends: nothing was changed.
		why := ""
		if addr == "" {
			_, a, _, err := c.findLeader(ctx)
			if err != nil {
				why = err.Error()
			}
			addr = a
		}
		if addr != "" {
			mr, err := c.askMembers(ctx, addr, req)
			switch {
			case err != nil:
				return nil, err
			case mr.Ok:
				return mr, nil
			case !mr.Retry:
				return mr, fmt.Errorf("%w: %s", ErrMemberChange, mr.Error)
			}
			why, addr = mr.Error, mr.LeaderAddress
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%s): %v", ErrTimeout, why, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// askMembers sends a MemberRequest to the node at addr and returns its
// answer, whatever it says.
func (c *Client) askMembers(ctx context.Context, addr string, req *pb.MemberRequest) (*pb.MemberResponse, error) {
	r, err := c.ask(ctx, addr, req)
	if err != nil {
		return nil, err
	}
	mr, ok := r.(*pb.MemberResponse)
	if !ok {
		return nil, fmt.Errorf("node %s answered %T to a member request", addr, r)
	}
	return mr, nil
}
