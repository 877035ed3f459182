package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	failoverRuns = flag.Int("failover-runs", 1, "how many kill-the-leader/restart cycles TestRealCluster measures")
	keepLogs     = flag.String("keep-logs", "", "write the node and client logs under this directory (kept) instead of a temporary one")
)

// ------------------------------------------------------------ the binary

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "client":
		os.Exit(clientChildMain())
	case "kv":
		os.Exit(kvChildMain())
	}
	flag.Parse()
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// ketchBin builds cmd/ketch once per test run (without -race: the race
// detector covers the test process only) and returns the binary's path.
func ketchBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ketch-process-test-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "ketch")
		goTool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
		if err != nil {
			buildErr = fmt.Errorf("cannot find the go tool: %w", err)
			return
		}
		start := time.Now()
		cmd := exec.Command(goTool, "build", "-o", buildBin, "github.com/ketch-raft/ketch/cmd/ketch")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ketch: %v\n%s", err, out)
			return
		}
		t.Logf("built %s in %v", buildBin, time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// cliEnv is the environment of every process the tests start: the test's
// own without $KETCH_CLUSTER, $KETCH_CLUSTER_ID and $KETCH_TIMEOUT (the
// client commands read them as defaults; the TLS variables are the tests'
// own, set with t.Setenv), plus extra.
func cliEnv(extra ...string) []string {
	return append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return name == "KETCH_CLUSTER" || name == "KETCH_CLUSTER_ID" || name == "KETCH_TIMEOUT"
	}), extra...)
}

// ------------------------------------------------------------------ CLI

// cliResult is one finished run of the binary.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int // -1 if killed by a signal (e.g. the guard timeout)
	took           time.Duration
}

func (r cliResult) String() string {
	return fmt.Sprintf("ketch %s: exit %d after %v\nstdout: %s\nstderr: %s",
		strings.Join(r.args, " "), r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// cliGuard bounds every CLI run, so a hung client fails the test instead
// of hanging it.
const cliGuard = 30 * time.Second

// runCLI runs the binary with args and returns what it did. It fails the
// test only if the binary could not be started at all.
func runCLI(t testing.TB, args ...string) cliResult {
	t.Helper()
	r, err := execCLI(ketchBin(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// execCLI is runCLI for goroutines other than the test's: it returns an
// error instead of failing the test.
func execCLI(bin string, args ...string) (cliResult, error) {
	return execCLIEnv(bin, nil, args...)
}

// execCLIEnv is execCLI with extra environment variables (KEY=VALUE).
func execCLIEnv(bin string, env []string, args ...string) (cliResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliGuard)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cliEnv(env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	setProcAttr(cmd)
	start := time.Now()
	err := cmd.Run()
	r := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	default:
		return r, fmt.Errorf("ketch %s: %v", strings.Join(args, " "), err)
	}
	return r, nil
}

// checkOneLineFailure asserts the CLI's failure contract: exit 2, exactly
// one line on stderr starting "ketch: ", no panic or stack trace.
func checkOneLineFailure(t testing.TB, r cliResult) {
	t.Helper()
	if r.code != 2 {
		t.Errorf("want exit 2, got %s", r)
		return
	}
	checkNoPanic(t, r)
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "ketch: ") {
		t.Errorf("want one line \"ketch: ...\" on stderr, got %d line(s): %s", len(lines), r)
	}
}

func checkNoPanic(t testing.TB, r cliResult) {
	t.Helper()
	for _, bad := range []string{"panic:", "goroutine ", "runtime error"} {
		if strings.Contains(r.stderr, bad) || strings.Contains(r.stdout, bad) {
			t.Errorf("output contains %q: %s", bad, r)
		}
	}
}

// ------------------------------------------------------------- status

// nodeStatus is one element of `ketch status --json`.
type nodeStatus struct {
	ID        uint64                 `json:"id"`
	Role      string                 `json:"role"`
	Term      uint64                 `json:"term"`
	Leader    uint64                 `json:"leader"`
	LastIndex uint64                 `json:"last_index"`
	Commit    uint64                 `json:"commit"`
	Applied   uint64                 `json:"applied"`
	Children  map[string]childStatus `json:"children"`
	Address   string                 `json:"address"`
	Error     string                 `json:"error"`
	// Refused input (issue 11).
	RejectedPeer   uint64 `json:"rejected_peer_messages"`
	RejectedClient uint64 `json:"rejected_client_requests"`
	RejectedWire   uint64 `json:"rejected_wire_messages"`
	Busy           uint64 `json:"busy_refusals"`
}

type childStatus struct {
	Restarts  uint64 `json:"restarts"`
	LastCrash string `json:"last_crash"`
}

// statusKeys are the keys `status --json` promises for every node.
var statusKeys = []string{"id", "role", "term", "leader", "last_index", "commit", "applied", "children"}

// parseStatus parses `status --json` output and checks its shape: an array
// of want objects, each with every key of statusKeys, children an object
// of {restarts, last_crash}.
func parseStatus(out string, want int) ([]nodeStatus, error) {
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("status --json is not a JSON array of objects: %v\n%s", err, out)
	}
	if len(raw) != want {
		return nil, fmt.Errorf("status --json has %d objects, want %d:\n%s", len(raw), want, out)
	}
	for i, o := range raw {
		for _, k := range statusKeys {
			if _, ok := o[k]; !ok {
				return nil, fmt.Errorf("status --json object %d lacks key %q:\n%s", i, k, out)
			}
		}
		var kids map[string]map[string]json.RawMessage
		if err := json.Unmarshal(o["children"], &kids); err != nil {
			return nil, fmt.Errorf("status --json object %d: children is not an object of objects: %v", i, err)
		}
		for name, c := range kids {
			for _, k := range []string{"restarts", "last_crash"} {
				if _, ok := c[k]; !ok {
					return nil, fmt.Errorf("status --json object %d: child %q lacks key %q", i, name, k)
				}
			}
		}
	}
	var sts []nodeStatus
	if err := json.Unmarshal([]byte(out), &sts); err != nil {
		return nil, fmt.Errorf("status --json: %v", err)
	}
	return sts, nil
}

// leaders returns the nodes that report role leader.
func leaders(sts []nodeStatus) []nodeStatus {
	var l []nodeStatus
	for _, s := range sts {
		if s.Role == "leader" {
			l = append(l, s)
		}
	}
	return l
}

func byID(sts []nodeStatus, id uint64) (nodeStatus, bool) {
	for _, s := range sts {
		if s.ID == id {
			return s, true
		}
	}
	return nodeStatus{}, false
}

func byAddr(sts []nodeStatus, addr string) (nodeStatus, bool) {
	for _, s := range sts {
		if s.Address == addr {
			return s, true
		}
	}
	return nodeStatus{}, false
}

// ---------------------------------------------------------- polling

// poll calls cond until it reports true or timeout passes, pausing tick
// between calls; on timeout it fails the test with what cond last said.
func poll(t testing.TB, timeout, tick time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var last string
	for {
		ok, why := cond()
		if ok {
			return time.Since(start)
		}
		last = why
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
		}
		time.Sleep(tick) // a polling tick, not a wait for the condition
	}
}

// ------------------------------------------------------------- ports

// freeAddrs asks the OS for n free loopback addresses. They are closed
// before use, so another process could take one in between; that is the
// usual, accepted race.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var ls []net.Listener
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return addrs
}

// ------------------------------------------------------- node processes

// nodeProc is one node: its fixed identity (id, address, data dir) and
// its current process, if any.
type nodeProc struct {
	id    uint64
	addr  string
	dir   string
	chaos bool
	// join: a server added later (`ketch node --join`, no --peers); it
	// is in no other node's --peers either (see addJoiner).
	join bool
	logs []string // one log file per incarnation

	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error         // cmd.Wait's result, valid after done
}

func (p *nodeProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// cluster is a set of `ketch node` processes started by one test.
type cluster struct {
	t     testing.TB
	bin   string
	nodes map[uint64]*nodeProc
	ids   []uint64
	logs  string
	// edit, if set, adjusts every node's command line at every start.
	edit func([]string) []string
}

// newCluster starts n nodes (ids 1..n) on free loopback ports and kills
// them all when the test ends; on failure it prints every node's log path
// and tail.
func newCluster(t testing.TB, n int, chaos bool) *cluster {
	t.Helper()
	return newClusterEdit(t, n, chaos, nil)
}

// newClusterWith is newCluster (without --chaos) whose nodes' command lines
// edit adjusts at every start.
func newClusterWith(t testing.TB, n int, edit func([]string) []string) *cluster {
	t.Helper()
	return newClusterEdit(t, n, false, edit)
}

func newClusterEdit(t testing.TB, n int, chaos bool, edit func([]string) []string) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: ketchBin(t), nodes: map[uint64]*nodeProc{}, logs: t.TempDir(), edit: edit}
	if *keepLogs != "" {
		c.logs = filepath.Join(*keepLogs, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(c.logs, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("logs in %s", c.logs)
	}
	for i, a := range freeAddrs(t, n) {
		id := uint64(i + 1)
		c.ids = append(c.ids, id)
		c.nodes[id] = &nodeProc{id: id, addr: a, dir: filepath.Join(t.TempDir(), fmt.Sprintf("node%d", id)), chaos: chaos}
	}
	t.Cleanup(c.cleanup)
	for _, id := range c.ids {
		c.start(id)
	}
	return c
}

// addJoiner adds node id, a server that joins the running cluster
// (`ketch node --join`), on addr (a free address), without starting it.
// The founding members' command lines do not list it.
func (c *cluster) addJoiner(id uint64, addr string) *nodeProc {
	c.t.Helper()
	if _, dup := c.nodes[id]; dup {
		c.t.Fatalf("node %d exists already", id)
	}
	p := &nodeProc{id: id, addr: addr, dir: filepath.Join(c.t.TempDir(), fmt.Sprintf("node%d", id)), join: true}
	c.nodes[id] = p
	c.ids = append(c.ids, id)
	return p
}

// addrs is the --cluster value: every node, in id order.
func (c *cluster) addrs() string {
	var l []string
	for _, id := range c.ids {
		l = append(l, c.nodes[id].addr)
	}
	return strings.Join(l, ",")
}

func (c *cluster) addrList() []string { return strings.Split(c.addrs(), ",") }

// start starts (or restarts) node id with its fixed id, address and data
// dir; its stderr goes to a fresh log file.
func (c *cluster) start(id uint64) { c.t.Helper(); c.startWith(id, nil) }

// nodeArgs is the command line that starts node id: `ketch node` with its
// id, address, peers and data dir.
func (c *cluster) nodeArgs(id uint64) []string {
	p := c.nodes[id]
	var peers []string
	for _, o := range c.ids {
		if o != id && !c.nodes[o].join {
			peers = append(peers, fmt.Sprintf("%d=%s", o, c.nodes[o].addr))
		}
	}
	level := "info"
	if l := os.Getenv("KETCH_TEST_LOG"); l != "" {
		level = l
	}
	args := []string{"node", "--id", fmt.Sprint(id), "--listen", p.addr, "--peers", strings.Join(peers, ","),
		"--data", p.dir, "--log-level", level}
	if p.join {
		args = []string{"node", "--id", fmt.Sprint(id), "--listen", p.addr, "--join", "--data", p.dir, "--log-level", level}
	}
	if p.chaos {
		args = append(args, "--chaos")
	}
	return args
}

// withFlag returns args with flag's value replaced by value, or the flag
// and its value removed when value is "".
func withFlag(args []string, flag, value string) []string {
	out := slices.Clone(args)
	for i := 0; i < len(out)-1; i++ {
		if out[i] == flag {
			if value == "" {
				return append(out[:i], out[i+2:]...)
			}
			out[i+1] = value
			return out
		}
	}
	if value != "" {
		out = append(out, flag, value)
	}
	return out
}

// startWith is start with the command line edit makes of nodeArgs (nil:
// as it is).
func (c *cluster) startWith(id uint64, edit func([]string) []string) {
	c.t.Helper()
	p := c.nodes[id]
	if p.running() {
		c.t.Fatalf("node %d is already running", id)
	}
	args := c.nodeArgs(id)
	if c.edit != nil {
		args = c.edit(args)
	}
	if edit != nil {
		args = edit(args)
	}
	logPath := filepath.Join(c.logs, fmt.Sprintf("node%d.%d.log", id, len(p.logs)))
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Env = cliEnv()
	cmd.Stdout, cmd.Stderr = f, f
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		c.t.Fatalf("start node %d: %v", id, err)
	}
	p.logs = append(p.logs, logPath)
	p.cmd, p.done, p.waitErr = cmd, make(chan struct{}), nil
	done := p.done
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		p.waitErr = err
		close(done)
	}()
}

// kill sends SIGKILL to node id and returns at once, without waiting for
// the process to be reaped (the measurement starts at the signal).
func (c *cluster) kill(id uint64) {
	c.t.Helper()
	p := c.nodes[id]
	if !p.running() {
		c.t.Fatalf("node %d is not running", id)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		c.t.Fatalf("kill -9 node %d: %v", id, err)
	}
}

// reap waits until node id's process has exited.
func (c *cluster) reap(id uint64) {
	c.t.Helper()
	p := c.nodes[id]
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("node %d did not exit within 10s of SIGKILL", id)
	}
}

func (c *cluster) cleanup() {
	for _, id := range c.ids {
		p := c.nodes[id]
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	if !c.t.Failed() {
		return
	}
	for _, id := range c.ids {
		p := c.nodes[id]
		for _, l := range p.logs {
			c.t.Logf("node %d log %s (last 40 lines, without protoactor's %q lines, one per finished CLI client):\n%s",
				id, l, endpointNoise, tail(l, 40, endpointNoise))
		}
		if p.cmd != nil {
			c.t.Logf("node %d last exit: %v", id, p.waitErr)
		}
	}
}

// endpointNoise is the message protoactor logs at Error on a node each
// time a client (every CLI run is one) disconnects.
const endpointNoise = "EndpointWriter lost connection"

// tail returns the last n lines of the file at path, without the lines
// that contain any of skip.
func tail(path string, n int, skip ...string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := slices.DeleteFunc(strings.Split(strings.TrimRight(string(b), "\n"), "\n"), func(l string) bool {
		return slices.ContainsFunc(skip, func(s string) bool { return strings.Contains(l, s) })
	})
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkAlive fails the test if a node that should run has exited.
func (c *cluster) checkAlive() {
	c.t.Helper()
	for _, id := range c.ids {
		p := c.nodes[id]
		if p.cmd != nil && !p.running() && !p.killed() {
			c.t.Fatalf("node %d exited unexpectedly: %v", id, p.waitErr)
		}
	}
}

// killed reports whether the process's exit was our SIGKILL.
func (p *nodeProc) killed() bool {
	var exitErr *exec.ExitError
	return errors.As(p.waitErr, &exitErr) && exitErr.ExitCode() == -1
}

// status runs `ketch status --json` against every node and returns the
// parsed array (len == number of nodes); unreachable nodes carry Role
// "unreachable" and an Error. It fails the test if the output breaks the
// contract.
func (c *cluster) status(timeout time.Duration) []nodeStatus {
	c.t.Helper()
	r := runCLI(c.t, "status", "--cluster", c.addrs(), "--json", "--timeout", timeout.String())
	checkNoPanic(c.t, r)
	if r.code != 0 && r.code != 2 {
		c.t.Fatalf("status: %s", r)
	}
	sts, err := parseStatus(r.stdout, len(c.ids))
	if err != nil {
		c.t.Fatalf("%v\n%s", err, r)
	}
	return sts
}

// waitLeader polls status until every listed node answers and exactly one
// of them is leader in a term all agree on, and returns the statuses.
func (c *cluster) waitLeader(timeout time.Duration, up ...uint64) []nodeStatus {
	c.t.Helper()
	var sts []nodeStatus
	poll(c.t, timeout, 20*time.Millisecond, "a leader known to every live node", func() (bool, string) {
		c.checkAlive()
		sts = c.status(500 * time.Millisecond)
		l := leaders(sts)
		if len(l) != 1 {
			return false, fmt.Sprintf("%d leaders: %+v", len(l), sts)
		}
		for _, id := range up {
			s, ok := byID(sts, id)
			if !ok || s.Error != "" || s.Leader != l[0].ID || s.Term != l[0].Term {
				return false, fmt.Sprintf("node %d does not follow %d in term %d: %+v", id, l[0].ID, l[0].Term, sts)
			}
		}
		return true, ""
	})
	return sts
}

// ------------------------------------------------------------- figures

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
