package process

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLIBadInput pins the CLI's contract for bad input: exit 2 and one
// line on stderr ("ketch: ..."), never a panic or a stack trace, and a
// `ketch node` that refuses to start exits at once instead of running.
func TestCLIBadInput(t *testing.T) {
	t.Parallel()
	ketchBin(t) // build before the parallel subtests start

	// A port somebody else holds for the whole test.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = taken.Close() })

	// A plain file where a directory is expected.
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}

	// node returns `ketch node` args that are valid except for what
	// override changes: a free port, a fresh data dir, one peer.
	node := func(override map[string]string, drop ...string) []string {
		addrs := freeAddrs(t, 2)
		flags := map[string]string{
			"--id": "1", "--listen": addrs[0], "--peers": "2=" + addrs[1], "--data": filepath.Join(t.TempDir(), "data"),
		}
		for k, v := range override {
			flags[k] = v
		}
		for _, d := range drop {
			delete(flags, d)
		}
		args := []string{"node"}
		for _, k := range []string{"--id", "--listen", "--peers", "--data"} {
			if v, ok := flags[k]; ok {
				args = append(args, k, v)
				delete(flags, k)
			}
		}
		for k, v := range flags { // the overrides of other flags
			args = append(args, k, v)
		}
		return args
	}

	tests := []struct {
		name string
		args []string
		// mention is a word the error line must contain, so it says what
		// is wrong.
		mention string
	}{
		{"node/port taken", node(map[string]string{"--listen": taken.Addr().String()}), "in use"},
		{"node/data is a file", node(map[string]string{"--data": file}), "data"},
		{"node/data under a file", node(map[string]string{"--data": filepath.Join(file, "sub")}), "data"},
		{"node/data in /proc", node(map[string]string{"--data": "/proc/ketch-test-no-such-dir"}), "data"},
		{"node/peers x=y", node(map[string]string{"--peers": "x=y"}), "peers"},
		{"node/peers 2=", node(map[string]string{"--peers": "2="}), "peers"},
		{"node/peers duplicate id", node(map[string]string{"--peers": "2=127.0.0.1:1,2=127.0.0.1:2"}), "twice"},
		{"node/peers lists itself", node(map[string]string{"--peers": "1=127.0.0.1:1"}), "peer"},
		{"node/missing --id", node(nil, "--id"), "--id"},
		{"node/missing --data", node(nil, "--data"), "--data"},
		{"node/bad --listen", node(map[string]string{"--listen": "no-port"}), "--listen"},
		{"node/negative --snapshot-growth", node(map[string]string{"--snapshot-growth": "-1"}), "--snapshot-growth"},
		{"node/--snapshot-growth NaN", node(map[string]string{"--snapshot-growth": "NaN"}), "--snapshot-growth"},
		{"node/--snapshot-trailing 0", node(map[string]string{"--snapshot-trailing": "0"}), "--snapshot-trailing"},
		{"put without --cluster", []string{"put", "k", "v"}, "--cluster"},
		{"get without --cluster", []string{"get", "k"}, "--cluster"},
		{"status without --cluster", []string{"status"}, "--cluster"},
		{"put with one argument", []string{"put", "--cluster", "127.0.0.1:1", "k"}, "argument"},
		{"cas with two arguments", []string{"cas", "--cluster", "127.0.0.1:1", "k", "v"}, "argument"},
		{"crash without --node", []string{"crash", "--cluster", "127.0.0.1:1", "--actor", "fsm"}, "--node"},
		{"crash of an unknown actor", []string{"crash", "--cluster", "127.0.0.1:1", "--node", "1", "--actor", "disk"}, "--actor"},
		// Issue 16: cobra's refusals are one line too, not the usage.
		{"node/--id not a number", node(map[string]string{"--id": "one"}), "--id"},
		{"node/unknown flag", append(node(nil), "--no-such-flag"), "no-such-flag"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"get with -w yaml", []string{"get", "--cluster", "127.0.0.1:1", "-w", "yaml", "k"}, "json or table"},
		{"node/heartbeat not under the election timeout", node(map[string]string{"--heartbeat": "200ms", "--election-timeout": "300ms"}), "heartbeat"},
		{"node/port 99999", node(map[string]string{"--listen": "127.0.0.1:99999"}), "port"},
		// Regression (issue 11): a key that is not UTF-8 hung 10 s, then
		// said "timed out"; it is refused at once, saying why.
		{"put with a key that is not UTF-8", []string{"put", "--cluster", "127.0.0.1:1", "\xff\xfe", "v"}, "UTF-8"},
		{"get with a key that is not UTF-8", []string{"get", "--cluster", "127.0.0.1:1", "k\xc3"}, "UTF-8"},
		{"put with a key over the limit", []string{"put", "--cluster", "127.0.0.1:1", strings.Repeat("k", 5000), "v"}, "limit"},
		// Membership (issue 13): every malformed member command is refused
		// before it reaches a node.
		{"node/--join with --peers", append(node(nil), "--join"), "--join"},
		{"member without a subcommand", []string{"member"}, "usage"},
		{"member unknown subcommand", []string{"member", "grow", "--cluster", "127.0.0.1:1"}, "grow"},
		{"member add without an address", []string{"member", "add", "--cluster", "127.0.0.1:1", "4"}, "ID=HOST:PORT"},
		{"member add with a bad address", []string{"member", "add", "--cluster", "127.0.0.1:1", "4=nohost"}, "HOST:PORT"},
		{"member add with id 0", []string{"member", "add", "--cluster", "127.0.0.1:1", "0=127.0.0.1:9"}, "positive"},
		{"member add with two servers", []string{"member", "add", "--cluster", "127.0.0.1:1", "4=127.0.0.1:9", "5=127.0.0.1:8"}, "one argument"},
		{"member promote of a non-number", []string{"member", "promote", "--cluster", "127.0.0.1:1", "four"}, "node id"},
		{"member remove without an id", []string{"member", "remove", "--cluster", "127.0.0.1:1"}, "argument"},
		{"member replace without NEW", []string{"member", "replace", "--cluster", "127.0.0.1:1", "3"}, "OLD=NEW=HOST:PORT"},
		{"member list with --learner", []string{"member", "list", "--cluster", "127.0.0.1:1", "--learner"}, "--learner"},
		{"member remove with --learner", []string{"member", "remove", "--cluster", "127.0.0.1:1", "--learner", "3"}, "--learner"},
		{"member list without --cluster", []string{"member", "list"}, "--cluster"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, tc.args...)
			if r.took > 15*time.Second || strings.Contains(tc.mention, "UTF-8") && r.took > 2*time.Second {
				t.Errorf("took %v to refuse", r.took)
			}
			checkOneLineFailure(t, r)
			if !strings.Contains(r.stderr, tc.mention) {
				t.Errorf("the error should mention %q: %s", tc.mention, r)
			}
		})
	}
}

// TestCLICrashRefused: `ketch crash` on a node started without --chaos is
// refused with exit 2 and a line naming --chaos, and nothing restarts.
func TestCLICrashRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, false)
	addr := c.nodes[1].addr
	poll(t, 10*time.Second, 20*time.Millisecond, "the single node answers status", func() (bool, string) {
		c.checkAlive()
		r := runCLI(t, "status", "--cluster", addr, "--json", "--timeout", "500ms")
		return r.code == 0, r.String()
	})
	for _, actor := range []string{"store", "state", "fsm", "sender"} {
		r := runCLI(t, "crash", "--cluster", addr, "--node", "1", "--actor", actor)
		checkOneLineFailure(t, r)
		if !strings.Contains(r.stderr, "--chaos") {
			t.Errorf("the refusal should name --chaos: %s", r)
		}
	}
	// Asking for a node id nobody has is a failure too.
	r := runCLI(t, "crash", "--cluster", addr, "--node", "7", "--actor", "fsm")
	checkOneLineFailure(t, r)

	sts := c.status(2 * time.Second)
	for name, cs := range sts[0].Children {
		if cs.Restarts != 0 || cs.LastCrash != "" {
			t.Errorf("child %s restarted after refused crashes: %+v", name, cs)
		}
	}
	// A single node is a cluster of one: it elects itself and serves.
	poll(t, 10*time.Second, 20*time.Millisecond, "the single node writes", func() (bool, string) {
		r := runCLI(t, "put", "--cluster", addr, "--timeout", "2s", "k", "v")
		return r.code == 0, r.String()
	})
	r = runCLI(t, "get", "--cluster", addr, "k")
	if r.code != 0 || r.stdout != "v\n" {
		t.Errorf("get k: %s", r)
	}
	if t.Failed() {
		t.Logf("status: %s", fmt.Sprint(sts))
	}
}

// TestCLIFailsFastWithoutANode: with no ketch node at any --cluster address
// the client verbs fail at once (not after --timeout), in one line naming
// each address and why: nothing listens, something that is not a ketch
// node answers, or TLS on one side only (issue 16, item 2).
func TestCLIFailsFastWithoutANode(t *testing.T) {
	dead := freeAddrs(t, 1)[0]
	// Something that is not a ketch node: an HTTP/1 server.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			_ = c.Close()
		}
	}()
	other := l.Addr().String()
	for _, tc := range []struct {
		cluster string
		want    []string
	}{
		{dead, []string{dead + ": connection refused"}},
		{other, []string{other + ": not a ketch node"}},
		{other + "," + dead, []string{other + ": not a ketch node", dead + ": connection refused"}},
	} {
		for _, verb := range [][]string{{"get", "k"}, {"put", "k", "v"}, {"transfer"}} {
			args := append([]string{verb[0], "--cluster", tc.cluster, "--timeout", "10s"}, verb[1:]...)
			r := runCLI(t, args...)
			checkOneLineFailure(t, r)
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("ketch %v: stderr lacks %q: %s", args, w, r)
				}
			}
			if r.took > 2*time.Second {
				t.Errorf("ketch %v took %v with --timeout 10s; want an answer at once", args, r.took)
			}
		}
	}
}

// TestCLIValuesKeysAndAnswers is issue 16, item 3: `put KEY -` reads the
// value from stdin (a value too large for argv too), over the entry limit
// it fails in one line naming the limit; `cas --if-absent` creates a key
// once; `delete` says whether the key existed, and --json too.
func TestCLIValuesKeysAndAnswers(t *testing.T) {
	c := newCluster(t, 1, false)
	c.waitLeader(10 * time.Second)
	put := func(key string, value []byte) cliResult {
		t.Helper()
		cmd := exec.Command(ketchBin(t), "put", "--cluster", c.addrs(), key, "-")
		cmd.Env = cliEnv()
		cmd.Stdin = bytes.NewReader(value)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r := cliResult{args: []string{"put", key, "-"}, stdout: stdout.String(), stderr: stderr.String()}
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			r.code = exitErr.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 60_000) // 960 KB: over the shell's argv limit for one argument
	if r := put("big", big); r.code != 0 {
		t.Fatalf("put big - (960 KB from stdin): %s", r)
	}
	if r := mustCLI(t, 0, "get", "--cluster", c.addrs(), "big"); strings.TrimSuffix(r.stdout, "\n") != string(big) {
		t.Fatalf("get big: %d bytes back, want %d", len(r.stdout)-1, len(big))
	}
	r := put("huge", make([]byte, 2<<20))
	checkOneLineFailure(t, r)
	if !strings.Contains(r.stderr, "1048576-byte entry limit") {
		t.Errorf("put of 2 MiB from stdin: want the limit named: %s", r)
	}

	mustCLI(t, 0, "cas", "--cluster", c.addrs(), "--if-absent", "fresh", "first")
	r = runCLI(t, "cas", "--cluster", c.addrs(), "--if-absent", "fresh", "second")
	if r.code != 1 || !strings.Contains(r.stderr, `"first"`) {
		t.Errorf("a second cas --if-absent: want exit 1 naming the current value: %s", r)
	}
	if r := mustCLI(t, 0, "get", "--cluster", c.addrs(), "fresh"); r.stdout != "first\n" {
		t.Errorf("get fresh = %q", r.stdout)
	}

	if r := mustCLI(t, 0, "delete", "--cluster", c.addrs(), "fresh"); r.stdout != "deleted\n" {
		t.Errorf("delete of an existing key printed %q", r.stdout)
	}
	if r := mustCLI(t, 0, "delete", "--cluster", c.addrs(), "fresh"); !strings.Contains(r.stdout, "did not exist") {
		t.Errorf("delete of a missing key printed %q", r.stdout)
	}
	r = mustCLI(t, 0, "delete", "--cluster", c.addrs(), "--json", "big")
	var d struct {
		Key     string `json:"key"`
		Existed bool   `json:"existed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.Key != "big" || !d.Existed {
		t.Errorf("delete --json: %q (%v)", r.stdout, err)
	}
}
