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
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

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
	https map[uint64]string // each node's --http address ("" without)
	mu    sync.Mutex        // guards nodes and webs against the watcher
	nodes map[uint64]*node.Node
	webs  map[uint64]*web.Server
	cl    *client.Client
	out   *console
	log   *slog.Logger
}

// maxDemoLine is the longest input line the demo reads; a longer one is
// refused, and the demo goes on.
const maxDemoLine = 1 << 20

func newDemoCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "A local 3-node cluster at a prompt, for watching Raft work",
		Long: `Start three nodes in this process on loopback, each with its live view and
metrics, and read commands at a prompt (type help). Elections, crashes,
restarts and configuration changes are announced above the prompt as they
happen. The data lives in a new temporary directory, removed on quit,
end of input or Ctrl-C, unless --data names one to keep.

` + demoHelp,
		Example: `  ketch demo
  ketch demo --data ./demo-data --log-level info
  ketch demo --http 127.0.0.1:8001   (node 1 on 8001, 2 on 8002, 3 on 8003)
  ketch demo --http ""                (no HTTP endpoints)`,
		Args: noArgs,
	}
	data := cmd.Flags().String("data", "", "data directory for the three nodes (default: a new temporary one, removed at the end)")
	logLevel := cmd.Flags().String("log-level", "warn", "the nodes' log level: debug, info, warn or error")
	httpAddr := cmd.Flags().String("http", "127.0.0.1:0", "serve each node's metrics and live view: node 1 on HOST:PORT, node 2 on PORT+1, node 3 on PORT+2 (port 0: free ports; \"\": off)")
	complete(cmd, "log-level", "debug", "info", "warn", "error")
	cmd.RunE = body(func(*cobra.Command, []string) int {
		return runDemo(*data, *logLevel, *httpAddr, stdin, stdout, stderr)
	})
	return cmd
}

func runDemo(data, logLevel, httpAddr string, stdin io.Reader, stdout, stderr io.Writer) int {
	if httpAddr != "" {
		if err := web.ValidateListen(httpAddr); err != nil {
			return fail(stderr, "demo: %v", err)
		}
	}
	level, err := parseLevel(logLevel)
	if err != nil {
		return fail(stderr, "demo: --log-level %q: use debug, info, warn or error", logLevel)
	}
	// Ctrl-C (or SIGTERM) ends the demo like quit: the nodes stop and a
	// temporary data dir is removed.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	dir := data
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ketch-demo-"); err != nil {
			return fail(stderr, "demo: %v", err)
		}
		defer os.RemoveAll(dir)
	}
	out := newConsole(stdout)
	d := &demo{addrs: map[uint64]string{}, dirs: map[uint64]string{}, https: map[uint64]string{},
		nodes: map[uint64]*node.Node{}, webs: map[uint64]*web.Server{}, out: out,
		// The nodes' log lines go above the prompt too.
		log: newLogger(out.lines(stderr), level)}
	for id := uint64(1); id <= 3; id++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(stderr, "demo: %v", err)
		}
		d.addrs[id] = l.Addr().String()
		_ = l.Close()
		d.dirs[id] = filepath.Join(dir, fmt.Sprintf("node%d", id))
	}
	if httpAddr != "" {
		if d.https, err = demoHTTPAddrs(httpAddr); err != nil {
			return fail(stderr, "demo: %v", err)
		}
	}
	defer func() {
		for id := range d.nodes {
			d.stop(id)
		}
	}()
	for id := uint64(1); id <= 3; id++ {
		if err := d.start(id); err != nil {
			return fail(stderr, "demo: %v", err)
		}
	}
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
		fmt.Fprintf(stdout, "node %d  %s", id, d.addrs[id])
		if w := d.webs[id]; w != nil {
			fmt.Fprintf(stdout, "   live view %s   metrics %smetrics", w.URL(), w.URL())
		}
		fmt.Fprintf(stdout, "\n  %s            supervisor (rest_for_one, at most 5 restarts in 10s)\n", node.SupervisorID)
		for i, c := range node.Children {
			branch := "├──"
			if i == len(node.Children)-1 {
				branch = "└──"
			}
			fmt.Fprintf(stdout, "  %s %s/%s\n", branch, node.SupervisorID, c)
		}
	}
	if w := d.webs[1]; w != nil {
		fmt.Fprintf(stdout, "\nWatch the cluster live: open %s in a browser (any node's page shows them all).", w.URL())
	}
	fmt.Fprintf(stdout, "\nOther terminals can join in: ketch status --cluster %s\n\n%s", strings.Join(list, ","), demoHelp)
	stopWatch := d.watch()
	defer stopWatch()
	d.waitLeader()

	lines := readLines(stdin, maxDemoLine)
	for {
		out.prompt("ketch> ")
		var l line
		var ok bool
		select {
		case l, ok = <-lines:
		case s := <-sigs:
			out.println("")
			fmt.Fprintf(stdout, "%v: stopping the nodes\n", s)
			return exitOK
		}
		if !ok {
			out.println("")
			return exitOK
		}
		out.answered()
		if l.err != nil {
			fmt.Fprintf(stdout, "error: %v\n", l.err)
			continue
		}
		f := strings.Fields(l.text)
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

// line is one line of input, or why it was refused.
type line struct {
	text string
	err  error
}

// readLines reads r line by line on a goroutine of its own (so a signal
// can end the demo while it waits for input). A line over max bytes is
// refused with an error, not read into memory, and reading goes on; the
// channel closes at the end of input.
func readLines(r io.Reader, max int) <-chan line {
	ch := make(chan line)
	go func() {
		defer close(ch)
		br := bufio.NewReader(r)
		for {
			var buf []byte
			n, long := 0, false
			for {
				frag, err := br.ReadSlice('\n')
				n += len(frag)
				if !long && n <= max+1 {
					buf = append(buf, frag...)
				} else {
					long, buf = true, nil
				}
				if err == bufio.ErrBufferFull {
					continue
				}
				if err != nil && n == 0 {
					return // end of input
				}
				break
			}
			if long {
				ch <- line{err: fmt.Errorf("the line is %d bytes, over the %d-byte limit; nothing was done", n, max)}
				continue
			}
			ch <- line{text: strings.TrimRight(string(buf), "\r\n")}
		}
	}()
	return ch
}

func (d *demo) start(id uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := d.nodes[id]; n != nil {
		select {
		case <-n.Done(): // it fail-stopped: start it again
			d.forget(id)
		default:
			return fmt.Errorf("node %d is running", id)
		}
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
		n, err = node.Start(node.Config{ID: id, Listen: d.addrs[id], Peers: peers, DataDir: d.dirs[id], Chaos: true,
			Metrics: d.https[id] != "", ExtraRoutes: webRoutes(d.https[id] != ""), Logger: d.log})
		if err == nil {
			d.nodes[id] = n
			if d.https[id] != "" {
				w, err := web.Start(web.Config{Listen: d.https[id], Node: n, Chaos: true, Logger: d.log})
				if err != nil {
					n.Stop()
					<-n.Done()
					delete(d.nodes, id)
					return err
				}
				d.webs[id] = w
				d.https[id] = w.Addr() // a free port stays the node's across restarts
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// stop stops node id; it reports whether the node was running.
func (d *demo) stop(id uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.nodes[id]
	if n == nil {
		return false
	}
	n.Stop()
	<-n.Done()
	d.forget(id)
	return true
}

// forget drops a stopped node and its HTTP endpoint. Caller holds mu.
func (d *demo) forget(id uint64) {
	if w := d.webs[id]; w != nil {
		w.Close()
		delete(d.webs, id)
	}
	delete(d.nodes, id)
}

// watch announces, above the prompt, every election, new leader, crash and
// restart of a child, fail-stop and configuration change, as it polls the
// nodes ten times a second. It returns a func that stops it.
func (d *demo) watch() (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	look := func() map[uint64]web.NodeView {
		d.mu.Lock()
		defer d.mu.Unlock()
		cur := map[uint64]web.NodeView{}
		for id, n := range d.nodes {
			cur[id] = web.ViewOf(n.Status(), d.addrs[id])
		}
		return cur
	}
	prev := look() // before any command runs
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			cur := look()
			for _, id := range []uint64{1, 2, 3} {
				c, ok := cur[id]
				p, was := prev[id]
				if !ok || !was {
					continue
				}
				for _, e := range web.Changes(p, c, time.Now().UnixMilli()) {
					d.out.say("* " + e.Text)
				}
			}
			prev = cur
		}
	}()
	return func() { close(done); <-finished }
}

// demoHTTPAddrs gives node 1 the --http address and nodes 2 and 3 the
// next ports (or free ones, for port 0).
func demoHTTPAddrs(addr string) (map[uint64]string, error) {
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	out := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		p := 0
		if port != 0 {
			p = port + int(id) - 1
			if p > 65535 {
				return nil, fmt.Errorf("--http %s: node %d's port %d is past 65535", addr, id, p)
			}
		}
		out[id] = net.JoinHostPort(host, strconv.Itoa(p))
	}
	return out, nil
}

func (d *demo) waitLeader() {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range d.nodes {
			if st := n.Status(); st.Role == "leader" {
				return // the watcher announces it
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
		if !d.stop(id) {
			return fmt.Errorf("node %d is not running", id)
		}
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
		return fmt.Errorf("unknown command %.40q; try help", f[0])
	}
	return nil
}
