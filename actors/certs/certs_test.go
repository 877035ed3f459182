package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newCA makes a CA in a fresh directory and returns the directory.
func newCA(t *testing.T, opts ...Option) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if err := InitCA(dir, opts...); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return dir
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", file)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return c
}

func pool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	p, err := LoadCA(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return p
}

func TestIssueAndVerify(t *testing.T) {
	dir := newCA(t)
	ca := readCert(t, filepath.Join(dir, CACertFile))
	if !ca.IsCA || ca.Subject.CommonName != "ketch development CA" || ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Fatalf("CA: IsCA %v, CN %q, key usage %v", ca.IsCA, ca.Subject.CommonName, ca.KeyUsage)
	}
	if got := ca.NotAfter.Sub(ca.NotBefore); got < DefaultCAValidity || got > DefaultCAValidity+2*backdate {
		t.Errorf("CA validity %v, want about %v", got, DefaultCAValidity)
	}
	hosts := []string{"node1.example.com", "10.0.0.1", "::1", "*.ketch.svc"}
	if err := NewNodeCert(dir, "prod-eu.1", 7, hosts); err != nil {
		t.Fatalf("NewNodeCert: %v", err)
	}
	if err := NewClientCert(dir, "alice"); err != nil {
		t.Fatalf("NewClientCert: %v", err)
	}
	nodeCrt, _ := NodePaths(dir, 7)
	clientCrt, _ := ClientPaths(dir, "alice")
	node, client := readCert(t, nodeCrt), readCert(t, clientCrt)
	roots := pool(t, dir)

	tests := []struct {
		name   string
		cert   *x509.Certificate
		usage  x509.ExtKeyUsage
		host   string
		wantOK bool
	}{
		{"node as server, by DNS name", node, x509.ExtKeyUsageServerAuth, "node1.example.com", true},
		{"node as server, by IPv4", node, x509.ExtKeyUsageServerAuth, "10.0.0.1", true},
		{"node as server, by IPv6", node, x509.ExtKeyUsageServerAuth, "::1", true},
		{"node as server, by wildcard", node, x509.ExtKeyUsageServerAuth, "n7.ketch.svc", true},
		{"node as client", node, x509.ExtKeyUsageClientAuth, "", true},
		{"node not for localhost (never implicit)", node, x509.ExtKeyUsageServerAuth, "localhost", false},
		{"node not for 127.0.0.1 (never implicit)", node, x509.ExtKeyUsageServerAuth, "127.0.0.1", false},
		{"node not for an unlisted name", node, x509.ExtKeyUsageServerAuth, "node2.example.com", false},
		{"client as client", client, x509.ExtKeyUsageClientAuth, "", true},
		{"client not as server", client, x509.ExtKeyUsageServerAuth, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.usage}})
			if (err == nil) != tt.wantOK {
				t.Fatalf("Verify: %v, want ok %v", err, tt.wantOK)
			}
		})
	}

	if got := node.Subject.CommonName; got != "node 7" {
		t.Errorf("node CN %q", got)
	}
	if got := client.Subject.CommonName; got != "alice" {
		t.Errorf("client CN %q", got)
	}
	if len(node.URIs) != 1 || node.URIs[0].String() != "ketch://prod-eu.1/node/7" {
		t.Errorf("node URIs %v, want [ketch://prod-eu.1/node/7]", node.URIs)
	}
	if len(client.URIs) != 1 || client.URIs[0].String() != "ketch://client/alice" {
		t.Errorf("client URIs %v, want [ketch://client/alice]", client.URIs)
	}
	if !slices.Equal(node.DNSNames, []string{"node1.example.com", "*.ketch.svc"}) {
		t.Errorf("node DNS SANs %v", node.DNSNames)
	}
	wantIPs := []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("::1")}
	if len(node.IPAddresses) != len(wantIPs) || !node.IPAddresses[0].Equal(wantIPs[0]) || !node.IPAddresses[1].Equal(wantIPs[1]) {
		t.Errorf("node IP SANs %v, want %v", node.IPAddresses, wantIPs)
	}
	if got := node.NotAfter.Sub(node.NotBefore); got < DefaultCertValidity || got > DefaultCertValidity+2*backdate {
		t.Errorf("node validity %v, want about %v", got, DefaultCertValidity)
	}
	for cert, want := range map[*x509.Certificate]Identity{
		node:   {Kind: KindNode, ClusterID: "prod-eu.1", NodeID: 7},
		client: {Kind: KindClient, Name: "alice"},
	} {
		got, err := ParseIdentity(cert)
		if err != nil || got != want {
			t.Errorf("ParseIdentity(%s) = %+v, %v; want %+v", cert.Subject.CommonName, got, err, want)
		}
	}
}

func TestTLSHandshake(t *testing.T) {
	// Two nodes over a real TLS 1.3 connection, each presenting its
	// certificate through a Reloader and requiring the other's.
	dir := newCA(t)
	for _, id := range []uint64{1, 2} {
		if err := NewNodeCert(dir, "ketch", id, []string{"localhost"}); err != nil {
			t.Fatal(err)
		}
	}
	reloader := func(id uint64) *Reloader {
		r, err := NewReloader(NodePaths(dir, id))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	srv, cli := reloader(1), reloader(2)
	roots := pool(t, dir)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	server := tls.Server(a, &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: srv.GetCertificate, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert})
	client := tls.Client(b, &tls.Config{MinVersion: tls.VersionTLS13, GetClientCertificate: cli.GetClientCertificate, RootCAs: roots, ServerName: "localhost"})
	errs := make(chan error, 1)
	go func() { errs <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	peer, err := ParseIdentity(server.ConnectionState().VerifiedChains[0][0])
	if want := (Identity{Kind: KindNode, ClusterID: "ketch", NodeID: 2}); err != nil || peer != want {
		t.Fatalf("server sees %+v, %v; want %+v", peer, err, want)
	}
}

func TestFileModes(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "new", "certs")
	if err := InitCA(dir); err != nil {
		t.Fatal(err)
	}
	if err := NewNodeCert(dir, "c", 1, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	if err := NewClientCert(dir, "bob"); err != nil {
		t.Fatal(err)
	}
	// Replacing a file chmod-ed open must close it again.
	nodeCrt, nodeKey := NodePaths(dir, 1)
	if err := os.Chmod(nodeKey, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := NewNodeCert(dir, "c", 1, []string{"localhost"}, Overwrite()); err != nil {
		t.Fatal(err)
	}
	caCrt, caKey := CAPaths(dir)
	clientCrt, clientKey := ClientPaths(dir, "bob")
	want := map[string]fs.FileMode{
		dir: fs.ModeDir | 0o700, caCrt: 0o644, caKey: 0o600,
		nodeCrt: 0o644, nodeKey: 0o600, clientCrt: 0o644, clientKey: 0o600,
	}
	for file, mode := range want {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", file, fi.Mode(), mode)
		}
	}
	// No temporary files left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 6 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("dir holds %v, want the 6 files", names)
	}
}

func TestRefuseOverwrite(t *testing.T) {
	dir := newCA(t)
	if err := NewNodeCert(dir, "c", 1, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	if err := NewClientCert(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	caCrt, caKey := CAPaths(dir)
	nodeCrt, nodeKey := NodePaths(dir, 1)
	clientCrt, clientKey := ClientPaths(dir, "alice")
	tests := []struct {
		name     string
		issue    func(...Option) error
		files    []string
		mentions string
	}{
		{"init", func(o ...Option) error { return InitCA(dir, o...) }, []string{caCrt, caKey}, caCrt},
		{"node", func(o ...Option) error { return NewNodeCert(dir, "c", 1, []string{"localhost"}, o...) }, []string{nodeCrt, nodeKey}, nodeCrt},
		{"client", func(o ...Option) error { return NewClientCert(dir, "alice", o...) }, []string{clientCrt, clientKey}, clientCrt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := readAll(t, tt.files)
			err := tt.issue()
			if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), tt.mentions) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("second issue: %v; want one line, ErrExists, naming %s", err, tt.mentions)
			}
			if after := readAll(t, tt.files); !slices.Equal(before, after) {
				t.Fatal("a refused issue changed the files")
			}
			if err := tt.issue(Overwrite()); err != nil {
				t.Fatalf("with Overwrite: %v", err)
			}
			after := readAll(t, tt.files)
			for i := range after {
				if after[i] == before[i] {
					t.Errorf("%s unchanged by Overwrite", tt.files[i])
				}
			}
		})
	}
	// Either file of the pair existing is enough to refuse, and nothing
	// is written.
	dir2 := newCA(t)
	_, key2 := NodePaths(dir2, 2)
	if err := os.WriteFile(key2, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	crt2, _ := NodePaths(dir2, 2)
	if err := NewNodeCert(dir2, "c", 2, []string{"localhost"}); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), key2) {
		t.Fatalf("key exists: %v; want ErrExists naming %s", err, key2)
	}
	if _, err := os.Stat(crt2); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s written although its key existed: %v", crt2, err)
	}
	if got := readAll(t, []string{key2}); got[0] != "mine" {
		t.Fatal("the existing key was changed")
	}
}

func readAll(t *testing.T, files []string) []string {
	t.Helper()
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func TestBadInputs(t *testing.T) {
	dir := newCA(t)
	empty := t.TempDir()
	tests := []struct {
		name     string
		issue    func() error
		want     error  // errors.Is, if set
		mentions string // in the message
	}{
		{"empty cluster id", func() error { return NewNodeCert(dir, "", 1, []string{"h"}) }, ErrInvalid, "non-empty"},
		{"65-byte cluster id", func() error { return NewNodeCert(dir, strings.Repeat("a", 65), 1, []string{"h"}) }, ErrInvalid, "65 bytes"},
		{"64-byte label", func() error { return NewNodeCert(dir, strings.Repeat("a", 64), 1, []string{"h"}) }, ErrInvalid, "63"},
		{"slash in cluster id", func() error { return NewNodeCert(dir, "a/b", 1, []string{"h"}) }, ErrInvalid, "letters"},
		{"space in cluster id", func() error { return NewNodeCert(dir, "a b", 1, []string{"h"}) }, ErrInvalid, "letters"},
		{"colon in cluster id", func() error { return NewNodeCert(dir, "a:1", 1, []string{"h"}) }, ErrInvalid, "letters"},
		{"trailing dot in cluster id", func() error { return NewNodeCert(dir, "a.", 1, []string{"h"}) }, ErrInvalid, "dots"},
		{"node id 0", func() error { return NewNodeCert(dir, "c", 0, []string{"h"}) }, ErrInvalid, "positive"},
		{"no host", func() error { return NewNodeCert(dir, "c", 1, nil) }, ErrInvalid, "no host"},
		{"empty host", func() error { return NewNodeCert(dir, "c", 1, []string{""}) }, ErrInvalid, `host ""`},
		{"host with port", func() error { return NewNodeCert(dir, "c", 1, []string{"h:80"}) }, ErrInvalid, "without a port"},
		{"bracketed IPv6", func() error { return NewNodeCert(dir, "c", 1, []string{"[::1]"}) }, ErrInvalid, "brackets"},
		{"underscore host", func() error { return NewNodeCert(dir, "c", 1, []string{"a_b"}) }, ErrInvalid, "only letters"},
		{"host starting with -", func() error { return NewNodeCert(dir, "c", 1, []string{"-a.b"}) }, ErrInvalid, "'-'"},
		{"host with trailing dot", func() error { return NewNodeCert(dir, "c", 1, []string{"a.b."}) }, ErrInvalid, "trailing dot"},
		{"bad IP", func() error { return NewNodeCert(dir, "c", 1, []string{"10.0.0.300"}) }, ErrInvalid, "IP"},
		{"one bad host of several", func() error { return NewNodeCert(dir, "c", 1, []string{"ok", "b@d"}) }, ErrInvalid, `"b@d"`},
		{"empty client name", func() error { return NewClientCert(dir, "") }, ErrInvalid, "1 to 64"},
		{"65-byte client name", func() error { return NewClientCert(dir, strings.Repeat("n", 65)) }, ErrInvalid, "1 to 64"},
		{"slash in client name", func() error { return NewClientCert(dir, "a/b") }, ErrInvalid, "only letters"},
		{"dots only client name", func() error { return NewClientCert(dir, "..") }, ErrInvalid, "only dots"},
		{"zero validity", func() error { return NewClientCert(dir, "v", WithValidity(0)) }, ErrInvalid, "positive"},
		{"negative CA validity", func() error { return InitCA(t.TempDir(), WithValidity(-time.Hour)) }, ErrInvalid, "positive"},
		{"outlives the CA", func() error { return NewClientCert(dir, "v", WithValidity(11*DefaultCAValidity/10)) }, ErrInvalid, "after the CA"},
		{"no CA", func() error { return NewNodeCert(empty, "c", 1, []string{"h"}) }, fs.ErrNotExist, "ca.crt not found in " + empty + ": run 'ketch certs init --dir " + empty + "' first"},
		{"no CA key", func() error { return NewClientCert(caWithoutKey(t), "x") }, fs.ErrNotExist, "ca.key not found"},
		{"CA key of another CA", func() error { return NewClientCert(mismatchedCA(t), "x") }, nil, "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.issue()
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v is not %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.mentions) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line mentioning %q", err, tt.mentions)
			}
		})
	}
	// Nothing was written by any refusal: the dir holds the CA only.
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("refusals wrote files: %d entries", len(entries))
	}
}

func caWithoutKey(t *testing.T) string {
	t.Helper()
	dir := newCA(t)
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mismatchedCA(t *testing.T) string {
	t.Helper()
	dir, other := newCA(t), newCA(t)
	key, err := os.ReadFile(filepath.Join(other, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestExpired(t *testing.T) {
	dir := newCA(t)
	roots := pool(t, dir)
	tests := []struct {
		name   string
		opts   []Option
		wantOK bool
	}{
		{"fresh", nil, true},
		{"expired a day ago", []Option{WithNotBefore(time.Now().Add(-48 * time.Hour)), WithValidity(24 * time.Hour)}, false},
		{"not yet valid", []Option{WithNotBefore(time.Now().Add(24 * time.Hour)), WithValidity(time.Hour)}, false},
		{"short but current", []Option{WithNotBefore(time.Now().Add(-time.Minute)), WithValidity(time.Hour)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := NewNodeCert(dir, "c", 9, []string{"localhost"}, append(tt.opts, Overwrite())...); err != nil {
				t.Fatal(err)
			}
			crt, _ := NodePaths(dir, 9)
			_, err := readCert(t, crt).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if (err == nil) != tt.wantOK {
				t.Fatalf("Verify: %v, want ok %v", err, tt.wantOK)
			}
			var inv x509.CertificateInvalidError
			if !tt.wantOK && (!errors.As(err, &inv) || inv.Reason != x509.Expired) {
				t.Fatalf("Verify: %v, want an Expired CertificateInvalidError", err)
			}
		})
	}
}

func TestParseIdentity(t *testing.T) {
	u := func(s string) *url.URL {
		t.Helper()
		x, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	tests := []struct {
		name string
		uris []*url.URL
		want Identity // zero: an error is wanted
	}{
		{"node", []*url.URL{u(NodeURI("ketch", 3))}, Identity{Kind: KindNode, ClusterID: "ketch", NodeID: 3}},
		{"node, max id", []*url.URL{u(NodeURI("a.b_c-D", 18446744073709551615))}, Identity{Kind: KindNode, ClusterID: "a.b_c-D", NodeID: 18446744073709551615}},
		{"node of a cluster named client", []*url.URL{u(NodeURI("client", 1))}, Identity{Kind: KindNode, ClusterID: "client", NodeID: 1}},
		{"client", []*url.URL{u(ClientURI("alice.b-2_x"))}, Identity{Kind: KindClient, Name: "alice.b-2_x"}},
		{"client named node", []*url.URL{u(ClientURI("node"))}, Identity{Kind: KindClient, Name: "node"}},
		{"other schemes ignored", []*url.URL{u("spiffe://td/x"), u(NodeURI("k", 2))}, Identity{Kind: KindNode, ClusterID: "k", NodeID: 2}},
		{"none", nil, Identity{}},
		{"only another scheme", []*url.URL{u("spiffe://ketch/node/1")}, Identity{}},
		{"two", []*url.URL{u(NodeURI("k", 1)), u(NodeURI("k", 2))}, Identity{}},
		{"node id 0", []*url.URL{u("ketch://k/node/0")}, Identity{}},
		{"leading zero", []*url.URL{u("ketch://k/node/01")}, Identity{}},
		{"negative", []*url.URL{u("ketch://k/node/-1")}, Identity{}},
		{"overflow", []*url.URL{u("ketch://k/node/18446744073709551616")}, Identity{}},
		{"no cluster", []*url.URL{u("ketch:///node/1")}, Identity{}},
		{"extra segment", []*url.URL{u("ketch://k/node/1/x")}, Identity{}},
		{"trailing slash", []*url.URL{u("ketch://k/node/1/")}, Identity{}},
		{"wrong kind", []*url.URL{u("ketch://k/server/1")}, Identity{}},
		{"query", []*url.URL{u("ketch://k/node/1?x=1")}, Identity{}},
		{"fragment", []*url.URL{u("ketch://k/node/1#x")}, Identity{}},
		{"port", []*url.URL{u("ketch://k:1/node/1")}, Identity{}},
		{"userinfo", []*url.URL{u("ketch://u@k/node/1")}, Identity{}},
		{"opaque", []*url.URL{u("ketch:k/node/1")}, Identity{}},
		{"escaped path", []*url.URL{u("ketch://client/a%2Fb")}, Identity{}},
		{"client without name", []*url.URL{u("ketch://client/")}, Identity{}},
		{"client host in upper case", []*url.URL{u("ketch://Client/alice")}, Identity{}},
		{"client name with bad byte", []*url.URL{u("ketch://client/a%20b")}, Identity{}},
		{"client with two segments", []*url.URL{u("ketch://client/a/b")}, Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseIdentity(&x509.Certificate{URIs: tt.uris})
			if tt.want == (Identity{}) {
				if err == nil || !errors.Is(err, ErrNoIdentity) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("got %+v, %v; want a one-line ErrNoIdentity error", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
			if s := got.String(); s != tt.uris[len(tt.uris)-1].String() {
				t.Errorf("String() = %q, want %q", s, tt.uris[len(tt.uris)-1])
			}
		})
	}
	if _, err := ParseIdentity(nil); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("nil certificate: %v", err)
	}
}

func TestLoadCA(t *testing.T) {
	dir := newCA(t)
	if err := NewClientCert(dir, "x"); err != nil {
		t.Fatal(err)
	}
	clientCrt, _ := ClientPaths(dir, "x")
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		file     string
		mentions string // "" for success
	}{
		{"the CA", filepath.Join(dir, CACertFile), ""},
		{"missing", filepath.Join(dir, "nope.crt"), "no such file"},
		{"not PEM", garbage, "no PEM CERTIFICATE"},
		{"a leaf", clientCrt, "not a CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := LoadCA(tt.file)
			if tt.mentions == "" {
				if err != nil || p == nil {
					t.Fatalf("LoadCA: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.mentions) {
				t.Fatalf("LoadCA: %v; want an error mentioning %q", err, tt.mentions)
			}
		})
	}
}

// fakeClock is a settable clock for the reloaders.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func touch(t *testing.T, at time.Time, files ...string) {
	t.Helper()
	for _, f := range files {
		if err := os.Chtimes(f, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReloader(t *testing.T) {
	dir := newCA(t)
	if err := NewNodeCert(dir, "c", 1, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	crt, key := NodePaths(dir, 1)
	r, err := NewReloader(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	clock := &fakeClock{t: time.Now()}
	r.w.now = clock.now
	r.w.checked = clock.t

	serial := func() string {
		t.Helper()
		c, err := r.GetCertificate(nil)
		if err != nil || c == nil {
			t.Fatalf("GetCertificate: %v, %v", c, err)
		}
		cc, err := r.GetClientCertificate(nil)
		if err != nil || cc != c {
			t.Fatalf("GetClientCertificate: %v, %v; want the GetCertificate pair", cc, err)
		}
		return c.Leaf.SerialNumber.String()
	}
	first := serial()
	onDisk := func() string { t.Helper(); return readCert(t, crt).SerialNumber.String() }
	if first != onDisk() {
		t.Fatal("serving a certificate other than the file's")
	}

	// Rotate: the same paths, new contents, an explicitly newer mtime.
	if err := NewNodeCert(dir, "c", 1, []string{"localhost"}, Overwrite()); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(time.Minute), crt, key)
	second := onDisk()

	clock.advance(ReloadInterval / 2)
	if got := serial(); got != first {
		t.Fatalf("reread within the check interval: serving %s", got)
	}
	clock.advance(ReloadInterval/2 + time.Millisecond)
	if got := serial(); got != second {
		t.Fatalf("after rotation and the check interval: serving %s, want the new %s", got, second)
	}

	// A bad rewrite keeps the last good pair and warns once.
	if err := os.WriteFile(crt, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(2*time.Minute), crt)
	for range 3 {
		clock.advance(ReloadInterval)
		if got := serial(); got != second {
			t.Fatalf("after a bad rewrite: serving %s, want the last good %s", got, second)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warnings for one bad rewrite, want 1:\n%s", n, logs.String())
	}

	// A removed file: still the last good pair.
	if err := os.Remove(crt); err != nil {
		t.Fatal(err)
	}
	clock.advance(ReloadInterval)
	if got := serial(); got != second {
		t.Fatalf("after removal: serving %s, want %s", got, second)
	}

	// Fixed again: picked up.
	if err := NewNodeCert(dir, "c", 1, []string{"localhost"}, Overwrite()); err != nil {
		t.Fatal(err)
	}
	third := onDisk()
	clock.advance(ReloadInterval)
	if got := serial(); got != third {
		t.Fatalf("after the fix: serving %s, want %s", got, third)
	}

	// A failed start is an error, not a Reloader without a pair.
	if _, err := NewReloader(filepath.Join(dir, "nope.crt"), key); err == nil || !strings.Contains(err.Error(), "nope.crt") {
		t.Fatalf("NewReloader of a missing file: %v", err)
	}
}

func TestPoolReloader(t *testing.T) {
	dir := newCA(t)
	if err := NewClientCert(dir, "x"); err != nil {
		t.Fatal(err)
	}
	p, err := NewPoolReloader(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Now()}
	p.w.now = clock.now
	p.w.checked = clock.t
	verifies := func() bool {
		t.Helper()
		crt, _ := ClientPaths(dir, "x")
		_, err := readCert(t, crt).Verify(x509.VerifyOptions{Roots: p.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err == nil
	}
	if !verifies() {
		t.Fatal("the client certificate does not verify against its CA")
	}
	// A new CA and a client certificate of it: the old pool refuses it
	// until the reloader rereads the CA file.
	if err := InitCA(dir, Overwrite()); err != nil {
		t.Fatal(err)
	}
	if err := NewClientCert(dir, "x", Overwrite()); err != nil {
		t.Fatal(err)
	}
	touch(t, time.Now().Add(time.Minute), filepath.Join(dir, CACertFile))
	if verifies() {
		t.Fatal("the pool changed within the check interval")
	}
	clock.advance(ReloadInterval)
	if !verifies() {
		t.Fatal("the pool was not reloaded after the CA file changed")
	}
}

func TestReloaderConcurrent(t *testing.T) {
	// Handshakes and rotations at once, for the race detector.
	dir := newCA(t)
	if err := NewNodeCert(dir, "c", 1, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	r, err := NewReloader(NodePaths(dir, 1))
	if err != nil {
		t.Fatal(err)
	}
	r.w.interval = 0 // stat on every use
	done := make(chan struct{})
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				if c, err := r.GetCertificate(nil); err != nil || c == nil || c.Leaf == nil {
					errs <- fmt.Errorf("GetCertificate: %v, %v", c, err)
					return
				}
			}
		}()
	}
	for range 5 {
		if err := NewNodeCert(dir, "c", 1, []string{"localhost"}, Overwrite()); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	crt, _ := NodePaths(dir, 1)
	if got, want := r.Certificate().Leaf.SerialNumber, readCert(t, crt).SerialNumber; got.Cmp(want) != 0 {
		t.Fatalf("serving serial %v after the last rotation, want %v", got, want)
	}
}
