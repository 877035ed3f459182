package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/certs"
)

// runCerts runs 'ketch certs ARGS' with fresh buffers.
func runCerts(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"certs"}, args...), strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCertsCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	tests := []struct {
		name  string
		args  []string
		files []string // printed, in order, and their modes
		modes []fs.FileMode
	}{
		{"init", []string{"init", "--dir", dir}, []string{"ca.crt", "ca.key"}, []fs.FileMode{0o644, 0o600}},
		{"node", []string{"node", "--dir", dir, "--cluster-id", "prod", "--id", "3", "--host", "n3.example.com,10.0.0.3", "--host", "localhost", "--validity", "720h"},
			[]string{"node-3.crt", "node-3.key"}, []fs.FileMode{0o644, 0o600}},
		{"client", []string{"client", "--dir", dir, "--name", "alice"}, []string{"client-alice.crt", "client-alice.key"}, []fs.FileMode{0o644, 0o600}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCerts(t, tt.args...)
			if code != exitOK || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			var want []string
			for _, f := range tt.files {
				want = append(want, filepath.Join(dir, f))
			}
			if got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); !slices.Equal(got, want) {
				t.Fatalf("stdout %q, want the lines %q", stdout, want)
			}
			for i, f := range want {
				fi, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != tt.modes[i] {
					t.Errorf("%s: mode %v, want %v", f, fi.Mode(), tt.modes[i])
				}
			}
		})
	}

	// The node certificate says what the flags said.
	data, err := os.ReadFile(filepath.Join(dir, "node-3.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("node-3.crt: no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	id, err := certs.ParseIdentity(c)
	if want := (certs.Identity{Kind: certs.KindNode, ClusterID: "prod", NodeID: 3}); err != nil || id != want {
		t.Errorf("identity %+v, %v; want %+v", id, err, want)
	}
	if !slices.Equal(c.DNSNames, []string{"n3.example.com", "localhost"}) || len(c.IPAddresses) != 1 || c.IPAddresses[0].String() != "10.0.0.3" {
		t.Errorf("SANs: DNS %v, IP %v", c.DNSNames, c.IPAddresses)
	}
	if got := time.Until(c.NotAfter); got > 720*time.Hour || got < 719*time.Hour {
		t.Errorf("--validity 720h: expires in %v", got)
	}

	// The same again is refused, in one line, and changes nothing.
	caBefore, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	for _, tt := range tests {
		t.Run("again "+tt.name, func(t *testing.T) {
			code, stdout, stderr := runCerts(t, tt.args...)
			if code != exitFailure || stdout != "" {
				t.Fatalf("exit %d, stdout %q; want exit %d and nothing on stdout", code, stdout, exitFailure)
			}
			prefix := "ketch: certs " + tt.name + ": " + filepath.Join(dir, tt.files[0]) + " already exists"
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, prefix) || !strings.Contains(stderr, "--overwrite") {
				t.Fatalf("stderr %q; want one line starting %q and naming --overwrite", stderr, prefix)
			}
		})
	}
	if caAfter, _ := os.ReadFile(filepath.Join(dir, "ca.key")); !bytes.Equal(caBefore, caAfter) {
		t.Fatal("a refused init changed ca.key")
	}

	// --overwrite replaces.
	if code, _, stderr := runCerts(t, "client", "--dir", dir, "--name", "alice", "--overwrite"); code != exitOK {
		t.Fatalf("client --overwrite: exit %d, %s", code, stderr)
	}
}

func TestCertsErrors(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCerts(t, "init", "--dir", dir); code != exitOK {
		t.Fatalf("init: %d %s", code, stderr)
	}
	empty := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		mentions string
	}{
		{"unknown flag", []string{"init", "--dir", dir, "--bogus"}, "ketch: certs init: unknown flag: --bogus"},
		{"bad duration", []string{"client", "--dir", dir, "--name", "a", "--validity", "soon"}, `ketch: certs client: invalid argument "soon" for "--validity" flag`},
		{"negative validity", []string{"client", "--dir", dir, "--name", "a", "--validity", "-1h"}, "positive duration"},
		{"no dir", []string{"init"}, "--dir DIR is required"},
		{"extra argument", []string{"init", "--dir", dir, "extra"}, "unexpected arguments"},
		{"node without id", []string{"node", "--dir", dir, "--host", "h"}, "--id N"},
		{"node without host", []string{"node", "--dir", dir, "--id", "1"}, "--host"},
		{"node with a bad host", []string{"node", "--dir", dir, "--id", "1", "--host", "h:80"}, `host "h:80"`},
		{"node with a bad cluster id", []string{"node", "--dir", dir, "--id", "1", "--host", "h", "--cluster-id", "a b"}, "cluster id"},
		{"node without a CA", []string{"node", "--dir", empty, "--id", "1", "--host", "h"}, "ca.crt not found in " + empty + ": run 'ketch certs init --dir " + empty + "' first"},
		{"client without name", []string{"client", "--dir", dir}, "--name NAME"},
		{"client with a bad name", []string{"client", "--dir", dir, "--name", "a/b"}, `client name "a/b"`},
		{"a flag of another subcommand", []string{"init", "--dir", dir, "--name", "x"}, "-name"},
		{"validity past the CA", []string{"client", "--dir", dir, "--name", "a", "--validity", "100000h"}, "after the CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCerts(t, tt.args...)
			t.Log(strings.TrimSpace(stderr))
			if code != exitFailure || stdout != "" {
				t.Fatalf("exit %d, stdout %q; want %d and nothing", code, stdout, exitFailure)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "ketch: certs ") || !strings.Contains(stderr, tt.mentions) {
				t.Fatalf("stderr %q; want one line 'ketch: certs ...' mentioning %q", stderr, tt.mentions)
			}
		})
	}

	// No subcommand, or an unknown one: the three forms, exit 2.
	for _, args := range [][]string{nil, {"bogus"}} {
		code, _, stderr := runCerts(t, args...)
		if code != exitFailure {
			t.Errorf("%q: exit %d", args, code)
		}
		for _, form := range []string{"ketch certs init ", "ketch certs node ", "ketch certs client "} {
			if !strings.Contains(stderr, form) {
				t.Errorf("%q: stderr %q lacks %q", args, stderr, form)
			}
		}
	}
	// -h: the flags on stdout, exit 0.
	if code, stdout, _ := runCerts(t, "node", "-h"); code != exitOK || !strings.Contains(stdout, "-cluster-id") || !strings.Contains(stdout, "-host") {
		t.Errorf("node -h: exit %d, stdout %q", code, stdout)
	}
}
