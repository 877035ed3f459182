package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/actors/web"
)

const demoHelp = `commands:
  put KEY VALUE        write through the leader
  get KEY              linearizable read (ReadIndex: no log write)
  delete KEY
  cas KEY OLD NEW      compare-and-swap ("-" as OLD means "must not exist")
  status               every node's role, term, indexes and children
  crash ID ACTOR       make node ID's ACTOR (store|state|fsm|sender) panic
  transfer [ID]        hand leadership to node ID (default: the most up-to-date)
  stop ID              stop node ID (as if its machine died)
  start ID             start node ID again from its data dir
  help, quit
`

// demo is a local 3-node cluster in one process, for watching Raft work.
type demo struct {
	addrs map[uint64]string
	dirs  map[uint64]string
	nodes map[uint64]*node.Node
	cl    *client.Client
	out   io.Writer
	log   *slog.Logger
}

func cmdDemo(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("demo", stderr)
	data := fs.String("data", "", "data directory for the three nodes (default: a new temporary one)")
	logLevel := fs.String("log-level", "warn", "node log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return exitFailure
	}
	level, err := parseLevel(*logLevel)
	if err != nil {
		return fail(stderr, "demo: --log-level %q: use debug, info, warn or error", *logLevel)
	}
	dir := *data
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ketch-demo-"); err != nil {
			return fail(stderr, "demo: %v", err)
		}
		defer os.RemoveAll(dir)
	}
	d := &demo{addrs: map[uint64]string{}, dirs: map[uint64]string{}, nodes: map[uint64]*node.Node{}, out: stdout, log: newLogger(stderr, level)}
	for id := uint64(1); id <= 3; id++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(stderr, "demo: %v", err)
		}
		d.addrs[id] = l.Addr().String()
		_ = l.Close()
		d.dirs[id] = filepath.Join(dir, fmt.Sprintf("node%d", id))
	}
	for id := uint64(1); id <= 3; id++ {
		if err := d.start(id); err != nil {
			return fail(stderr, "demo: %v", err)
		}
	}
	defer func() {
		for id := range d.nodes {
			d.stop(id)
		}
	}()
	var list []string
	for id := uint64(1); id <= 3; id++ {
		list = append(list, d.addrs[id])
	}
	if d.cl, err = client.New(client.Config{Cluster: list, AttemptTimeout: 500 * time.Millisecond, Timeout: 5 * time.Second, Logger: d.log}); err != nil {
		return fail(stderr, "demo: %v", err)
	}
	defer d.cl.Close()

	fmt.Fprintf(stdout, "ketch demo: three nodes on loopback, data under %s\n\n", dir)
	for id := uint64(1); id <= 3; id++ {
		fmt.Fprintf(stdout, "node %d  %s\n", id, d.addrs[id])
		fmt.Fprintf(stdout, "  %s            supervisor (rest_for_one, at most 5 restarts in 10s)\n", node.SupervisorID)
		for _, c := range node.Children {
			fmt.Fprintf(stdout, "  └── %s/%s\n", node.SupervisorID, c)
		}
	}
	fmt.Fprintf(stdout, "\nOther terminals can join in: ketch status --cluster %s\n\n%s", strings.Join(list, ","), demoHelp)
	d.waitLeader()

	in := bufio.NewScanner(stdin)
	for {
		fmt.Fprint(stdout, "ketch> ")
		if !in.Scan() {
			fmt.Fprintln(stdout)
			return exitOK
		}
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" || f[0] == "exit" {
			return exitOK
		}
		if err := d.do(f); err != nil {
			fmt.Fprintf(stdout, "error: %v\n", err)
		}
	}
}

func (d *demo) start(id uint64) error {
	if d.nodes[id] != nil {
		return fmt.Errorf("node %d is running", id)
	}
	peers := map[uint64]string{}
	for p, a := range d.addrs {
		if p != id {
			peers[p] = a
		}
	}
	var err error
	for try := 0; try < 30; try++ { // the port may linger a moment after a stop
		var n *node.Node
		n, err = node.Start(node.Config{ID: id, Listen: d.addrs[id], Peers: peers, DataDir: d.dirs[id], Chaos: true, Logger: d.log})
		if err == nil {
			d.nodes[id] = n
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (d *demo) stop(id uint64) {
	if n := d.nodes[id]; n != nil {
		n.Stop()
		<-n.Done()
		delete(d.nodes, id)
	}
}

func (d *demo) waitLeader() {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for id, n := range d.nodes {
			if st := n.Status(); st.Role == "leader" {
				fmt.Fprintf(d.out, "node %d is leader of term %d\n", id, st.Term)
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintln(d.out, "no leader yet (is a majority running?)")
}

func (d *demo) do(f []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	need := func(n int) error {
		if len(f) != n+1 {
			return fmt.Errorf("%s takes %d argument(s); try help", f[0], n)
		}
		return nil
	}
	nodeID := func(s string) (uint64, error) {
		id, err := strconv.ParseUint(s, 10, 64)
		if err != nil || d.addrs[id] == "" {
			return 0, fmt.Errorf("no node %q; nodes are 1, 2 and 3", s)
		}
		return id, nil
	}
	switch f[0] {
	case "help":
		fmt.Fprint(d.out, demoHelp)
	case "put":
		if err := need(2); err != nil {
			return err
		}
		if err := d.cl.Put(ctx, f[1], []byte(f[2])); err != nil {
			return err
		}
		fmt.Fprintln(d.out, "ok")
	case "get":
		if err := need(1); err != nil {
			return err
		}
		v, err := d.cl.Get(ctx, f[1])
		if errors.Is(err, client.ErrNotFound) {
			fmt.Fprintln(d.out, "not found")
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(d.out, string(v))
	case "delete":
		if err := need(1); err != nil {
			return err
		}
		existed, err := d.cl.Delete(ctx, f[1])
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "ok (existed: %v)\n", existed)
	case "cas":
		if err := need(3); err != nil {
			return err
		}
		var old []byte
		if f[2] != "-" {
			old = []byte(f[2])
		}
		swapped, cur, found, err := d.cl.CompareAndSwap(ctx, f[1], old, []byte(f[3]))
		if err != nil {
			return err
		}
		switch {
		case swapped:
			fmt.Fprintln(d.out, "swapped")
		case found:
			fmt.Fprintf(d.out, "not swapped: current value is %q\n", cur)
		default:
			fmt.Fprintln(d.out, "not swapped: the key does not exist")
		}
	case "status":
		var out []web.StatusJSON
		for id := uint64(1); id <= 3; id++ {
			if n := d.nodes[id]; n != nil {
				out = append(out, web.FromStatus(n.Status(), d.addrs[id], nil))
			} else {
				out = append(out, web.StatusJSON{ID: id, Address: d.addrs[id], Role: "stopped"})
			}
		}
		printStatus(d.out, out)
	case "crash":
		if err := need(2); err != nil {
			return err
		}
		id, err := nodeID(f[1])
		if err != nil {
			return err
		}
		if err := d.cl.Crash(ctx, d.addrs[id], f[2]); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "node %d: %s crashed; its supervisor restarts it (see status)\n", id, f[2])
	case "transfer":
		var to uint64
		if len(f) == 2 {
			id, err := nodeID(f[1])
			if err != nil {
				return err
			}
			to = id
		} else if len(f) > 2 {
			return fmt.Errorf("transfer takes at most one argument; try help")
		}
		from, now, err := d.cl.Transfer(ctx, to)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "leadership moved from node %d to node %d\n", from, now)
	case "stop":
		if err := need(1); err != nil {
			return err
		}
		id, err := nodeID(f[1])
		if err != nil {
			return err
		}
		d.stop(id)
		fmt.Fprintf(d.out, "node %d stopped\n", id)
	case "start":
		if err := need(1); err != nil {
			return err
		}
		id, err := nodeID(f[1])
		if err != nil {
			return err
		}
		if err := d.start(id); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "node %d started\n", id)
	default:
		return fmt.Errorf("unknown command %q; try help", f[0])
	}
	return nil
}
