package sender

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// DefaultMaxMessageBytes is the wire guard's default cap on one message:
// the largest RaftBatch a sender packs (messages.DefaultMaxBatchBytes).
const DefaultMaxMessageBytes = pb.DefaultMaxBatchBytes

// The serializer ids protoactor registers at init: protobuf, then JSON.
const (
	protoSerializerID = 0
	jsonSerializerID  = 1
)

// ketchPackage prefixes the full names of ketch's protobuf messages.
var ketchPackage = string(pb.File_ketch_v1_raft_proto.Package()) + "."

// Names of the protoactor messages that carry a PID the guard checks.
var (
	watchName      = string(proto.MessageName(&actor.Watch{}))
	unwatchName    = string(proto.MessageName(&actor.Unwatch{}))
	terminatedName = string(proto.MessageName(&actor.Terminated{}))
)

// GuardConfig configures the wire guard that StartRemote installs in the
// gRPC server. The zero value is valid.
//
// The guard sits between gRPC and protoactor's endpoint reader and inspects
// every inbound remote.MessageBatch before protoactor deserializes it,
// because protoactor trusts the wire: an unknown type name, a type, target or
// sender index out of range or an unknown serializer id panics in the gRPC
// stream goroutine and kills the process; a nil PID in a Terminated does
// too; an actor.Stop or PoisonPill from any peer stops the addressed actor;
// a target PID with another node's address is relayed there. The guard
// sorts what it finds in two kinds:
//
//   - Malformed batches, which protoactor's own writer never produces (an
//     index out of range, an unknown serializer id): the whole batch is
//     dropped and the stream closed with InvalidArgument. The peer is broken
//     or hostile; its writer, if it is protoactor, reconnects.
//   - Well-formed envelopes this node does not accept (a type outside the
//     allowlist, a type the target actor is not meant to receive (Routes),
//     the JSON serializer, a payload over MaxMessageBytes, a target on
//     another node, a Watch/Unwatch/Terminated whose PID is not the peer's
//     own): only that envelope is dropped; the rest of the batch is
//     delivered and the stream stays open, so a newer peer that sends a
//     message type this node does not know yet (a rolling upgrade) loses
//     only those messages.
//
// Each rejection is logged at Warn as one line naming the peer (at most one
// line per second per connection; the next line counts the suppressed
// ones). Garbage bytes under an allowed type are not the guard's business:
// protoactor's Deserialize returns an error and closes the stream itself,
// without crashing; unmarshalling twice would cost every message on the
// hot path. Unary gRPC methods (ListProcesses, GetProcessDiagnostics), which
// protoactor implements as panic("implement me"), are refused with
// Unimplemented. As a last line of defence a panic in the stream handler is
// recovered and closes that stream only.
//
// Not checked: sender PIDs (a reply goes wherever the peer says; actors that
// reply, like the client gateway, answer clients on other hosts), the
// content of allowed messages (the receiving actor validates it), the
// number of connections.
type GuardConfig struct {
	// AllowTypes adds fully qualified protobuf message names to
	// DefaultAllowedTypes (e.g. "remote.ActorPidRequest" for remote spawning).
	// Each must be registered in protoregistry.GlobalTypes.
	AllowTypes []string
	// MaxMessageBytes caps one serialized message. Default
	// DefaultMaxMessageBytes; it must be at least the senders'
	// MaxBatchBytes (a node sets both from one messages.Limits).
	MaxMessageBytes int
	// Routes, when not nil, admits each type only for the actors meant to
	// receive it: it maps an actor id (a target PID's Id, such as
	// "raft/1/fsm") to the fully qualified message names that actor takes
	// from the wire. An envelope for an actor not in Routes is admitted
	// only with a type in OtherTargets. protoactor's own messages (Watch,
	// Unwatch, Terminated, DeadLetterResponse) may go to any actor, under
	// the PID checks below. Every name must be allowed (DefaultAllowedTypes
	// or AllowTypes). With Routes nil, any allowed type may go to any actor.
	Routes map[string][]string
	// OtherTargets is what actors not named in Routes accept; see Routes.
	OtherTargets []string
	// Logger receives the guard's lines. Default slog.Default().
	Logger *slog.Logger
	// OnReject, if set, is called for every rejection, from the gRPC stream
	// goroutine; it must not block. For tests and metrics.
	OnReject func(Rejection)
}

// Rejection describes what the wire guard refused.
type Rejection struct {
	// Peer is the connection's remote address; Announced is the address the
	// peer gave in its ConnectRequest ("" if none).
	Peer, Announced string
	// Reason is the first problem found.
	Reason string
	// Dropped is the number of envelopes not delivered.
	Dropped int
	// Closed says the stream was closed (a malformed batch or unary call).
	Closed bool
}

// DefaultAllowedTypes returns the message names the wire guard accepts by
// default, sorted: every ketch.v1 message (package messages) and the
// protoactor messages that remoting between ketch nodes needs — Watch,
// Unwatch and Terminated for remote watches, DeadLetterResponse for a
// request whose target is gone. Not allowed: actor.Stop and PoisonPill
// (any peer could stop any actor), remote.ActorPidRequest (remote spawning,
// unused), Touch.
func DefaultAllowedTypes() []string {
	names := []string{
		watchName, unwatchName, terminatedName,
		string(proto.MessageName(&actor.DeadLetterResponse{})),
	}
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if n := string(mt.Descriptor().FullName()); strings.HasPrefix(n, ketchPackage) {
			names = append(names, n)
		}
		return true
	})
	slices.Sort(names)
	return names
}

// wireGuard holds the configuration shared by all streams of one server.
type wireGuard struct {
	system   *actor.ActorSystem
	allowed  map[string]bool
	routes   map[string]map[string]bool // nil: no routing
	other    map[string]bool
	maxBytes int
	log      *slog.Logger
	onReject func(Rejection)
	// authenticate, with TLS (WithTLS), names the peer of each stream.
	authenticate func(tls.ConnectionState) (uint64, error)
}

// protoactorTypes are protoactor's own messages, which routing lets
// through to any actor.
var protoactorTypes = map[string]bool{
	watchName: true, unwatchName: true, terminatedName: true,
	string(proto.MessageName(&actor.DeadLetterResponse{})): true,
}

func newWireGuard(system *actor.ActorSystem, cfg GuardConfig) (*wireGuard, error) {
	g := &wireGuard{
		system:   system,
		allowed:  map[string]bool{},
		maxBytes: cfg.MaxMessageBytes,
		log:      cfg.Logger,
		onReject: cfg.OnReject,
	}
	if g.maxBytes == 0 {
		g.maxBytes = DefaultMaxMessageBytes
	}
	if g.maxBytes < 0 {
		return nil, fmt.Errorf("guard: MaxMessageBytes %d is negative", g.maxBytes)
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	g.log = g.log.With("component", "wire-guard")
	for _, n := range DefaultAllowedTypes() {
		g.allowed[n] = true
	}
	for _, n := range cfg.AllowTypes {
		// protoactor's protobuf deserializer dereferences the registry's
		// answer: a name it cannot resolve must never pass.
		if _, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(n)); err != nil {
			return nil, fmt.Errorf("guard: allowed type %q is not a registered protobuf message", n)
		}
		g.allowed[n] = true
	}
	if cfg.Routes != nil {
		set := func(names []string) (map[string]bool, error) {
			m := map[string]bool{}
			for _, n := range names {
				if !g.allowed[n] {
					return nil, fmt.Errorf("guard: routed type %q is not an allowed type", n)
				}
				m[n] = true
			}
			return m, nil
		}
		g.routes = map[string]map[string]bool{}
		for id, names := range cfg.Routes {
			m, err := set(names)
			if err != nil {
				return nil, err
			}
			g.routes[id] = m
		}
		var err error
		if g.other, err = set(cfg.OtherTargets); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// unaryInterceptor refuses every unary call: protoactor's are unimplemented
// and panic.
func (g *wireGuard) unaryInterceptor(ctx context.Context, _ any, info *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
	r := Rejection{Peer: peerAddr(ctx), Reason: "unary call " + info.FullMethod, Closed: true}
	if g.onReject != nil {
		g.onReject(r)
	}
	g.log.Debug("wire guard refused a unary call", "peer", r.Peer, "method", info.FullMethod)
	return nil, status.Error(codes.Unimplemented, "ketch: unary remoting calls are disabled")
}

// streamInterceptor wraps the Receive stream so that every inbound message
// passes the guard, and recovers a panic of the handler.
func (g *wireGuard) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	gs := &guardedStream{ServerStream: ss, g: g, peer: peerAddr(ss.Context())}
	if g.authenticate != nil {
		// TLS: who is at the other end is the certificate's identity.
		state, ok := peerTLS(ss.Context())
		if !ok {
			gs.reject(Rejection{Reason: "a stream without TLS", Closed: true})
			return status.Error(codes.Unauthenticated, "ketch: TLS required")
		}
		if gs.node, err = g.authenticate(state); err != nil {
			gs.reject(Rejection{Reason: "certificate refused: " + err.Error(), Closed: true})
			return status.Error(codes.PermissionDenied, "ketch: "+err.Error())
		}
		gs.authed, gs.tls, gs.authAt = true, state, time.Now()
	}
	defer func() {
		if p := recover(); p != nil {
			g.log.Error("wire guard recovered a panic in the remote stream handler; stream closed",
				"peer", gs.peer, "announced", gs.announced, "panic", fmt.Sprint(p))
			err = status.Error(codes.Internal, "ketch: internal error")
		}
	}()
	return handler(srv, gs)
}

func peerAddr(ctx context.Context) string {
	if p, ok := grpcpeer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// guardedStream is one inbound connection. Only its handler goroutine
// calls RecvMsg, so its fields need no lock.
type guardedStream struct {
	grpc.ServerStream
	g         *wireGuard
	peer      string
	announced string // from the peer's first ConnectRequest
	// authed: the connection is TLS and node is who its certificate
	// names (0: a client).
	authed  bool
	node    uint64
	tls     tls.ConnectionState
	authAt  time.Time // when the certificate was last checked
	lastLog time.Time
	muted   int // rejections not logged since lastLog
}

// RecvMsg receives the next message and passes it through the guard. An
// error closes the stream (protoactor's reader returns it).
func (s *guardedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	rm, ok := m.(*remote.RemoteMessage)
	if !ok {
		return nil
	}
	if s.authed && time.Since(s.authAt) >= ReauthInterval {
		// A stream lives as long as the connection; its certificate is
		// checked again (expiry, and the CA as it is now, so a rotated CA
		// revokes), and the stream closed if it no longer passes.
		if _, err := s.g.authenticate(s.tls); err != nil {
			s.reject(Rejection{Reason: "certificate no longer accepted: " + err.Error(), Closed: true})
			return status.Error(codes.PermissionDenied, "ketch: "+err.Error())
		}
		s.authAt = time.Now()
	}
	switch t := rm.MessageType.(type) {
	case *remote.RemoteMessage_ConnectRequest:
		if sc := t.ConnectRequest.GetServerConnection(); sc != nil && s.announced == "" {
			s.announced = sc.Address
		}
	case *remote.RemoteMessage_MessageBatch:
		if t.MessageBatch == nil {
			t.MessageBatch = &remote.MessageBatch{}
		}
		return s.filter(t.MessageBatch)
	}
	return nil
}

// filter checks every envelope of b. A malformed batch is refused whole
// with an error (closing the stream); refused envelopes of a well-formed
// batch are removed from it in place.
func (s *guardedStream) filter(b *remote.MessageBatch) error {
	return s.filterAt(b, s.g.system.Address())
}

// filterAt is filter for a node whose address is local.
func (s *guardedStream) filterAt(b *remote.MessageBatch, local string) error {
	for _, e := range b.Envelopes {
		if why := malformed(b, e); why != "" {
			s.reject(Rejection{Reason: why, Dropped: len(b.Envelopes), Closed: true})
			return status.Error(codes.InvalidArgument, "ketch: malformed message batch: "+why)
		}
	}
	kept := b.Envelopes[:0]
	first := ""
	for _, e := range b.Envelopes {
		why := s.g.refuse(b, e, local, s.announced)
		if why == "" && s.authed {
			why = identityRefusal(s.node, b.TypeNames[e.TypeId], e.MessageData)
		}
		if why != "" {
			if first == "" {
				first = why
			}
			continue
		}
		kept = append(kept, e)
	}
	if dropped := len(b.Envelopes) - len(kept); dropped > 0 {
		clear(b.Envelopes[len(kept):])
		b.Envelopes = kept
		s.reject(Rejection{Reason: first, Dropped: dropped})
	}
	return nil
}

// malformed reports what makes e impossible for protoactor to process
// without panicking, or "".
func malformed(b *remote.MessageBatch, e *remote.MessageEnvelope) string {
	switch {
	case e == nil:
		return "nil envelope"
	case e.TypeId < 0 || int(e.TypeId) >= len(b.TypeNames):
		return fmt.Sprintf("type index %d out of range [0,%d)", e.TypeId, len(b.TypeNames))
	case e.Target < 0 || int(e.Target) >= len(b.Targets) || b.Targets[e.Target] == nil:
		return fmt.Sprintf("target index %d out of range [0,%d)", e.Target, len(b.Targets))
	case e.Sender < 0 || int(e.Sender) > len(b.Senders) || (e.Sender > 0 && b.Senders[e.Sender-1] == nil):
		return fmt.Sprintf("sender index %d out of range [0,%d]", e.Sender, len(b.Senders))
	case e.SerializerId != protoSerializerID && e.SerializerId != jsonSerializerID:
		return fmt.Sprintf("unknown serializer id %d", e.SerializerId)
	}
	return ""
}

// refuse reports why this node does not accept the well-formed envelope e,
// or "".
func (g *wireGuard) refuse(b *remote.MessageBatch, e *remote.MessageEnvelope, local, announced string) string {
	name := b.TypeNames[e.TypeId]
	switch {
	case e.SerializerId != protoSerializerID:
		return "serializer other than protobuf"
	case !g.allowed[name]:
		return fmt.Sprintf("type %.100q not allowed", name)
	case len(e.MessageData) > g.maxBytes:
		return fmt.Sprintf("%s of %d bytes exceeds %d", name, len(e.MessageData), g.maxBytes)
	case b.Targets[e.Target].Address != local:
		// protoactor would relay it to that address.
		return fmt.Sprintf("target address %.100q is not this node (%s)", b.Targets[e.Target].Address, local)
	case g.routes != nil && !protoactorTypes[name]:
		id := b.Targets[e.Target].Id
		accepts, named := g.routes[id]
		if !named {
			accepts = g.other
		}
		if !accepts[name] {
			return fmt.Sprintf("actor %.100q does not take %s from the wire", id, name)
		}
	}
	// System messages carrying a PID: the PID must be the peer's own, or a
	// peer could make this node dial arbitrary addresses (Terminated) or
	// attach a bogus watcher; a nil PID in a Terminated panics protoactor.
	var who *actor.PID
	switch name {
	case watchName, unwatchName, terminatedName:
		var err error
		if who, err = pidOf(name, e.MessageData); err != nil {
			return fmt.Sprintf("%s: %v", name, err)
		}
	default:
		return ""
	}
	switch {
	case who == nil:
		return name + " without a PID"
	case announced == "":
		return name + " from a peer that did not announce its address"
	case who.Address != announced:
		return fmt.Sprintf("%s names %.100q, not the peer's address %.100q", name, who.Address, announced)
	}
	return ""
}

// pidOf decodes the PID carried by a Watch, Unwatch or Terminated.
func pidOf(name string, data []byte) (*actor.PID, error) {
	switch name {
	case watchName:
		var m actor.Watch
		err := proto.Unmarshal(data, &m)
		return m.Watcher, err
	case unwatchName:
		var m actor.Unwatch
		err := proto.Unmarshal(data, &m)
		return m.Watcher, err
	default:
		var m actor.Terminated
		err := proto.Unmarshal(data, &m)
		return m.Who, err
	}
}

// reject reports r to the hook and logs it, at most one line per second per
// stream (a line closing the stream is always logged).
func (s *guardedStream) reject(r Rejection) {
	r.Peer, r.Announced = s.peer, s.announced
	if s.g.onReject != nil {
		s.g.onReject(r)
	}
	now := time.Now()
	if !r.Closed && !s.lastLog.IsZero() && now.Sub(s.lastLog) < time.Second {
		s.muted++
		return
	}
	s.g.log.Warn("wire guard rejected remote messages",
		"peer", r.Peer, "announced", r.Announced, "reason", r.Reason,
		"dropped", r.Dropped, "stream_closed", r.Closed, "suppressed", s.muted)
	s.lastLog, s.muted = now, 0
}
