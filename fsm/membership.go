package fsm

import (
	"errors"
	"fmt"
	"slices"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Membership changes (thesis chapter 4).
//
// The configuration is log data: ENTRY_TYPE_CONFIG entries hold a
// pb.Configuration, and every node uses the latest one in its log,
// committed or not, from the moment it appends it (thesis §4.1). When that
// entry is truncated the node reverts to the one before. The node keeps the
// configuration in effect at its log's floor (from the snapshot or the
// store's compaction record; the bootstrap configuration when neither has
// one) and every configuration entry after it, so a truncation or a
// compaction always knows what was in effect at any index it still holds.
//
// Changes go through the leader, one at a time (thesis §4.1, §4.2):
//
//  1. A ChangeMembers is accepted only if the latest configuration has
//     committed, an entry of the leader's own term has committed (the
//     single-server bug Ongaro described on raft-dev in 2015: without it a
//     new leader can commit a change that overlaps a lost one), and the
//     expected configuration index, if given, is the current one.
//  2. New voters are caught up first (thesis §4.2.1): servers not yet
//     members are replicated to by the leader alone (they are in no
//     configuration, so nothing depends on them), promoted learners
//     already are. Catch-up runs in rounds: each round replicates up to
//     the leader's last index at its start; when a round takes less than
//     an election timeout the change goes ahead. After MaxCatchUpRounds,
//     or when a new server has not answered for CatchUpTimeout, the change
//     is refused and the configuration is left as it was.
//  3. One voter added or removed is one configuration entry (thesis
//     §4.2: any two majorities of configurations that differ by one voter
//     overlap). More voters at once go through joint consensus (thesis
//     §4.3): an entry with C_new's members and C_old's voters (outgoing);
//     once it commits, the leader appends C_new alone. Decisions in
//     between need a majority of each.
//  4. The change is answered once the final configuration has committed.
//     A leader that the new configuration leaves out keeps leading until
//     then (it does not count itself toward commit), then hands
//     leadership to the most up-to-date voter with TimeoutNow (thesis
//     §4.2.2).
//
// Node ids are never reused: every removed id is kept in the
// configuration, and messages from it are rejected (a removed server that
// keeps running cannot disrupt, thesis §4.2.3; pre-vote and leader
// stickiness cover one that has not learnt of its removal yet).

// Errors a ChangeMembers can be answered with (in a MembersChanged action),
// besides ErrNotLeader, ErrTransferring and ErrLeadershipLost.
var (
	// ErrConfigChanging: another change has not committed yet, or a
	// joint configuration is still being left. Retry once it has.
	ErrConfigChanging = errors.New("another membership change is in progress; retry once it has committed")
	// ErrConfigNotReady: the leader has not committed an entry of its own
	// term yet (it was just elected). Retry shortly.
	ErrConfigNotReady = errors.New("the leader has not committed an entry of its term yet; retry shortly")
	// ErrStaleConfig: the configuration's entry is not at the expected
	// index: it changed since the caller looked.
	ErrStaleConfig = errors.New("the configuration changed since the expected index (list the members again and expect its new index)")
	// ErrBadChange: the change is not valid against the configuration
	// (an id that is already a member, was removed before, is not a
	// learner to promote, and so on). Retrying will not help.
	ErrBadChange = errors.New("invalid membership change")
	// ErrCatchUp: a new voter did not catch up with the leader within
	// Config.MaxCatchUpRounds rounds (thesis §4.2.1). The configuration is
	// unchanged.
	ErrCatchUp = errors.New("the new server did not catch up with the leader")
	// ErrUnreachable: a new voter did not answer the leader for
	// Config.CatchUpTimeout (is its address right, is it running?). The
	// configuration is unchanged.
	ErrUnreachable = errors.New("the new server does not answer")
)

// ConfigState is a configuration and the index of the log entry that
// holds it (0: the bootstrap configuration, which is in no entry).
type ConfigState struct {
	Config *pb.Configuration
	Index  uint64
}

// ChangeMembers asks the leader to change the configuration: add servers
// (each with an id, an address and the role voter or learner), promote
// learners to voters, remove members. ID comes back in the MembersChanged
// that settles it. With ExpectIndex != 0 the change is refused unless the
// current configuration's entry is at that index.
type ChangeMembers struct {
	ID          uint64
	Add         []*pb.Member
	Promote     []uint64
	Remove      []uint64
	ExpectIndex uint64
}

func (ChangeMembers) isEvent() {}

// MembersChanged settles a ChangeMembers: Err is nil once the new
// configuration (Config) has committed; otherwise it says why the change
// was refused or failed (Leader hints at the leader for ErrNotLeader).
// With ErrLeadershipLost the change's outcome is unknown.
type MembersChanged struct {
	ID     uint64
	Err    error
	Leader uint64
	Config ConfigState
}

// ConfigChanged reports that the configuration this node uses changed (a
// configuration entry appended or truncated, a snapshot installed, the
// start). Peers lists every server this node may send to, with their
// addresses: the members, C_old's voters during a joint change, and, on a
// leader, servers it is catching up and servers the uncommitted
// configuration removes (they learn of it through the log).
type ConfigChanged struct {
	Config ConfigState
	Peers  []*pb.Member
}

// Removed reports, once, that this node is not in the committed
// configuration any more: it was removed. It no longer campaigns or votes;
// the driver should say so and may stop it.
type Removed struct{ Index uint64 }

func (MembersChanged) isAction() {}
func (ConfigChanged) isAction()  {}
func (Removed) isAction()        {}

// Defaults of the catch-up (thesis §4.2.1).
const (
	DefaultMaxCatchUpRounds = 10
	// DefaultCatchUpTimeout is Config.CatchUpTimeout's default, in
	// election timeouts.
	DefaultCatchUpTimeout = 10
)

// pendingChange is the change a leader is carrying out.
type pendingChange struct {
	id     uint64
	target *pb.Configuration // C_new
	// catching up: the new voters, the round (1-based), the heartbeat
	// round it started in and the index it must reach.
	catchUp     []uint64
	round       int
	roundStart  uint64
	roundTarget uint64
	// progress: each new voter's match index and snapshot bytes
	// acknowledged when it last advanced, and the heartbeat round it did.
	progress map[uint64][2]uint64
	movedAt  map[uint64]uint64
	// appended: the configuration entry (the joint one, for a joint
	// change) is in the log at index at.
	appended bool
	at       uint64
}

// --------------------------------------------------------- configurations

// bootstrapConfig is the configuration a log without configuration entries
// starts from: Config.Bootstrap, or Config.Members as voters without
// addresses.
func bootstrapConfig(cfg *Config) *pb.Configuration {
	if cfg.Bootstrap != nil {
		return proto.Clone(cfg.Bootstrap).(*pb.Configuration)
	}
	c := &pb.Configuration{}
	for _, id := range slices.Sorted(slices.Values(cfg.Members)) {
		c.Members = append(c.Members, &pb.Member{Id: id, Role: pb.MemberRole_MEMBER_ROLE_VOTER})
	}
	return c
}

// decodeConfig decodes and checks a configuration entry's data.
func decodeConfig(data []byte) (*pb.Configuration, error) {
	c := &pb.Configuration{}
	if err := proto.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if why := checkConfiguration(c); why != "" {
		return nil, errors.New(why)
	}
	return c, nil
}

// checkConfiguration says what is wrong with a configuration, or "":
// positive ids, each once (a C_old voter may also be in C_new), known roles,
// sorted lists, no removed id among the members.
func checkConfiguration(c *pb.Configuration) string {
	if c == nil {
		return "no configuration"
	}
	seen := map[uint64]bool{}
	for i, m := range c.Members {
		switch {
		case m == nil || m.Id == 0:
			return "a member without an id"
		case seen[m.Id]:
			return fmt.Sprintf("member %d listed twice", m.Id)
		case m.Role != pb.MemberRole_MEMBER_ROLE_VOTER && m.Role != pb.MemberRole_MEMBER_ROLE_LEARNER:
			return fmt.Sprintf("member %d has role %v", m.Id, m.Role)
		case i > 0 && c.Members[i-1].Id > m.Id:
			return "members not sorted by id"
		case len(m.Address) > 1024:
			return fmt.Sprintf("member %d has an address of %d bytes", m.Id, len(m.Address))
		}
		seen[m.Id] = true
	}
	out := map[uint64]bool{}
	for i, m := range c.Outgoing {
		switch {
		case m == nil || m.Id == 0:
			return "an outgoing voter without an id"
		case out[m.Id]:
			return fmt.Sprintf("outgoing voter %d listed twice", m.Id)
		case i > 0 && c.Outgoing[i-1].Id > m.Id:
			return "outgoing voters not sorted by id"
		case len(m.Address) > 1024:
			return fmt.Sprintf("outgoing voter %d has an address of %d bytes", m.Id, len(m.Address))
		}
		out[m.Id] = true
	}
	for i, id := range c.Removed {
		switch {
		case id == 0 || i > 0 && c.Removed[i-1] >= id:
			return "removed ids not sorted, or 0"
		case seen[id] || out[id]:
			return fmt.Sprintf("removed id %d is still a member", id)
		}
	}
	if len(c.Members)+len(c.Outgoing)+len(c.Removed) > 4096 {
		return "more than 4096 members and removed ids"
	}
	return ""
}

// quorumOf is a configuration's voters.
func quorumOf(c *pb.Configuration) quorum {
	var q quorum
	for _, m := range c.Members {
		if m.Role == pb.MemberRole_MEMBER_ROLE_VOTER {
			q.in = append(q.in, m.Id)
		}
	}
	for _, m := range c.Outgoing {
		q.out = append(q.out, m.Id)
	}
	return q
}

// member finds id among c's members (any role) or C_old's voters.
func member(c *pb.Configuration, id uint64) *pb.Member {
	for _, m := range c.Members {
		if m.Id == id {
			return m
		}
	}
	for _, m := range c.Outgoing {
		if m.Id == id {
			return m
		}
	}
	return nil
}

// config is the configuration this node uses: the latest in its log.
func (n *Node) config() ConfigState { return n.confs[len(n.confs)-1] }

// Configuration returns the configuration this node uses and the index of
// its entry. The caller must not modify it.
func (n *Node) Configuration() ConfigState { return n.config() }

// configAt is the configuration in effect at index i (i >= the floor).
func (n *Node) configAt(i uint64) ConfigState {
	for k := len(n.confs) - 1; k > 0; k-- {
		if n.confs[k].Index <= i {
			return n.confs[k]
		}
	}
	return n.confs[0]
}

// isVoter reports whether this node votes in its configuration.
func (n *Node) isVoter() bool { return n.quorum.isVoter(n.id) }

// removedSelf reports whether this node's configuration removed it.
func (n *Node) removedSelf() bool {
	_, ok := slices.BinarySearch(n.config().Config.Removed, n.id)
	return ok
}

// isRemoved reports whether a committed configuration removed id from the
// cluster. Not the latest: a leader that removes itself keeps leading until
// that configuration commits (thesis §4.2.2), so its followers must hear it
// until then.
func (n *Node) isRemoved(id uint64) bool {
	_, ok := slices.BinarySearch(n.configAt(n.commit).Config.Removed, id)
	return ok
}

// restoreConfigs rebuilds the configuration history from the durable
// state: the configuration at the log's base (or the snapshot's, when the
// log was discarded for it), then the configuration entries of the log.
func (n *Node) restoreConfigs(r Restore) error {
	base := r.BaseConfig
	if n.startCompact != nil && r.SnapshotConfig.Config != nil {
		base = r.SnapshotConfig
	}
	if n.startCompact != nil {
		// The store records the configuration with the reset (nil: the
		// bootstrap one, as in Restore), or its next restart, whose log
		// then agrees with the snapshot, would start from the bootstrap
		// configuration whatever the snapshot's was.
		n.startCompact.Config = base
	}
	if base.Config == nil {
		base = ConfigState{Config: bootstrapConfig(&n.cfg)}
	} else if why := checkConfiguration(base.Config); why != "" {
		return fmt.Errorf("fsm: the restored configuration (index %d) is invalid: %s; the store is corrupt", base.Index, why)
	}
	n.confs = []ConfigState{base}
	for _, e := range n.log.entries {
		if e.Type == pb.EntryType_ENTRY_TYPE_CONFIG {
			c, err := decodeConfig(e.Data)
			if err != nil {
				return fmt.Errorf("fsm: restored configuration entry %d: %v; the store is corrupt", e.Index, err)
			}
			n.confs = append(n.confs, ConfigState{Config: c, Index: e.Index})
		}
	}
	n.recomputeConfig()
	return nil
}

// logChanged updates the configuration history after the log changed from
// index i on: configurations of truncated entries are dropped (the node
// reverts to the one before, thesis §4.1), those of new entries added.
func (n *Node) logChanged(i uint64) {
	before := n.config()
	k := len(n.confs)
	for k > 1 && n.confs[k-1].Index >= i {
		k--
	}
	if !n.bug(bugConfigNoRevert) {
		n.confs = n.confs[:k]
	}
	for j := max(i, n.log.offset+1); j <= n.log.lastIndex(); j++ {
		e := n.log.entries[j-n.log.offset-1]
		if e.Type != pb.EntryType_ENTRY_TYPE_CONFIG {
			continue
		}
		c, err := decodeConfig(e.Data)
		if err != nil {
			// Validation decoded it before it was appended.
			panic(fmt.Sprintf("invariant: configuration entry %d passed validation but does not decode: %v", e.Index, err))
		}
		n.confs = append(n.confs, ConfigState{Config: c, Index: e.Index})
	}
	if after := n.config(); after.Index != before.Index || after.Config != before.Config {
		n.recomputeConfig()
	}
}

// pruneConfigs forgets the configurations before the one in effect at the
// floor, after a compaction to it, but for those a snapshot transfer under
// way still needs: its last chunk carries the configuration at its
// snapshot's index, which may be below the new floor.
func (n *Node) pruneConfigs() {
	floor := n.log.floor
	for _, pr := range n.progress {
		if pr.state == stateSnapshot && pr.xfer != nil {
			floor = min(floor, pr.xfer.meta.Index)
		}
	}
	at := n.configAt(floor)
	k := slices.IndexFunc(n.confs, func(c ConfigState) bool { return c.Index == at.Index && c.Config == at.Config })
	if k > 0 {
		n.confs = slices.Clone(n.confs[k:])
	}
}

// recomputeConfig derives the quorum and the peers from the configuration
// and tells the driver (ConfigChanged). A leader starts or stops tracking
// the peers that came or went.
func (n *Node) recomputeConfig() {
	c := n.config()
	n.quorum = quorumOf(c.Config)
	addrs := map[uint64]string{}
	for _, m := range c.Config.Members {
		addrs[m.Id] = m.Address
	}
	for _, m := range c.Config.Outgoing {
		addrs[m.Id] = m.Address
	}
	for id, m := range n.extra {
		if _, ok := addrs[id]; !ok {
			addrs[id] = m.Address
		}
	}
	delete(addrs, n.id)
	n.peers = slices.Sorted(func(yield func(uint64) bool) {
		for id := range addrs {
			if !yield(id) {
				return
			}
		}
	})
	if n.role == Leader {
		n.syncProgress()
	}
	peers := make([]*pb.Member, 0, len(n.peers))
	for _, id := range n.peers {
		peers = append(peers, &pb.Member{Id: id, Address: addrs[id]})
	}
	n.configDirty, n.configPeers = true, peers
}

// syncProgress gives the leader a progress for every peer and drops those
// of servers that are not peers any more.
func (n *Node) syncProgress() {
	for _, p := range n.peers {
		if n.progress[p] == nil {
			// Raft Figure 2: nextIndex starts just after the leader's
			// last entry; the first answer tells where the logs match.
			n.progress[p] = &progress{next: n.log.lastIndex() + 1, heard: n.round}
			n.sendAppend(p)
		}
	}
	for p, pr := range n.progress {
		if !slices.Contains(n.peers, p) {
			if pr.state == stateSnapshot {
				n.acts = append(n.acts, EndTransfer{Peer: p})
			}
			delete(n.progress, p)
			if p == n.transferee {
				n.transferee, n.transferTicks = 0, 0
			}
		}
	}
}

// --------------------------------------------------------------- changes

// changeMembers takes a ChangeMembers on the leader.
func (n *Node) changeMembers(ch ChangeMembers) {
	refuse := func(err error) {
		n.acts = append(n.acts, MembersChanged{ID: ch.ID, Err: err, Leader: n.leader, Config: n.config()})
	}
	cur := n.config()
	switch {
	case n.role != Leader:
		refuse(ErrNotLeader)
		return
	case n.transferee != 0:
		refuse(ErrTransferring)
		return
	case (n.change != nil || cur.Index > n.commit) && !n.bug(bugTwoChangesInflight):
		// thesis §4.1: one change at a time; the next only once the
		// previous has committed.
		refuse(ErrConfigChanging)
		return
	case !n.noopCommitted() && !n.bug(bugConfigNoTermBarrier):
		// Ongaro, raft-dev 2015: a leader must commit an entry of its own
		// term before it changes the configuration.
		refuse(ErrConfigNotReady)
		return
	case ch.ExpectIndex != 0 && ch.ExpectIndex != cur.Index:
		refuse(fmt.Errorf("%w: it is at index %d, the change expected %d", ErrStaleConfig, cur.Index, ch.ExpectIndex))
		return
	}
	target, newVoters, err := applyChange(cur.Config, ch)
	if err == nil {
		// What will be appended must be an entry every follower accepts.
		for _, c := range []*pb.Configuration{target, jointConfig(cur.Config, target)} {
			if why := checkConfiguration(c); why != "" {
				err = fmt.Errorf("%w: %s", ErrBadChange, why)
			} else if size := proto.Size(c); size > n.cfg.Limits.MaxEntryBytes {
				err = fmt.Errorf("%w: the configuration would take %d bytes, over the entry limit of %d", ErrBadChange, size, n.cfg.Limits.MaxEntryBytes)
			}
		}
	}
	if err != nil {
		refuse(err)
		return
	}
	pc := &pendingChange{id: ch.ID, target: target}
	n.change = pc
	for _, id := range newVoters {
		if member(cur.Config, id) == nil {
			// Not a member yet: the leader replicates to it alone.
			n.extra[id] = member(target, id)
		}
		pc.catchUp = append(pc.catchUp, id)
	}
	if len(pc.catchUp) == 0 {
		n.appendConfig()
		return
	}
	n.recomputeConfig()
	pc.round, pc.roundStart, pc.roundTarget = 1, n.round, n.log.lastIndex()
	pc.progress, pc.movedAt = map[uint64][2]uint64{}, map[uint64]uint64{}
	for _, id := range pc.catchUp {
		n.progress[id].heard = n.round
		pc.movedAt[id] = n.round
	}
	n.maybeCaughtUp()
}

// applyChange checks ch against c and returns C_new and the servers that
// become voters (added as voters, or promoted).
func applyChange(c *pb.Configuration, ch ChangeMembers) (*pb.Configuration, []uint64, error) {
	bad := func(format string, args ...any) (*pb.Configuration, []uint64, error) {
		return nil, nil, fmt.Errorf("%w: %s", ErrBadChange, fmt.Sprintf(format, args...))
	}
	if len(c.Outgoing) > 0 {
		return nil, nil, fmt.Errorf("%w: the joint configuration is still being left", ErrConfigChanging)
	}
	if len(ch.Add)+len(ch.Promote)+len(ch.Remove) == 0 {
		return bad("nothing to change")
	}
	t := proto.Clone(c).(*pb.Configuration)
	named := map[uint64]bool{}
	name := func(id uint64) bool {
		if named[id] {
			return false
		}
		named[id] = true
		return true
	}
	var newVoters []uint64
	for _, m := range ch.Add {
		switch {
		case m == nil || m.Id == 0:
			return bad("a server to add needs a positive id")
		case !name(m.Id):
			return bad("server %d is named twice", m.Id)
		case member(c, m.Id) != nil:
			return bad("server %d is already a member", m.Id)
		case slices.Contains(c.Removed, m.Id):
			return bad("id %d belonged to a server that was removed; ids are never reused, pick another", m.Id)
		case m.Address == "":
			return bad("server %d needs an address", m.Id)
		case m.Role != pb.MemberRole_MEMBER_ROLE_VOTER && m.Role != pb.MemberRole_MEMBER_ROLE_LEARNER:
			return bad("server %d needs the role voter or learner", m.Id)
		}
		for _, o := range t.Members {
			if o.Address == m.Address {
				return bad("server %d's address %s is member %d's", m.Id, m.Address, o.Id)
			}
		}
		t.Members = append(t.Members, &pb.Member{Id: m.Id, Address: m.Address, Role: m.Role})
		if m.Role == pb.MemberRole_MEMBER_ROLE_VOTER {
			newVoters = append(newVoters, m.Id)
		}
	}
	for _, id := range ch.Promote {
		m := member(t, id)
		switch {
		case !name(id):
			return bad("server %d is named twice", id)
		case m == nil:
			return bad("server %d is not a member", id)
		case m.Role != pb.MemberRole_MEMBER_ROLE_LEARNER:
			return bad("server %d is not a learner", id)
		}
		m.Role = pb.MemberRole_MEMBER_ROLE_VOTER
		newVoters = append(newVoters, id)
	}
	for _, id := range ch.Remove {
		switch {
		case !name(id):
			return bad("server %d is named twice", id)
		case member(c, id) == nil:
			return bad("server %d is not a member", id)
		}
		t.Members = slices.DeleteFunc(t.Members, func(m *pb.Member) bool { return m.Id == id })
		t.Removed = append(t.Removed, id)
	}
	slices.SortFunc(t.Members, func(a, b *pb.Member) int { return cmpID(a.Id, b.Id) })
	slices.Sort(t.Removed)
	if len(quorumOf(t).in) == 0 {
		return bad("the configuration would have no voter")
	}
	return t, newVoters, nil
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// voterChanges counts the voters that differ between two configurations.
func voterChanges(a, b *pb.Configuration) int {
	qa, qb := quorumOf(a), quorumOf(b)
	n := 0
	for _, id := range qa.in {
		if !slices.Contains(qb.in, id) {
			n++
		}
	}
	for _, id := range qb.in {
		if !slices.Contains(qa.in, id) {
			n++
		}
	}
	return n
}

// appendConfig appends the pending change's configuration: C_new when it
// changes at most one voter (thesis §4.2), else the joint configuration
// (thesis §4.3).
func (n *Node) appendConfig() {
	pc := n.change
	cur := n.config().Config
	next := jointConfig(cur, pc.target)
	for _, id := range pc.catchUp {
		delete(n.extra, id) // members now
	}
	pc.catchUp = nil
	pc.appended = true
	pc.at = n.appendConfigEntry(next)
}

// jointConfig is what the leader appends to go from cur to target: target
// itself when at most one voter changes (thesis §4.2), else C_old,new
// (thesis §4.3): target's members with cur's voters as the outgoing half.
// The voters target removes are C_old voters until C_new, not removed yet
// (their messages count); the learners it removes are removed at once.
func jointConfig(cur, target *pb.Configuration) *pb.Configuration {
	if voterChanges(cur, target) <= 1 {
		return target
	}
	next := proto.Clone(target).(*pb.Configuration)
	next.Removed = nil
	var outgoing []uint64
	for _, m := range cur.Members {
		if m.Role == pb.MemberRole_MEMBER_ROLE_VOTER {
			next.Outgoing = append(next.Outgoing, &pb.Member{Id: m.Id, Address: m.Address, Role: m.Role})
			outgoing = append(outgoing, m.Id)
		}
	}
	for _, id := range target.Removed {
		if !slices.Contains(outgoing, id) {
			next.Removed = append(next.Removed, id)
		}
	}
	return next
}

// appendConfigEntry appends a configuration entry and replicates it.
// Servers it removes stay peers until it commits, so they learn of it.
func (n *Node) appendConfigEntry(c *pb.Configuration) uint64 {
	cur := n.config().Config
	for _, id := range n.peers {
		if m := member(cur, id); m != nil && member(c, id) == nil {
			n.extra[id] = m
			n.leaving = append(n.leaving, id)
		}
	}
	data, err := proto.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("invariant: a configuration does not encode: %v", err))
	}
	e := &pb.Entry{Type: pb.EntryType_ENTRY_TYPE_CONFIG, Data: data}
	n.appendEntries(e) // markDirty: logChanged
	for _, p := range n.peers {
		if pr := n.progress[p]; pr.state == stateReplicate {
			n.sendAppend(p)
		}
	}
	return e.Index
}

// maybeCaughtUp ends a catch-up round once every new voter holds the
// round's target (thesis §4.2.1).
func (n *Node) maybeCaughtUp() {
	pc := n.change
	if pc == nil || len(pc.catchUp) == 0 {
		return
	}
	for _, id := range pc.catchUp {
		if n.progress[id].match < pc.roundTarget {
			return
		}
	}
	took := n.round - pc.roundStart
	if took < n.electionRounds() {
		n.appendConfig()
		return
	}
	if pc.round >= n.cfg.MaxCatchUpRounds {
		n.failChange(fmt.Errorf("%w: after %d rounds the last one still took %d heartbeats, more than an election timeout", ErrCatchUp, pc.round, took))
		return
	}
	pc.round++
	pc.roundStart, pc.roundTarget = n.round, n.log.lastIndex()
}

// catchUpTick runs every heartbeat on the leader: a new voter that has not
// answered for CatchUpTimeout fails the change.
func (n *Node) catchUpTick() {
	pc := n.change
	if pc == nil || len(pc.catchUp) == 0 {
		return
	}
	limit := uint64((n.cfg.CatchUpTimeout + n.cfg.HeartbeatInterval - 1) / n.cfg.HeartbeatInterval)
	for _, id := range pc.catchUp {
		pr := n.progress[id]
		if n.round-pr.heard >= limit {
			n.failChange(fmt.Errorf("%w: server %d has not answered for %v (is its address right, is it running?)", ErrUnreachable, id, n.cfg.CatchUpTimeout))
			return
		}
		// A server that answers but gets no further (it refuses every
		// entry or chunk, or cannot keep up at all) fails the change
		// too: rounds are counted only when they end.
		var acked uint64
		if pr.xfer != nil {
			acked = pr.xfer.acked
		}
		if now := [2]uint64{pr.match, acked}; now != pc.progress[id] {
			pc.progress[id], pc.movedAt[id] = now, n.round
		} else if n.round-pc.movedAt[id] >= limit {
			n.failChange(fmt.Errorf("%w: server %d made no progress for %v (it holds index %d of %d)", ErrCatchUp, id, n.cfg.CatchUpTimeout, pr.match, n.log.lastIndex()))
			return
		}
	}
	n.maybeCaughtUp()
}

// failChange gives up a change that has not appended its configuration.
func (n *Node) failChange(err error) {
	pc := n.change
	for _, id := range pc.catchUp {
		delete(n.extra, id)
	}
	n.change = nil
	n.recomputeConfig()
	n.acts = append(n.acts, MembersChanged{ID: pc.id, Err: err, Leader: n.id, Config: n.config()})
}

// electionRounds is the election timeout in heartbeat rounds.
func (n *Node) electionRounds() uint64 {
	return uint64((n.cfg.ElectionTimeout + n.cfg.HeartbeatInterval - 1) / n.cfg.HeartbeatInterval)
}

// configCommitted runs after the commit index moved: the leader leaves a
// committed joint configuration, answers a change whose configuration
// committed, lets go of removed servers, and hands leadership over if it is
// no longer a voter; any node learns that it was removed.
func (n *Node) configCommitted() {
	cur := n.config()
	if cur.Index > n.commit {
		return
	}
	if n.role == Leader {
		if len(n.leaving) > 0 {
			// The servers the committed configuration removed get one
			// last heartbeat carrying the commit index, then no more.
			for _, id := range n.leaving {
				if pr := n.progress[id]; pr != nil && pr.state != stateSnapshot {
					// With the entries through the configuration it may
					// lack, so that its commit index can reach it.
					if lo := pr.match + 1; lo <= cur.Index && lo > n.log.offset && lo > n.log.floor {
						n.sendEntries(id, pr.match, n.log.sliceBytes(lo, cur.Index+1, n.cfg.MaxMsgBytes, n.cfg.Limits.MaxEntriesPerMessage))
					} else {
						n.sendEmpty(id)
					}
				}
				delete(n.extra, id)
			}
			n.leaving = nil
			n.recomputeConfig()
		}
		if len(cur.Config.Outgoing) > 0 {
			// thesis §4.3: once C_old,new has committed, the leader
			// appends C_new.
			next := proto.Clone(cur.Config).(*pb.Configuration)
			for _, m := range next.Outgoing {
				if member(&pb.Configuration{Members: next.Members}, m.Id) == nil {
					next.Removed = append(next.Removed, m.Id)
				}
			}
			slices.Sort(next.Removed)
			next.Outgoing = nil
			n.appendConfigEntry(next)
			return
		}
		if pc := n.change; pc != nil && pc.appended && cur.Index >= pc.at {
			n.change = nil
			n.acts = append(n.acts, MembersChanged{ID: pc.id, Config: cur})
		}
		if !n.isVoter() && n.transferee == 0 {
			// thesis §4.2.2: a leader the configuration removed steps
			// down once it has committed, handing over to the most
			// up-to-date voter so that commits resume at once.
			n.transferLeadership(0)
		}
	}
	n.announceRemoved()
}

// announceRemoved reports Removed once, if the committed configuration
// removed this node (at start too: nobody sends a removed node anything that
// would move its commit index).
func (n *Node) announceRemoved() {
	if !n.removedAnnounced && n.removedSelf() && n.config().Index <= n.commit {
		n.removedAnnounced = true
		n.acts = append(n.acts, Removed{Index: n.config().Index})
	}
}

// abandonChange answers the pending change when leadership is lost.
func (n *Node) abandonChange() {
	if pc := n.change; pc != nil {
		err := ErrLeadershipLost
		if !pc.appended {
			err = ErrNotLeader // nothing was appended
		}
		n.acts = append(n.acts, MembersChanged{ID: pc.id, Err: err, Config: n.config()})
	}
	n.change = nil
	n.leaving = nil
	if len(n.extra) > 0 {
		clear(n.extra)
		n.recomputeConfig()
	}
}

// Matches returns, on the leader, every peer's match index (Raft Figure 2);
// nil on other nodes.
func (n *Node) Matches() map[uint64]uint64 {
	if n.role != Leader {
		return nil
	}
	m := make(map[uint64]uint64, len(n.progress))
	for id, pr := range n.progress {
		m[id] = pr.match
	}
	return m
}
