package sender

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/remote"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Defaults of Config.
const (
	DefaultMaxQueue      = 4096
	DefaultMaxQueueBytes = 64 << 20
	DefaultMaxBatchBytes = pb.DefaultMaxBatchBytes
	DefaultProbeInterval = 50 * time.Millisecond
	DefaultProbeTimeout  = time.Second
)

// Outbound is what the fsm actor sends the sender after each Step: the peer
// messages it produced, in order. Each goes to the peer named by its To.
// From then on the sender owns the slice and the messages; the fsm must not
// modify them (they are serialized later, on another goroutine).
type Outbound struct {
	Msgs []*pb.RaftMessage
}

// SetPeers replaces the peer table: the fsm actor sends it whenever the
// configuration changes (thesis §4.1) or it learns the address of a server
// it did not know (RaftBatch.from_address). New peers are probed, gone ones
// forgotten with their queues, a changed address is connected anew.
type SetPeers struct {
	Peers map[uint64]string
}

// Crash makes the sender actor panic with Reason, for fault tests. Its
// supervisor restarts it: the queued messages are lost (to Raft that looks
// like network loss); the counters survive.
type Crash struct {
	Reason string
}

// Config configures a sender. Zero durations and sizes take the defaults.
type Config struct {
	// Peers maps each peer's node id to the address ("host:port") of its
	// remote, at start; SetPeers replaces it. This node itself need not be
	// listed.
	Peers map[uint64]string
	// Self and SelfAddr are this node's id and the address its remote
	// listens on: every RaftBatch carries them, so a receiver that does
	// not know this node yet can answer it.
	Self     uint64
	SelfAddr string
	// Target builds the remote PID of a peer's fsm actor. Required.
	Target func(id uint64, addr string) *actor.PID
	// MaxQueue bounds the messages queued for one peer. For an unreachable
	// peer a full queue drops its oldest message; for a reachable one it is
	// flushed early instead. Default DefaultMaxQueue.
	MaxQueue int
	// MaxQueueBytes bounds the entry data queued for one unreachable peer
	// (roughly: entry data plus a fixed overhead per message and entry), so
	// that a dead follower costs the leader bounded memory however large
	// its AppendEntries. Past it the oldest messages are dropped. Default
	// DefaultMaxQueueBytes.
	MaxQueueBytes int
	// MaxBatchBytes bounds one RaftBatch; a larger queue is split. A single
	// message above it travels alone. It must stay below the receivers'
	// GuardConfig.MaxMessageBytes. Default DefaultMaxBatchBytes.
	MaxBatchBytes int
	// ProbeInterval is the pause between two TCP probes of an unreachable
	// peer. Default DefaultProbeInterval.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one TCP probe. Default DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Logger is used for peer reachability changes (Info) and
	// misconfiguration (Warn). Default slog.Default().
	Logger *slog.Logger
	// OnSent, if set, is called for every RaftBatch handed to protoactor
	// with its peer, message count and encoded size; OnDropped with the
	// messages dropped from an unreachable peer's full queue (metrics).
	// Both run on the actor and must not block.
	OnSent    func(peer uint64, msgs, bytes int)
	OnDropped func(peer uint64, n int)
	// ProbeTLS, when the remote speaks TLS (WithTLS), is the client
	// configuration the reachability probe dials with (TLS.Client), and
	// ProbeVerify its check of who answered (TLS.VerifyDial).
	ProbeTLS    *tls.Config
	ProbeVerify func(addr string, cs tls.ConnectionState) error
}

// withDefaults returns c with the zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.MaxQueue == 0 {
		c.MaxQueue = DefaultMaxQueue
	}
	if c.MaxQueueBytes == 0 {
		c.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first problem of c (after defaults are applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Target == nil {
		return errors.New("sender: Target is required")
	}
	if c.MaxQueue < 1 || c.MaxQueueBytes < 1 {
		return fmt.Errorf("sender: MaxQueue %d and MaxQueueBytes %d must be at least 1", c.MaxQueue, c.MaxQueueBytes)
	}
	if c.MaxBatchBytes < 1 {
		return fmt.Errorf("sender: MaxBatchBytes %d must be at least 1", c.MaxBatchBytes)
	}
	if c.ProbeInterval < 0 || c.ProbeTimeout < 0 {
		return errors.New("sender: probe durations must not be negative")
	}
	seen := map[string]uint64{}
	for _, id := range slices.Sorted(maps.Keys(c.Peers)) {
		addr := c.Peers[id]
		if id == 0 {
			return errors.New("sender: peer id 0 is not a node id")
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("sender: peer %d address %q is not host:port", id, addr)
		}
		if other, dup := seen[addr]; dup {
			return fmt.Errorf("sender: peers %d and %d share the address %s", other, id, addr)
		}
		seen[addr] = id
	}
	return nil
}

// PeerStats is what the sender reports about one peer.
type PeerStats struct {
	Addr string
	// Reachable: the sender sends to this peer now. When false it holds
	// the peer's messages (up to MaxQueue) and probes it.
	Reachable bool
	// Queued messages not yet handed to protoactor.
	Queued int
	// SentBatches, SentMessages and SentBytes count what was handed to
	// protoactor (delivery is not confirmed: a connection may still drop
	// them); SentBytes counts the messages' encoded bytes.
	SentBatches, SentMessages, SentBytes uint64
	// Dropped counts messages evicted from the full queue of an
	// unreachable peer.
	Dropped uint64
}

// Stats is a snapshot of a sender's counters.
type Stats struct {
	Peers map[uint64]PeerStats
	// Unroutable counts messages for a node id not in Config.Peers.
	Unroutable uint64
}

// Sender is a configured sender: it makes the actor's props and keeps the
// counters, which outlive restarts of the actor.
type Sender struct {
	cfg        Config
	mu         sync.Mutex
	counters   map[uint64]*peerCounters // under mu; an entry per peer ever known
	addrs      map[uint64]string        // under mu: the current peer table
	unroutable atomic.Uint64
}

type peerCounters struct {
	reachable                   atomic.Bool
	queued                      atomic.Int64
	batches, msgs, bytes, drops atomic.Uint64
}

// New validates cfg and returns a Sender.
func New(cfg Config) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Peers = maps.Clone(cfg.Peers)
	s := &Sender{cfg: cfg, counters: map[uint64]*peerCounters{}, addrs: maps.Clone(cfg.Peers)}
	for id := range cfg.Peers {
		s.counters[id] = &peerCounters{}
	}
	return s, nil
}

// Props returns the props of the sender actor. Spawn one per node; its
// supervisor may restart it at will.
func (s *Sender) Props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &senderActor{s: s} })
}

// PeerAt reports which peer addr belongs to in the current peer table. It
// is safe to call from any goroutine.
func (s *Sender) PeerAt(addr string) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, a := range s.addrs {
		if a == addr {
			return id, true
		}
	}
	return 0, false
}

// Stats returns a snapshot of the counters. It is safe to call from any
// goroutine.
func (s *Sender) Stats() Stats {
	st := Stats{Peers: map[uint64]PeerStats{}, Unroutable: s.unroutable.Load()}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, addr := range s.addrs {
		c := s.counters[id]
		st.Peers[id] = PeerStats{
			Addr:         addr,
			Reachable:    c.reachable.Load(),
			Queued:       int(c.queued.Load()),
			SentBatches:  c.batches.Load(),
			SentMessages: c.msgs.Load(),
			SentBytes:    c.bytes.Load(),
			Dropped:      c.drops.Load(),
		}
	}
	return st
}

// Messages the actor sends itself. Each names the incarnation that sent it
// (the mailbox survives a restart; the actor value does not), and a newer
// incarnation ignores those of an older one where it matters.
type (
	// flush: every Outbound queued before it has been taken in.
	flush struct{ owner *senderActor }
	// probeResult: a probe of a peer ended.
	probeResult struct {
		owner *senderActor
		id    uint64
		addr  string
		err   error
	}
	// probeTick: time to probe an unreachable peer again.
	probeTick struct {
		owner *senderActor
		id    uint64
	}
)

// peerTable returns the current peer table (a copy).
func (s *Sender) peerTable() map[uint64]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.addrs)
}

// wasPeer reports whether id was ever in the peer table.
func (s *Sender) wasPeer(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters[id] != nil
}

// setTable records a new peer table and returns each peer's counters.
func (s *Sender) setTable(peers map[uint64]string) map[uint64]*peerCounters {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs = maps.Clone(peers)
	cs := map[uint64]*peerCounters{}
	for id := range peers {
		if s.counters[id] == nil {
			s.counters[id] = &peerCounters{}
		}
		cs[id] = s.counters[id]
	}
	return cs
}

// peer is the actor's view of one peer.
type peer struct {
	id    uint64
	addr  string
	pid   *actor.PID
	q     ring
	up    bool
	wasUp bool // it has been up in this incarnation: log changes at Info
	// probeErr is the last TLS refusal logged for the peer ("" when none);
	// neverWarned: the peer never came up and that was logged.
	probeErr    string
	neverWarned bool
	probing     bool // a probe or its timer is outstanding
	timer       *time.Timer
	since       time.Time // of the last change of up
	c           *peerCounters
}

// senderActor is one incarnation of the sender.
type senderActor struct {
	s            *Sender
	log          *slog.Logger
	peers        map[uint64]*peer
	byAddr       map[string]*peer
	flushPending bool
	sub          *eventstream.Subscription
	// watched is the set of peer addresses whose endpoint events the
	// subscription forwards (read on the event stream's goroutine).
	watched atomic.Pointer[map[string]bool]
	warned  map[uint64]bool // unroutable ids already logged
}

// Receive implements actor.Actor.
func (a *senderActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		a.stop(ctx)
	case *Outbound:
		a.enqueue(ctx, m.Msgs)
	case *flush:
		if m.owner == a {
			a.flushPending = false
		}
		for _, p := range a.peers {
			a.flushPeer(ctx, p)
		}
	case *remote.EndpointTerminatedEvent:
		if p := a.byAddr[m.Address]; p != nil && p.up {
			a.setUp(p, false, "endpoint terminated")
			a.probe(ctx, p)
		}
	case *remote.EndpointConnectedEvent:
		if p := a.byAddr[m.Address]; p != nil && !p.up {
			a.setUp(p, true, "endpoint connected")
			a.flushPeer(ctx, p)
		}
	case *probeResult:
		a.probeDone(ctx, m)
	case *probeTick:
		if p := a.peers[m.id]; m.owner == a && p != nil {
			p.probing, p.timer = false, nil
			if !p.up {
				a.probe(ctx, p)
			}
		}
	case *SetPeers:
		a.setPeers(ctx, m.Peers)
	case *Crash:
		panic("sender: crash requested: " + m.Reason)
	}
}

// start builds the peer table, subscribes to protoactor's endpoint events
// for the peers' addresses and probes every peer: a new incarnation knows
// nothing about reachability, and a probe of a live peer takes a
// millisecond.
func (a *senderActor) start(ctx actor.Context) {
	cfg := a.s.cfg
	a.log = cfg.Logger.With("actor", "sender")
	a.peers = map[uint64]*peer{}
	a.byAddr = map[string]*peer{}
	a.warned = map[uint64]bool{}
	a.watched.Store(&map[string]bool{})
	self, root := ctx.Self(), ctx.ActorSystem().Root
	// The filter runs inside the handler: protoactor's
	// SubscribeWithPredicate sets the predicate after the subscription is
	// already visible to Publish, which reads it without a lock (a data
	// race under -race when an event is published meanwhile).
	a.sub = ctx.ActorSystem().EventStream.Subscribe(func(ev any) {
		watched := *a.watched.Load()
		switch e := ev.(type) {
		case *remote.EndpointTerminatedEvent:
			if watched[e.Address] {
				root.Send(self, ev)
			}
		case *remote.EndpointConnectedEvent:
			if watched[e.Address] {
				root.Send(self, ev)
			}
		}
	})
	a.setPeers(ctx, a.s.peerTable())
}

// setPeers makes the peer table peers: new peers are probed (a new
// incarnation knows nothing about reachability, and a probe of a live peer
// takes a millisecond), peers that are gone are forgotten, once what was
// queued for them has been handed to protoactor if they are reachable (the
// fsm's last heartbeat to a removed server, which tells it that it was
// removed, is queued just before the table that leaves it out arrives).
func (a *senderActor) setPeers(ctx actor.Context, peers map[uint64]string) {
	counters := a.s.setTable(peers)
	for id, p := range a.peers {
		if addr, ok := peers[id]; !ok || addr != p.addr {
			a.flushPeer(ctx, p)
			if p.timer != nil {
				p.timer.Stop()
			}
			p.c.queued.Store(0)
			delete(a.peers, id)
			delete(a.byAddr, p.addr)
		}
	}
	watched := map[string]bool{}
	for id, addr := range peers {
		watched[addr] = true
		if a.peers[id] != nil {
			continue
		}
		p := &peer{id: id, addr: addr, pid: a.s.cfg.Target(id, addr), q: newRing(a.s.cfg.MaxQueue, a.s.cfg.MaxQueueBytes), since: time.Now(), c: counters[id]}
		p.c.reachable.Store(false)
		p.c.queued.Store(0)
		a.peers[id] = p
		a.byAddr[addr] = p
		a.probe(ctx, p)
	}
	a.watched.Store(&watched)
}

// stop releases what the incarnation holds outside the actor.
func (a *senderActor) stop(ctx actor.Context) {
	if a.sub != nil {
		ctx.ActorSystem().EventStream.Unsubscribe(a.sub)
		a.sub = nil
	}
	for _, p := range a.peers {
		if p.timer != nil {
			p.timer.Stop()
		}
	}
}

// enqueue queues msgs by peer and makes sure a flush follows them.
func (a *senderActor) enqueue(ctx actor.Context, msgs []*pb.RaftMessage) {
	for _, m := range msgs {
		if m == nil {
			continue
		}
		p := a.peers[m.To]
		if p == nil {
			a.s.unroutable.Add(1)
			if !a.warned[m.To] {
				a.warned[m.To] = true
				if a.s.wasPeer(m.To) {
					// Removed by a configuration change: the fsm's last
					// answers to it are expected.
					a.log.Debug("message for a server no longer in the peer table dropped", "peer", m.To)
				} else {
					a.log.Warn("message for a node not in the peer table dropped", "peer", m.To)
				}
			}
			continue
		}
		if p.up && p.q.full() {
			// A reachable peer loses nothing to the bound: a burst
			// larger than the queue leaves in several batches.
			a.flushPeer(ctx, p)
		}
		if n := p.q.push(m); n > 0 {
			p.c.drops.Add(uint64(n))
			if a.s.cfg.OnDropped != nil {
				a.s.cfg.OnDropped(p.id, n)
			}
		}
		p.c.queued.Store(int64(p.q.len()))
	}
	// The marker goes behind every Outbound already in the mailbox, so
	// all of them are queued by the time it is handled: one RaftBatch per
	// peer per wave of Outbounds, and no timer adding latency.
	if !a.flushPending {
		a.flushPending = true
		ctx.Send(ctx.Self(), &flush{owner: a})
	}
}

// flushPeer hands everything queued for a reachable peer to protoactor, as
// few RaftBatches as MaxBatchBytes allows.
func (a *senderActor) flushPeer(ctx actor.Context, p *peer) {
	if !p.up || p.q.len() == 0 {
		return
	}
	// The batch's own fields (who sends it) count against the bound too.
	own := protowire.SizeTag(2) + protowire.SizeVarint(a.s.cfg.Self) + protowire.SizeTag(3) + protowire.SizeBytes(len(a.s.cfg.SelfAddr))
	for _, run := range pack(p.q.drain(), max(a.s.cfg.MaxBatchBytes-own, 1)) {
		ctx.Send(p.pid, &pb.RaftBatch{Messages: run.msgs, From: a.s.cfg.Self, FromAddress: a.s.cfg.SelfAddr})
		p.c.batches.Add(1)
		p.c.msgs.Add(uint64(len(run.msgs)))
		p.c.bytes.Add(uint64(run.bytes + own))
		if a.s.cfg.OnSent != nil {
			a.s.cfg.OnSent(p.id, len(run.msgs), run.bytes+own)
		}
	}
	p.c.queued.Store(0)
}

// setUp records a reachability change of p, learnt from what.
func (a *senderActor) setUp(p *peer, up bool, what string) {
	now := time.Now()
	if up {
		if p.wasUp {
			a.log.Info("peer reachable again", "peer", p.id, "addr", p.addr, "down_for", now.Sub(p.since).Round(time.Millisecond), "via", what)
		} else {
			a.log.Debug("peer reachable", "peer", p.id, "addr", p.addr, "via", what)
		}
		p.wasUp = true
	} else {
		a.log.Info("peer unreachable; holding its messages and probing", "peer", p.id, "addr", p.addr, "via", what)
	}
	p.up, p.since = up, now
	p.c.reachable.Store(up)
}

// probe starts a TCP probe of p unless one is outstanding. It runs on its
// own goroutine and reports back as a probeResult.
func (a *senderActor) probe(ctx actor.Context, p *peer) {
	if p.probing {
		return
	}
	p.probing = true
	self, root := ctx.Self(), ctx.ActorSystem().Root
	id, addr, timeout := p.id, p.addr, a.s.cfg.ProbeTimeout
	go func() {
		var err error
		if probe := a.s.cfg.ProbeTLS; probe != nil {
			err = probeTLS(addr, timeout, probe, a.s.cfg.ProbeVerify)
		} else {
			err = probeHTTP2(addr, timeout)
		}
		root.Send(self, &probeResult{owner: a, id: id, addr: addr, err: err})
	}()
}

// probeDone marks a peer whose probe connected reachable and flushes it, or
// schedules the next probe.
func (a *senderActor) probeDone(ctx actor.Context, m *probeResult) {
	p := a.peers[m.id]
	if m.owner != a || p == nil || p.addr != m.addr {
		return // a probe of a peer (or an address) since forgotten
	}
	p.probing = false
	if p.up {
		return
	}
	if m.err == nil {
		p.probeErr = ""
		a.setUp(p, true, "probe")
		a.flushPeer(ctx, p)
		return
	}
	// A peer that answers but whose TLS certificate this side refuses is
	// misconfigured, not down: say so once per distinct reason (a dead
	// peer's refused connections are not worth a line each).
	var tlsErr *tls.CertificateVerificationError
	if why := m.err.Error(); a.s.cfg.ProbeTLS != nil && why != p.probeErr && (errors.As(m.err, &tlsErr) || strings.Contains(why, "tls:") || strings.Contains(why, "TLS peer refused")) {
		p.probeErr = why
		a.log.Warn("peer refused over TLS; its messages are held", "peer", p.id, "addr", p.addr, "err", why)
	}
	if !p.wasUp && !p.neverWarned && time.Since(p.since) >= NeverUpWarning {
		// A peer that was never reachable is not a change of state, so
		// setUp logs nothing for it: say so once.
		p.neverWarned = true
		a.log.Warn("peer not reachable since it was added; holding its messages and probing", "peer", p.id, "addr", p.addr,
			"for", time.Since(p.since).Round(time.Second), "err", m.err)
	}
	p.probing = true
	self, root, id := ctx.Self(), ctx.ActorSystem().Root, p.id
	p.timer = time.AfterFunc(a.s.cfg.ProbeInterval, func() {
		root.Send(self, &probeTick{owner: a, id: id})
	})
}

// NeverUpWarning is how long a peer may stay unreachable from the start
// before the sender logs it (once).
const NeverUpWarning = 10 * time.Second

// http2Preface is the client connection preface (RFC 9113 §3.4) followed
// by an empty SETTINGS frame.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// probeHTTP2 checks that a live HTTP/2 server (protoactor's gRPC server)
// answers at addr: it connects, sends the client preface and waits for the
// first frame of the server's preface, a SETTINGS frame.
//
// A bare TCP connect is not enough. When a peer process dies the kernel
// closes its connections a moment before its listening socket, and until
// then it completes handshakes on the dead process's behalf: a TCP probe
// launched by the lost connection succeeds, the sender sends, protoactor's
// endpoint writer fails to connect and sleeps 2 s with the messages. Only
// a live process answers the preface. (It also rules out a TCP
// self-connect, which dialling an unused loopback port can produce.)
func probeHTTP2(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return http2Answer(c, timeout)
}

// http2Answer sends the HTTP/2 client preface on c and reads the server's
// first frame, which must be a SETTINGS frame.
func http2Answer(c net.Conn, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, http2Preface); err != nil {
		return err
	}
	var hdr [9]byte // length (3), type (1), flags (1), stream id (4)
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("no HTTP/2 answer: %w", err)
	}
	if hdr[3] != 0x4 {
		return errors.New("not an HTTP/2 server")
	}
	return nil
}

// run is one RaftBatch's messages and their encoded size (without the
// batch's own fields).
type run struct {
	msgs  []*pb.RaftMessage
	bytes int
}

// pack splits msgs, in order, into runs whose RaftBatch encoding stays
// within maxBytes; a message larger than maxBytes forms a run of its own.
func pack(msgs []*pb.RaftMessage, maxBytes int) []run {
	var out []run
	start, size := 0, 0
	for i, m := range msgs {
		// Field 1 of RaftBatch, length-delimited.
		n := protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(m))
		if i > start && size+n > maxBytes {
			out = append(out, run{msgs[start:i:i], size})
			start, size = i, 0
		}
		size += n
	}
	if start < len(msgs) {
		out = append(out, run{msgs[start:], size})
	}
	return out
}

// ring is a bounded FIFO of messages that evicts the oldest when it holds
// too many messages or too many bytes.
type ring struct {
	buf      []*pb.RaftMessage
	head, n  int
	bytes    int // approxBytes of the messages queued
	maxBytes int
}

func newRing(capacity, maxBytes int) ring {
	return ring{buf: make([]*pb.RaftMessage, capacity), maxBytes: maxBytes}
}

func (r *ring) len() int { return r.n }

func (r *ring) full() bool { return r.n == len(r.buf) || r.bytes >= r.maxBytes }

// push appends m and returns how many of the oldest messages it evicted
// to stay within the bounds (m itself is always kept).
//
// Dropping the oldest, not the newest: a peer's newer messages supersede
// older ones (a newer heartbeat or AppendEntries carries a newer commit
// index and term, a vote request from an older term is void), so after an
// outage the freshest messages are the useful ones; the leader resends
// what a follower is missing from its next AppendEntries on (Raft §5.3).
func (r *ring) push(m *pb.RaftMessage) (evicted int) {
	size := approxBytes(m)
	for r.n > 0 && (r.n == len(r.buf) || r.bytes+size > r.maxBytes) {
		r.bytes -= approxBytes(r.buf[r.head])
		r.buf[r.head] = nil
		r.head = (r.head + 1) % len(r.buf)
		r.n--
		evicted++
	}
	r.buf[(r.head+r.n)%len(r.buf)] = m
	r.n++
	r.bytes += size
	return evicted
}

// approxBytes is a cheap estimate of m's size for the queue's byte bound:
// the entries' or the snapshot chunk's data and fixed overheads, without
// encoding anything.
func approxBytes(m *pb.RaftMessage) int {
	n := pb.MessageOverhead / 8
	for _, e := range m.GetAppendEntries().GetEntries() {
		n += len(e.GetData()) + pb.EntryOverhead
	}
	// A snapshot chunk (up to a MiB) counts too: a peer that is down
	// holds the queue's bytes, not its count of messages, in chunks.
	return n + len(m.GetInstallSnapshot().GetData())
}

// drain removes and returns all queued messages, oldest first, in a new
// slice (it leaves with a RaftBatch and is serialized on another
// goroutine).
func (r *ring) drain() []*pb.RaftMessage {
	out := make([]*pb.RaftMessage, r.n)
	for i := range out {
		j := (r.head + i) % len(r.buf)
		out[i], r.buf[j] = r.buf[j], nil
	}
	r.head, r.n, r.bytes = 0, 0, 0
	return out
}
