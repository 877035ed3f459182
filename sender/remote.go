package sender

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// ErrAddrInUse is wrapped by StartRemote's error when another socket
// already listens on the requested host:port.
var ErrAddrInUse = errors.New("address already in use")

// ErrRemoteStart is wrapped by every other StartRemote error (a bad host,
// a bad port, a remote already running on the actor system, protoactor
// failing to start).
var ErrRemoteStart = errors.New("cannot start remote")

// Defaults of StartRemote.
const (
	// DefaultMaxRecvMsgBytes caps one gRPC frame a peer may send us. An
	// endpoint writer packs up to DefaultEndpointWriterBatchSize messages
	// into one frame, so this must exceed that many RaftBatches of
	// DefaultMaxBatchBytes plus envelopes, or a busy link is cut by its own
	// receiver (gRPC's default is 4 MiB).
	DefaultMaxRecvMsgBytes = 64 << 20
	// DefaultEndpointWriterBatchSize is how many messages protoactor's
	// endpoint writer packs into one frame (protoactor's default is 1000,
	// which with 4 MiB RaftBatches makes frames of gigabytes). The sender
	// already batches per peer, so little is lost.
	DefaultEndpointWriterBatchSize = 8
)

// RecvMsgBytesFor is the gRPC frame limit that fits a frame of
// DefaultEndpointWriterBatchSize envelopes of lim.MaxBatchBytes each, with
// room for protoactor's framing.
func RecvMsgBytesFor(lim pb.Limits) int {
	lim = lim.WithDefaults()
	return DefaultEndpointWriterBatchSize*(lim.MaxBatchBytes+64<<10) + 1<<20
}

// RemoteOption configures StartRemote.
type RemoteOption func(*remoteOptions)

type remoteOptions struct {
	guard      GuardConfig
	tls        *TLS
	maxRecv    int
	protoactor []remote.ConfigOption
}

// WithGuard configures the wire guard (the allowlist additions, the size
// cap, the logger, a rejection hook). The guard itself cannot be turned off.
func WithGuard(g GuardConfig) RemoteOption {
	return func(o *remoteOptions) { o.guard = g }
}

// WithMaxRecvMsgBytes sets the largest gRPC frame accepted from a peer
// (default DefaultMaxRecvMsgBytes).
func WithMaxRecvMsgBytes(n int) RemoteOption {
	return func(o *remoteOptions) { o.maxRecv = n }
}

// WithProtoactorOptions passes options to remote.Configure. They are applied
// after ketch's defaults (so they may override them, e.g. WithAdvertisedHost
// or WithDialOptions); server options given here are kept, and the wire
// guard's are appended after them.
func WithProtoactorOptions(opts ...remote.ConfigOption) RemoteOption {
	return func(o *remoteOptions) { o.protoactor = append(o.protoactor, opts...) }
}

// StartRemote starts protoactor remoting for system on host:port (port 0
// asks the OS for a free port; read it back with system.Address()) and
// returns the running remote. Unlike remote.Start, it never panics: a taken
// port gives an error wrapping ErrAddrInUse, anything else one wrapping
// ErrRemoteStart, each one line saying what to do.
//
// It installs the wire guard (see GuardConfig) in the gRPC server and sets
// ketch's remote defaults, which favour fast failover (see the package
// documentation): one connect attempt per endpoint writer (protoactor's
// MaxRetryCount 5 costs 5 × 2 s of blocked writer and leaks a gRPC
// connection per retry), a 2 s connect timeout, gRPC keepalive (a 10 s ping,
// which the server permits), frames of at most DefaultEndpointWriterBatchSize
// messages and DefaultMaxRecvMsgBytes bytes.
//
// How the "port taken" case is caught: remote.Start calls net.Listen and
// panics on failure. StartRemote first probes the address with its own
// net.Listen and closes it, which yields a typed error (errors.Is
// syscall.EADDRINUSE) in the common case. Between that Close and
// remote.Start's Listen another process may take the port; that race cannot
// be closed from outside protoactor (it opens its own listener and accepts
// none from us), so StartRemote also recovers the panic of remote.Start.
// That is safe because net.Listen is the first thing remote.Start does:
// when it panics nothing else is started yet. The panic's error is
// formatted with %v, so it is classified by its text.
func StartRemote(system *actor.ActorSystem, host string, port int, opts ...RemoteOption) (*remote.Remote, error) {
	o := remoteOptions{maxRecv: DefaultMaxRecvMsgBytes}
	for _, opt := range opts {
		opt(&o)
	}
	if system == nil {
		return nil, fmt.Errorf("%w: nil actor system", ErrRemoteStart)
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("%w: port %d out of range 0-65535", ErrRemoteStart, port)
	}
	if a := system.Address(); a != "nonhost" {
		return nil, fmt.Errorf("%w: actor system already has a remote on %s; start one remote per actor system", ErrRemoteStart, a)
	}
	if o.maxRecv <= 0 {
		return nil, fmt.Errorf("%w: max receive size %d must be positive", ErrRemoteStart, o.maxRecv)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))

	guard, err := newWireGuard(system, o.guard)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRemoteStart, err)
	}

	// The probe: a typed error for the common case.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(addr, err)
	}
	_ = l.Close()

	cfgOpts := remoteDefaults()
	if net.ParseIP(host) == nil && port != 0 {
		// A host name: the node is known by it, as its peers were told.
		// protoactor would otherwise advertise the address the name
		// resolved to, and the wire guard refuses messages addressed to
		// the name (a container's service name, localhost).
		cfgOpts = append(cfgOpts, remote.WithAdvertisedHost(addr))
	}
	cfgOpts = append(cfgOpts, o.protoactor...)
	cfg := remote.Configure(host, port, cfgOpts...)
	if o.tls != nil {
		dial, server, err := tlsOptions(o.tls)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRemoteStart, err)
		}
		// Replaces the plaintext credentials of remoteDefaults (a later
		// credentials option wins in gRPC).
		cfg.DialOptions = append(cfg.DialOptions, dial)
		// A peer gets 5 s to finish its handshake (gRPC's default is 120).
		cfg.ServerOptions = append(cfg.ServerOptions, server, grpc.ConnectionTimeout(5*time.Second))
		guard.authenticate = o.tls.Authenticate
		if guard.authenticate == nil {
			guard.authenticate = func(tls.ConnectionState) (uint64, error) { return 0, nil }
		}
	}
	cfg.ServerOptions = append(cfg.ServerOptions,
		grpc.MaxRecvMsgSize(o.maxRecv),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ChainStreamInterceptor(guard.streamInterceptor),
		grpc.ChainUnaryInterceptor(guard.unaryInterceptor),
	)

	r := remote.NewRemote(system, cfg)
	if err := startRecovered(r); err != nil {
		return nil, listenError(addr, err)
	}
	return r, nil
}

// DefaultEndpointWriterQueueSize bounds protoactor's per-connection send
// ring (its default is 1,000,000 slots).
const DefaultEndpointWriterQueueSize = 16384

// remoteDefaults are ketch's protoactor remote settings; see StartRemote.
func remoteDefaults() []remote.ConfigOption {
	return []remote.ConfigOption{
		remote.WithDialOptions(
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: 2 * time.Second,
			}),
			// gRPC clamps Time to at least 10 s.
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		),
		remote.WithEndpointWriterBatchSize(DefaultEndpointWriterBatchSize),
		// protoactor's default ring of 1,000,000 slots costs ~16 MB per
		// connection; the sender already bounds what it queues per peer
		// (MaxQueue), so a ring of DefaultEndpointWriterQueueSize is plenty.
		// Measured at 64 clients: heap 213-280 MB -> 71-111 MB.
		remote.WithEndpointWriterQueueSize(DefaultEndpointWriterQueueSize),
		// There is no option for MaxRetryCount; a ConfigOption is a plain func.
		func(c *remote.Config) { c.MaxRetryCount = 1 },
	}
}

// startRecovered runs r.Start and turns its panic into an error.
func startRecovered(r *remote.Remote) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if e, ok := p.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("%v", p)
			}
		}
	}()
	r.Start()
	return nil
}

// listenError turns a listen failure into StartRemote's one-line error.
func listenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), syscall.EADDRINUSE.Error()) {
		return fmt.Errorf("listen on %s: %w; stop the other process or pick another port", addr, ErrAddrInUse)
	}
	return fmt.Errorf("%w: listen on %s: %v; check the host and port", ErrRemoteStart, addr, err)
}

// QuietLogger returns a logger factory for actor.WithLoggerFactory: the
// actor system logs through l (slog.Default() if nil), tagged lib=protoactor
// and system=<id>, and only at level and above. protoactor logs a great deal
// at Info (every endpoint, every dead letter); slog.LevelWarn keeps what
// matters (lost connections, failures to connect, crashes).
//
//	system := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(log, slog.LevelWarn)))
func QuietLogger(l *slog.Logger, level slog.Level) func(system *actor.ActorSystem) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return func(system *actor.ActorSystem) *slog.Logger {
		return slog.New(&minLevelHandler{min: level, h: l.Handler()}).With("lib", "protoactor", "system", system.ID)
	}
}

// minLevelHandler drops records below min before they reach h.
type minLevelHandler struct {
	min slog.Level
	h   slog.Handler
}

// routine are protoactor's log messages about peers coming and going. In
// a Raft cluster a peer that stops or restarts is routine, and the sender
// already logs reachability changes once per peer; protoactor logs these at
// Error, once per endpoint and retry. They are demoted to Debug.
var routine = map[string]bool{
	"EndpointWriter lost connection":                    true,
	"EndpointWriter failed to connect":                  true,
	"EndpointWriter failed to create receive stream":    true,
	"EndpointWriter failed to send connect request":     true,
	"EndpointWriter failed to receive connect response": true,
	"EndpointReader failed to read":                     true,
	"EndpointWatcher handling terminated":               true,
}

func (m *minLevelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Whether a record is routine is only known in Handle; let every level
	// through here that Handle may still keep.
	return (l >= m.min || slog.LevelDebug >= m.min) && m.h.Enabled(ctx, min(l, slog.LevelDebug))
}

func (m *minLevelHandler) Handle(ctx context.Context, r slog.Record) error {
	if routine[r.Message] {
		r.Level = slog.LevelDebug
	}
	if r.Level < m.min || !m.h.Enabled(ctx, r.Level) {
		return nil
	}
	return m.h.Handle(ctx, r)
}

func (m *minLevelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &minLevelHandler{min: m.min, h: m.h.WithAttrs(attrs)}
}

func (m *minLevelHandler) WithGroup(name string) slog.Handler {
	return &minLevelHandler{min: m.min, h: m.h.WithGroup(name)}
}
