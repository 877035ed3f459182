// Several protoactor remotes in one process race inside gRPC's global
// logger (remote.Start calls grpclog.SetLoggerV2), so these examples, which
// start a node and a client, run without -race only.

//go:build !race

package counter_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/examples/counter"
)

// A one-node cluster running the counter state machine, and the service's
// client: each Add is a command in the log, answered with the counter's new
// value and the index it was applied at; Get is a linearizable query.
func Example() {
	dir, _ := os.MkdirTemp("", "counter-example")
	defer os.RemoveAll(dir)
	addr := freeAddr()
	n, err := node.Start(node.Config{
		ID: 1, Listen: addr, DataDir: dir,
		StateMachine: counter.New, // instead of the key-value store
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer n.Stop()

	c, err := counter.NewClient(client.Config{Cluster: []string{addr}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, d := range []int64{5, -2, 40} {
		v, index, err := c.Add(ctx, "visits", d)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("add %d: visits=%d (applied at a log index: %v)\n", d, v, index > 0)
	}
	v, err := c.Get(ctx, "visits")
	fmt.Println("get:", v, err)
	_, _, err = c.Add(ctx, "", 1)
	fmt.Println(err)
	// Output:
	// add 5: visits=5 (applied at a log index: true)
	// add -2: visits=3 (applied at a log index: true)
	// add 40: visits=43 (applied at a log index: true)
	// get: 43 <nil>
	// counter: the counter's name is empty
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
