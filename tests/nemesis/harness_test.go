package nemesis

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/certs"
)

// port is every node's listen port, inside its own container.
const port = 7000

// cmdTimeout bounds one docker or iptables command.
const cmdTimeout = 90 * time.Second

// run runs name with args and returns its stdout; the error carries the
// command line and stderr.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func docker(args ...string) (string, error) { return run("docker", args...) }

// dockerAvailable reports whether a Docker engine answers, and if not why.
func dockerAvailable() (bool, string) {
	if _, err := exec.LookPath("docker"); err != nil {
		return false, "no docker command in PATH"
	}
	out, err := docker("version", "--format", "{{.Server.Version}}")
	if err != nil {
		return false, err.Error()
	}
	return strings.TrimSpace(out) != "", "empty server version"
}

// iptablesAvailable reports whether we can add rules to DOCKER-USER.
func iptablesAvailable() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not root"
	}
	if _, err := run("iptables", "-S", "DOCKER-USER"); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// runPrefix is a unique name for everything one run creates.
func runPrefix() string {
	var b [4]byte
	_, _ = crand.Read(b[:])
	return "ketch-nemesis-" + hex.EncodeToString(b[:])
}

// node is one container.
type node struct {
	id   uint64
	name string // container name
	ip   string
	dir  string // host directory bind-mounted at /data
}

func (n *node) addr() string { return fmt.Sprintf("%s:%d", n.ip, port) }

// cluster is a set of ketch nodes in containers on a private network.
type cluster struct {
	t       *testing.T
	prefix  string
	image   string
	network string
	gateway string // the host's address on the network
	nodes   []*node
	ipt     bool // iptables usable
	// The member nemesis replaces nodes: retired holds the ones it removed
	// (stopped, kept for their logs and cleanup), net the network's /24
	// and data the host directory of the data dirs, for the new ones.
	retired []*node
	net     string
	data    string
	nextID  uint64
	// certs, with -tls, is the directory of the run's CA and certificates
	// (every node's names its container's address); "" without.
	certs string

	mu     sync.Mutex
	killed map[uint64]bool // nodes the nemesis killed and has not restarted
	// exits records the nodes found stopped that the nemesis had not
	// killed: fail-stops (exit 3, by design) and anything else (a bug).
	exits []exit
}

type exit struct {
	id   uint64
	code int
}

// noteExits records the nodes of ns that stopped on their own.
func (c *cluster) noteExits(ns []*node) {
	for _, n := range ns {
		st, code, err := c.state(n)
		if err != nil || st == "running" || st == "paused" {
			continue
		}
		c.mu.Lock()
		if !c.killed[n.id] {
			c.exits = append(c.exits, exit{n.id, code})
		}
		c.mu.Unlock()
	}
}

// buildImage builds the static binary and an image FROM scratch around it.
func buildImage(t *testing.T, prefix string) string {
	t.Helper()
	dir := t.TempDir()
	goTool, err := exec.LookPath("go")
	if err != nil && *flagKetchBin == "" {
		t.Fatalf("cannot find the go tool: %v", err)
	}
	start := time.Now()
	if *flagKetchBin != "" {
		b, err := os.ReadFile(*flagKetchBin)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "ketch"), b, 0o755)
		}
		if err != nil {
			t.Fatalf("-ketch-bin: %v", err)
		}
	} else {
		cmd := exec.Command(goTool, "build", "-trimpath", "-o", filepath.Join(dir, "ketch"), "github.com/ketch-raft/ketch/cmd/ketch")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/ketch: %v\n%s", err, out)
		}
	}
	df := "FROM scratch\nCOPY ketch /ketch\nENTRYPOINT [\"/ketch\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	image := prefix + ":test"
	t.Cleanup(func() {
		if _, err := docker("rmi", "-f", image); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	if _, err := docker("build", "-q", "-t", image, dir); err != nil {
		t.Fatalf("docker build: %v", err)
	}
	t.Logf("built %s (static binary FROM scratch) in %v", image, time.Since(start).Round(time.Millisecond))
	return image
}

// createNetwork creates a bridge network on a random private /24 (retrying
// when the subnet overlaps one in use) and returns its name and the prefix
// of its addresses ("10.X.Y").
func createNetwork(t *testing.T, prefix string) (name, net string) {
	t.Helper()
	name = prefix + "-net"
	var last error
	for range 20 {
		net = fmt.Sprintf("10.%d.%d", 100+rand.IntN(150), rand.IntN(256))
		_, err := docker("network", "create", "--driver", "bridge", "--subnet", net+".0/24", "--gateway", net+".1", name)
		if err == nil {
			t.Cleanup(func() {
				if _, err := docker("network", "rm", name); err != nil {
					t.Logf("cleanup: %v", err)
				}
			})
			return name, net
		}
		last = err
		if !strings.Contains(err.Error(), "overlap") {
			break
		}
	}
	t.Fatalf("docker network create: %v", last)
	return "", ""
}

// newCluster starts n nodes, each in its own container.
func newCluster(t *testing.T, n int, ipt bool) *cluster {
	t.Helper()
	prefix := runPrefix()
	t.Logf("run prefix %s", prefix)
	c := &cluster{t: t, prefix: prefix, ipt: ipt, killed: map[uint64]bool{}}
	data := t.TempDir() // removed after the containers (cleanups run last-in first-out)
	c.image = buildImage(t, prefix)
	var net string
	c.network, net = createNetwork(t, prefix)
	c.gateway = net + ".1"
	c.net, c.data, c.nextID = net, data, uint64(n)+1
	if *flagTLS {
		c.certs = filepath.Join(data, "certs")
		if err := certs.InitCA(c.certs); err != nil {
			t.Fatal(err)
		}
		if err := certs.NewClientCert(c.certs, "nemesis"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= n; i++ {
		nd := &node{id: uint64(i), name: fmt.Sprintf("%s-n%d", prefix, i), ip: fmt.Sprintf("%s.%d", net, 10+i),
			dir: filepath.Join(data, fmt.Sprintf("n%d", i))}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, nd)
	}
	t.Cleanup(c.removeContainers)
	if ipt {
		t.Cleanup(c.healNetwork)
	}
	for _, nd := range c.nodes {
		var peers []string
		for _, o := range c.nodes {
			if o != nd {
				peers = append(peers, fmt.Sprintf("%d=%s", o.id, o.addr()))
			}
		}
		err := c.create(nd, "--peers", strings.Join(peers, ","))
		if err != nil {
			t.Fatalf("create node %d: %v", nd.id, err)
		}
	}
	if _, err := docker(append([]string{"start"}, c.names(c.nodes)...)...); err != nil {
		t.Fatalf("start nodes: %v", err)
	}
	return c
}

// create creates a node's container; extra are its membership flags
// (--peers for a founding member, --join for a server added later).
func (c *cluster) create(nd *node, extra ...string) error {
	args := []string{"create", "--name", nd.name, "--network", c.network, "--ip", nd.ip,
		"-v", nd.dir + ":/data", c.image,
		"node", "--id", fmt.Sprint(nd.id), "--listen", nd.addr()}
	args = append(args, extra...)
	if c.certs != "" {
		tlsArgs, err := c.nodeTLS(nd)
		if err != nil {
			return err
		}
		args = append(args, tlsArgs...)
	}
	args = append(args, "--data", "/data", "--chaos",
		"--snapshot-entries", fmt.Sprint(*flagSnapEvery), "--snapshot-trailing", fmt.Sprint(*flagSnapTrail),
		"--snapshot-chunk-bytes", "16384")
	_, err := docker(args...)
	return err
}

// nodeTLS issues nd's certificate (naming its address), copies it with the
// CA into its data dir (mounted at /data) and returns the --tls flags.
func (c *cluster) nodeTLS(nd *node) ([]string, error) {
	if err := certs.NewNodeCert(c.certs, "ketch", nd.id, []string{nd.ip}); err != nil {
		return nil, err
	}
	dst := filepath.Join(nd.dir, "tls")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return nil, err
	}
	crt, key := certs.NodePaths(c.certs, nd.id)
	for from, to := range map[string]string{filepath.Join(c.certs, "ca.crt"): "ca.crt", crt: "node.crt", key: "node.key"} {
		b, err := os.ReadFile(from)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dst, to), b, 0o600); err != nil {
			return nil, err
		}
	}
	return []string{"--tls-ca", "/data/tls/ca.crt", "--tls-cert", "/data/tls/node.crt", "--tls-key", "/data/tls/node.key"}, nil
}

// clientTLS is the workload client's TLS (none without -tls).
func (c *cluster) clientTLS() certs.Files {
	if c.certs == "" {
		return certs.Files{}
	}
	crt, key := certs.ClientPaths(c.certs, "nemesis")
	return certs.Files{CA: filepath.Join(c.certs, "ca.crt"), Cert: crt, Key: key}
}

// join creates and starts a new server with the next id, started with
// --join: it takes part once a membership change adds it.
func (c *cluster) join() (*node, error) {
	id := c.nextID
	c.nextID++
	if id > 200 {
		return nil, fmt.Errorf("out of addresses for new servers (id %d)", id)
	}
	nd := &node{id: id, name: fmt.Sprintf("%s-n%d", c.prefix, id), ip: fmt.Sprintf("%s.%d", c.net, 10+id),
		dir: filepath.Join(c.data, fmt.Sprintf("n%d", id))}
	if err := os.MkdirAll(nd.dir, 0o755); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.retired = append(c.retired, nd) // removed with the others at cleanup, until it is a member
	c.mu.Unlock()
	if err := c.create(nd, "--join"); err != nil {
		return nil, err
	}
	_, err := docker("start", nd.name)
	return nd, err
}

// all is every node ever started: the members and the retired.
func (c *cluster) all() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Concat(c.nodes, c.retired)
}

func (c *cluster) names(ns []*node) []string {
	var s []string
	for _, n := range ns {
		s = append(s, n.name)
	}
	return s
}

func (c *cluster) addrs() []string {
	var s []string
	for _, n := range c.nodes {
		s = append(s, n.addr())
	}
	return s
}

func (c *cluster) removeContainers() {
	for _, n := range c.all() {
		if _, err := docker("rm", "-f", "-v", n.name); err != nil && !strings.Contains(err.Error(), "No such container") {
			c.t.Logf("cleanup: %v", err)
		}
	}
}

// kill sends SIGKILL to the nodes and waits until their containers stopped.
// Nodes that are not running (a node that fail-stopped stays down until
// something starts it) are left alone.
func (c *cluster) kill(ns ...*node) error {
	ns = slices.DeleteFunc(slices.Clone(ns), func(n *node) bool {
		st, _, err := c.state(n)
		return err == nil && st != "running" && st != "paused"
	})
	if len(ns) == 0 {
		return nil
	}
	if _, err := docker(append([]string{"kill", "-s", "KILL"}, c.names(ns)...)...); err != nil {
		return err
	}
	c.mu.Lock()
	for _, n := range ns {
		c.killed[n.id] = true
	}
	c.mu.Unlock()
	_, err := docker(append([]string{"wait"}, c.names(ns)...)...)
	return err
}

// start starts the nodes' stopped containers, noting first which of them
// had stopped on their own.
func (c *cluster) start(ns ...*node) error {
	c.noteExits(ns)
	if _, err := docker(append([]string{"start"}, c.names(ns)...)...); err != nil {
		return err
	}
	c.mu.Lock()
	for _, n := range ns {
		delete(c.killed, n.id)
	}
	c.mu.Unlock()
	return nil
}

// state returns a container's status ("running", "paused", "exited") and
// exit code.
func (c *cluster) state(n *node) (string, int, error) {
	out, err := docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", n.name)
	if err != nil {
		return "", 0, err
	}
	var st string
	var code int
	if _, err := fmt.Sscan(out, &st, &code); err != nil {
		return "", 0, fmt.Errorf("docker inspect %s: %q: %v", n.name, out, err)
	}
	return st, code, nil
}

// ------------------------------------------------------------- iptables

// drop adds a DROP rule to DOCKER-USER for packets from src to dst
// (optionally only TCP to port dport), commented with the run prefix.
func (c *cluster) drop(src, dst *node, dport int) error {
	spec := []string{"-I", "DOCKER-USER", "-s", src.ip + "/32", "-d", dst.ip + "/32"}
	if dport > 0 {
		spec = append(spec, "-p", "tcp", "--dport", fmt.Sprint(dport))
	}
	spec = append(spec, "-m", "comment", "--comment", c.prefix, "-j", "DROP")
	_, err := run("iptables", spec...)
	return err
}

// cut drops every packet between each node of a and each node of b, both
// directions.
func (c *cluster) cut(a, b []*node) error {
	for _, x := range a {
		for _, y := range b {
			if err := c.drop(x, y, 0); err != nil {
				return err
			}
			if err := c.drop(y, x, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// healNetwork deletes every DOCKER-USER rule carrying the run prefix.
func (c *cluster) healNetwork() {
	out, err := run("iptables", "-S", "DOCKER-USER")
	if err != nil {
		c.t.Logf("heal network: %v", err)
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || !strings.Contains(line, c.prefix) {
			continue
		}
		f[0] = "-D"
		for i := range f {
			f[i] = strings.Trim(f[i], `"`)
		}
		if _, err := run("iptables", f...); err != nil {
			c.t.Logf("heal network: %v", err)
		}
	}
}

// rulesLeft counts the run's rules still in DOCKER-USER.
func (c *cluster) rulesLeft() (int, error) {
	out, err := run("iptables", "-S", "DOCKER-USER")
	if err != nil {
		return 0, err
	}
	return strings.Count(out, c.prefix), nil
}

// logs returns a container's docker logs (stdout and stderr).
func (c *cluster) logs(n *node) string {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "logs", "-t", n.name).CombinedOutput()
	if err != nil {
		return string(out) + "\n" + err.Error()
	}
	return string(out)
}

var errNoLeader = errors.New("no leader")
