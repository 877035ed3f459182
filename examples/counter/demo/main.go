// Command demo runs the counter service on a 3-node ketch cluster in one
// process, each node embedded in an application's own actor system under
// the application's own actor (node.StartIn), as an OTP application embeds
// ra. It adds to a counter from many goroutines, stops the leader, goes on
// with the two others, and shows every replica agreeing.
//
//	go run ./examples/counter/demo
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/examples/counter"
	"github.com/ketch-raft/ketch/sender"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// host is one application process: its actor system, its own "app"
// actor, and the ketch node the app runs under it.
type host struct {
	system *actor.ActorSystem
	node   *node.Node
	once   sync.Once
}

// app is the application's top actor. When it starts, it starts its ketch
// node as its child: the node's supervisor is app/raft/1.
type app struct {
	cfg     node.Config
	started chan<- *node.Node
	failed  chan<- error
}

func (a *app) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Started); ok {
		n, err := node.StartIn(ctx, a.cfg)
		if err != nil {
			a.failed <- err
			return
		}
		a.started <- n
	}
}

func startHost(cfg node.Config) (*host, error) {
	// Quiet protoactor's own logging (the node's goes to cfg.Logger).
	system := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(cfg.Logger, slog.LevelError)))
	started, failed := make(chan *node.Node, 1), make(chan error, 1)
	if _, err := system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &app{cfg: cfg, started: started, failed: failed}
	}), "app"); err != nil {
		return nil, err
	}
	select {
	case n := <-started:
		select {
		case <-n.Ready():
		case <-time.After(10 * time.Second):
			return nil, errors.New("the node did not start")
		}
		return &host{system: system, node: n}, nil
	case err := <-failed:
		system.Shutdown()
		return nil, err
	}
}

func (h *host) stop() {
	h.once.Do(func() {
		h.node.Stop()
		h.system.Shutdown()
	})
}

func run() error {
	dir, err := os.MkdirTemp("", "ketch-counter-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	addrs := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		if addrs[id], err = freeAddr(); err != nil {
			return err
		}
	}
	hosts := map[uint64]*host{}
	for id := uint64(1); id <= 3; id++ {
		peers := map[uint64]string{}
		for p, a := range addrs {
			if p != id {
				peers[p] = a
			}
		}
		h, err := startHost(node.Config{
			ID: id, Listen: addrs[id], Peers: peers,
			DataDir:      fmt.Sprintf("%s/node%d", dir, id),
			StateMachine: counter.New,
			Logger:       quiet,
		})
		if err != nil {
			return fmt.Errorf("node %d: %w", id, err)
		}
		defer h.stop()
		hosts[id] = h
		fmt.Printf("node %d listens on %s, supervisor %s\n", id, addrs[id], h.node.Names().Supervisor)
	}

	c, err := counter.NewClient(client.Config{
		Cluster: []string{addrs[1], addrs[2], addrs[3]},
		Gateway: hosts[1].node.Names().Gateway, // app/raft/1/gateway
		Logger:  quiet,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	addMany := func(workers, each int) error {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if _, _, err := c.Add(ctx, "visits", 1); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	if err := addMany(8, 25); err != nil {
		return err
	}
	v, err := c.Get(ctx, "visits")
	if err != nil {
		return err
	}
	fmt.Printf("8 goroutines added 25 each: visits = %d\n", v)

	leader := uint64(0)
	for id, h := range hosts {
		if h.node.Status().Role == "leader" {
			leader = id
		}
	}
	fmt.Printf("stopping the leader, node %d\n", leader)
	hosts[leader].stop()
	delete(hosts, leader)

	if err := addMany(4, 25); err != nil {
		return err
	}
	v, index, err := c.Add(ctx, "visits", 0)
	if err != nil {
		return err
	}
	fmt.Printf("after 100 more on two nodes: visits = %d (log index %d)\n", v, index)
	deadline := time.Now().Add(5 * time.Second)
	for id, h := range hosts {
		for h.node.Status().Applied < index && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Printf("node %d has applied through index %d\n", id, h.node.Status().Applied)
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
