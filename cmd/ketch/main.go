// Command ketch is the one ketch binary:
//
//	ketch node   --id ID --listen HOST:PORT --peers ID=HOST:PORT,... --data DIR [--cluster-id NAME] [--chaos] [--http HOST:PORT]
//	ketch demo   [--data DIR] [--http HOST:PORT] [--log-level LEVEL]
//	ketch put    --cluster HOST:PORT,... KEY VALUE
//	ketch get    --cluster HOST:PORT,... KEY
//	ketch delete --cluster HOST:PORT,... KEY
//	ketch cas    --cluster HOST:PORT,... KEY OLD NEW
//	ketch status --cluster HOST:PORT,... [--json]
//	ketch crash  --cluster HOST:PORT,... --node ID --actor store|state|fsm|sender
//	ketch transfer --cluster HOST:PORT,... [--to ID]
//	ketch snapshot --cluster HOST:PORT,... [--node ID]
//	ketch node   --id ID --listen HOST:PORT --data DIR --join
//	ketch member list|add|promote|remove|replace --cluster HOST:PORT,... (see member.go)
//	ketch certs init|node|client --dir DIR ... (a development CA; see certs.go)
//
// With mutual TLS, nodes take --tls-ca, --tls-cert and --tls-key, and the
// client verbs --cacert, --cert and --key ($KETCH_CACERT, $KETCH_CERT,
// $KETCH_KEY).
//
// Exit codes: 0 success; 1 a negative answer (get: not found; cas: the
// current value differed); 2 any other failure, with a one-line reason on
// stderr. A node that fail-stops (its supervisor gave up) exits 3; one
// whose data file is corrupt exits 4, with one line naming the file and
// what to do.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/actors/state"
	"github.com/ketch-raft/ketch/actors/web"
	"github.com/ketch-raft/ketch/fsm"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
)

// Exit codes.
const (
	exitOK       = 0
	exitNegative = 1
	exitFailure  = 2
	exitFailStop = 3
	exitCorrupt  = 4
)

const usage = `ketch — Raft consensus built the Erlang/OTP way

usage:
  ketch node   --id ID --listen HOST:PORT --peers ID=HOST:PORT,... --data DIR [--cluster-id NAME] [--chaos] [--lease-reads] [--log-level LEVEL]
               [--snapshot-entries N] [--snapshot-bytes N] [--snapshot-growth F] [--snapshot-trailing N] [--snapshot-chunk-bytes N]
               [--http HOST:PORT]   (metrics at /metrics, status at /status, the live view at /)
  ketch demo   [--data DIR] [--http HOST:PORT] [--log-level LEVEL]
  ketch put    --cluster HOST:PORT,... KEY VALUE
  ketch get    --cluster HOST:PORT,... KEY
  ketch delete --cluster HOST:PORT,... KEY
  ketch cas    --cluster HOST:PORT,... KEY OLD NEW
  ketch status --cluster HOST:PORT,... [--json]
  ketch crash  --cluster HOST:PORT,... --node ID --actor store|state|fsm|sender
  ketch transfer --cluster HOST:PORT,... [--to ID]
  ketch snapshot --cluster HOST:PORT,... [--node ID]
  ketch node   --id ID --listen HOST:PORT --data DIR --join        (a new server, added with 'ketch member add')
  ketch member list|add|promote|remove|replace --cluster HOST:PORT,... (run 'ketch member' for the forms)
  ketch certs  init --dir DIR | node --dir DIR --cluster-id C --id N --host H,... | client --dir DIR --name NAME

Mutual TLS: 'ketch node' takes --tls-ca FILE --tls-cert FILE --tls-key FILE; the client
commands take --cacert FILE --cert FILE --key FILE (or $KETCH_CACERT, $KETCH_CERT, $KETCH_KEY).

Run 'ketch COMMAND -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitFailure
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "node":
		return cmdNode(rest, stderr)
	case "demo":
		return cmdDemo(rest, stdin, stdout, stderr)
	case "put", "get", "delete", "cas":
		return cmdKV(cmd, rest, stdin, stdout, stderr)
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case "crash":
		return cmdCrash(rest, stdout, stderr)
	case "snapshot":
		return cmdSnapshot(args[1:], stdout, stderr)
	case "transfer":
		return cmdTransfer(rest, stdout, stderr)
	case "member":
		return cmdMember(rest, stdout, stderr)
	case "certs":
		return cmdCerts(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "ketch: unknown command %q\n%s", cmd, usage)
	return exitFailure
}

// fail prints a one-line error and returns the failure exit code.
func fail(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "ketch: "+format+"\n", args...)
	return exitFailure
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ketch "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// ------------------------------------------------------------------- node

func cmdNode(args []string, stderr io.Writer) int {
	fs := newFlags("node", stderr)
	id := fs.Uint64("id", 0, "this node's id (a positive integer)")
	listen := fs.String("listen", "", "host:port to listen on for peers and clients")
	peers := fs.String("peers", "", "the other founding members: ID=HOST:PORT,... (bootstraps a new cluster at the first start; later starts use the members the data dir records)")
	join := fs.Bool("join", false, "start a new server that the cluster adds with 'ketch member add' (no --peers)")
	data := fs.String("data", "", "data directory (holds the bbolt log)")
	clusterID := fs.String("cluster-id", node.DefaultClusterID, "cluster name; peers and clients must use the same")
	chaos := fs.Bool("chaos", false, "obey 'ketch crash' (fault testing only)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	election := fs.Duration("election-timeout", 300*time.Millisecond, "base election timeout (randomized up to twice this)")
	heartbeat := fs.Duration("heartbeat", 50*time.Millisecond, "leader heartbeat interval")
	leaseReads := fs.Bool("lease-reads", false, "serve reads under a leader lease, without a heartbeat round (assumes clock drift under 10%)")
	snapEntries := fs.Int("snapshot-entries", state.DefaultSnapshotEntries, "snapshot the state machine every N applied entries (0: never by count)")
	snapBytes := fs.Int64("snapshot-bytes", state.DefaultSnapshotBytes, "or every N bytes of applied log entries (0: never by size)")
	snapGrowth := fs.Float64("snapshot-growth", state.DefaultSnapshotGrowth, "and only once the log since the latest snapshot adds up to F times its size (0: no such condition)")
	snapTrailing := fs.Int("snapshot-trailing", fsm.DefaultSnapshotTrailing, "entries kept in the log behind a snapshot, for followers that lag a little (at least 1)")
	snapChunk := fs.Int("snapshot-chunk-bytes", fsm.DefaultSnapshotChunk, "bytes per InstallSnapshot chunk sent to a lagging follower")
	httpAddr := fs.String("http", "", "serve Prometheus metrics (/metrics), status (/status) and the live view (/) on HOST:PORT (off when empty)")
	tlsCA := fs.String("tls-ca", "", "mutual TLS: the cluster's CA certificate ('ketch certs init'); with --tls-cert and --tls-key, every connection is TLS 1.3 and plaintext is refused")
	tlsCert := fs.String("tls-cert", "", "mutual TLS: this node's certificate ('ketch certs node'; it must name this node of this cluster)")
	tlsKey := fs.String("tls-key", "", "mutual TLS: this node's key")
	if err := fs.Parse(args); err != nil {
		return exitFailure
	}
	if *httpAddr != "" {
		if err := web.ValidateListen(*httpAddr); err != nil {
			return fail(stderr, "node: %v", err)
		}
	}
	if *election <= 0 || *heartbeat <= 0 {
		return fail(stderr, "node: --election-timeout %v and --heartbeat %v must be positive", *election, *heartbeat)
	}
	if fs.NArg() > 0 {
		return fail(stderr, "node: unexpected arguments %v", fs.Args())
	}
	level, err := parseLevel(*logLevel)
	if err != nil {
		return fail(stderr, "node: --log-level %q: use debug, info, warn or error", *logLevel)
	}
	peerMap, err := parsePeers(*peers)
	if err != nil {
		return fail(stderr, "node: %v", err)
	}
	// --peers "" (given, empty) says "no peers": a one-node cluster. Not
	// given at all, the data dir's recorded members are used.
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "peers" && peerMap == nil {
			peerMap = map[uint64]string{}
		}
	})
	switch {
	case *snapEntries < 0 || *snapBytes < 0:
		return fail(stderr, "node: --snapshot-entries and --snapshot-bytes must not be negative (0 turns that trigger off)")
	case *snapTrailing < 1:
		return fail(stderr, "node: --snapshot-trailing %d: keep at least 1 entry", *snapTrailing)
	case *snapChunk < 1:
		return fail(stderr, "node: --snapshot-chunk-bytes %d must be positive", *snapChunk)
	}
	// In the flags 0 means never; in node.Config 0 is the default.
	never := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	growth := *snapGrowth
	switch {
	case math.IsNaN(growth) || math.IsInf(growth, 0) || growth < 0:
		return fail(stderr, "node: --snapshot-growth %v: want a factor of 0 or more", growth)
	case growth == 0:
		growth = -1 // no such condition
	}
	if *join && peerMap != nil {
		return fail(stderr, "node: --join starts a server the cluster adds later; it takes no --peers")
	}
	n, err := node.Start(node.Config{
		ID: *id, Listen: *listen, Peers: peerMap, Join: *join, DataDir: *data, ClusterID: *clusterID, Chaos: *chaos,
		ElectionTimeout: *election, HeartbeatInterval: *heartbeat, LeaseReads: *leaseReads,
		SnapshotEntries: int(never(int64(*snapEntries))), SnapshotBytes: never(*snapBytes),
		SnapshotGrowth:   growth,
		SnapshotTrailing: *snapTrailing, SnapshotChunkBytes: *snapChunk,
		Metrics: *httpAddr != "", ExtraRoutes: webRoutes(*httpAddr != ""),
		TLS:    certs.Files{CA: *tlsCA, Cert: *tlsCert, Key: *tlsKey},
		Logger: newLogger(stderr, level),
	})
	if errors.Is(err, logstore.ErrCorrupt) {
		fmt.Fprintf(stderr, "ketch: node: %v\n", err)
		return exitCorrupt
	}
	if err != nil {
		return fail(stderr, "node: %v", err)
	}
	if *httpAddr != "" {
		srv, err := web.Start(web.Config{Listen: *httpAddr, Node: n, Chaos: *chaos, Logger: newLogger(stderr, level)})
		if err != nil {
			n.Stop()
			<-n.Done()
			return fail(stderr, "node: %v", err)
		}
		defer srv.Close()
		newLogger(stderr, level).Info("serving metrics and the live view", "node", *id, "url", srv.URL(), "metrics", srv.URL()+"metrics")
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sigs:
		n.Stop()
		<-n.Done()
		if errors.Is(n.Err(), logstore.ErrCorrupt) {
			fmt.Fprintf(stderr, "ketch: node %d stopped: %v\n", *id, n.Err())
			return exitCorrupt
		}
		return exitOK
	case <-n.Done():
		fmt.Fprintf(stderr, "ketch: node %d stopped: %v\n", *id, n.Err())
		if errors.Is(n.Err(), logstore.ErrCorrupt) {
			return exitCorrupt
		}
		return exitFailStop
	}
}

// webRoutes is what the wire guard admits for the live view's viewer, when
// the node serves it.
func webRoutes(on bool) map[string][]string {
	if !on {
		return nil
	}
	return web.Routes()
}

// parsePeers parses "2=host:port,3=host:port"; "" is nil.
func parsePeers(s string) (map[uint64]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	peers := map[uint64]string{}
	for _, p := range strings.Split(s, ",") {
		idStr, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
		id, err := strconv.ParseUint(idStr, 10, 64)
		if !ok || err != nil || id == 0 || addr == "" {
			return nil, fmt.Errorf("--peers entry %q is not ID=HOST:PORT with a positive ID", p)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("--peers lists node %d twice", id)
		}
		peers[id] = addr
	}
	return peers, nil
}

// ---------------------------------------------------------------- clients

type clientFlags struct {
	cluster   *string
	clusterID *string
	timeout   *time.Duration
	// Mutual TLS (--cacert, --cert, --key; $KETCH_CACERT, $KETCH_CERT,
	// $KETCH_KEY), etcdctl's names.
	cacert, cert, key *string
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		cluster:   fs.String("cluster", os.Getenv("KETCH_CLUSTER"), "node addresses HOST:PORT,... (default $KETCH_CLUSTER)"),
		clusterID: fs.String("cluster-id", node.DefaultClusterID, "cluster name"),
		timeout:   fs.Duration("timeout", 10*time.Second, "give up after this long"),
		cacert:    fs.String("cacert", os.Getenv("KETCH_CACERT"), "TLS: the cluster's CA certificate (default $KETCH_CACERT; with --cert and --key)"),
		cert:      fs.String("cert", os.Getenv("KETCH_CERT"), "TLS: this client's certificate, from 'ketch certs client' (default $KETCH_CERT)"),
		key:       fs.String("key", os.Getenv("KETCH_KEY"), "TLS: this client's key (default $KETCH_KEY)"),
	}
}

// open starts the client, and fails at once when no --cluster address has
// a ketch node (see client.Probe).
func (f clientFlags) open(stderr io.Writer) (*client.Client, []string, error) {
	return f.openProbing(stderr, true)
}

// openProbing is open; without probe it does not check first (status,
// which reports every node, reachable or not).
func (f clientFlags) openProbing(stderr io.Writer, probe bool) (*client.Client, []string, error) {
	var addrs []string
	for _, a := range strings.Split(*f.cluster, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, nil, errors.New("--cluster HOST:PORT,... is required")
	}
	// The CLI's errors are its own one-line messages; protoactor's log
	// lines about unreachable nodes would only add noise on stderr.
	cl, err := client.New(client.Config{Cluster: addrs, ClusterID: *f.clusterID, Timeout: *f.timeout,
		AttemptTimeout: min(300*time.Millisecond, *f.timeout/3), TLS: certs.Files{CA: *f.cacert, Cert: *f.cert, Key: *f.key},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, err
	}
	// When no address has a node (nothing listens, something else does,
	// or TLS on one side only), say so at once instead of waiting out
	// --timeout.
	if !probe {
		return cl, addrs, nil
	}
	if err := cl.Probe(min(time.Second, *f.timeout)); err != nil {
		cl.Close()
		return nil, nil, err
	}
	return cl, addrs, nil
}

func cmdKV(cmd string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags(cmd, stderr)
	cf := addClientFlags(fs)
	var ifAbsent, asJSON *bool
	switch cmd {
	case "cas":
		ifAbsent = fs.Bool("if-absent", false, "create the key: swap only if it does not exist (then: cas --if-absent KEY NEW)")
	case "delete":
		asJSON = fs.Bool("json", false, `print {"key": KEY, "existed": true|false}`)
	}
	if err := fs.Parse(args); err != nil {
		return exitFailure
	}
	want := map[string]int{"put": 2, "get": 1, "delete": 1, "cas": 3}[cmd]
	usage := map[string]string{"put": "KEY VALUE (VALUE - reads it from stdin)", "get": "KEY", "delete": "KEY", "cas": "KEY OLD NEW"}[cmd]
	if ifAbsent != nil && *ifAbsent {
		want, usage = 2, "KEY NEW with --if-absent"
	}
	if fs.NArg() != want {
		return fail(stderr, "%s takes %d argument(s): %s", cmd, want, usage)
	}
	a := fs.Args()
	// The input is checked before any node is asked (the client would
	// refuse it too, but only once it has a cluster to send it to).
	limits := pb.DefaultLimits()
	switch {
	case !utf8.ValidString(a[0]):
		return fail(stderr, "%s: the key %q is not valid UTF-8", cmd, a[0])
	case len(a[0]) > limits.MaxKeyBytes:
		return fail(stderr, "%s: the key is %d bytes, over the %d-byte key limit", cmd, len(a[0]), limits.MaxKeyBytes)
	}
	if cmd == "put" && a[1] == "-" {
		// The value from stdin, up to the entry limit (one byte more
		// tells that it is over).
		limit := limits.MaxEntryBytes
		b, err := io.ReadAll(io.LimitReader(stdin, int64(limit)+1))
		if err != nil {
			return fail(stderr, "put: reading the value from stdin: %v", err)
		}
		if len(b) > limit {
			return fail(stderr, "put: the value on stdin is over the %d-byte entry limit (keys up to %d bytes, values a little under %d)", limit, limits.MaxKeyBytes, limit)
		}
		a[1] = string(b)
	}
	cl, _, err := cf.open(stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *cf.timeout)
	defer cancel()
	switch cmd {
	case "put":
		err = cl.Put(ctx, a[0], []byte(a[1]))
	case "get":
		var v []byte
		v, err = cl.Get(ctx, a[0])
		if errors.Is(err, client.ErrNotFound) {
			fmt.Fprintln(stderr, "not found")
			return exitNegative
		}
		if err == nil {
			fmt.Fprintln(stdout, string(v))
		}
	case "delete":
		var existed bool
		existed, err = cl.Delete(ctx, a[0])
		if err == nil {
			switch {
			case *asJSON:
				_ = json.NewEncoder(stdout).Encode(map[string]any{"key": a[0], "existed": existed})
			case existed:
				fmt.Fprintln(stdout, "deleted")
			default:
				fmt.Fprintln(stdout, "did not exist (nothing deleted)")
			}
		}
	case "cas":
		var swapped, found bool
		var cur []byte
		old, value := []byte(a[1]), []byte(a[len(a)-1])
		if *ifAbsent {
			old = nil // must not exist
		}
		swapped, cur, found, err = cl.CompareAndSwap(ctx, a[0], old, value)
		if err == nil && !swapped {
			if found {
				fmt.Fprintf(stderr, "not swapped: current value is %q\n", cur)
			} else {
				fmt.Fprintln(stderr, "not swapped: the key does not exist")
			}
			return exitNegative
		}
	}
	if err != nil {
		return fail(stderr, "%s: %v", cmd, err)
	}
	return exitOK
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	cf := addClientFlags(fs)
	asJSON := fs.Bool("json", false, "print a JSON array, one object per node")
	*cf.timeout = 2 * time.Second
	if err := fs.Parse(args); err != nil {
		return exitFailure
	}
	cl, addrs, err := cf.openProbing(stderr, false)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer cl.Close()
	out := make([]web.StatusJSON, len(addrs))
	done := make(chan struct{}, len(addrs))
	reached := 0
	for i, addr := range addrs {
		go func() {
			defer func() { done <- struct{}{} }()
			ctx, cancel := context.WithTimeout(context.Background(), *cf.timeout)
			defer cancel()
			st, err := cl.Status(ctx, addr)
			out[i] = web.FromStatus(st, addr, err)
		}()
	}
	for range addrs {
		<-done
	}
	for _, s := range out {
		if s.Error == "" {
			reached++
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else {
		printStatus(stdout, out)
	}
	if reached == 0 {
		return fail(stderr, "status: no node answered")
	}
	return exitOK
}

func printStatus(w io.Writer, nodes []web.StatusJSON) {
	fmt.Fprintf(w, "%-4s %-21s %-11s %5s %6s %8s %8s %8s  %s\n", "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "LAST", "COMMIT", "APPLIED", "CHILDREN (restarts, last crash)")
	for _, n := range nodes {
		var kids []string
		names := make([]string, 0, len(n.Children))
		for name := range n.Children {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			c := n.Children[name]
			k := fmt.Sprintf("%s=%d", name, c.Restarts)
			if c.LastCrash != "" {
				k += fmt.Sprintf(" (%s)", c.LastCrash)
			}
			kids = append(kids, k)
		}
		fmt.Fprintf(w, "%-4d %-21s %-11s %5d %6d %8d %8d %8d  %s\n", n.ID, n.Address, n.Role, n.Term, n.Leader, n.LastIndex, n.Commit, n.Applied, strings.Join(kids, " "))
		if len(n.Members) > 0 || n.NotMember {
			var ms []string
			for _, m := range n.Members {
				x := fmt.Sprintf("%d=%s", m.ID, m.Role)
				if idx, ok := n.Match[m.ID]; ok {
					x += fmt.Sprintf("(match %d)", idx)
				}
				ms = append(ms, x)
			}
			note := ""
			if n.NotMember {
				note = "; this node is not a member"
			}
			fmt.Fprintf(w, "     members (configuration %d): %s%s\n", n.ConfigurationIndex, strings.Join(ms, " "), note)
		}
		if n.Error != "" {
			fmt.Fprintf(w, "     error: %s\n", n.Error)
		}
	}
}

func cmdCrash(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("crash", stderr)
	cf := addClientFlags(fs)
	id := fs.Uint64("node", 0, "the node whose actor should crash")
	actorName := fs.String("actor", "", "store, state, fsm or sender")
	*cf.timeout = 3 * time.Second
	if err := fs.Parse(args); err != nil {
		return exitFailure
	}
	switch *actorName {
	case "store", "state", "fsm", "sender":
	default:
		return fail(stderr, "crash: --actor must be store, state, fsm or sender")
	}
	if *id == 0 {
		return fail(stderr, "crash: --node ID is required")
	}
	cl, addrs, err := cf.open(stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *cf.timeout)
	defer cancel()
	// Find the node's address by asking the cluster.
	for _, addr := range addrs {
		st, err := cl.Status(ctx, addr)
		if err != nil || st.Id != *id {
			continue
		}
		if err := cl.Crash(ctx, addr, *actorName); err != nil {
			return fail(stderr, "crash: %v", err)
		}
		fmt.Fprintf(stdout, "node %d: %s crashed\n", *id, *actorName)
		return exitOK
	}
	return fail(stderr, "crash: no node with id %d answered among %v", *id, addrs)
}

// cmdSnapshot asks nodes to take a snapshot now and compact their logs: the
// one --node names, or every node of --cluster.
func cmdSnapshot(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("snapshot", stderr)
	cf := addClientFlags(fs)
	id := fs.Uint64("node", 0, "the node to snapshot (default: every node of --cluster)")
	*cf.timeout = 60 * time.Second
	if err := fs.Parse(args); err != nil {
		return exitFailure
	}
	if fs.NArg() > 0 {
		return fail(stderr, "snapshot: unexpected arguments %v", fs.Args())
	}
	cl, addrs, err := cf.open(stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *cf.timeout)
	defer cancel()
	failed, done := 0, 0
	for _, addr := range addrs {
		st, err := cl.Status(ctx, addr)
		switch {
		case err != nil && *id == 0:
			fmt.Fprintf(stderr, "ketch: snapshot: %s: %v\n", addr, err)
			failed++
			continue
		case err != nil || *id != 0 && st.Id != *id:
			continue
		}
		r, err := cl.Snapshot(ctx, addr)
		if err != nil {
			fmt.Fprintf(stderr, "ketch: snapshot: node %d: %v\n", st.Id, err)
			failed++
			continue
		}
		done++
		fmt.Fprintf(stdout, "node %d: snapshot through index %d (term %d), %d bytes\n", st.Id, r.Index, r.Term, r.Bytes)
	}
	switch {
	case *id != 0 && done+failed == 0:
		return fail(stderr, "snapshot: no node with id %d answered among %v", *id, addrs)
	case failed > 0 || done == 0:
		return exitFailure
	}
	return exitOK
}

func cmdTransfer(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("transfer", stderr)
	cf := addClientFlags(fs)
	to := fs.Uint64("to", 0, "the node to hand leadership to (default: the most up-to-date one)")
	*cf.timeout = 5 * time.Second
	if err := fs.Parse(args); err != nil {
		return exitFailure
	}
	if fs.NArg() > 0 {
		return fail(stderr, "transfer: unexpected arguments %v", fs.Args())
	}
	cl, _, err := cf.open(stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *cf.timeout)
	defer cancel()
	from, now, err := cl.Transfer(ctx, *to)
	if err != nil {
		return fail(stderr, "transfer: %v", err)
	}
	fmt.Fprintf(stdout, "leadership moved from node %d to node %d\n", from, now)
	return exitOK
}
