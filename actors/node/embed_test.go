// Several protoactor remotes in one process race inside gRPC's global
// logger (remote.Start calls grpclog.SetLoggerV2), so these examples, which
// start a node and a client, run without -race only.

//go:build !race

package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/sender"
)

// A node started in the caller's actor system, under the caller's actor:
// its tree is app/raft/1/..., a client reaches its gateway there, and
// stopping the node leaves the caller's system and actor running.
func ExampleStartIn() {
	dir, _ := os.MkdirTemp("", "ketch-embed")
	defer os.RemoveAll(dir)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()

	system := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(nil, slog.LevelError)))
	defer system.Shutdown()
	started := make(chan *Node, 1)
	// The application's own actor starts the node as its child.
	app, _ := system.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			n, err := StartIn(ctx, Config{ID: 1, Listen: addr, DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				fmt.Println(err)
			}
			started <- n
		}
	}), "app")
	n := <-started
	if n == nil {
		return
	}
	<-n.Ready()
	fmt.Println("supervisor:", n.Names().Supervisor)

	c, _ := client.New(client.Config{Cluster: []string{addr}, Gateway: n.Names().Gateway, Logger: slog.New(slog.DiscardHandler)})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("put:", c.Put(ctx, "greeting", []byte("hello")))
	v, err := c.Get(ctx, "greeting")
	fmt.Printf("get: %s %v\n", v, err)

	n.Stop()
	_, err = system.Root.RequestFuture(app, "still there?", time.Second).Result()
	fmt.Println("the app actor outlives the node:", err != nil && strings.Contains(err.Error(), "timeout"))
	// Output:
	// supervisor: app/raft/1
	// put: <nil>
	// get: hello <nil>
	// the app actor outlives the node: true
}

// ExtraRoutes may not take over the node's own actors' routes.
func TestExtraRoutesCannotShadowTheNode(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	_, err := Start(Config{ID: 1, Listen: addr, DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		ExtraRoutes: map[string][]string{FSMID: {"ketch.v1.ClientRequest"}}})
	if err == nil || !strings.Contains(err.Error(), "ExtraRoutes") {
		t.Fatalf("Start: %v", err)
	}
}
