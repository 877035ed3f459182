package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// The invariants, by the name a violation reports. All are checked after
// every Step, incrementally: each check looks only at what the step changed.
//
// Raft's safety properties (Raft §5.2-§5.4, Figure 3):
//   - election-safety: at most one leader per term.
//   - log-matching: two logs holding an entry with the same index and term
//     are identical up to that index.
//   - leader-completeness: the leader of term t holds every entry committed
//     in a term before t.
//   - state-machine-safety: no two nodes apply different entries at one
//     index; an incarnation applies indexes 1, 2, 3, ... once each, only
//     entries of its own log.
//   - leader-append-only: a leader never deletes or overwrites an entry of
//     its log while it stays leader in one term.
//   - monotonic-commit: a node's commit index never decreases within an
//     incarnation and never exceeds its last index.
//
// Further consequences of them that catch a bug closer to its cause:
//   - commit-safety: two nodes never consider different entries committed
//     at one index.
//   - commit-stability: a node never deletes or changes an entry at or
//     below the commit index it has announced.
//   - monotonic-term: a node's term never decreases within an incarnation.
//   - ack-safety: a proposal is acknowledged once, at the index that holds
//     its command.
//   - duplicate-apply: a command is applied at one index only.
//   - stale-read: a read served through ReadIndex returns a read index at
//     or above every index acknowledged before the read was issued (thesis
//     §6.4; see reads.go).
//   - liveness: after the heal a leader exists within Options.LeaderDeadline
//     and every acknowledged proposal is applied on every node within
//     Options.LivenessTimeout. With membership changes, "every node" is
//     every member of the leader's (committed) configuration, and the
//     leader must be one of its voters; the leader is the leader of the
//     highest term among the voters of the latest committed configuration
//     (a removed server may still run, in a term of its own).
//   - config-safety, quorum-overlap, wrongly-removed, change-ack: see
//     membership.go; the fsm's contract on Compact's configuration (the one
//     the committed log has in effect at its index): see snapshot.go.
//
// The fsm's contract with its environment, which catches most bugs at
// their cause, long before the faults turn them into a safety violation.
// Options.SafetyOnly turns off durable-before-ack, commit-rule, lease and
// the halves of fsm-contract that check Status, Compact's configuration,
// a change refused as invalid and whom a node sends to; the rest stays on,
// because the simulator cannot carry out malformed actions.
//   - durable-before-ack: a granted vote, an acknowledged append, or any
//     message in a term is sent only once the store reported the vote, the
//     entries and the term durable (ARCHITECTURE §3 rule 1).
//   - commit-rule: a leader's commit index advances only to an entry of its
//     own term (Raft §5.4.2, Figure 8); any other node's only on an
//     AppendEntries, to at most min(leaderCommit, last new entry) (Raft
//     Figure 2, AppendEntries receiver rule 5).
//   - fsm-contract: actions are well-formed (Persist seqs increase by one
//     and leave no gaps, messages are addressed to peers, Refs and Replies
//     name waiting proposals) and Status agrees with them (last index and
//     term with the Persists, Applied with the Applies, Durable with the
//     disk).
//   - pre-vote: receiving a pre-vote changed neither the receiver's term
//     nor its vote (thesis §9.6).
//   - lease: a read served under a lease is served within the lease a
//     quorum's echoes of its heartbeats gave the leader (thesis §6.4.1;
//     see reads.go).
//   - fsm-assertion: the fsm panicked (it asserts its own invariants).
//   - livelock: a run took more than Options.MaxSteps steps.
//
// And one check of the simulator itself:
//   - simulator: an assumption of the incremental checks did not hold.

// committedEntry is what the checks remember of a committed index.
type committedEntry struct {
	term uint64 // the entry's term
	hash uint64 // rolling hash of the log up to it
	// conf is the configuration the entry holds, nil for other entries.
	conf *pb.Configuration
	// commitTerm is the lowest term any node was in when it saw the index
	// committed: an upper bound of the term the entry was committed in.
	commitTerm uint64
	node       uint64 // the first node seen with it committed
}

// appliedEntry is what the checks remember of an applied index.
type appliedEntry struct {
	hash uint64 // rolling hash of the applied prefix
	term uint64
	node uint64            // the first node that applied it
	conf *pb.Configuration // the configuration it holds, nil for other entries
}

// checkNode runs the per-step checks on the node that just stepped ev.
func (s *Sim) checkNode(n *simNode, ev fsm.Event) {
	st := n.fsm.Status()
	prev := n.status
	n.status = st
	last := n.mirror.last()

	if !s.opts.SafetyOnly {
		switch {
		case st.ID != n.id:
			s.fail("fsm-contract", "n%d reports id %d", n.id, st.ID)
		case st.LastIndex != last || st.LastTerm != n.mirror.terms[last]:
			s.fail("fsm-contract", "n%d reports its log ends at %d (term %d) but its Persist actions left it at %d (term %d)",
				n.id, st.LastIndex, st.LastTerm, last, n.mirror.terms[last])
		case st.Applied != n.applied:
			s.fail("fsm-contract", "n%d reports applied index %d but handed %d to Apply", n.id, st.Applied, n.applied)
		case !s.durableMatches(n, st.Durable):
			s.fail("fsm-contract", "n%d reports index %d durable but its disk ends at %d or holds other entries", n.id, st.Durable, n.disk.chain.last())
		}
	}
	if st.Term < prev.Term {
		s.fail("monotonic-term", "n%d went from term %d back to term %d", n.id, prev.Term, st.Term)
	}
	if m, ok := ev.(fsm.Message); ok && m.Msg.GetRequestVote().GetPreVote() && !s.opts.SafetyOnly &&
		(st.Term != prev.Term || st.Vote != prev.Vote) {
		// thesis §9.6: a pre-vote changes neither term nor vote.
		s.fail("pre-vote", "n%d went from term %d vote %s to term %d vote %s on a pre-vote from n%d",
			n.id, prev.Term, nodeName(prev.Vote), st.Term, nodeName(st.Vote), m.Msg.GetFrom())
	}

	// Raft §5.3: the commit index only grows, and only over entries the
	// log holds.
	switch {
	case st.Commit < n.commit:
		s.fail("monotonic-commit", "n%d's commit index went from %d back to %d", n.id, n.commit, st.Commit)
	case st.Commit > last:
		s.fail("monotonic-commit", "n%d's commit index %d is beyond its last index %d", n.id, st.Commit, last)
	case st.Commit > n.commit:
		if !s.opts.SafetyOnly {
			s.checkCommitRule(n, st, prev, ev)
		}
		s.recordCommit(n, st)
	}
	if n.applied > st.Commit && s.violation == nil {
		s.fail("state-machine-safety", "n%d applied index %d but its commit index is %d", n.id, n.applied, st.Commit)
	}
	if s.violation != nil {
		return
	}

	if st.Role == fsm.Leader {
		s.checkLeader(n, st)
	} else {
		n.leaderTerm = 0
	}

	if st.Role != prev.Role || st.Term != prev.Term || st.Leader != prev.Leader || st.Commit != prev.Commit || st.Vote != prev.Vote {
		s.trace.add(record{at: s.now, kind: recStatus, node: n.id,
			a: uint64(st.Role), b: st.Term, c: st.Leader, d: st.LastIndex, e: st.Commit, f: st.Vote})
	}
}

// checkCommitRule checks how n advanced its commit index. A leader
// commits by counting replicas only an entry of its own term, and earlier
// entries with it (Raft §5.4.2, Figure 8), so its commit index lands on an
// entry of its term. Any other node advances it only on an AppendEntries,
// to at most min(leaderCommit, index of the last new entry) (Raft Figure
// 2, AppendEntries receiver rule 5): entries past the last new one may be
// a deposed leader's.
//
// A leader that its committed configuration removed steps down in the
// step that hands leadership over (thesis §4.2.2), which may be the step
// that committed: it committed as leader of the term it is still in.
func (s *Sim) checkCommitRule(n *simNode, st, prev fsm.Status, ev fsm.Event) {
	if st.Role == fsm.Leader || prev.Role == fsm.Leader && prev.Term == st.Term {
		if t := n.mirror.terms[st.Commit]; t != st.Term {
			s.fail("commit-rule", "n%d, leader of term %d, advanced its commit index from %d to %d, an entry of term %d",
				n.id, st.Term, n.commit, st.Commit, t)
		}
		return
	}
	if n.installed != 0 {
		// Figure 13 rule 8: an installed snapshot's contents are
		// committed.
		if st.Commit > n.installed {
			s.fail("commit-rule", "n%d installed a snapshot through %d and advanced its commit index to %d", n.id, n.installed, st.Commit)
		}
		return
	}
	m, _ := ev.(fsm.Message)
	ae := m.Msg.GetAppendEntries()
	if ae == nil {
		s.fail("commit-rule", "n%d, a %s, advanced its commit index from %d to %d on %T, not on an AppendEntries",
			n.id, st.Role, n.commit, st.Commit, ev)
		return
	}
	lastNew := ae.GetPrevLogIndex() + uint64(len(ae.GetEntries()))
	if limit := min(ae.GetLeaderCommit(), lastNew); st.Commit > limit {
		s.fail("commit-rule", "n%d, a %s, advanced its commit index to %d on an AppendEntries with leader commit %d and last new entry %d",
			n.id, st.Role, st.Commit, ae.GetLeaderCommit(), lastNew)
	}
}

// durableMatches reports whether the disk holds the node's log up to
// index i.
func (s *Sim) durableMatches(n *simNode, i uint64) bool {
	if i <= n.snapIndex() {
		// A durable snapshot holds the committed entries through its index.
		m, ok := n.mirror.hashAt(i)
		return ok && i < uint64(len(s.committed)) && m == s.committed[i].hash
	}
	d, ok1 := n.disk.chain.hashAt(i)
	m, ok2 := n.mirror.hashAt(i)
	return ok1 && ok2 && d == m
}

// recordCommit remembers the entries n has just seen committed and checks
// them against what other nodes saw committed at the same indexes.
func (s *Sim) recordCommit(n *simNode, st fsm.Status) {
	for i := n.commit + 1; i <= st.Commit; i++ {
		h := n.mirror.hashes[i]
		if i < uint64(len(s.committed)) {
			c := &s.committed[i]
			if c.hash != h {
				if mine := n.mirror.confAt(i); c.conf != nil && mine != nil && !proto.Equal(c.conf, mine) {
					s.fail("config-safety", "n%d sees configuration %s committed at index %d (term %d), but n%d saw %s committed there (term %d)",
						n.id, confString(fsm.ConfigState{Config: mine, Index: i}), i, n.mirror.terms[i],
						c.node, confString(fsm.ConfigState{Config: c.conf, Index: i}), c.term)
					return
				}
				s.fail("commit-safety", "n%d sees index %d committed with term %d, but n%d saw a different entry committed there (term %d)",
					n.id, i, n.mirror.terms[i], c.node, c.term)
				return
			}
			c.commitTerm = min(c.commitTerm, st.Term)
			continue
		}
		// Commit indexes of every incarnation start at 0, so the table
		// grows one by one.
		conf := n.mirror.confAt(i)
		s.committed = append(s.committed, committedEntry{term: n.mirror.terms[i], hash: h, conf: conf, commitTerm: st.Term, node: n.id})
		if conf != nil {
			s.recordCommittedConf(n, i, conf)
			if s.violation != nil {
				return
			}
		}
	}
	n.commit = st.Commit
}

// checkElectionSafety checks that n, leader of term, is the only leader
// that term has had (Raft §5.2, Election Safety).
func (s *Sim) checkElectionSafety(n *simNode, term uint64) {
	if l, ok := s.leaders[term]; !ok {
		s.leaders[term] = n.id
	} else if l != n.id {
		s.fail("election-safety", "term %d has leaders n%d and n%d", term, l, n.id)
	}
}

// checkLeader runs the checks on a node that is leader after its step
// (election safety ran before its actions were carried out).
func (s *Sim) checkLeader(n *simNode, st fsm.Status) {
	last := n.mirror.last()
	// Raft §5.3, Leader Append-Only: within one term the leader's log
	// only grows. The rolling hash at its previous last index covers the
	// whole prefix.
	if n.leaderTerm == st.Term {
		if h, ok := n.mirror.hashAt(n.leaderLast); !ok || h != n.leaderHash {
			s.fail("leader-append-only", "n%d, leader of term %d, changed its log at or below index %d (it now ends at %d)",
				n.id, st.Term, n.leaderLast, last)
			return
		}
	}
	n.leaderTerm, n.leaderLast, n.leaderHash = st.Term, last, n.mirror.hashes[last]

	// Raft §5.4, Leader Completeness: the leader of term t holds every
	// entry committed in an earlier term. Commit terms never decrease
	// along the index (a node sees i committed no later than i+1, and its
	// term only grows), so those entries are a prefix 1..k of the log,
	// and one hash comparison at k checks all of them.
	k := s.committedBefore(st.Term)
	if k == 0 {
		return
	}
	if h, ok := n.mirror.hashAt(k); !ok || h != s.committed[k].hash {
		i := s.firstMissingCommitted(n, k)
		c := s.committed[i]
		has := "its log ends before it"
		if i <= last {
			has = fmt.Sprintf("its log holds term %d there", n.mirror.terms[i])
		}
		s.fail("leader-completeness", "n%d, leader of term %d, lacks committed index %d (term %d, seen committed by n%d in term %d): %s",
			n.id, st.Term, i, c.term, c.node, c.commitTerm, has)
	}
}

// committedBefore returns the highest index k such that every entry 1..k
// was seen committed in a term before t.
func (s *Sim) committedBefore(t uint64) uint64 {
	// committed[0] is a sentinel with commit term 0 < t.
	lo, hi := 0, len(s.committed)-1
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if s.committed[mid].commitTerm < t {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return uint64(lo)
}

// firstMissingCommitted finds, for a report, the first index <= k where
// n's log and the committed entries part.
func (s *Sim) firstMissingCommitted(n *simNode, k uint64) uint64 {
	for i := uint64(1); i < k; i++ {
		if h, ok := n.mirror.hashAt(i); !ok || h != s.committed[i].hash {
			return i
		}
	}
	return k
}

// checkLogMatching checks the Log Matching Property (Raft §5.3) for
// indexes from..to of n's log, which just changed, against every other
// node's log.
func (s *Sim) checkLogMatching(n *simNode, from, to uint64) {
	for _, o := range s.nodes {
		if o == n {
			continue
		}
		// Going down from the top, the first index where the terms agree
		// must also have equal hashes; then the prefixes below are equal
		// too and the rest of the range needs no look.
		for i := min(to, o.mirror.last()); i >= from; i-- {
			if n.mirror.terms[i] != o.mirror.terms[i] {
				continue
			}
			if n.mirror.hashes[i] != o.mirror.hashes[i] {
				j := n.mirror.firstDifference(&o.mirror)
				s.fail("log-matching", "n%d and n%d both hold index %d with term %d, but their logs differ from index %d (terms %d and %d there)",
					n.id, o.id, i, n.mirror.terms[i], j, n.mirror.terms[j], o.mirror.terms[j])
				return
			}
			break
		}
	}
}

// checkDurableBeforeSend checks ARCHITECTURE §3 rule 1 on a message n is
// about to send: the term it carries is durable, and so are a vote it
// grants and the entries it acknowledges.
//
// A held answer may be released after the node has moved to a later term
// (its Persist became durable together with the later ones). The disk
// then holds the later term, which makes the old vote moot, and the log
// may already be changing under the new leader. So the vote is checked
// only while the disk is still in the message's term, and the entries
// only while the node is still in it: within one term a follower's log
// never changes at or below an index it acknowledged (the leader of the
// term holds the same entries there).
func (s *Sim) checkDurableBeforeSend(n *simNode, m *pb.RaftMessage) {
	hs := n.disk.hs
	if m.GetRequestVote().GetPreVote() || m.GetRequestVoteResponse().GetPreVote() {
		// A pre-vote and a granted pre-vote carry the term the
		// pre-candidate would campaign in, which nobody is in yet, and
		// promise nothing durable (thesis §9.6). A refusal carries the
		// sender's term, which must be durable.
		if m.GetRequestVote() != nil || m.GetRequestVoteResponse().GetGranted() {
			return
		}
	}
	switch {
	case hs.GetTerm() < m.GetTerm():
		s.fail("durable-before-ack", "n%d sent %s in term %d while its disk holds term %d",
			n.id, msgName(m), m.GetTerm(), hs.GetTerm())
	case m.GetRequestVoteResponse().GetGranted() && hs.GetTerm() == m.GetTerm() && hs.GetVote() != m.GetTo():
		s.fail("durable-before-ack", "n%d granted its vote in term %d to n%d while its disk holds vote %d",
			n.id, m.GetTerm(), m.GetTo(), hs.GetVote())
	case m.GetAppendEntriesResponse().GetSuccess() && n.fsm.Status().Term == m.GetTerm():
		match := m.GetAppendEntriesResponse().GetMatchIndex()
		switch {
		case match > n.mirror.last():
			s.fail("durable-before-ack", "n%d acknowledged index %d in term %d, but its log ends at %d",
				n.id, match, m.GetTerm(), n.mirror.last())
		case !s.durableMatches(n, match):
			s.fail("durable-before-ack", "n%d acknowledged index %d in term %d before it was durable (its disk ends at %d)",
				n.id, match, m.GetTerm(), n.disk.chain.last())
		}
	}
}

// stableLeader returns the node that leads the highest term any live voter
// of the latest committed configuration is in, or nil. Servers outside it
// (removed ones that have not heard so, joining ones) do not count: their
// terms may run ahead of the cluster's.
func (s *Sim) stableLeader() *simNode {
	v := votersOf(s.curConf().Config)
	voters := v.in | v.out
	var top uint64
	for _, n := range s.nodes {
		if n.up && voters&idBit(n.id) != 0 {
			top = max(top, n.status.Term)
		}
	}
	for _, n := range s.nodes {
		if n.up && n.status.Term == top && n.status.Role == fsm.Leader {
			return n
		}
	}
	return nil
}

// livenessPoll is how often the liveness condition is checked after the
// heal.
const livenessPoll = 10 * time.Millisecond

// checkLiveness polls, after the heal, for a leader and for every
// acknowledged proposal to be applied everywhere; it ends the run when
// both hold and fails it when the deadlines pass.
func (s *Sim) checkLiveness() {
	l := s.stableLeader()
	if l != nil && s.leaderAt < 0 {
		s.leaderAt = s.now
	}
	since := s.now - s.healAt
	if s.leaderAt < 0 && since >= s.opts.LeaderDeadline {
		s.fail("liveness", "no leader %v after the faults healed: %s", s.opts.LeaderDeadline, s.describeNodes())
		return
	}
	if l != nil && !s.clientsOn && s.converged(l) {
		s.done = true
		s.stats.Converged = since
		return
	}
	if since >= s.opts.LivenessTimeout {
		s.fail("liveness", "not converged %v after the faults healed (highest acknowledged index %d): %s",
			s.opts.LivenessTimeout, s.maxAcked, s.describeNodes())
		return
	}
	s.push(event{at: s.after(livenessPoll), kind: evCheckLiveness})
}

// converged reports whether leader l, a voter of its configuration, has
// committed its whole log (so its configuration too), including every
// acknowledged proposal, and every member of that configuration has
// applied it.
func (s *Sim) converged(l *simNode) bool {
	st := l.status
	if st.Commit != st.LastIndex || st.Commit < s.maxAcked || !st.Voter {
		return false
	}
	c := l.fsm.Configuration().Config
	for _, n := range s.nodes {
		if member(c, n.id) && (!n.up || n.applied != st.Commit) {
			return false
		}
	}
	return true
}

// describeNodes summarizes every node's state for a liveness report.
func (s *Sim) describeNodes() string {
	var b strings.Builder
	for i, n := range s.nodes {
		if i > 0 {
			b.WriteString("; ")
		}
		if !n.up {
			what := "down"
			if n.stopped {
				what = "stopped"
			}
			fmt.Fprintf(&b, "n%d %s", n.id, what)
			continue
		}
		st := n.status
		fmt.Fprintf(&b, "n%d %s term %d last %d commit %d applied %d config %s", n.id, st.Role, st.Term, st.LastIndex, st.Commit, n.applied,
			confString(n.fsm.Configuration()))
	}
	fmt.Fprintf(&b, "; committed configuration %s", confString(s.curConf()))
	return b.String()
}
