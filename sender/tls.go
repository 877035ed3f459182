package sender

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TLS is mutual TLS for a remote (WithTLS): Server accepts connections
// (it must require and verify client certificates), Client dials peers
// (it presents this side's certificate and verifies theirs). Both come
// from the caller (actors/certs builds them from PEM files, rereading the
// files on new connections); the sender only plugs them into gRPC, into
// its reachability probe, and into the wire guard, which learns from
// Authenticate who is at the other end of each inbound stream.
type TLS struct {
	Server, Client *tls.Config
	// Authenticate names the peer of an inbound connection from its
	// verified TLS state: a node id, or 0 for a client (which may use the
	// client protocol but never send Raft messages). An error refuses the
	// stream. Nil: every verified peer is a client.
	Authenticate func(tls.ConnectionState) (node uint64, err error)
	// VerifyDial, if set, checks the peer of every connection this side
	// dials (gRPC's and the probe's), after Client's own verification,
	// knowing the address dialed: a node binds an address to the member
	// it belongs to, so a certificate of another member, or a client's,
	// cannot stand in for it.
	VerifyDial func(addr string, cs tls.ConnectionState) error
	// Logger receives the one line per refused connection (rate limited).
	Logger *slog.Logger
}

// ReauthInterval is how often the wire guard checks an open TLS stream's
// certificate again.
const ReauthInterval = 30 * time.Second

// WithTLS makes the remote speak TLS only: plaintext or unverified peers
// and clients are refused at the handshake, with a log line naming them,
// and the wire guard checks that Raft messages come from the node their
// certificate names (GuardConfig's authentication).
func WithTLS(t TLS) RemoteOption {
	return func(o *remoteOptions) { o.tls = &t }
}

// tlsOptions returns the dial and server options of t.
func tlsOptions(t *TLS) (grpc.DialOption, grpc.ServerOption, error) {
	if t.Server == nil || t.Client == nil {
		return nil, nil, errors.New("TLS needs both a server and a client configuration")
	}
	if t.Server.ClientAuth < tls.RequireAnyClientCert {
		return nil, nil, errors.New("TLS: the server configuration must require client certificates")
	}
	log := t.Logger
	if log == nil {
		log = slog.Default()
	}
	server := &loggingCreds{TransportCredentials: credentials.NewTLS(t.Server), log: log}
	var client credentials.TransportCredentials = credentials.NewTLS(t.Client)
	if t.VerifyDial != nil {
		client = &dialCreds{TransportCredentials: client, verify: t.VerifyDial}
	}
	return grpc.WithTransportCredentials(client), grpc.Creds(server), nil
}

// dialCreds checks, after the TLS handshake of a dialed connection, who
// answered at that address (TLS.VerifyDial).
type dialCreds struct {
	credentials.TransportCredentials
	verify func(addr string, cs tls.ConnectionState) error
}

func (c *dialCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err != nil {
		return out, info, err
	}
	if ti, ok := info.(credentials.TLSInfo); ok {
		if err := c.verify(authority, ti.State); err != nil {
			_ = out.Close()
			return nil, nil, err
		}
	}
	return out, info, nil
}

func (c *dialCreds) Clone() credentials.TransportCredentials {
	return &dialCreds{TransportCredentials: c.TransportCredentials.Clone(), verify: c.verify}
}

// loggingCreds logs refused handshakes: a plaintext client, an unknown
// CA, an expired certificate, another cluster's. One line per refusal, at
// most one per second (the next line counts those suppressed).
type loggingCreds struct {
	credentials.TransportCredentials
	log        *slog.Logger
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (c *loggingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		why := err.Error()
		var rec tls.RecordHeaderError
		if errors.As(err, &rec) || errors.Is(err, io.EOF) {
			why = "not TLS (a plaintext peer or client?): " + why
		}
		c.mu.Lock()
		if now := time.Now(); now.Sub(c.last) >= time.Second {
			c.log.Warn("refused a connection: TLS handshake failed", "peer", conn.RemoteAddr().String(), "err", why, "suppressed", c.suppressed)
			c.last, c.suppressed = now, 0
		} else {
			c.suppressed++
		}
		c.mu.Unlock()
	}
	return out, info, err
}

func (c *loggingCreds) Clone() credentials.TransportCredentials {
	return &loggingCreds{TransportCredentials: c.TransportCredentials.Clone(), log: c.log}
}

// peerTLS is the verified TLS state of the stream's connection, if any.
func peerTLS(ctx context.Context) (tls.ConnectionState, bool) {
	if p, ok := grpcpeer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			return info.State, true
		}
	}
	return tls.ConnectionState{}, false
}

// probeTLS is probeHTTP2 over TLS: the handshake (with this side's
// certificate, verifying the peer's, and verify's check of who answered
// at addr) and then the HTTP/2 preface.
func probeTLS(addr string, timeout time.Duration, cfg *tls.Config, verify func(string, tls.ConnectionState) error) error {
	c := cfg.Clone()
	c.NextProtos = []string{"h2"}
	if host, _, err := net.SplitHostPort(addr); err == nil && c.ServerName == "" {
		c.ServerName = host
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: c}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if tc, ok := conn.(*tls.Conn); ok && verify != nil {
		if err := verify(addr, tc.ConnectionState()); err != nil {
			return err
		}
	}
	return http2Answer(conn, timeout)
}

// raftBatchName is the full name of the one message peers send each other.
var raftBatchName = string(proto.MessageName(&pb.RaftBatch{}))

// batchFrom reads RaftBatch.from (field 2, a varint) from an encoded
// RaftBatch without decoding the rest; ok is false if it is not there or
// the bytes do not parse.
func batchFrom(b []byte) (from uint64, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num == 2 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, false
			}
			from, ok = v, true // the last occurrence wins, as in proto.Unmarshal
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
	}
	return from, ok
}

// identityRefusal reports why an authenticated stream may not deliver the
// envelope of type name and bytes data, or "": Raft messages must come
// from the node the connection's certificate names.
func identityRefusal(node uint64, name string, data []byte) string {
	if name != raftBatchName {
		return ""
	}
	if node == 0 {
		return "a client certificate cannot send Raft messages"
	}
	from, ok := batchFrom(data)
	switch {
	case !ok:
		return "a RaftBatch without a sender id"
	case from != node:
		return fmt.Sprintf("the certificate of node %d sent a RaftBatch from node %d", node, from)
	}
	return ""
}

// Why ProbeNode found no ketch node at an address.
var (
	// ErrConnRefused: nothing listens there.
	ErrConnRefused = errors.New("connection refused (is a ketch node running there?)")
	// ErrNotKetch: something answers, but not a ketch node's gRPC server.
	ErrNotKetch = errors.New("not a ketch node (it does not answer as gRPC over HTTP/2)")
)

// ProbeNode checks within timeout that a ketch node answers at addr, as the
// sender's reachability probe does: over TLS with cfg (and verify) when cfg
// is set, in plaintext otherwise. Its error wraps ErrConnRefused or
// ErrNotKetch where the cause is one of those, and says which side of a
// TLS/plaintext mismatch is likely wrong.
func ProbeNode(addr string, timeout time.Duration, cfg *tls.Config, verify func(string, tls.ConnectionState) error) error {
	var err error
	if cfg != nil {
		err = probeTLS(addr, timeout, cfg, verify)
	} else {
		err = probeHTTP2(addr, timeout)
	}
	if err == nil {
		return nil
	}
	var rec tls.RecordHeaderError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: %w", addr, ErrConnRefused)
	case cfg != nil && errors.As(err, &rec):
		return fmt.Errorf("%s: %w: it does not speak TLS (a node without --tls-*?)", addr, ErrNotKetch)
	case cfg == nil && (strings.Contains(err.Error(), "not an HTTP/2 server") || strings.Contains(err.Error(), "no HTTP/2 answer")):
		return fmt.Errorf("%s: %w; if it is a node started with TLS, pass --cacert, --cert and --key", addr, ErrNotKetch)
	}
	return fmt.Errorf("%s: %w", addr, err)
}
