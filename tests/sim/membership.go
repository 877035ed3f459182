package sim

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Membership changes (thesis chapter 4). In most seeds the cluster changes
// while the faults hit it: every few hundred milliseconds of the chaos
// phase the simulator asks the node it believes leads (sometimes another)
// for a random change against that node's configuration: add a learner,
// add a voter (the fsm catches it up first), promote a learner, remove a
// voter or a learner (the leader too), or change several voters at once
// (joint consensus: replace one voter by another, add or remove two,
// promote one and remove another, the leader among the removed or not).
// Some changes name the configuration index they expect, rightly or
// wrongly; a few re-add a removed id, which must be refused. Refusals are
// part of the game. Servers to add are spawned as joining nodes (an
// fsm.Config without Members or Bootstrap) with fresh ids, never reused;
// a removed server keeps running for a while (it must not disrupt) and is
// then stopped for good, or runs to the end.
//
// Membership also has its awkward moments, where the rules matter most
// (each drawn with odds the seed chooses):
//   - a change asked of a leader right after its election, before an entry
//     of its term can have committed (the fsm must refuse it: Ongaro's
//     single-server bug, raft-dev 2015);
//   - two changes back to back, each of one voter or a learner added, the
//     second before the first commits (thesis §4.1: one at a time); if the
//     fsm accepts the second, its leader is left with a bare quorum of it;
//   - right after a leader appended a configuration entry, a cut that
//     leaves it alone (with learners and new servers now and then, and a
//     minority of the voters) or with a bare quorum of the new
//     configuration. Some cuts are abrupt: what is in flight across them is
//     lost, so the entry stays on a few logs (and is truncated later,
//     thesis §4.1: revert to the previous configuration);
//   - Ongaro's scenario in steps (lostChange): a leader cut off right after
//     it appended a change of one voter; the next leader asked at once for
//     another change of one voter, then left with a bare quorum of it;
//   - partitions (nemesis.go) that put the learners on either side, so a
//     leader may be left with the learners and a minority of the voters
//     (thesis §4.2.1: learners never count).
// The nemesis holds off for a moment after such a cut, so that it plays out.
//
// The invariants of this file:
//   - config-safety: at one log index at most one configuration ever
//     commits (any node, any incarnation; checked when an index is seen
//     committed and when it is applied).
//   - quorum-overlap: of two consecutive configurations of the committed
//     log (the bootstrap one first), every quorum of one shares a voter
//     with every quorum of the other (a quorum of a joint configuration is
//     a majority of each half): a change of one voter, or a move into or
//     out of a joint configuration whose halves are the neighbours.
//     Checked when a configuration entry is first seen committed.
//   - wrongly-removed: a node reports Removed only when the committed
//     configuration at the index it names leaves it out.
//   - change-ack: a change answered as done has committed, with the
//     configuration the answer names, and that configuration is what the
//     change asked for.
// and the fsm's contract on ConfigChanged (its peers are other servers;
// a node sends only to the peers of its last ConfigChanged and to servers
// that wrote to it), MembersChanged (it answers a change waiting on that
// node, once, with one of the documented errors; a change planned valid is
// not refused as invalid, a removed id is not re-added) and Removed (once
// per incarnation). The other invariants (check.go) hold as they are:
// election safety per term, whatever the configuration, and liveness
// counts the members of the leader's committed configuration.

// maxNodes bounds the servers of one run, spawned ones included (ids are
// never reused, so every refused or finished addition uses one up).
const maxNodes = 16

// changeKind is the shape of a membership change the simulator asks for.
type changeKind uint8

const (
	chAddLearner    changeKind = iota
	chAddVoter                 // caught up first (thesis §4.2.1)
	chPromote                  // a learner becomes a voter
	chRemoveVoter              // the leader itself now and then
	chRemoveLearner            //
	chReplace                  // a new voter for an old one: joint
	chAddTwo                   // two new voters: joint
	chRemoveTwo                // two voters out: joint
	chPromoteRemove            // a learner in, a voter out: joint
	chReAdd                    // a removed id again: must be refused
	numChangeKinds
)

var changeNames = [numChangeKinds]string{"add-learner", "add-voter", "promote", "remove-voter", "remove-learner",
	"replace", "add-two", "remove-two", "promote-remove", "re-add"}

func (k changeKind) String() string {
	if k < numChangeKinds {
		return changeNames[k]
	}
	return "change?"
}

// change is one ChangeMembers the simulator stepped.
type change struct {
	node    int // the node asked
	kind    changeKind
	req     fsm.ChangeMembers
	spawned []int // the nodes spawned for it
	leader  bool  // the node asked was leader then
	settled bool  // answered by a MembersChanged
}

// membership is the per-seed membership schedule.
type membership struct {
	on      bool
	every   time.Duration       // mean spacing of the changes asked
	weights [numChangeKinds]int // preferences among the kinds
	// Odds of the awkward moments: a change right after an election, a
	// second change right after the first, the leader cut off right after
	// it appended a configuration entry.
	onElection, double, cutOnConfig float64
	template                        fsm.Config // what spawned nodes are configured with
}

// initMembership draws the seed's membership schedule.
func (s *Sim) initMembership(on bool) {
	m := &s.member
	m.on = on
	if !on {
		return
	}
	m.every = s.between(150*time.Millisecond, 700*time.Millisecond)
	for k := range m.weights {
		m.weights[k] = 1 + s.rng.IntN(4)
	}
	m.weights[chReAdd] = 1
	odds := func(lo, hi float64) float64 {
		if s.rng.IntN(3) == 0 {
			return 0
		}
		return lo + (hi-lo)*s.rng.Float64()
	}
	m.onElection = odds(0.2, 0.7)
	m.double = odds(0.2, 0.6)
	m.cutOnConfig = odds(0.3, 0.9)
}

// scheduleMembership arms the next membership change of the chaos phase.
func (s *Sim) scheduleMembership() {
	if s.member.on {
		if at := s.after(s.between(s.member.every/2, 3*s.member.every/2)); at < s.chaosEnd {
			s.push(event{at: at, kind: evMembership, node: -1})
		}
	}
}

// membershipEvent asks for a change: of the believed leader (a periodic
// change), or of the node an awkward-moment hook chose, if it still leads
// the term it was elected in.
func (s *Sim) membershipEvent(ev *event) {
	if s.phase != phaseChaos {
		return
	}
	if ev.node >= 0 {
		n := s.nodes[ev.node]
		if n.up && n.inc == ev.inc && n.status.Role == fsm.Leader && n.status.Term == ev.b {
			s.issueChange(n, ev.a == 1)
		}
		return
	}
	// The leader the simulator believes in: the stable one, or else the
	// live leader of the highest term; now and then any node. With no
	// leader at all, it mostly tries again a little later.
	target := s.stableLeader()
	if target == nil {
		for _, n := range s.nodes {
			if n.up && n.status.Role == fsm.Leader && (target == nil || n.status.Term > target.status.Term) {
				target = n
			}
		}
	}
	if target == nil && s.rng.IntN(10) != 0 {
		if at := s.after(s.between(20*time.Millisecond, 60*time.Millisecond)); at < s.chaosEnd {
			s.push(event{at: at, kind: evMembership, node: -1})
		}
		return
	}
	defer s.scheduleMembership()
	if target == nil || s.rng.IntN(10) == 0 {
		target = s.randomLive()
	}
	if target != nil {
		s.issueChange(target, false)
	}
}

// issueChange plans a change against n's configuration and steps it on n;
// sometimes a second one right after it.
func (s *Sim) issueChange(n *simNode, single bool) {
	// Two changes back to back (thesis §4.1 allows one at a time): two
	// changes of one voter each, the second often of the same kind (two
	// removals one after the other, say).
	double := n.status.Role == fsm.Leader && s.rng.Float64() < s.member.double
	mode := planAny
	switch {
	case single:
		mode = planSingle
	case double:
		mode = planPair
	}
	kind, ok := s.stepChange(n, mode, numChangeKinds)
	if s.violation == nil && ok && n.up && double {
		if s.rng.IntN(3) == 0 {
			kind = numChangeKinds
		}
		s.second = true
		s.stepChange(n, mode, kind)
		s.second = false
	}
}

// What planChange may plan.
const (
	planAny    = iota // any kind, by the seed's weights
	planSingle        // a change of one voter, the leader staying
	planPair          // one of two back to back: a change of one voter or a learner added
)

// The weights of planSingle and planPair: one voter, preferably appended
// at once (a removal; an added voter is caught up first).
var (
	singleWeights = [numChangeKinds]int{chRemoveVoter: 4, chAddVoter: 1, chPromote: 1}
	pairWeights   = [numChangeKinds]int{chRemoveVoter: 4, chAddVoter: 1, chPromote: 1, chAddLearner: 2}
)

// stepChange plans one change against n's configuration (of kind like
// when it can, see planChange) and steps it. It returns the kind, and
// false when no change could be planned.
func (s *Sim) stepChange(n *simNode, mode int, like changeKind) (changeKind, bool) {
	kind, req, spawn, ok := s.planChange(n, mode, like)
	if !ok {
		return 0, false
	}
	ch := change{node: n.idx, kind: kind, leader: n.status.Role == fsm.Leader}
	for range spawn {
		sn := s.spawn()
		ch.spawned = append(ch.spawned, sn.idx)
		role := pb.MemberRole_MEMBER_ROLE_VOTER
		if kind == chAddLearner {
			role = pb.MemberRole_MEMBER_ROLE_LEARNER
		}
		req.Add = append(req.Add, &pb.Member{Id: sn.id, Address: nodeAddress(sn.id), Role: role})
		if s.violation != nil {
			return kind, false
		}
	}
	cur := n.fsm.Configuration()
	switch r := s.rng.IntN(8); {
	case mode != planAny:
	case r < 2:
		req.ExpectIndex = cur.Index
	case r == 2:
		req.ExpectIndex = cur.Index + 1
	case r == 3 && cur.Index > 1:
		req.ExpectIndex = cur.Index - 1
	}
	s.changes = append(s.changes, ch)
	req.ID = uint64(len(s.changes))
	s.changes[req.ID-1].req = req
	s.stats.Changes++
	s.step(n, req)
	return kind, true
}

// nodeAddress is the address a server is added with.
func nodeAddress(id uint64) string { return fmt.Sprintf("sim-%d:7000", id) }

// planChange draws a change that is valid against n's configuration (or,
// for chReAdd, deliberately invalid), of the kinds mode allows (of kind
// like when it can): its kind, the request without the servers to add, and
// how many servers to spawn for it.
func (s *Sim) planChange(n *simNode, mode int, like changeKind) (changeKind, fsm.ChangeMembers, int, bool) {
	c := n.fsm.Configuration().Config
	var voters, learners []uint64
	for _, m := range c.GetMembers() {
		if m.Role == pb.MemberRole_MEMBER_ROLE_VOTER {
			voters = append(voters, m.Id)
		} else {
			learners = append(learners, m.Id)
		}
	}
	// Servers are spawned for a leader only: any other node refuses at once.
	free := maxNodes - len(s.nodes)
	if n.status.Role != fsm.Leader {
		free = 0
	}
	ok := func(k changeKind) bool {
		switch k {
		case chAddLearner:
			return len(learners) < 2 && free >= 1
		case chAddVoter:
			return len(voters) < 5 && free >= 1
		case chPromote:
			return len(learners) > 0 && len(voters) < 5
		case chRemoveVoter:
			return len(voters) > 3
		case chRemoveLearner:
			return len(learners) > 0
		case chReplace:
			return len(voters) >= 3 && free >= 1
		case chAddTwo:
			return len(voters) <= 3 && len(voters) > 0 && free >= 2
		case chRemoveTwo:
			return len(voters) >= 5
		case chPromoteRemove:
			return len(learners) > 0 && len(voters) >= 3
		case chReAdd:
			return len(c.GetRemoved()) > 0
		}
		return false
	}
	total := 0
	var w [numChangeKinds]int
	for k := range numChangeKinds {
		if ok(k) {
			w[k] = s.member.weights[k]
			if len(learners) < 2 && k == chAddLearner {
				w[k] += 2 // learners matter only when there are some
			}
			switch mode {
			case planSingle:
				w[k] = singleWeights[k]
			case planPair:
				w[k] = pairWeights[k]
			}
			if k == like {
				w[k] += 100
			}
			total += w[k]
		}
	}
	if total == 0 {
		return 0, fsm.ChangeMembers{}, 0, false
	}
	kind := changeKind(0)
	for r := s.rng.IntN(total); ; kind++ {
		if r < w[kind] {
			break
		}
		r -= w[kind]
	}
	// removeVoter picks a voter to remove, the node asked (the leader)
	// one time in three when it votes (never for a single change of an
	// awkward moment, where the point is the leader that stays).
	if mode != planAny {
		voters = slices.DeleteFunc(voters, func(id uint64) bool { return id == n.id })
	}
	removeVoter := func(except ...uint64) uint64 {
		if slices.Contains(voters, n.id) && !slices.Contains(except, n.id) && s.rng.IntN(3) == 0 {
			return n.id
		}
		var cands []uint64
		for _, v := range voters {
			if !slices.Contains(except, v) {
				cands = append(cands, v)
			}
		}
		return cands[s.rng.IntN(len(cands))]
	}
	pick := func(ids []uint64) uint64 { return ids[s.rng.IntN(len(ids))] }
	var req fsm.ChangeMembers
	spawn := 0
	switch kind {
	case chAddLearner, chAddVoter, chReplace:
		spawn = 1
		if kind == chReplace {
			req.Remove = []uint64{removeVoter()}
		}
	case chAddTwo:
		spawn = 2
	case chPromote:
		req.Promote = []uint64{pick(learners)}
	case chRemoveVoter:
		req.Remove = []uint64{removeVoter()}
	case chRemoveLearner:
		req.Remove = []uint64{pick(learners)}
	case chRemoveTwo:
		a := removeVoter()
		req.Remove = []uint64{a, removeVoter(a)}
	case chPromoteRemove:
		req.Promote = []uint64{pick(learners)}
		req.Remove = []uint64{removeVoter()}
	case chReAdd:
		id := pick(c.GetRemoved())
		req.Add = []*pb.Member{{Id: id, Address: nodeAddress(id), Role: pb.MemberRole_MEMBER_ROLE_LEARNER}}
	}
	return kind, req, spawn, true
}

// spawn starts a new, joining server with a fresh id: it knows no member
// and waits for a leader to add it.
func (s *Sim) spawn() *simNode {
	idx := len(s.nodes)
	cfg := s.member.template
	cfg.ID = uint64(idx + 1)
	cfg.Members, cfg.Bootstrap = nil, nil
	cfg.Rand = rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64()))
	n := newSimNode(idx, cfg)
	n.rate = 1 + maxDrift*(2*s.rng.Float64()-1)
	s.nodes = append(s.nodes, n)
	for i := range s.cut {
		s.cut[i] = append(s.cut[i], false)
	}
	s.cut = append(s.cut, make([]bool, len(s.nodes)))
	s.stats.Spawned++
	s.trace.add(record{at: s.now, kind: recSpawn, node: n.id})
	s.start(n)
	return n
}

// stop takes n down for good: a server removed from the cluster (or one
// whose addition was refused) that its operator shut down.
func (s *Sim) stop(n *simNode) {
	if n.stopped {
		return
	}
	if n.up {
		n.forget()
	} else {
		s.down--
	}
	n.stopped = true
	s.stats.Stopped++
	s.trace.add(record{at: s.now, kind: recStop, node: n.id})
}

// randomLive returns a random node that is up, nil if none is.
func (s *Sim) randomLive() *simNode {
	var c []*simNode
	for _, n := range s.nodes {
		if n.up {
			c = append(c, n)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[s.rng.IntN(len(c))]
}

// ------------------------------------------------------------- actions

// onConfigChanged records the configuration n uses and whom it may send to.
func (s *Sim) onConfigChanged(n *simNode, a fsm.ConfigChanged) {
	if a.Config.Config == nil {
		s.fail("fsm-contract", "n%d reports a configuration change without a configuration", n.id)
		return
	}
	var mask uint64
	for _, p := range a.Peers {
		if p.GetId() == 0 || p.GetId() == n.id || p.GetId() > uint64(len(s.nodes)) {
			s.fail("fsm-contract", "n%d lists peer %d", n.id, p.GetId())
			return
		}
		mask |= idBit(p.GetId())
	}
	if st := n.fsm.Status(); st.Role == fsm.Leader && a.Config.Index > n.conf.Index && a.Config.Index > st.Commit {
		// This leader just appended a configuration entry; it changes
		// one voter (thesis §4.2) or more.
		n.appendedConf = true
		n.singleVoter = n.conf.Config != nil && voterChanges(n.conf.Config, a.Config.Config) == 1
	}
	n.conf, n.peerMask = a.Config, mask
	v := votersOf(a.Config.Config)
	s.trace.add(record{at: s.now, kind: recConfig, node: n.id, a: a.Config.Index, b: v.in, c: learnersOf(a.Config.Config), d: v.out, e: mask})
}

// onMembersChanged settles a change n answered.
func (s *Sim) onMembersChanged(n *simNode, a fsm.MembersChanged) {
	code := changeCode(a.Err)
	s.stats.Answers[code]++
	s.trace.add(record{at: s.now, kind: recChanged, node: n.id, a: a.ID, b: code, c: a.Config.Index, d: a.Leader})
	if a.ID == 0 || a.ID > uint64(len(s.changes)) {
		s.fail("fsm-contract", "n%d answered change %d, which the simulator never asked for", n.id, a.ID)
		return
	}
	ch := &s.changes[a.ID-1]
	if ch.node != n.idx || ch.settled {
		s.fail("fsm-contract", "n%d answered change %d, which is not waiting on it", n.id, a.ID)
		return
	}
	ch.settled = true
	switch {
	case a.Err == nil:
		if ch.kind == chReAdd {
			s.fail("fsm-contract", "n%d re-added removed id %d", n.id, ch.req.Add[0].Id)
			return
		}
		s.stats.ChangesOK++
		if ch.leader && slices.Contains(ch.req.Remove, n.id) {
			s.stats.RemovedLeaders++
		}
		// Checked once the step is over and its commits are recorded.
		n.doneChanges = append(n.doneChanges, doneChange{id: a.ID, conf: a.Config})
		return
	case errors.Is(a.Err, fsm.ErrLeadershipLost):
		s.stats.ChangesUnknown++ // it may still commit
		return
	case errors.Is(a.Err, fsm.ErrBadChange) && ch.kind != chReAdd && !s.opts.SafetyOnly:
		s.fail("fsm-contract", "n%d refused change %d (%v), planned valid against its configuration: %v", n.id, a.ID, ch.kind, a.Err)
		return
	case errors.Is(a.Err, fsm.ErrStaleConfig) && ch.req.ExpectIndex == 0:
		s.fail("fsm-contract", "n%d refused change %d, which expected no index, as stale: %v", n.id, a.ID, a.Err)
		return
	case code == changeOther:
		s.fail("fsm-contract", "n%d answered change %d with unexpected error %v", n.id, a.ID, a.Err)
		return
	}
	// Refused: nothing was appended anywhere, so the servers spawned for
	// it will never be members. Their operator stops them.
	s.stats.ChangesRefused++
	for _, idx := range ch.spawned {
		s.stop(s.nodes[idx])
	}
}

// doneChange is a change a node answered as done, checked at the end of
// its step.
type doneChange struct {
	id   uint64
	conf fsm.ConfigState
}

// onRemoved records that n says it was removed; checked at the end of the
// step, once its commits are recorded.
func (s *Sim) onRemoved(n *simNode, a fsm.Removed) {
	s.trace.add(record{at: s.now, kind: recRemoved, node: n.id, a: a.Index})
	if n.removedSeen {
		s.fail("fsm-contract", "n%d reported Removed twice in one incarnation", n.id)
		return
	}
	n.removedSeen, n.removedAt = true, a.Index
	s.stats.RemovedReported++
}

// checkMembership runs at the end of n's step: the Removed and done
// changes it reported are checked against the committed log, and the
// awkward-moment hooks may act.
func (s *Sim) checkMembership(n *simNode, newLeader bool) {
	if n.removedAt != 0 {
		i := n.removedAt
		n.removedAt = 0
		switch c := s.committedConfAt(i); {
		case i > n.commit || i >= uint64(len(s.committed)):
			s.fail("wrongly-removed", "n%d reports it was removed by the configuration at %d, which is not committed (its commit index is %d)", n.id, i, n.commit)
		case c.Index != i:
			s.fail("wrongly-removed", "n%d reports it was removed by a configuration at %d, but the committed log holds none there (%s is in effect)", n.id, i, confString(c))
		case member(c.Config, n.id):
			s.fail("wrongly-removed", "n%d reports it was removed, but the committed configuration %s keeps it", n.id, confString(c))
		}
	}
	for _, d := range n.doneChanges {
		s.checkDone(n, d)
		if s.violation != nil {
			return
		}
	}
	n.doneChanges = n.doneChanges[:0]
	appended := n.appendedConf && n.status.Role == fsm.Leader
	n.appendedConf = false
	if !s.member.on || s.phase != phaseChaos || !n.up {
		return
	}
	sc := &s.lost
	if sc.stage != 0 && s.now > sc.until {
		sc.stage = 0
	}
	switch {
	case appended && sc.stage == 2 && n.idx == sc.leader:
		// The leader elected after the cut appended a configuration
		// entry: it keeps a bare quorum of it, the others (the old
		// leader among them) are on their own, and what it sent them
		// since its election is lost.
		sc.stage = 0
		s.keepBareQuorum(n, true, s.nodes[sc.old])
		s.holdNemesis(1500 * time.Millisecond)
	case appended && s.second:
		// A second change was appended before the first committed:
		// the leader keeps a bare quorum of the second configuration.
		s.keepBareQuorum(n, true, nil)
		s.holdNemesis(time.Second)
	case appended && s.rng.Float64() < s.member.cutOnConfig:
		if s.rng.IntN(3) == 0 {
			s.keepBareQuorum(n, s.rng.IntN(2) == 0, nil)
			s.holdNemesis(s.between(0, time.Second))
			break
		}
		if n.singleVoter && votersOf(n.conf.Config).quorumHas(n.id) {
			// It may come back, a voter of its new configuration,
			// which no other voter has heard of.
			s.cutOffLeader(n, true)
			*sc = lostChange{stage: 1, old: n.idx, until: s.after(2 * time.Second)}
			s.holdNemesis(2 * time.Second)
			break
		}
		s.cutOffLeader(n, s.rng.IntN(2) == 0)
		s.holdNemesis(s.between(0, time.Second))
	}
	switch {
	case newLeader && sc.stage == 1 && n.idx != sc.old:
		// A leader elected while the one cut off holds a configuration
		// entry that changes one voter and could not commit: asked at
		// once for a change of one voter too.
		*sc = lostChange{stage: 2, old: sc.old, leader: n.idx, until: s.after(10 * time.Millisecond)}
		s.push(event{at: s.after(randDuration(s.rng, 3*time.Millisecond)), kind: evMembership, node: n.idx, inc: n.inc, a: 1, b: n.status.Term})
	case newLeader && s.rng.Float64() < s.member.onElection:
		// Before its term's no-op can have committed: a message takes up
		// to 27 ms each way.
		s.push(event{at: s.after(randDuration(s.rng, 3*time.Millisecond)), kind: evMembership, node: n.idx, inc: n.inc, b: n.status.Term})
	}
}

// lostChange is the scenario of Ongaro's single-server bug (raft-dev,
// 2015) in steps: a leader is cut off right after it appended a
// configuration entry (stage 1: waiting for another leader), the next
// leader is asked for a change at once (stage 2: waiting for it to append
// a configuration entry), and is then left with a bare quorum of its new
// configuration, so that the old leader may come back with the voters
// that never heard of the new one. The fsm must refuse the second change
// until the new leader's term has an entry committed.
type lostChange struct {
	stage       uint8
	old, leader int // node indexes
	until       time.Duration
}

// checkDone checks a change n answered as done (change-ack).
func (s *Sim) checkDone(n *simNode, d doneChange) {
	ch := &s.changes[d.id-1]
	c := d.conf
	switch got := s.committedConfAt(c.Index); {
	case c.Config == nil || c.Index == 0:
		s.fail("change-ack", "n%d answered change %d as done with configuration %s", n.id, d.id, confString(c))
		return
	case c.Index > n.commit || c.Index >= uint64(len(s.committed)):
		s.fail("change-ack", "n%d answered change %d as done at configuration index %d, which is not committed (its commit index is %d)", n.id, d.id, c.Index, n.commit)
		return
	case got.Index != c.Index || !proto.Equal(got.Config, c.Config):
		s.fail("change-ack", "n%d answered change %d as done with %s, but the committed log holds %s there", n.id, d.id, confString(c), confString(got))
		return
	}
	cf := c.Config
	role := func(id uint64) pb.MemberRole {
		for _, m := range cf.Members {
			if m.Id == id {
				return m.Role
			}
		}
		return pb.MemberRole_MEMBER_ROLE_UNSPECIFIED
	}
	why := ""
	for _, m := range ch.req.Add {
		if role(m.Id) != m.Role {
			why = fmt.Sprintf("server %d is not a %v", m.Id, m.Role)
		}
	}
	for _, id := range ch.req.Promote {
		if role(id) != pb.MemberRole_MEMBER_ROLE_VOTER {
			why = fmt.Sprintf("server %d was not promoted", id)
		}
	}
	for _, id := range ch.req.Remove {
		if member(cf, id) || !slices.Contains(cf.Removed, id) {
			why = fmt.Sprintf("server %d was not removed", id)
		}
	}
	if len(cf.Outgoing) > 0 {
		why = "it is a joint configuration"
	}
	if why != "" {
		s.fail("change-ack", "n%d answered change %d (%v) as done with %s, but %s", n.id, d.id, ch.kind, confString(c), why)
	}
}

// cutOffLeader cuts leader l off right after it appended a configuration
// entry, together with up to two of the committed configuration's voters
// (if the rest keeps a quorum) and, each with odds of one half, the servers
// that are not its voters (new voters, learners), so that the entry may
// stay on a few logs only.
func (s *Sim) cutOffLeader(l *simNode, abrupt bool) {
	v := votersOf(s.curConf().Config)
	voters := v.in | v.out
	everyone := s.everyone()
	side := idBit(l.id)
	others := s.rng.IntN(3)
	for _, i := range s.rng.Perm(len(s.nodes)) {
		n := s.nodes[i]
		bit := idBit(n.id)
		switch {
		case n == l || n.stopped:
		case voters&bit == 0:
			if s.rng.IntN(2) == 0 {
				side |= bit
			}
		case others > 0 && v.quorum(everyone&^(side|bit)):
			side |= bit
			others--
		}
	}
	s.configCut(l, side, opConfigCut, abrupt)
}

// holdNemesis keeps the fault schedule from acting for d, so that what a
// membership cut set up can play out.
func (s *Sim) holdNemesis(d time.Duration) { s.nemesisHold = max(s.nemesisHold, s.after(d)) }

// keepBareQuorum leaves leader l, right after it appended a configuration
// entry, with a bare quorum of that configuration (of each half, when it is
// joint) and, each with odds of one half, the servers that vote in neither;
// everyone else, avoid (if not nil) among them, is cut off from them,
// abruptly or not (configCut).
func (s *Sim) keepBareQuorum(l *simNode, abrupt bool, avoid *simNode) {
	v := votersOf(l.fsm.Configuration().Config)
	voters := v.in | v.out
	side := idBit(l.id)
	for _, i := range s.rng.Perm(len(s.nodes)) {
		n := s.nodes[i]
		bit := idBit(n.id)
		switch {
		case n == l || n == avoid || n.stopped:
		case voters&bit == 0:
			if s.rng.IntN(2) == 0 {
				side |= bit
			}
		case !v.quorum(side):
			side |= bit
		}
	}
	s.configCut(l, side, opQuorumCut, abrupt)
}

// configCut partitions the nodes of side (a set of ids) from the others,
// for one of the membership cuts. An abrupt cut loses the messages in
// flight across it too, as when a link goes down with packets on it.
func (s *Sim) configCut(l *simNode, side uint64, op nemesisOp, abrupt bool) {
	var in, out []int
	for i, n := range s.nodes {
		if side&idBit(n.id) != 0 {
			in = append(in, i)
		} else {
			out = append(out, i)
		}
	}
	s.clearCuts()
	s.cutBetween(in, out)
	if abrupt {
		s.dropInFlight()
	}
	s.stats.Partitions++
	s.stats.ConfigCuts++
	r := record{at: s.now, kind: recNemesis, node: l.id, peer: uint64(len(s.nodes)), a: uint64(op), flag: uint8(btoi(abrupt))}
	r.b, r.c, r.d, r.e = s.cutMask()
	s.trace.add(r)
}

// dropInFlight loses the messages in flight over links that are cut now.
func (s *Sim) dropInFlight() {
	for i := range s.queue.items {
		e := &s.queue.items[i]
		if e.kind != evDeliver {
			continue
		}
		if from := int(e.msg.GetFrom()) - 1; from >= 0 && from < len(s.cut) && s.cut[from][e.node] {
			e.kind, e.msg = evVoid, nil
			s.stats.Dropped++
		}
	}
}

// everyone is the set of every node's id.
func (s *Sim) everyone() uint64 {
	var m uint64
	for _, n := range s.nodes {
		m |= idBit(n.id)
	}
	return m
}

// --------------------------------------------------- committed configurations

// recordCommittedConf runs when index i, a configuration entry, is first
// seen committed (by n): the configuration in effect before it and this
// one must have overlapping quorums (quorum-overlap).
func (s *Sim) recordCommittedConf(n *simNode, i uint64, c *pb.Configuration) {
	if c == nil {
		s.fail("fsm-contract", "n%d committed configuration entry %d, which does not decode", n.id, i)
		return
	}
	prev := s.curConf()
	if a, b, ok := disjointQuorums(prev.Config, c); !ok {
		s.fail("quorum-overlap", "configurations %s and %s follow each other in the committed log (seen committed by n%d), but quorums %s and %s share no voter",
			confString(prev), confString(fsm.ConfigState{Config: c, Index: i}), n.id, maskString(a), maskString(b))
		return
	}
	s.confLog = append(s.confLog, fsm.ConfigState{Config: c, Index: i})
	s.stats.ConfigsCommitted++
	if len(c.Outgoing) > 0 {
		s.stats.JointCommitted++
	}
	// The servers this configuration removed are shut down by their
	// operator a little later, or left running to the end.
	for _, id := range c.Removed {
		if slices.Contains(prev.Config.GetRemoved(), id) || id > uint64(len(s.nodes)) {
			continue
		}
		if s.rng.IntN(3) != 0 {
			s.push(event{at: s.after(s.between(300*time.Millisecond, 3*time.Second)), kind: evStop, node: int(id - 1)})
		}
	}
}

// curConf is the configuration in effect at the highest committed index.
func (s *Sim) curConf() fsm.ConfigState { return s.confLog[len(s.confLog)-1] }

// committedConfAt is the configuration the committed log has in effect at
// index i: its latest configuration entry at or below i, or the bootstrap
// configuration (index 0).
func (s *Sim) committedConfAt(i uint64) fsm.ConfigState {
	k, _ := slices.BinarySearchFunc(s.confLog, i+1, func(c fsm.ConfigState, t uint64) int {
		return cmpU64(c.Index, t)
	})
	return s.confLog[k-1]
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ----------------------------------------------------------- quorum math

// idBit is id's bit in a set of node ids (ids are at most maxNodes).
func idBit(id uint64) uint64 {
	if id == 0 || id > 64 {
		return 0
	}
	return 1 << (id - 1)
}

// voterSet is a configuration's voters as sets of ids: in (C_new during a
// joint change) and out (C_old then; empty otherwise).
type voterSet struct{ in, out uint64 }

func votersOf(c *pb.Configuration) voterSet {
	var v voterSet
	for _, m := range c.GetMembers() {
		if m.Role == pb.MemberRole_MEMBER_ROLE_VOTER {
			v.in |= idBit(m.Id)
		}
	}
	for _, m := range c.GetOutgoing() {
		v.out |= idBit(m.Id)
	}
	return v
}

func learnersOf(c *pb.Configuration) uint64 {
	var l uint64
	for _, m := range c.GetMembers() {
		if m.Role == pb.MemberRole_MEMBER_ROLE_LEARNER {
			l |= idBit(m.Id)
		}
	}
	return l
}

func voterCount(m uint64) int { return bits.OnesCount64(m) }

// voterChanges counts the voters two configurations do not share.
func voterChanges(a, b *pb.Configuration) int {
	va, vb := votersOf(a), votersOf(b)
	return voterCount((va.in | va.out) ^ (vb.in | vb.out))
}

// majority reports whether set holds a majority of the voters m.
func majority(m, set uint64) bool {
	return m != 0 && bits.OnesCount64(m&set) >= bits.OnesCount64(m)/2+1
}

// quorum reports whether set is a quorum: a majority of in and, during a
// joint change, of out.
func (v voterSet) quorum(set uint64) bool {
	return majority(v.in, set) && (v.out == 0 || majority(v.out, set))
}

// quorumHas reports whether id votes in either half.
func (v voterSet) quorumHas(id uint64) bool { return (v.in|v.out)&idBit(id) != 0 }

// disjointQuorums looks for a quorum of a and a quorum of b that share no
// voter, by brute force over the subsets of their voters (a few dozen):
// quorums are closed under supersets, so such a pair exists exactly when
// some set is a quorum of a and its complement a quorum of b. ok is true
// when there is none.
func disjointQuorums(a, b *pb.Configuration) (qa, qb uint64, ok bool) {
	va, vb := votersOf(a), votersOf(b)
	all := va.in | va.out | vb.in | vb.out
	for sub := all; ; sub = (sub - 1) & all {
		if va.quorum(sub) && vb.quorum(all&^sub) {
			return sub, all &^ sub, false
		}
		if sub == 0 {
			return 0, 0, true
		}
	}
}

// member reports whether id is a member of c (any role) or one of C_old's
// voters.
func member(c *pb.Configuration, id uint64) bool {
	return slices.ContainsFunc(c.GetMembers(), func(m *pb.Member) bool { return m.Id == id }) ||
		slices.ContainsFunc(c.GetOutgoing(), func(m *pb.Member) bool { return m.Id == id })
}

// sameConf reports whether two configuration states agree: the same index
// and, unless it is 0 (each node's own bootstrap configuration, which a
// joining server does not know), the same configuration.
func sameConf(a, b fsm.ConfigState) bool {
	return a.Index == b.Index && (a.Index == 0 || proto.Equal(a.Config, b.Config))
}

// confString renders a configuration state for reports:
// {voters 1,2,3 learners 4 outgoing 1,2,5 removed 6}@12.
func confString(c fsm.ConfigState) string {
	if c.Config == nil {
		return fmt.Sprintf("{bootstrap}@%d", c.Index)
	}
	v := votersOf(c.Config)
	var b strings.Builder
	fmt.Fprintf(&b, "{voters %s", maskString(v.in))
	if l := learnersOf(c.Config); l != 0 {
		fmt.Fprintf(&b, " learners %s", maskString(l))
	}
	if v.out != 0 {
		fmt.Fprintf(&b, " outgoing %s", maskString(v.out))
	}
	if len(c.Config.Removed) > 0 {
		fmt.Fprintf(&b, " removed %v", c.Config.Removed)
	}
	fmt.Fprintf(&b, "}@%d", c.Index)
	return b.String()
}

// maskString renders a set of ids: 1,2,5 (or - when empty).
func maskString(m uint64) string {
	if m == 0 {
		return "-"
	}
	var parts []string
	for m != 0 {
		i := bits.TrailingZeros64(m)
		parts = append(parts, fmt.Sprint(i+1))
		m &^= 1 << i
	}
	return strings.Join(parts, ",")
}

// Answers to a change, for the trace and the stats.
const (
	changeOK uint64 = iota
	changeNotLeader
	changeLost
	changeTransferring
	changeChanging
	changeNotReady
	changeStale
	changeBad
	changeCatchUp
	changeUnreachable
	changeOther
)

var changeCodeNames = [...]string{"ok", "not leader", "leadership lost", "transferring", "another change in progress",
	"not ready", "stale configuration index", "invalid", "did not catch up", "unreachable", "unknown error"}

func changeCode(err error) uint64 {
	for i, e := range []error{fsm.ErrNotLeader, fsm.ErrLeadershipLost, fsm.ErrTransferring, fsm.ErrConfigChanging,
		fsm.ErrConfigNotReady, fsm.ErrStaleConfig, fsm.ErrBadChange, fsm.ErrCatchUp, fsm.ErrUnreachable} {
		if errors.Is(err, e) {
			return uint64(i + 1)
		}
	}
	if err == nil {
		return changeOK
	}
	return changeOther
}
