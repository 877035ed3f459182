package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
)

// ketchCluster is three ketch nodes, each its own actor system with remote
// on loopback and a bbolt file with fsync, in this process. Timeouts are
// the node defaults.
type ketchCluster struct {
	nodes  []*node.Node
	addrs  []string
	leader *node.Node
}

func startKetch(dir string, log *slog.Logger) (*ketchCluster, error) {
	return startKetchWith(dir, log, nil)
}

// startKetchWith is startKetch with tune adjusting each node's config.
func startKetchWith(dir string, log *slog.Logger, tune func(*node.Config)) (*ketchCluster, error) {
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	k := &ketchCluster{addrs: addrs}
	for i, addr := range addrs {
		id := uint64(i + 1)
		peers := map[uint64]string{}
		for j, a := range addrs {
			if j != i {
				peers[uint64(j+1)] = a
			}
		}
		cfg := node.Config{
			ID: id, Listen: addr, Peers: peers,
			DataDir: filepath.Join(dir, fmt.Sprint(id)),
			Logger:  log,
		}
		if tune != nil {
			tune(&cfg)
		}
		n, err := node.Start(cfg)
		if err != nil {
			k.Close()
			return nil, fmt.Errorf("node %d: %w", id, err)
		}
		k.nodes = append(k.nodes, n)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range k.nodes {
			if n.Status().Role == "leader" {
				k.leader = n
				return k, nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	k.Close()
	return nil, errors.New("ketch: no leader within 15s")
}

func (k *ketchCluster) Close() {
	for _, n := range k.nodes {
		n.Stop()
		<-n.Done()
	}
}

// ketchLocal proposes on the leader in-process, through node.Local.
type ketchLocal struct {
	*ketchCluster
	local *node.Local
}

func startKetchLocal(dir string, log *slog.Logger) (cluster, error) {
	return startKetchLocalWith(dir, log, nil)
}

// startKetchNoSnap is ketch with snapshots and log compaction off: the
// baseline the snapshot cost is measured against.
func startKetchNoSnap(dir string, log *slog.Logger) (cluster, error) {
	return startKetchLocalWith(dir, log, func(c *node.Config) { c.DisableSnapshots = true })
}

func startKetchLocalWith(dir string, log *slog.Logger, tune func(*node.Config)) (cluster, error) {
	k, err := startKetchWith(dir, log, tune)
	if err != nil {
		return nil, err
	}
	c := &ketchLocal{ketchCluster: k, local: k.leader.Local()}
	// The first write waits for the leader's no-op to commit.
	return c, warm(c)
}

func (c *ketchLocal) Put(ctx context.Context, key string, value []byte) error {
	_, err := c.local.Do(ctx, &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: key, Value: value}}})
	return err
}

func (c *ketchLocal) Close() {
	c.local.Close()
	c.ketchCluster.Close()
}

// ketchRemote goes through the Go client (actors/client) from a client
// actor system of its own, over loopback remote.
type ketchRemote struct {
	*ketchCluster
	cl *client.Client
}

func startKetchRemote(dir string, log *slog.Logger) (cluster, error) {
	k, err := startKetch(dir, log)
	if err != nil {
		return nil, err
	}
	// The leader first, so the client does not start with a redirect.
	addrs := []string{k.leader.Address()}
	for _, a := range k.addrs {
		if a != k.leader.Address() {
			addrs = append(addrs, a)
		}
	}
	cl, err := client.New(client.Config{Cluster: addrs, Logger: log})
	if err != nil {
		k.Close()
		return nil, err
	}
	c := &ketchRemote{ketchCluster: k, cl: cl}
	return c, warm(c)
}

func (c *ketchRemote) Put(ctx context.Context, key string, value []byte) error {
	return c.cl.Put(ctx, key, value)
}

func (c *ketchRemote) Close() {
	c.cl.Close()
	c.ketchCluster.Close()
}

// warm makes one write, retried for a while, so the cluster is serving
// when the clients start.
func warm(c cluster) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Put(ctx, "warm-up-key-0000", []byte("x"))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			c.Close()
			return fmt.Errorf("first write: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddrs asks the OS for n free loopback addresses.
func freeAddrs(n int) ([]string, error) {
	var addrs []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}
