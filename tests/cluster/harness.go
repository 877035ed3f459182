// Package cluster holds ketch's in-process cluster tests: several nodes,
// each its own actor system with remote on loopback, in one test process.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
)

// Cluster is a set of nodes started by a test.
type Cluster struct {
	t     testing.TB
	Addrs map[uint64]string
	Nodes map[uint64]*node.Node
	dirs  map[uint64]string
	// joined: servers started with Join (added by a membership change),
	// not among the founding members.
	joined map[uint64]bool
	Chaos  bool
	// Tune adjusts each node's config before it starts.
	Tune func(*node.Config)
}

// FreePorts asks the OS for n free loopback addresses.
func FreePorts(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	var ls []net.Listener
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

// New starts n nodes and returns once all are running.
//
// Under the race detector it skips the test: protoactor's remote.Start
// writes gRPC's global logger (grpclog.SetLoggerV2) while the gRPC server
// goroutines of remotes already running read it, so several remotes in one
// process always race inside the dependencies. .ci/test runs this package
// again without -race; tests/process covers real processes under -race.
func New(t testing.TB, n int, chaos bool, tune func(*node.Config)) *Cluster {
	t.Helper()
	if raceDetector {
		t.Skip("several protoactor remotes in one process race inside gRPC's global logger (remote.Start calls grpclog.SetLoggerV2); run without -race")
	}
	c := &Cluster{t: t, Addrs: map[uint64]string{}, Nodes: map[uint64]*node.Node{}, dirs: map[uint64]string{}, joined: map[uint64]bool{}, Chaos: chaos, Tune: tune}
	for i, a := range FreePorts(t, n) {
		c.Addrs[uint64(i+1)] = a
		c.dirs[uint64(i+1)] = filepath.Join(t.TempDir(), fmt.Sprint(i+1))
	}
	for id := range c.Addrs {
		c.Start(id)
	}
	t.Cleanup(func() {
		for id := range c.Nodes {
			c.Stop(id)
		}
	})
	return c
}

// Config is node id's configuration.
func (c *Cluster) Config(id uint64) node.Config {
	peers := map[uint64]string{}
	for p, a := range c.Addrs {
		if p != id && !c.joined[p] {
			peers[p] = a
		}
	}
	if c.joined[id] {
		peers = nil
	}
	level := slog.LevelWarn
	if os.Getenv("KETCH_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	cfg := node.Config{
		ID: id, Listen: c.Addrs[id], Peers: peers, Join: c.joined[id], DataDir: c.dirs[id], Chaos: c.Chaos,
		ElectionTimeout: 150 * time.Millisecond, HeartbeatInterval: 30 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	if c.Tune != nil {
		c.Tune(&cfg)
	}
	return cfg
}

// Start starts (or restarts) node id on its data dir.
func (c *Cluster) Start(id uint64) {
	c.t.Helper()
	var err error
	for try := 0; try < 50; try++ { // the port may linger briefly after a stop
		var n *node.Node
		if n, err = node.Start(c.Config(id)); err == nil {
			c.Nodes[id] = n
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("start node %d: %v", id, err)
}

// Join starts a new server with the next free id, as `ketch node --join`
// would: it takes part once a membership change adds it. It returns the id.
func (c *Cluster) Join() uint64 {
	c.t.Helper()
	id := uint64(len(c.Addrs)) + 1
	c.Addrs[id] = FreePorts(c.t, 1)[0]
	c.dirs[id] = filepath.Join(c.t.TempDir(), fmt.Sprint(id))
	c.joined[id] = true
	c.Start(id)
	return id
}

// Stop stops node id.
func (c *Cluster) Stop(id uint64) {
	if n := c.Nodes[id]; n != nil {
		n.Stop()
		<-n.Done()
		delete(c.Nodes, id)
	}
}

// AddrList is every node's address.
func (c *Cluster) AddrList() []string {
	var l []string
	for id := uint64(1); id <= uint64(len(c.Addrs)); id++ {
		l = append(l, c.Addrs[id])
	}
	return l
}

// Client returns a client of the cluster, closed at the end of the test.
func (c *Cluster) Client() *client.Client {
	c.t.Helper()
	cl, err := client.New(client.Config{Cluster: c.AddrList(), AttemptTimeout: 500 * time.Millisecond})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	return cl
}

// Leader waits for a node that reports itself leader and returns its id.
func (c *Cluster) Leader(timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for id, n := range c.Nodes {
			if st := n.Status(); st.Role == "leader" {
				return id, nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("no leader within %v", timeout)
}

// WaitApplied waits until every running node applied at least index.
func (c *Cluster) WaitApplied(ctx context.Context, index uint64) error {
	for {
		all := true
		for _, n := range c.Nodes {
			if n.Status().Applied < index {
				all = false
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
