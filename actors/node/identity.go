package node

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
)

// Identity on disk (issue 11). The first start of a node records, durably
// and before the node takes part, who it is: the cluster id, its node id
// and the members it was bootstrapped with (ids and addresses). Every later
// start compares its configuration with the record and refuses another
// identity, because a node that starts under the wrong one forks the
// cluster: node 1 restarted without --peers on its old data dir elected
// itself leader of a one-node cluster and accepted writes that the real
// cluster later overwrote.
//
// Rules, for a data dir that records an identity:
//   - another --id or --cluster-id is refused (ErrBadConfig);
//   - --listen must be the address recorded for this node;
//   - --peers, when given, must list exactly the recorded members;
//   - no --peers (Config.Peers nil) uses the recorded members;
//   - a server started with --join records that it joined (no bootstrap
//     members); it is refused --peers later, and a founding member is
//     refused --join.
//
// The recorded members are only the bootstrap configuration: once the log
// (or a snapshot) holds a configuration entry, that is the membership
// (thesis §4.1).
//
// A data dir without a record is either new (nothing in it: record the
// flags) or from a ketch older than the record (a log but no identity:
// record the flags, which must then include --peers).

// resolveIdentity checks cfg against the identity recorded in store and
// fills in cfg.Peers from the record when none were given (Peers nil; an
// empty, non-nil map says "no peers": a one-node cluster). It writes
// nothing: it returns the identity to record, or nil when one is recorded
// already, so that the caller records it only once every other check of the
// start has passed (a start refused for another reason must not leave an
// identity behind).
func resolveIdentity(store *logstore.BoltStore, cfg *Config, log *slog.Logger) (*pb.NodeIdentity, error) {
	id, err := store.Identity()
	if err != nil {
		return nil, err
	}
	dir := cfg.DataDir
	if id == nil {
		st, err := store.Load()
		if err != nil {
			return nil, err
		}
		old := st.HardState != nil || len(st.Entries) > 0
		if cfg.Join {
			if old {
				return nil, bad("data dir %s holds a log: --join is for a new server with an empty data dir", dir)
			}
			id := identityOf(cfg)
			id.Joined = true
			return id, nil
		}
		if old && cfg.Peers == nil {
			return nil, bad("data dir %s holds a log but no recorded identity (it was written by an older ketch); start it once with the --peers it ran with (--peers \"\" for a one-node cluster), to record them", dir)
		}
		if cfg.Peers == nil {
			log.Warn("no --peers on a new data dir: bootstrapping a one-node cluster", "data", dir)
		}
		if old {
			log.Warn("data dir has no recorded identity (written by an older ketch); recording the one given", "data", dir)
		}
		return identityOf(cfg), nil
	}
	if id.ClusterId != cfg.ClusterID {
		return nil, bad("data dir %s belongs to cluster %q, not %q (--cluster-id); start it with --cluster-id %s, or use another --data", dir, id.ClusterId, cfg.ClusterID, id.ClusterId)
	}
	if id.NodeId != cfg.ID {
		return nil, bad("data dir %s belongs to node %d of cluster %q, not node %d (--id); start node %d with it, or give node %d its own --data", dir, id.NodeId, id.ClusterId, cfg.ID, id.NodeId, cfg.ID)
	}
	recorded := map[uint64]string{}
	for _, m := range id.Members {
		recorded[m.Id] = m.Address
	}
	if self := recorded[cfg.ID]; self != cfg.Listen {
		return nil, bad("data dir %s records node %d's address as %s, not %s (--listen); start it with --listen %s: its peers know it there", dir, cfg.ID, self, cfg.Listen, self)
	}
	delete(recorded, cfg.ID)
	switch {
	case id.Joined && len(cfg.Peers) > 0:
		return nil, bad("data dir %s belongs to a server that joined the cluster: it has no bootstrap --peers; start it with --join (or neither), its configuration comes from the log", dir)
	case id.Joined:
		cfg.Join, cfg.Peers = true, nil
		return nil, nil
	case cfg.Join:
		return nil, bad("data dir %s belongs to a founding member of the cluster (bootstrapped with %s); start it without --join", dir, peerList(recorded))
	}
	if cfg.Peers == nil {
		cfg.Peers = recorded
		return nil, nil
	}
	if !maps.Equal(cfg.Peers, recorded) {
		return nil, bad("--peers %s disagrees with the members data dir %s records (%s); omit --peers to use the recorded members (if this node never joined a cluster and the record is wrong, move the data dir aside and start again)", peerList(cfg.Peers), dir, peerList(recorded))
	}
	return nil, nil
}

// identityOf is the identity cfg describes: its cluster, its id, and every
// member, this node included, sorted by id.
func identityOf(cfg *Config) *pb.NodeIdentity {
	id := &pb.NodeIdentity{ClusterId: cfg.ClusterID, NodeId: cfg.ID}
	all := maps.Clone(cfg.Peers)
	if all == nil {
		all = map[uint64]string{}
	}
	all[cfg.ID] = cfg.Listen
	for _, m := range slices.Sorted(maps.Keys(all)) {
		id.Members = append(id.Members, &pb.Member{Id: m, Address: all[m]})
	}
	return id
}

// peerList renders peers as --peers takes them: ID=HOST:PORT,... by id.
func peerList(peers map[uint64]string) string {
	if len(peers) == 0 {
		return `""`
	}
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(peers)) {
		parts = append(parts, fmt.Sprintf("%d=%s", id, peers[id]))
	}
	return strings.Join(parts, ",")
}

// bad is an ErrBadConfig error.
func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadConfig, fmt.Sprintf(format, args...))
}
