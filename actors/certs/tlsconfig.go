package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
)

// Files names the PEM files of one side's mutual TLS: the CA every
// certificate of the cluster chains to, and this side's certificate and
// key (a node's from 'ketch certs node', a client's from 'ketch certs
// client').
type Files struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is given (TLS is on).
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate checks that all three files are given, or none, and that the
// given ones can be read. The error names the flag (prefix: "--tls-" for a
// node, "--" for a client's cacert, cert and key) and the file.
func (f Files) Validate(caFlag, certFlag, keyFlag string) error {
	if !f.Enabled() {
		return nil
	}
	for _, x := range []struct{ flag, file string }{{caFlag, f.CA}, {certFlag, f.Cert}, {keyFlag, f.Key}} {
		if x.file == "" {
			return fmt.Errorf("TLS needs %s, %s and %s together; %s is missing", caFlag, certFlag, keyFlag, x.flag)
		}
		if _, err := os.Stat(x.file); err != nil {
			return fmt.Errorf("%s %s: %v", x.flag, x.file, err)
		}
	}
	return nil
}

// TLS is the mutual TLS of a node or a client of a cluster: Server for
// the connections it accepts, Client for those it dials, both TLS 1.3
// only. Its own certificate and the CA are reread from their files on new
// connections (Reloader, PoolReloader), so rotating them needs no restart;
// connections already open keep theirs.
//
// Every peer must present a certificate that chains to the CA, is within
// its validity period, and names a ketch identity (ParseIdentity): a node
// of this cluster, or a client. Host names are not how peers are told
// apart (a client's reply listener has none); the identity is. A node
// that dials a peer whose certificate names host names or addresses also
// checks the one it dialed against them. Accept decides, per side, which
// kinds may connect.
type TLS struct {
	Server, Client *tls.Config
	ClusterID      string

	accept Accept
	cert   *Reloader
	ca     *PoolReloader
}

// Accept says which identities may connect to a TLS: nodes of the cluster
// always; clients only to nodes (a client accepts connections from nodes
// answering it, never from other clients).
type Accept int

const (
	// AcceptNodesAndClients is a node's: peers and clients.
	AcceptNodesAndClients Accept = iota
	// AcceptNodes is a client's: only the nodes answering it.
	AcceptNodes
)

// NewTLS loads files (checked with Validate first) for a node or client of
// clusterID.
func NewTLS(files Files, clusterID string, accept Accept, logger *slog.Logger) (*TLS, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cert, err := NewReloader(files.Cert, files.Key)
	if err != nil {
		return nil, err
	}
	cert.Logger = logger
	ca, err := NewPoolReloader(files.CA)
	if err != nil {
		return nil, err
	}
	ca.Logger = logger
	leaf, err := x509.ParseCertificate(cert.Certificate().Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", files.Cert, err)
	}
	own, err := ParseIdentity(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", files.Cert, err)
	}
	if own.Kind == KindNode && own.ClusterID != clusterID {
		return nil, fmt.Errorf("certificate %s is node %d's of cluster %q, not of cluster %q: issue one with 'ketch certs node --cluster-id %s'", files.Cert, own.NodeID, own.ClusterID, clusterID, clusterID)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("certificate %s does not verify against the CA %s: %v", files.Cert, files.CA, err)
	}
	t := &TLS{ClusterID: clusterID, accept: accept, cert: cert, ca: ca}
	// A rotated pair must still be this side's and chain to the CA; one
	// that does not is refused and the last good pair kept (Reloader).
	cert.Check = func(c *tls.Certificate) error {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return err
		}
		id, err := ParseIdentity(leaf)
		if err != nil {
			return err
		}
		if id != own {
			return fmt.Errorf("the rotated certificate names %s, not %s", id, own)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("the rotated certificate does not verify against the CA: %v", err)
		}
		return nil
	}
	t.Server = &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: cert.GetCertificate,
		// The chain is verified in VerifyConnection against the CA as it
		// is now (RequireAndVerifyClientCert would pin the pool).
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := t.Verify(cs)
			if err == nil && accept == AcceptNodes && id.Kind != KindNode {
				err = fmt.Errorf("%s may not connect here: only the cluster's nodes may", id)
			}
			return err
		},
	}
	t.Client = &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: cert.GetClientCertificate,
		// Verification is VerifyConnection's: by identity, against the CA
		// as it is now (see TLS).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := t.Verify(cs)
			return err
		},
	}
	return t, nil
}

// VerifyDialed checks who answered a connection this side dialed to addr
// (sender.TLS.VerifyDial), after Verify: member reports the node addr
// belongs to, if it is a member's address (nil: none is); that node it
// must be. An address of no member is a client's reply listener (a node
// answering a client dials it) or a server not yet in the configuration,
// and may answer with a client's or a node's certificate; a client
// (AcceptNodes) dials nodes only. A node certificate that names hosts must
// name the host dialed.
func (t *TLS) VerifyDialed(addr string, cs tls.ConnectionState, member func(addr string) (uint64, bool)) error {
	id, err := t.Verify(cs)
	if err != nil {
		return err
	}
	leaf := cs.PeerCertificates[0]
	if id.Kind == KindNode && (len(leaf.DNSNames) > 0 || len(leaf.IPAddresses) > 0) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		if err := leaf.VerifyHostname(host); err != nil {
			return fmt.Errorf("%w: dialed %s, but node %d's certificate names other hosts: %v", ErrPeerRefused, addr, id.NodeID, err)
		}
	}
	if member != nil {
		if want, ok := member(addr); ok && (id.Kind != KindNode || id.NodeID != want) {
			return fmt.Errorf("%w: %s is node %d's address, but %s answered", ErrPeerRefused, addr, want, id)
		}
	}
	if t.accept == AcceptNodes && id.Kind != KindNode {
		return fmt.Errorf("%w: %s answered at %s, where a node was dialed", ErrPeerRefused, id, addr)
	}
	return nil
}

// ErrPeerRefused wraps every reason Verify refuses a peer.
var ErrPeerRefused = errors.New("TLS peer refused")

// Verify checks the peer of a handshake (see TLS) and returns who it is.
func (t *TLS) Verify(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, fmt.Errorf("%w: it presented no certificate", ErrPeerRefused)
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: t.ca.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return Identity{}, fmt.Errorf("%w: certificate %q: %v", ErrPeerRefused, leaf.Subject.CommonName, err)
	}
	id, err := ParseIdentity(leaf)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrPeerRefused, err)
	}
	if id.Kind == KindNode && id.ClusterID != t.ClusterID {
		return Identity{}, fmt.Errorf("%w: its certificate is node %d's of cluster %q; this is cluster %q", ErrPeerRefused, id.NodeID, id.ClusterID, t.ClusterID)
	}
	return id, nil
}

// Authenticate names the peer of a verified inbound connection for the
// wire guard (sender.TLS.Authenticate): its node id, or 0 for a client.
func (t *TLS) Authenticate(cs tls.ConnectionState) (uint64, error) {
	id, err := t.Verify(cs)
	if err != nil {
		return 0, err
	}
	return id.NodeID, nil
}
