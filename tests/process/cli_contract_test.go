package process

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The CLI as etcdctl's users expect it (issue 16, item 1): help that exits
// 0 with the arguments and an example, flags anywhere, version, completion,
// $KETCH_* for every connection flag, -w json|table; and the errors whose
// cause is known in under a second (item 2).

// commands are every command and subcommand a user can ask help of, with
// the arguments its usage line must show.
var commands = []struct {
	path []string
	args string // in the usage line, after the command
}{
	{[]string{"node"}, "--id ID --listen HOST:PORT"},
	{[]string{"demo"}, ""},
	{[]string{"put"}, "KEY VALUE"},
	{[]string{"get"}, "KEY"},
	{[]string{"delete"}, "KEY"},
	{[]string{"cas"}, "KEY OLD NEW"},
	{[]string{"status"}, ""},
	{[]string{"crash"}, "--node ID --actor"},
	{[]string{"transfer"}, "[--to ID]"},
	{[]string{"snapshot"}, "[--node ID]"},
	{[]string{"bench"}, "[--clients N]"},
	{[]string{"member"}, "list|add|promote|remove|replace"},
	{[]string{"member", "list"}, ""},
	{[]string{"member", "add"}, "ID=HOST:PORT"},
	{[]string{"member", "promote"}, "ID"},
	{[]string{"member", "remove"}, "ID"},
	{[]string{"member", "replace"}, "OLD=NEW=HOST:PORT"},
	{[]string{"certs"}, "init|node|client"},
	{[]string{"certs", "init"}, "--dir DIR"},
	{[]string{"certs", "node"}, "--dir DIR --cluster-id C --id N"},
	{[]string{"certs", "client"}, "--dir DIR --name NAME"},
	{[]string{"version"}, ""},
	{[]string{"completion"}, ""},
}

// TestCLIHelp: --help on every command exits 0 on stdout with a usage line
// that shows its arguments, and an example (cobra's own completion command
// aside); 'ketch help CMD' prints the same; help shows the real defaults.
func TestCLIHelp(t *testing.T) {
	t.Parallel()
	for _, c := range commands {
		name := strings.Join(c.path, " ")
		r := runCLI(t, append(c.path, "--help")...)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("ketch %s --help: want exit 0 and nothing on stderr: %s", name, r)
			continue
		}
		usage := "ketch " + name
		if c.args != "" {
			usage += " " + c.args
		}
		if !strings.Contains(r.stdout, "Usage:\n  "+usage) {
			t.Errorf("ketch %s --help: no usage line %q:\n%s", name, usage, r.stdout)
		}
		if c.path[0] != "completion" && !strings.Contains(r.stdout, "Examples:\n  ketch ") {
			t.Errorf("ketch %s --help: no example:\n%s", name, r.stdout)
		}
		if h := runCLI(t, append([]string{"help"}, c.path...)...); h.code != 0 || h.stdout != r.stdout {
			t.Errorf("ketch help %s differs from ketch %s --help: %s", name, name, h)
		}
	}
	// The defaults help states are the ones the commands use.
	for cmd, want := range map[string]string{"status": "2s", "crash": "3s", "transfer": "5s", "get": "10s", "snapshot": "1m0s"} {
		r := runCLI(t, cmd, "--help")
		if !strings.Contains(r.stdout, "[$KETCH_TIMEOUT] (default "+want+")") {
			t.Errorf("ketch %s --help: --timeout's default should read %s:\n%s", cmd, want, r.stdout)
		}
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.Count(l, "(default") > 1 || strings.Contains(l, "(default $") {
				t.Errorf("ketch %s --help: a default stated twice, or as a variable: %q", cmd, l)
			}
		}
	}
	// Bare 'ketch' is the usage on stderr, exit 2, as before cobra.
	if r := runCLI(t); r.code != 2 || !strings.Contains(r.stderr, "Usage:") {
		t.Errorf("bare ketch: %s", r)
	}
}

// TestCLIVersionAndCompletion: 'ketch version' (and --version) names the
// module version, the commit and the Go version; a binary built with VCS
// stamping names the checkout's commit. Completion scripts for bash, zsh
// and fish, and completions of flag values.
func TestCLIVersionAndCompletion(t *testing.T) {
	t.Parallel()
	r := mustCLI(t, 0, "version", "-w", "json")
	var v struct{ Version, Commit, Go, Platform string }
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Version == "" || v.Commit == "" || !strings.HasPrefix(v.Go, "go1.") || v.Platform == "" {
		t.Fatalf("version -w json: %+v (%v): %s", v, err, r)
	}
	line := mustCLI(t, 0, "version").stdout
	if !strings.Contains(line, v.Version) || !strings.Contains(line, "commit "+v.Commit) || !strings.Contains(line, v.Go) {
		t.Errorf("version: %q lacks what -w json says (%+v)", line, v)
	}
	if alt := mustCLI(t, 0, "--version").stdout; alt != line {
		t.Errorf("--version %q differs from version %q", alt, line)
	}
	// -ldflags -X main.commit, for builds without VCS stamping.
	bin := t.TempDir() + "/ketch"
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X main.commit=abc1234", "github.com/ketch-raft/ketch/cmd/ketch")
	build.Env = cliEnv("CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if r, err := execCLI(bin, "version"); err != nil || !strings.Contains(r.stdout, "commit abc1234") {
		t.Errorf("a build with -X main.commit=abc1234: %s (%v)", r, err)
	}

	for shell, want := range map[string]string{"bash": "bash completion", "zsh": "#compdef ketch", "fish": "complete -c ketch"} {
		if r := mustCLI(t, 0, "completion", shell); !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: no %q in %d bytes", shell, want, len(r.stdout))
		}
	}
	if r := mustCLI(t, 0, "__complete", "crash", "--actor", ""); !strings.Contains(r.stdout, "store\nstate\nfsm\nsender\n") {
		t.Errorf("completing crash --actor: %q", r.stdout)
	}
	if r := mustCLI(t, 0, "__complete", "sta"); !strings.Contains(r.stdout, "status") {
		t.Errorf("completing 'sta': %q", r.stdout)
	}
}

// TestCLIFlagsAnywhereEnvAndJSON drives a one-node cluster the ways users
// of etcdctl would: flags after the arguments, the Go flag package's
// -single-dash flags, values that look like flags, $KETCH_* variables for
// the connection, -w json on every command that prints; and a wrong
// cluster id, or a transfer with nowhere to go, fail at once naming why.
func TestCLIFlagsAnywhereEnvAndJSON(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, false)
	c.waitLeader(10 * time.Second)
	addr := c.addrs()
	env := func(extra ...string) []string { return append([]string{"KETCH_CLUSTER=" + addr}, extra...) }
	run := func(env []string, args ...string) cliResult {
		t.Helper()
		r, err := execCLIEnv(ketchBin(t), env, args...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// Flags after the arguments, single-dash long flags, "--", and
	// values that start with "-".
	mustCLI(t, 0, "put", "greeting", "hello", "--cluster", addr)
	if r := mustCLI(t, 0, "get", "greeting", "-cluster", addr); r.stdout != "hello\n" {
		t.Errorf("get greeting -cluster ADDR: %q", r.stdout)
	}
	mustCLI(t, 0, "put", "--cluster", addr, "negative", "-5")
	mustCLI(t, 0, "put", "--cluster", addr, "--", "dash", "--not-a-flag")
	if r := mustCLI(t, 0, "get", "negative", "--cluster="+addr); r.stdout != "-5\n" {
		t.Errorf("put negative -5: got %q back", r.stdout)
	}
	if r := mustCLI(t, 0, "get", "--cluster", addr, "--", "dash"); r.stdout != "--not-a-flag\n" {
		t.Errorf("put -- dash --not-a-flag: got %q back", r.stdout)
	}

	// $KETCH_CLUSTER, $KETCH_CLUSTER_ID and $KETCH_TIMEOUT; a flag
	// overrides its variable.
	if r := run(env(), "get", "greeting"); r.code != 0 || r.stdout != "hello\n" {
		t.Errorf("get with $KETCH_CLUSTER: %s", r)
	}
	r := run(env("KETCH_CLUSTER_ID=elsewhere"), "get", "greeting")
	checkOneLineFailure(t, r)
	if !strings.Contains(r.stderr, addr) || !strings.Contains(r.stderr, `not "elsewhere"`) || r.took > time.Second {
		t.Errorf("a wrong $KETCH_CLUSTER_ID: want one line naming %s and the id, in under 1 s (took %v): %s", addr, r.took, r)
	}
	if r := run(env("KETCH_CLUSTER_ID=elsewhere"), "get", "greeting", "--cluster-id", "ketch"); r.code != 0 {
		t.Errorf("--cluster-id overrides $KETCH_CLUSTER_ID: %s", r)
	}
	r = run(env("KETCH_TIMEOUT=soon"), "get", "greeting")
	checkOneLineFailure(t, r)
	if !strings.Contains(r.stderr, "KETCH_TIMEOUT") {
		t.Errorf("a bad $KETCH_TIMEOUT is not named: %s", r)
	}
	if r := run(env("KETCH_TIMEOUT=3s"), "transfer", "--help"); !strings.Contains(r.stdout, "(default 3s)") {
		t.Errorf("$KETCH_TIMEOUT=3s is not transfer's default:\n%s", r.stdout)
	}

	// -w json (and --json) on every command that prints.
	jsonOf := func(args ...string) map[string]any {
		t.Helper()
		r := run(env(), append(args, "-w", "json")...)
		var m map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
			t.Errorf("ketch %v -w json: %v: %s", args, err, r)
		}
		return m
	}
	for _, tc := range []struct {
		args []string
		want string // fmt.Sprint of the object, keys sorted
	}{
		{[]string{"put", "k", "v1"}, "map[bytes:2 key:k]"},
		{[]string{"get", "k"}, "map[found:true key:k value:v1]"},
		{[]string{"get", "missing"}, "map[found:false key:missing]"},
		{[]string{"cas", "k", "v1", "v2"}, "map[key:k swapped:true]"},
		{[]string{"cas", "k", "v1", "v3"}, "map[current:v2 found:true key:k swapped:false]"},
		{[]string{"cas", "--if-absent", "k2", "new"}, "map[key:k2 swapped:true]"},
		{[]string{"delete", "k2"}, "map[existed:true key:k2]"},
		{[]string{"delete", "k2"}, "map[existed:false key:k2]"},
		{[]string{"transfer", "--to", "1"}, "map[from:1 to:1]"},
	} {
		if got := fmt.Sprint(jsonOf(tc.args...)); got != tc.want {
			t.Errorf("ketch %v -w json = %s, want %s", tc.args, got, tc.want)
		}
	}
	if r := run(env(), "get", "k", "--json"); !strings.Contains(r.stdout, `"value": "v2"`) {
		t.Errorf("--json is -w json: %s", r)
	}
	if r := run(env(), "member", "add", "2=127.0.0.1:1", "--learner", "--expect-index", "999999", "-w", "json"); r.code != 2 || r.stdout != "" {
		t.Errorf("a refused member add: want exit 2 and nothing on stdout: %s", r)
	}
	for _, args := range [][]string{{"status"}, {"member", "list"}, {"snapshot"}} {
		r := run(env(), append(args, "-w", "json")...)
		var a []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &a); err != nil || len(a) != 1 || r.code != 0 {
			t.Errorf("ketch %v -w json: want a one-element array, exit 0 (%v): %s", args, err, r)
		}
	}
	if r := run(env(), "status", "-w", "table"); r.code != 0 || !strings.HasPrefix(r.stdout, "ID ") {
		t.Errorf("status -w table: %s", r)
	}

	// A transfer with nowhere to go says so at once; to the leader it is
	// done already.
	r = run(env(), "transfer")
	checkOneLineFailure(t, r)
	if !strings.Contains(r.stderr, "only voter") || r.took > time.Second {
		t.Errorf("transfer on a one-node cluster: want one line saying it is the only voter in under 1 s (took %v): %s", r.took, r)
	}
	if r := run(env(), "transfer", "--to", "1"); r.code != 0 || !strings.Contains(r.stdout, "node 1 already leads") || r.took > time.Second {
		t.Errorf("transfer --to the leader: want exit 0 at once, saying it leads (took %v): %s", r.took, r)
	}
}

// TestCLIBench is issue 16, item 4: 'ketch bench' against a live cluster
// prints the figures per operation type (JSON with the keys the issue
// names), exits 0 when every operation was answered, and refuses bad
// flags in one line.
func TestCLIBench(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, false)
	c.waitLeader(15*time.Second, 1, 2, 3)
	r := mustCLI(t, 0, "bench", "--cluster", c.addrs(), "--ops", "600", "--clients", "8", "--reads", "0.5", "--keys", "50", "--value-bytes", "64", "--json")
	var rep struct {
		Ops       *int64   `json:"ops"`
		OpsPerSec *float64 `json:"ops_per_sec"`
		P50       *float64 `json:"p50_us"`
		P99       *float64 `json:"p99_us"`
		P999      *float64 `json:"p999_us"`
		Errors    *int64   `json:"errors"`
		ByOp      map[string]struct {
			Ops    int64   `json:"ops"`
			P50    float64 `json:"p50_us"`
			P99    float64 `json:"p99_us"`
			P999   float64 `json:"p999_us"`
			Errors int64   `json:"errors"`
		} `json:"by_op"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bench --json: %v: %s", err, r)
	}
	if rep.Ops == nil || rep.OpsPerSec == nil || rep.P50 == nil || rep.P99 == nil || rep.P999 == nil || rep.Errors == nil {
		t.Fatalf("bench --json lacks a key: %s", r.stdout)
	}
	put, get := rep.ByOp["put"], rep.ByOp["get"]
	if *rep.Ops != 600 || put.Ops+get.Ops != 600 || put.Ops < 150 || get.Ops < 150 || *rep.Errors != 0 {
		t.Errorf("bench --ops 600 --reads 0.5: ops %d (put %d, get %d), errors %d: %s", *rep.Ops, put.Ops, get.Ops, *rep.Errors, r.stdout)
	}
	if !(0 < *rep.P50 && *rep.P50 <= *rep.P99 && *rep.P99 <= *rep.P999) || *rep.OpsPerSec <= 0 || put.P50 <= 0 || get.P50 <= 0 {
		t.Errorf("bench percentiles out of order or zero: %s", r.stdout)
	}
	t.Logf("bench: %.0f ops/s, p50 %.0f µs, p99 %.0f µs (put p50 %.0f, get p50 %.0f)", *rep.OpsPerSec, *rep.P50, *rep.P99, put.P50, get.P50)
	// The table, with no progress line when not on a terminal.
	r = mustCLI(t, 0, "bench", "--cluster", c.addrs(), "--duration", "1s", "--clients", "4")
	if !strings.Contains(r.stdout, "put") || !strings.Contains(r.stdout, "total") || r.stderr != "" {
		t.Errorf("bench --duration 1s: want a table with put and total rows, nothing on stderr: %s", r)
	}
	for _, bad := range [][]string{
		{"--clients", "0"}, {"--reads", "1.5"}, {"--duration", "1s", "--ops", "5"}, {"--value-bytes", "2000000"}, {"--duration", "-1s"},
	} {
		r := runCLI(t, append([]string{"bench", "--cluster", c.addrs()}, bad...)...)
		checkOneLineFailure(t, r)
		if !strings.Contains(r.stderr, bad[0]) {
			t.Errorf("bench %v: the error should name %s: %s", bad, bad[0], r)
		}
	}
}
