package fsm

import (
	"errors"
	"hash/crc32"
	"slices"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Membership changes (thesis chapter 4), one rule per test.

func voter(id uint64) *pb.Member {
	return &pb.Member{Id: id, Address: "host:" + itoa(id), Role: pb.MemberRole_MEMBER_ROLE_VOTER}
}

func learner(id uint64) *pb.Member {
	return &pb.Member{Id: id, Address: "host:" + itoa(id), Role: pb.MemberRole_MEMBER_ROLE_LEARNER}
}

// bootCfg is testConfig(id) bootstrapped with the given members.
func bootCfg(id uint64, ms ...*pb.Member) Config {
	cfg := testConfig(id)
	cfg.Members = nil
	cfg.Bootstrap = &pb.Configuration{Members: ms}
	return cfg
}

// configEntry is a configuration entry at index of term.
func configEntry(index, term uint64, c *pb.Configuration) *pb.Entry {
	data, err := proto.Marshal(c)
	if err != nil {
		panic(err)
	}
	return &pb.Entry{Index: index, Term: term, Type: pb.EntryType_ENTRY_TYPE_CONFIG, Data: data}
}

// ids lists the members' ids of a configuration with their roles.
func roles(c *pb.Configuration) map[uint64]pb.MemberRole {
	m := map[uint64]pb.MemberRole{}
	for _, x := range c.Members {
		m[x.Id] = x.Role
	}
	return m
}

// settledLeader is node 1 leading term 3 of cfg's cluster with its no-op
// (index 2) committed by the acknowledgements of acks.
func settledLeader(t *testing.T, cfg Config, acks ...uint64) *Node {
	t.Helper()
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	makeLeader(t, n)
	settle(t, n)
	for _, p := range acks {
		n.Step(appendAck(p, 1, n.term, n.log.lastIndex()))
	}
	if !n.noopCommitted() {
		t.Fatalf("the no-op did not commit: %+v", n.Status())
	}
	return n
}

// ackAll makes everything durable on the leader and has each of from
// acknowledge its whole log.
func ackAll(t *testing.T, n *Node, from ...uint64) []Action {
	t.Helper()
	acts := settle(t, n)
	for _, p := range from {
		acts = append(acts, n.Step(appendAck(p, n.id, n.term, n.log.lastIndex()))...)
	}
	return acts
}

func changed(acts []Action) []MembersChanged { return actionsOf[MembersChanged](acts) }

// thesis §4.1: a server uses the latest configuration in its log as soon as
// it appends it, committed or not, and reverts to the previous one when that
// entry is truncated.
func TestConfigurationIsTheLatestInTheLogAndRevertsOnTruncation(t *testing.T) {
	n, v := configRevert(t, testConfig(1))
	if len(v) > 0 {
		t.Fatal(v)
	}
	if n.Configuration().Index != 0 {
		t.Fatalf("after the truncation: configuration of index %d", n.Configuration().Index)
	}
}

// configRevert is the rule check of config-no-revert.
func configRevert(t *testing.T, cfg Config) (*Node, []string) {
	t.Helper()
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	c := bootstrapConfig(&Config{Members: []uint64{1, 2, 3}})
	c.Members = append(c.Members, learner(4))
	acts := n.Step(appendMsg(2, 1, 2, 1, 1, 1, configEntry(2, 2, c)))
	var v []string
	if got := n.Configuration(); got.Index != 2 || roles(got.Config)[4] != pb.MemberRole_MEMBER_ROLE_LEARNER {
		v = append(v, "the appended configuration is not in use")
	}
	if cc := actionsOf[ConfigChanged](acts); len(cc) != 1 || !slices.ContainsFunc(cc[0].Peers, func(m *pb.Member) bool { return m.Id == 4 }) {
		v = append(v, "no ConfigChanged naming the new learner")
	}
	// A leader of term 3 replaces index 2 (uncommitted).
	n.Step(appendMsg(3, 1, 3, 1, 1, 1, &pb.Entry{Index: 2, Term: 3, Type: pb.EntryType_ENTRY_TYPE_NOOP}))
	if got := n.Configuration(); got.Index != 0 || len(got.Config.Members) != 3 {
		v = append(v, "the configuration of a truncated entry is still in use")
	}
	return n, v
}

// Ongaro, raft-dev 2015: a leader changes the configuration only once an
// entry of its own term has committed.
func TestChangeWaitsForTheLeadersTermToCommit(t *testing.T) {
	if v := termBarrier(t, testConfig(1)); len(v) > 0 {
		t.Fatal(v)
	}
}

func termBarrier(t *testing.T, cfg Config) []string {
	t.Helper()
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	makeLeader(t, n)
	settle(t, n) // the no-op is durable here, not committed
	acts := n.Step(ChangeMembers{ID: 7, Add: []*pb.Member{learner(4)}})
	if mc := changed(acts); len(mc) != 1 || !errors.Is(mc[0].Err, ErrConfigNotReady) {
		return []string{"a change was accepted before the leader's no-op committed"}
	}
	return nil
}

// thesis §4.1: one change at a time; a change while another is uncommitted
// is refused.
func TestOneChangeAtATime(t *testing.T) {
	if v := twoChanges(t, testConfig(1)); len(v) > 0 {
		t.Fatal(v)
	}
}

func twoChanges(t *testing.T, cfg Config) []string {
	t.Helper()
	n := settledLeader(t, cfg, 2)
	n.Step(ChangeMembers{ID: 1, Add: []*pb.Member{learner(4)}})
	if n.Configuration().Index != 3 {
		return []string{"the first change was not appended"}
	}
	acts := n.Step(ChangeMembers{ID: 2, Add: []*pb.Member{learner(5)}})
	if mc := changed(acts); len(mc) != 1 || !errors.Is(mc[0].Err, ErrConfigChanging) {
		return []string{"a second change was accepted while the first was uncommitted"}
	}
	return nil
}

// A change naming a stale configuration index is refused; a learner is added
// at once and answered once its configuration commits.
func TestLearnerAddCommitsAndStaleIndexIsRefused(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2)
	acts := n.Step(ChangeMembers{ID: 1, Add: []*pb.Member{learner(4)}, ExpectIndex: 5})
	if mc := changed(acts); len(mc) != 1 || !errors.Is(mc[0].Err, ErrStaleConfig) {
		t.Fatalf("stale expected index: %v", describe(acts))
	}
	acts = n.Step(ChangeMembers{ID: 1, Add: []*pb.Member{learner(4)}, ExpectIndex: 0})
	if len(changed(acts)) != 0 || n.Configuration().Index != 3 {
		t.Fatalf("learner add: %v, configuration %v", describe(acts), n.Configuration())
	}
	if len(sentTo(acts, 4)) == 0 {
		t.Fatalf("the new learner is not replicated to: %v", describe(acts))
	}
	acts = ackAll(t, n, 2)
	mc := changed(acts)
	if len(mc) != 1 || mc[0].Err != nil || mc[0].ID != 1 || mc[0].Config.Index != 3 {
		t.Fatalf("after the commit: %v", describe(acts))
	}
}

// thesis §4.2.1: learners receive the log but do not count toward commit.
func TestLearnersDoNotCountForCommit(t *testing.T) {
	if v := learnerCounts(t, testConfig(1)); len(v) > 0 {
		t.Fatal(v)
	}
}

func learnerCounts(t *testing.T, cfg Config) []string {
	t.Helper()
	cfg.Members, cfg.Bootstrap = nil, &pb.Configuration{Members: []*pb.Member{voter(1), voter(2), voter(3), learner(4), learner(5)}}
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	makeLeader(t, n)
	settle(t, n)
	n.Step(appendAck(4, 1, n.term, 2))
	n.Step(appendAck(5, 1, n.term, 2))
	if n.commit >= 2 {
		return []string{"committed with the leader and two learners, no other voter"}
	}
	return nil
}

// Node ids are never reused, and a removed server's messages are refused.
func TestRemovedIdsAreNeverReused(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2)
	n.Step(ChangeMembers{ID: 1, Remove: []uint64{3}})
	ackAll(t, n, 2)
	if c := n.Configuration(); len(c.Config.Members) != 2 || !slices.Equal(c.Config.Removed, []uint64{3}) || n.Configuration().Index > n.commit {
		t.Fatalf("configuration %v (commit %d)", c, n.commit)
	}
	acts := n.Step(ChangeMembers{ID: 2, Add: []*pb.Member{voter(3)}})
	if mc := changed(acts); len(mc) != 1 || !errors.Is(mc[0].Err, ErrBadChange) {
		t.Fatalf("re-adding id 3: %v", describe(acts))
	}
	acts = n.Step(voteMsg(3, 1, n.term+1, 99, n.term))
	if r := actionsOf[Rejected](acts); len(r) != 1 || !errors.Is(r[0].Err, ErrNotForUs) {
		t.Fatalf("a vote request of the removed server: %v", describe(acts))
	}
	if n.role != Leader {
		t.Fatal("a removed server deposed the leader")
	}
}

// thesis §4.2.1: a new voter is caught up before the configuration that adds
// it is appended; one that does not answer fails the change, leaving the
// configuration unchanged.
func TestNewVoterCatchesUpFirst(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2)
	acts := n.Step(ChangeMembers{ID: 1, Add: []*pb.Member{voter(4)}})
	if n.Configuration().Index != 0 || len(changed(acts)) != 0 {
		t.Fatalf("a configuration was appended before the new voter caught up: %v", describe(acts))
	}
	if cc := actionsOf[ConfigChanged](acts); len(cc) != 1 || !slices.ContainsFunc(cc[0].Peers, func(m *pb.Member) bool { return m.Id == 4 && m.Address == "host:4" }) {
		t.Fatalf("the driver was not told the new server's address: %v", describe(acts))
	}
	if len(sentTo(acts, 4)) == 0 {
		t.Fatalf("nothing sent to the new server: %v", describe(acts))
	}
	n.Step(appendAck(4, 1, n.term, n.log.lastIndex()))
	if c := n.Configuration(); c.Index != 3 || roles(c.Config)[4] != pb.MemberRole_MEMBER_ROLE_VOTER {
		t.Fatalf("caught up within a round, but configuration %v", c)
	}
	// Commit now needs 3 of 4.
	n.Step(appendAck(2, 1, n.term, 3))
	if n.commit >= 3 {
		t.Fatal("committed with 2 of the 4 voters")
	}
	acts = settle(t, n)
	acts = append(acts, n.Step(appendAck(4, 1, n.term, 3))...)
	if mc := changed(acts); len(mc) != 1 || mc[0].Err != nil {
		t.Fatalf("after 3 of 4 voters hold it: %v", describe(acts))
	}
}

func TestUnreachableNewVoterFailsTheChange(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2, 3)
	n.Step(ChangeMembers{ID: 1, Add: []*pb.Member{voter(4)}})
	var acts []Action
	for range 2 * int(n.cfg.CatchUpTimeout/n.cfg.HeartbeatInterval) {
		acts = append(acts, fireHeartbeat(t, n)...)
		n.Step(appendAck(2, 1, n.term, n.log.lastIndex()))
	}
	mc := changed(acts)
	if len(mc) != 1 || !errors.Is(mc[0].Err, ErrUnreachable) {
		t.Fatalf("want one ErrUnreachable: %v", mc)
	}
	if n.Configuration().Index != 0 || slices.Contains(n.peers, 4) {
		t.Fatalf("configuration %v, peers %v: want both unchanged", n.Configuration(), n.peers)
	}
}

func TestSlowNewVoterFailsAfterItsRounds(t *testing.T) {
	cfg := testConfig(1)
	cfg.MaxCatchUpRounds = 3
	n := settledLeader(t, cfg, 2, 3)
	n.Step(ChangeMembers{ID: 1, Add: []*pb.Member{voter(4)}})
	var acts []Action
	for range 20 {
		// Each round: the leader gains an entry, and the new server
		// acknowledges the round's target only after an election timeout.
		n.Step(Propose{Proposals: []Proposal{{Data: []byte("x")}}})
		for range n.electionRounds() + 1 {
			acts = append(acts, fireHeartbeat(t, n)...)
			n.Step(appendAck(4, 1, n.term, n.progress[4].match)) // alive
		}
		acts = append(acts, n.Step(appendAck(4, 1, n.term, n.change0Target()))...)
		if len(changed(acts)) > 0 {
			break
		}
	}
	mc := changed(acts)
	if len(mc) != 1 || !errors.Is(mc[0].Err, ErrCatchUp) || n.Configuration().Index != 0 {
		t.Fatalf("want one ErrCatchUp and the configuration unchanged: %v %v", mc, n.Configuration())
	}
}

// change0Target is the current catch-up round's target (for tests).
func (n *Node) change0Target() uint64 {
	if n.change == nil {
		return n.log.lastIndex()
	}
	return n.change.roundTarget
}

// thesis §4.3: replacing a voter (two voters change) goes through joint
// consensus: C_old,new needs majorities of both; once it commits, C_new
// follows, and the change is answered when C_new commits.
func TestReplaceGoesThroughJointConsensus(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2, 3)
	n.Step(ChangeMembers{ID: 9, Add: []*pb.Member{voter(4)}, Remove: []uint64{3}})
	n.Step(appendAck(4, 1, n.term, n.log.lastIndex()))
	c := n.Configuration()
	if c.Index != 3 || len(c.Config.Outgoing) != 3 {
		t.Fatalf("want the joint configuration at 3: %v", c)
	}
	settle(t, n)
	// C_new = {1,2,4} has a majority (1, 4), C_old = {1,2,3} does not.
	n.Step(appendAck(4, 1, n.term, 3))
	if n.commit >= 3 {
		t.Fatal("the joint configuration committed without a majority of C_old")
	}
	acts := n.Step(appendAck(3, 1, n.term, 3))
	if n.commit < 3 {
		t.Fatal("the joint configuration did not commit with majorities of both")
	}
	if c := n.Configuration(); c.Index != 4 || len(c.Config.Outgoing) != 0 || len(changed(acts)) != 0 {
		t.Fatalf("after the joint one committed: %v, %v", c, describe(acts))
	}
	if !slices.Contains(n.peers, 3) {
		t.Fatal("server 3 must hear of C_new before the leader lets it go")
	}
	acts = ackAll(t, n, 4)
	if mc := changed(acts); len(mc) != 1 || mc[0].Err != nil || mc[0].Config.Index != 4 {
		t.Fatalf("after C_new committed: %v", describe(acts))
	}
	if slices.Contains(n.peers, 3) {
		t.Fatal("the leader still replicates to the removed server")
	}
}

// thesis §4.2.2: a leader that removes itself keeps leading until C_new
// commits (not counting itself), then hands over with TimeoutNow.
func TestRemovedLeaderHandsOver(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2, 3)
	n.Step(ChangeMembers{ID: 1, Remove: []uint64{1}})
	settle(t, n)
	n.Step(appendAck(2, 1, n.term, 3))
	if n.commit >= 3 {
		t.Fatal("the leader counted itself toward a configuration without it")
	}
	if n.role != Leader {
		t.Fatal("stepped down before C_new committed")
	}
	acts := n.Step(appendAck(3, 1, n.term, 3))
	if mc := changed(acts); len(mc) != 1 || mc[0].Err != nil {
		t.Fatalf("the change was not answered: %v", describe(acts))
	}
	var tn []uint64
	for _, m := range sent(acts) {
		if m.GetTimeoutNow() != nil {
			tn = append(tn, m.To)
		}
	}
	if len(tn) != 1 {
		t.Fatalf("want one TimeoutNow to a voter of C_new: %v", describe(acts))
	}
	if r := actionsOf[Removed](acts); len(r) != 1 {
		t.Fatalf("the removed leader did not report Removed: %v", describe(acts))
	}
	if n.role != Follower {
		t.Fatalf("the removed leader is %v after handing over, want follower", n.role)
	}
	for range 5 {
		if acts := fireElection(t, n); len(sent(acts)) != 0 {
			t.Fatalf("the removed server campaigns: %v", describe(acts))
		}
	}
}

// thesis §4.2.1, §4.2.3: a learner, and a server not yet added, never
// campaign.
func TestNonVotersNeverCampaign(t *testing.T) {
	for name, cfg := range map[string]Config{
		"learner": bootCfg(4, voter(1), voter(2), voter(3), learner(4)),
		"joining": func() Config { c := testConfig(4); c.Members = nil; return c }(),
	} {
		n := newNode(t, cfg, Restore{})
		n.Step(Start{})
		for range 5 {
			acts := fireElection(t, n)
			if len(sent(acts)) != 0 || n.role != Follower {
				t.Fatalf("%s: campaigned: %v", name, describe(acts))
			}
		}
		// It still follows a leader it never heard of (thesis §4.1).
		acts := stepSettled(t, n, appendMsg(1, 4, 5, 0, 0, 0, entries(1, 5)...))
		if a := sentTo(acts, 1); len(a) != 1 || !a[0].GetAppendEntriesResponse().Success {
			t.Fatalf("%s: did not accept the leader's entries: %v", name, describe(acts))
		}
	}
}

// A follower learns it was removed once the configuration without it
// commits, and says so once.
func TestRemovedFollowerIsTold(t *testing.T) {
	n := newNode(t, testConfig(3), restoreLog(2, 0, 1))
	c := &pb.Configuration{Members: []*pb.Member{voter(1), voter(2)}, Removed: []uint64{3}}
	acts := stepSettled(t, n, appendMsg(1, 3, 2, 1, 1, 1, configEntry(2, 2, c)))
	if len(actionsOf[Removed](acts)) != 0 {
		t.Fatal("Removed before the configuration committed")
	}
	acts = n.Step(appendMsg(1, 3, 2, 2, 2, 2))
	acts = append(acts, n.Step(appendMsg(1, 3, 2, 2, 2, 2))...)
	if r := actionsOf[Removed](acts); len(r) != 1 || r[0].Index != 2 {
		t.Fatalf("want one Removed at 2: %v", describe(acts))
	}
	if n.Status().Voter || n.Status().Member {
		t.Fatal("a removed server still counts itself a member")
	}
}

// thesis §4.1: a snapshot carries the configuration in effect at its last
// index, and a follower that installs it uses it.
func TestSnapshotCarriesTheConfiguration(t *testing.T) {
	n := newNode(t, testConfig(2), restoreLog(2, 0, 1))
	c := &pb.Configuration{Members: []*pb.Member{voter(1), voter(2), voter(3), learner(7)}}
	data := []byte("snap")
	crc := crcOf(data)
	n.Step(Message{Msg: raftMsg(1, 2, 2, &pb.InstallSnapshot{LastIncludedIndex: 8, LastIncludedTerm: 2,
		Offset: 0, Data: data, ChunkCrc: crc, Size: 4, FileCrc: crc, Done: true, Configuration: c, ConfigurationIndex: 6})})
	acts := n.Step(ChunkStaged{Meta: SnapshotMeta{8, 2}, FileCRC: crc, Offset: 4, Done: true})
	got := n.Configuration()
	if got.Index != 6 || roles(got.Config)[7] != pb.MemberRole_MEMBER_ROLE_LEARNER {
		t.Fatalf("after the install: configuration %v", got)
	}
	if cs := actionsOf[Compact](acts); len(cs) != 1 || cs[0].Config.Index != 6 {
		t.Fatalf("the compaction does not record the configuration: %v", describe(acts))
	}
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, crc32c) }

// thesis §4.2.2: a leader that removes itself keeps leading until its
// removal commits, so its followers must hear it until they know the
// removal committed; afterwards its messages are refused (§4.2.3), but for
// the TimeoutNow with which it hands over.
func TestFollowersHearALeaderThatRemovedItselfUntilItCommits(t *testing.T) {
	n := newNode(t, testConfig(2), restoreLog(2, 0, 1))
	c := &pb.Configuration{Members: []*pb.Member{voter(2), voter(3)}, Removed: []uint64{1}}
	acts := stepSettled(t, n, appendMsg(1, 2, 2, 1, 1, 1, configEntry(2, 2, c)))
	if r := actionsOf[Rejected](acts); len(r) != 0 {
		t.Fatalf("the leader's entry removing itself was refused: %v", describe(acts))
	}
	acts = n.Step(appendMsg(1, 2, 2, 2, 2, 1))
	if r := actionsOf[Rejected](acts); len(r) != 0 || n.leader != 1 {
		t.Fatalf("a heartbeat of the leader before its removal committed: %v", describe(acts))
	}
	n.Step(appendMsg(1, 2, 2, 2, 2, 2)) // the removal commits
	if acts := n.Step(Message{Msg: raftMsg(1, 2, 2, &pb.TimeoutNow{})}); n.role != Candidate {
		t.Fatalf("the handover of the removed leader was not heard: %v", describe(acts))
	}
	acts = n.Step(appendMsg(1, 2, n.term, 2, 2, 2))
	if r := actionsOf[Rejected](acts); len(r) != 1 {
		t.Fatalf("the removed server's AppendEntries after its removal committed: %v", describe(acts))
	}
}

// thesis §4.3: a joint change that leaves the leader out keeps it leading
// through C_old,new (it votes in C_old) and until C_new commits.
func TestJointChangeWithoutTheLeader(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2, 3)
	n.Step(ChangeMembers{ID: 3, Add: []*pb.Member{voter(4), voter(5)}, Remove: []uint64{1, 2}})
	n.Step(appendAck(4, 1, n.term, n.log.lastIndex()))
	n.Step(appendAck(5, 1, n.term, n.log.lastIndex()))
	if c := n.Configuration(); len(c.Config.Outgoing) != 3 {
		t.Fatalf("want the joint configuration: %v", c)
	}
	joint := n.log.lastIndex()
	settle(t, n)
	for _, p := range []uint64{3, 4} {
		n.Step(appendAck(p, 1, n.term, joint))
	}
	// C_old {1,2,3}: 1 and 3; C_new {3,4,5}: 3 and 4.
	if n.commit < joint || len(n.Configuration().Config.Outgoing) != 0 {
		t.Fatalf("the joint configuration did not commit, or C_new was not appended: commit %d, %v", n.commit, n.Configuration())
	}
	settle(t, n)
	var acts []Action
	for _, p := range []uint64{3, 5} {
		acts = append(acts, n.Step(appendAck(p, 1, n.term, n.log.lastIndex()))...)
	}
	if mc := changed(acts); len(mc) != 1 || mc[0].Err != nil {
		t.Fatalf("the change was not answered once C_new committed: %v", describe(acts))
	}
	if n.role != Follower {
		t.Fatalf("the leader left out of C_new is still %v", n.role)
	}
}

// A removed leader whose chosen successor is not caught up when the removal
// commits catches it up first, then hands over as its acknowledgement
// arrives, and steps down in that very step (found by tests/process: the
// step went on to replicate with the progress a follower no longer has).
func TestRemovedLeaderHandsOverOnceTheTargetCatchesUp(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2, 3)
	n.Step(ChangeMembers{ID: 1, Remove: []uint64{1}})
	settle(t, n)
	n.Step(Propose{Proposals: []Proposal{{Data: []byte("after")}}}) // index 4
	settle(t, n)
	n.Step(appendAck(2, 1, n.term, 3))
	n.Step(appendAck(3, 1, n.term, 3)) // the removal commits; neither holds 4
	if n.role != Leader || n.transferee == 0 {
		t.Fatalf("role %v, transferee %d: want a leader handing over", n.role, n.transferee)
	}
	to := n.transferee
	acts := n.Step(appendAck(to, 1, n.term, 4))
	if n.role != Follower {
		t.Fatalf("role %v after the target caught up, want follower", n.role)
	}
	if m := sentTo(acts, to); len(m) != 1 || m[0].GetTimeoutNow() == nil {
		t.Fatalf("want one TimeoutNow to %d: %v", to, describe(acts))
	}
}

// A removed follower that lacks the configuration removing it gets, with
// the leader's last message, the entries through it and the commit index,
// so it can learn that it was removed (thesis §4.2.3).
func TestRemovedFollowerGetsItsRemoval(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2, 3)
	n.Step(ChangeMembers{ID: 1, Remove: []uint64{3}})
	settle(t, n)
	acts := n.Step(appendAck(2, 1, n.term, 3)) // C_new {1,2} commits; 3 holds only 2
	if n.commit < 3 {
		t.Fatal("the removal did not commit")
	}
	var last *pb.AppendEntries
	for _, m := range sentTo(acts, 3) {
		if ae := m.GetAppendEntries(); ae != nil {
			last = ae
		}
	}
	if last == nil || last.LeaderCommit < 3 || len(last.Entries) == 0 || last.Entries[len(last.Entries)-1].Index < 3 {
		t.Fatalf("the removed follower's last message %v does not carry its removal: %v", last, describe(acts))
	}
	if slices.Contains(n.peers, 3) {
		t.Fatal("the leader still replicates to the removed follower")
	}
}

// A new voter that answers but never gets further (it refuses every entry)
// fails the change after CatchUpTimeout: a round that never ends must not
// hold the leader's one change slot forever.
func TestNewVoterThatNeverProgressesFailsTheChange(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2, 3)
	n.Step(ChangeMembers{ID: 1, Add: []*pb.Member{voter(4)}})
	var acts []Action
	for range 2 * int(n.cfg.CatchUpTimeout/n.cfg.HeartbeatInterval) {
		acts = append(acts, fireHeartbeat(t, n)...)
		n.Step(appendAck(2, 1, n.term, n.log.lastIndex()))
		n.Step(appendReject(4, 1, n.term, 0, 0, 1)) // alive, and holds nothing
	}
	mc := changed(acts)
	if len(mc) != 1 || !errors.Is(mc[0].Err, ErrCatchUp) || n.Configuration().Index != 0 {
		t.Fatalf("want one ErrCatchUp and the configuration unchanged: %v %v", mc, n.Configuration())
	}
	if acts := n.Step(ChangeMembers{ID: 2, Add: []*pb.Member{learner(5)}}); n.Configuration().Index == 0 {
		t.Fatalf("the next change was refused: %v", describe(acts))
	}
}

// A joint change that also removes a learner records it as removed at
// once: its id is never reused (thesis §4.1).
func TestJointChangeRemovesLearnersForGood(t *testing.T) {
	n := settledLeader(t, bootCfg(1, voter(1), voter(2), voter(3), learner(5)), 2, 3)
	n.Step(ChangeMembers{ID: 1, Add: []*pb.Member{voter(4)}, Remove: []uint64{3, 5}})
	n.Step(appendAck(4, 1, n.term, n.log.lastIndex()))
	joint := n.Configuration()
	if len(joint.Config.Outgoing) == 0 || !slices.Equal(joint.Config.Removed, []uint64{5}) {
		t.Fatalf("joint configuration %v: want C_old voters outgoing and learner 5 removed", joint.Config)
	}
	ackAll(t, n, 2, 4)
	ackAll(t, n, 2, 4)
	if c := n.Configuration().Config; len(c.Outgoing) != 0 || !slices.Equal(c.Removed, []uint64{3, 5}) {
		t.Fatalf("final configuration %v: want 3 and 5 removed", c)
	}
	if acts := n.Step(ChangeMembers{ID: 2, Add: []*pb.Member{learner(5)}}); len(changed(acts)) != 1 || !errors.Is(changed(acts)[0].Err, ErrBadChange) {
		t.Fatalf("re-adding 5: %v", describe(acts))
	}
}

// A change whose configuration could not be an entry (too many members and
// removed ids) is refused, not appended: the leader never crashes on it.
func TestOversizedConfigurationIsRefused(t *testing.T) {
	n := settledLeader(t, testConfig(1), 2, 3)
	var add []*pb.Member
	for id := uint64(10); id < 10+5000; id++ {
		add = append(add, &pb.Member{Id: id, Address: "h:" + itoa(id), Role: pb.MemberRole_MEMBER_ROLE_LEARNER})
	}
	acts := n.Step(ChangeMembers{ID: 1, Add: add})
	if mc := changed(acts); len(mc) != 1 || !errors.Is(mc[0].Err, ErrBadChange) || n.Configuration().Index != 0 {
		t.Fatalf("want ErrBadChange and nothing appended: %v", mc)
	}
}

// A removed node says so again when it restarts (nothing else would move
// its commit index).
func TestRemovedNodeSaysSoAtStart(t *testing.T) {
	c := &pb.Configuration{Members: []*pb.Member{voter(1), voter(2)}, Removed: []uint64{3}}
	n, err := New(testConfig(3), Restore{HardState: &pb.HardState{Term: 2}, Entries: []*pb.Entry{
		{Index: 1, Term: 1}, configEntry(2, 2, c)}, Applied: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r := actionsOf[Removed](n.Step(Start{})); len(r) != 1 {
		t.Fatal("a removed node did not report Removed at start")
	}
}
