package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// leafOf loads the certificate of a pair as a handshake's peer would
// present it.
func leafOf(t *testing.T, crt, key string) tls.ConnectionState {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
}

func TestVerifyDialed(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(InitCA(dir))
	must(InitCA(other))
	for id := uint64(1); id <= 3; id++ {
		must(NewNodeCert(dir, "c", id, []string{"127.0.0.1"}))
	}
	must(NewNodeCert(dir, "c", 9, []string{"10.0.0.9"}))
	must(NewNodeCert(dir, "other-cluster", 4, []string{"127.0.0.1"}))
	must(NewClientCert(dir, "alice"))
	must(NewClientCert(dir, "old", WithNotBefore(time.Now().Add(-48*time.Hour)), WithValidity(time.Hour)))
	must(NewClientCert(other, "stranger"))
	ca := filepath.Join(dir, "ca.crt")
	node := func(id uint64) tls.ConnectionState { c, k := NodePaths(dir, id); return leafOf(t, c, k) }
	client := func(d, name string) tls.ConnectionState { c, k := ClientPaths(d, name); return leafOf(t, c, k) }
	c1, k1 := NodePaths(dir, 1)
	n1, err := NewTLS(Files{CA: ca, Cert: c1, Key: k1}, "c", AcceptNodesAndClients, nil)
	must(err)
	ca2, ka := ClientPaths(dir, "alice")
	cl, err := NewTLS(Files{CA: ca, Cert: ca2, Key: ka}, "c", AcceptNodes, nil)
	must(err)
	members := map[string]uint64{"127.0.0.1:7002": 2, "127.0.0.1:7003": 3}
	member := func(addr string) (uint64, bool) { id, ok := members[addr]; return id, ok }
	for _, tc := range []struct {
		name string
		t    *TLS
		addr string
		cs   tls.ConnectionState
		ok   bool
	}{
		{"node 3 at its address", n1, "127.0.0.1:7003", node(3), true},
		{"node 2's certificate at node 3's address", n1, "127.0.0.1:7003", node(2), false},
		{"a client's certificate at node 3's address", n1, "127.0.0.1:7003", client(dir, "alice"), false},
		{"a client's reply listener", n1, "127.0.0.1:40000", client(dir, "alice"), true},
		{"a node not yet a member", n1, "127.0.0.1:7009", node(2), true},
		{"a node whose certificate names another host", n1, "127.0.0.1:7009", node(9), false},
		{"another cluster's node", n1, "127.0.0.1:7009", node(4), false},
		{"another CA's client", n1, "127.0.0.1:40000", client(other, "stranger"), false},
		{"an expired client", n1, "127.0.0.1:40000", client(dir, "old"), false},
		{"no certificate", n1, "127.0.0.1:7003", tls.ConnectionState{}, false},
		{"a client dialing a node", cl, "127.0.0.1:7003", node(3), true},
		{"a client answered by a client", cl, "127.0.0.1:7003", client(dir, "alice"), false},
	} {
		var m func(string) (uint64, bool)
		if tc.t == n1 {
			m = member
		}
		err := tc.t.VerifyDialed(tc.addr, tc.cs, m)
		if (err == nil) != tc.ok {
			t.Errorf("%s: VerifyDialed = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrPeerRefused) {
			t.Errorf("%s: %v does not wrap ErrPeerRefused", tc.name, err)
		}
	}
}

// TestRotationKeepsTheIdentity: a pair rotated in that names another node
// is not served; the last good one is.
func TestRotationKeepsTheIdentity(t *testing.T) {
	dir := t.TempDir()
	if err := InitCA(dir); err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= 2; id++ {
		if err := NewNodeCert(dir, "c", id, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	c1, k1 := NodePaths(dir, 1)
	n1, err := NewTLS(Files{CA: filepath.Join(dir, "ca.crt"), Cert: c1, Key: k1}, "c", AcceptNodesAndClients, nil)
	if err != nil {
		t.Fatal(err)
	}
	n1.cert.w.interval = 0 // check the files on every use
	serving := func() Identity {
		leaf, err := x509.ParseCertificate(n1.cert.Certificate().Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		id, err := ParseIdentity(leaf)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// Node 2's pair copied over node 1's files (an operator's slip).
	c2, k2 := NodePaths(dir, 2)
	copyFile(t, c2, c1)
	copyFile(t, k2, k1)
	if id := serving(); id.NodeID != 1 {
		t.Fatalf("serving %s after node 2's pair was copied over node 1's", id)
	}
	// A proper rotation is taken.
	if err := NewNodeCert(dir, "c", 1, []string{"127.0.0.1"}, Overwrite()); err != nil {
		t.Fatal(err)
	}
	if id := serving(); id.NodeID != 1 {
		t.Fatalf("serving %s after node 1's rotation", id)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	// A new file renamed over the old one, as an operator's cp often does
	// (and a different inode makes the reloader look again).
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
}
