package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/actors/state"
	"github.com/ketch-raft/ketch/actors/web"
	"github.com/ketch-raft/ketch/fsm"
	"github.com/ketch-raft/ketch/logstore"
)

// ketch node: one node, in the foreground until SIGINT or SIGTERM (exit 0),
// a fail-stop (exit 3) or a corrupt data file (exit 4).
func newNodeCmd(stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node --id ID --listen HOST:PORT (--peers ID=HOST:PORT,... | --join) --data DIR",
		Short: "Run a node",
		Long: `Run a node: a supervisor with four children (store, fsm, state, sender)
that keeps its log in DIR/ketch.db and serves peers and clients on --listen.

The first start of a new cluster names the other founding members with
--peers; later starts use the members the data directory records. A server
that joins an existing cluster starts with --join and is then added with
'ketch member add'. With --tls-ca, --tls-cert and --tls-key every connection
is mutual TLS 1.3 (see 'ketch certs').

The node runs until SIGINT or SIGTERM (exit 0). It exits 3 when its
supervisor gives up (fail-stop) and 4 when its data file is corrupt.`,
		Example: `  ketch node --id 1 --listen 127.0.0.1:7001 --peers 2=127.0.0.1:7002,3=127.0.0.1:7003 --data /var/lib/ketch/1
  ketch node --id 4 --listen 127.0.0.1:7004 --data /var/lib/ketch/4 --join
  ketch node --id 1 --listen 127.0.0.1:7001 --peers 2=127.0.0.1:7002,3=127.0.0.1:7003 --data d1 --http 127.0.0.1:8001`,
		Args: noArgs,
	}
	fl := cmd.Flags()
	id := fl.Uint64("id", 0, "this node's id (a positive integer)")
	listen := fl.String("listen", "", "HOST:PORT to listen on for peers and clients")
	peers := fl.String("peers", "", "the other founding members: ID=HOST:PORT,... (bootstraps a new cluster at the first start; later starts use the members the data dir records)")
	join := fl.Bool("join", false, "start a new server that the cluster adds with 'ketch member add' (no --peers)")
	data := fl.String("data", "", "data directory (holds the bbolt log)")
	clusterID := fl.String("cluster-id", node.DefaultClusterID, "cluster name; peers and clients must use the same")
	chaos := fl.Bool("chaos", false, "obey 'ketch crash' (fault testing only)")
	logLevel := fl.String("log-level", "info", "debug, info, warn or error")
	election := fl.Duration("election-timeout", 300*time.Millisecond, "base election timeout (randomized up to twice this)")
	heartbeat := fl.Duration("heartbeat", 50*time.Millisecond, "leader heartbeat interval (at most half the election timeout)")
	leaseReads := fl.Bool("lease-reads", false, "serve reads under a leader lease, without a heartbeat round (assumes clock drift under 10%)")
	snapEntries := fl.Int("snapshot-entries", state.DefaultSnapshotEntries, "snapshot the state machine every N applied entries (0: never by count)")
	snapBytes := fl.Int64("snapshot-bytes", state.DefaultSnapshotBytes, "or every N bytes of applied log entries (0: never by size)")
	snapGrowth := fl.Float64("snapshot-growth", state.DefaultSnapshotGrowth, "and only once the log since the latest snapshot adds up to F times its size (0: no such condition)")
	snapTrailing := fl.Int("snapshot-trailing", fsm.DefaultSnapshotTrailing, "entries kept in the log behind a snapshot, for followers that lag a little (at least 1)")
	snapChunk := fl.Int("snapshot-chunk-bytes", fsm.DefaultSnapshotChunk, "bytes per InstallSnapshot chunk sent to a lagging follower")
	httpAddr := fl.String("http", "", "serve Prometheus metrics (/metrics), status (/status) and the live view (/) on HOST:PORT (off when empty)")
	tlsCA := fl.String("tls-ca", "", "mutual TLS: the cluster's CA certificate ('ketch certs init'); with --tls-cert and --tls-key, every connection is TLS 1.3 and plaintext is refused")
	tlsCert := fl.String("tls-cert", "", "mutual TLS: this node's certificate ('ketch certs node'; it must name this node of this cluster)")
	tlsKey := fl.String("tls-key", "", "mutual TLS: this node's key")
	complete(cmd, "log-level", "debug", "info", "warn", "error")
	_ = cmd.MarkFlagDirname("data")
	for _, f := range []string{"tls-ca", "tls-cert", "tls-key"} {
		_ = cmd.MarkFlagFilename(f, "crt", "pem", "key")
	}
	cmd.RunE = body(func(cmd *cobra.Command, _ []string) int {
		if *httpAddr != "" {
			if err := web.ValidateListen(*httpAddr); err != nil {
				return fail(stderr, "node: %v", err)
			}
		}
		if *election <= 0 || *heartbeat <= 0 {
			return fail(stderr, "node: --election-timeout %v and --heartbeat %v must be positive", *election, *heartbeat)
		}
		level, err := parseLevel(*logLevel)
		if err != nil {
			return fail(stderr, "node: --log-level %q: use debug, info, warn or error", *logLevel)
		}
		peerMap, err := parsePeers(*peers)
		if err != nil {
			return fail(stderr, "node: %v", err)
		}
		// --peers "" (given, empty) says "no peers": a one-node cluster.
		// Not given at all, the data dir's recorded members are used.
		if cmd.Flags().Changed("peers") && peerMap == nil {
			peerMap = map[uint64]string{}
		}
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
		defer signal.Stop(sigs)
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
	})
	return cmd
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
