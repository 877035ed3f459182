package sim

import (
	"slices"
	"time"

	"github.com/ketch-raft/ketch/fsm"
)

// The nemesis is the fault schedule: every nemesisMin..nemesisMax of the
// chaos phase it picks one operation, with weights the seed draws so that
// some seeds lean on crashes and others on partitions. Crashes also happen
// at awkward moments (maybeAwkwardCrash). At most a minority of the voters
// of the committed configuration (of each half, during a joint change) is
// down at any time, servers outside it may all be; partitions may cut off
// anything.
type nemesisOp uint8

const (
	opCrash       nemesisOp = iota // crash a random node
	opCrashLeader                  // crash the leader, often mid-replication
	opRestart                      // restart a crashed node before its downtime ends
	opSplit                        // a majority/minority split, often with the leader in the minority
	opIsolate                      // cut one node, often the leader, off in both directions
	opOneWay                       // cut links in one direction only: A cannot reach B, B reaches A
	opBridge                       // two halves that only one bridging node reaches both of
	opHeal                         // remove every partition
	opTransfer                     // ask the leader to transfer leadership (thesis §3.10)
	numOps
	// Not drawn: right after a leader appended a configuration entry, cut
	// it off (opConfigCut) or leave it a bare quorum (opQuorumCut); see
	// membership.go.
	opConfigCut = numOps
	opQuorumCut = numOps + 1
)

var opNames = [numOps + 2]string{"crash", "crash-leader", "restart", "split", "isolate", "one-way", "bridge", "heal", "transfer",
	"cut-on-config", "bare-quorum-on-config"}

func (op nemesisOp) String() string {
	if int(op) < len(opNames) {
		return opNames[op]
	}
	return "op?"
}

func (s *Sim) nemesisInterval() time.Duration {
	return s.between(s.faults.nemesisMin, s.faults.nemesisMax)
}

// nemesis runs one operation and schedules the next one.
func (s *Sim) nemesis() {
	if s.phase != phaseChaos {
		return
	}
	if op, ok := s.pickOp(); ok && s.now >= s.nemesisHold {
		s.act(op)
	}
	if next := s.after(s.nemesisInterval()); next < s.chaosEnd {
		s.push(event{at: next, kind: evNemesis})
	}
}

// applicable reports whether op can do anything now.
func (s *Sim) applicable(op nemesisOp) bool {
	n := len(s.nodes)
	switch op {
	case opCrash:
		return slices.ContainsFunc(s.nodes, s.crashable)
	case opCrashLeader:
		l := s.stableLeader()
		return l != nil && s.crashable(l)
	case opRestart:
		return s.down > 0
	case opSplit, opIsolate, opOneWay:
		return n > 1
	case opBridge:
		return n > 2
	case opHeal:
		return s.anyCut()
	case opTransfer:
		return n > 1 && s.stableLeader() != nil
	}
	return false
}

// pickOp draws an applicable operation by the seed's weights.
func (s *Sim) pickOp() (nemesisOp, bool) {
	var w [numOps]int
	total := 0
	for op := range numOps {
		if s.applicable(op) {
			w[op] = s.weights[op]
			total += w[op]
		}
	}
	if total == 0 {
		return 0, false
	}
	r := s.rng.IntN(total)
	for op := range numOps {
		if r < w[op] {
			return op, true
		}
		r -= w[op]
	}
	panic("unreachable")
}

// act carries out one nemesis operation.
func (s *Sim) act(op nemesisOp) {
	var target *simNode
	switch op {
	case opCrash:
		target = s.pick(s.crashable)
		s.crash(target, crashByNemesis)
	case opCrashLeader:
		target = s.stableLeader()
		s.crash(target, crashByNemesis)
	case opRestart:
		target = s.pick(func(n *simNode) bool { return !n.up && !n.stopped })
		s.restart(target)
	case opSplit:
		target = s.split()
	case opIsolate:
		target = s.leaderOrAny()
		s.clearCuts()
		s.cutBetween([]int{target.idx}, s.allBut(target.idx))
	case opOneWay:
		target = s.leaderOrAny()
		switch s.rng.IntN(3) {
		case 0: // it hears everyone, nobody hears it
			for _, b := range s.allBut(target.idx) {
				s.cut[target.idx][b] = true
			}
		case 1: // everyone hears it, it hears nobody
			for _, b := range s.allBut(target.idx) {
				s.cut[b][target.idx] = true
			}
		default: // one link
			others := s.allBut(target.idx)
			b := others[s.rng.IntN(len(others))]
			if s.rng.IntN(2) == 0 {
				s.cut[target.idx][b] = true
			} else {
				s.cut[b][target.idx] = true
			}
		}
	case opBridge:
		perm := s.rng.Perm(len(s.nodes))
		target = s.nodes[perm[0]] // the bridge
		rest := perm[1:]
		s.clearCuts()
		s.cutBetween(rest[:len(rest)/2], rest[len(rest)/2:])
	case opHeal:
		s.clearCuts()
	case opTransfer:
		// To the most up-to-date voter, or to a random one (maybe down,
		// maybe cut off: then the transfer must time out).
		target = s.stableLeader()
		to := uint64(0)
		if s.rng.IntN(2) == 0 {
			others := s.allBut(target.idx)
			to = uint64(others[s.rng.IntN(len(others))] + 1)
		}
		s.stats.Transfers++
		s.step(target, fsm.TransferLeadership{To: to})
	}
	if op >= opSplit && op <= opHeal {
		s.stats.Partitions++
	}
	r := record{at: s.now, kind: recNemesis, peer: uint64(len(s.nodes)), a: uint64(op)}
	r.b, r.c, r.d, r.e = s.cutMask()
	if target != nil {
		r.node = target.id
	}
	s.trace.add(r)
}

// split cuts the cluster in two: a minority of the committed
// configuration's voters, often with the leader (it keeps sending,
// nothing commits, and the majority elects a new leader), and each server
// outside the configuration's voters (learners, servers joining or
// removed) on either side, so that a leader may be left with the learners.
// It returns the leader when it is on the minority side.
func (s *Sim) split() *simNode {
	v := votersOf(s.curConf().Config)
	voters := v.in | v.out
	var target *simNode
	perm := s.rng.Perm(len(s.nodes))
	if l := s.stableLeader(); l != nil && s.rng.IntN(2) == 0 {
		j := slices.Index(perm, l.idx)
		perm[0], perm[j] = perm[j], perm[0]
		target = l
	}
	// The minority takes 1 to maxMinority voters (at least one node).
	want := 1 + s.rng.IntN(max((voterCount(v.in)-1)/2, 1))
	var side, rest []int
	var sideMask uint64
	for k, i := range perm {
		n := s.nodes[i]
		bit := idBit(n.id)
		switch {
		case k == 0 && target != nil:
			side, sideMask = append(side, i), sideMask|bit
			if voters&bit != 0 {
				want--
			}
		case voters&bit == 0:
			if s.rng.IntN(2) == 0 {
				side, sideMask = append(side, i), sideMask|bit
			} else {
				rest = append(rest, i)
			}
		case want > 0 && !v.quorum(sideMask|bit):
			side, sideMask = append(side, i), sideMask|bit
			want--
		default:
			rest = append(rest, i)
		}
	}
	s.clearCuts()
	s.cutBetween(side, rest)
	return target
}

// crashable reports whether n may crash now: it is up and, if it votes in
// the committed configuration, a majority of each half stays up without it.
func (s *Sim) crashable(n *simNode) bool {
	if !n.up {
		return false
	}
	v := votersOf(s.curConf().Config)
	bit := idBit(n.id)
	if (v.in|v.out)&bit == 0 {
		return true
	}
	var up uint64
	for _, o := range s.nodes {
		if o.up && o != n {
			up |= idBit(o.id)
		}
	}
	return v.quorum(up)
}

// pick returns a random node among those ok accepts (there must be one).
func (s *Sim) pick(ok func(*simNode) bool) *simNode {
	var c []*simNode
	for _, n := range s.nodes {
		if ok(n) {
			c = append(c, n)
		}
	}
	return c[s.rng.IntN(len(c))]
}

// leaderOrAny returns the leader half of the time (when there is one),
// otherwise a random node.
func (s *Sim) leaderOrAny() *simNode {
	if l := s.stableLeader(); l != nil && s.rng.IntN(2) == 0 {
		return l
	}
	return s.nodes[s.rng.IntN(len(s.nodes))]
}

func (s *Sim) allBut(idx int) []int {
	var r []int
	for i := range s.nodes {
		if i != idx {
			r = append(r, i)
		}
	}
	return r
}

// cutBetween cuts every link between the groups, both ways.
func (s *Sim) cutBetween(a, b []int) {
	for _, x := range a {
		for _, y := range b {
			s.cut[x][y], s.cut[y][x] = true, true
		}
	}
}

func (s *Sim) clearCuts() {
	for _, row := range s.cut {
		clear(row)
	}
}

// cutMask encodes the cut links as bits a*n+b of four words, for the trace
// (n <= maxNodes).
func (s *Sim) cutMask() (w0, w1, w2, w3 uint64) {
	var m [4]uint64
	n := len(s.nodes)
	for a, row := range s.cut {
		for b, c := range row {
			if k := a*n + b; c && k < 256 {
				m[k/64] |= 1 << (k % 64)
			}
		}
	}
	return m[0], m[1], m[2], m[3]
}

// anyCut reports whether some link is cut.
func (s *Sim) anyCut() bool {
	a, b, c, d := s.cutMask()
	return a|b|c|d != 0
}

// Why a node crashed, for the trace.
const (
	crashByNemesis uint8 = iota + 1
	crashAwkward
)

// crash kills n: it loses its fsm, its timers, its applied state and every
// write its disk had not made durable, then comes back after a downtime.
func (s *Sim) crash(n *simNode, why uint8) {
	// The store issues its writes in order, so a crash may find a prefix
	// of the unsynced ones on the platter even without an fsync. Draw
	// how many survive: often none, sometimes some.
	kept := 0
	if len(n.unsynced) > 0 && s.rng.IntN(3) == 0 {
		kept = s.rng.IntN(len(n.unsynced) + 1)
	}
	for _, w := range n.unsynced[:kept] {
		s.diskWrite(n, w)
	}
	lost := len(n.unsynced) - kept
	inMemory := n.mirror
	n.forget()
	s.down++
	s.stats.Crashes++

	// Its log is now whatever its disk holds, which may differ from what
	// it held in memory (an unsynced truncation is undone): check the
	// indexes that changed.
	n.mirror = n.disk.chain.clone()
	if i := n.mirror.firstDifference(&inMemory); i != 0 && i <= n.mirror.last() {
		s.checkLogMatching(n, i, n.mirror.last())
	}

	// Short downtimes matter: a node that restarts within an election
	// timeout can vote again in the term it forgot. Awkward crashes are
	// mostly short: their point is what the node does right after.
	short := 4
	if why == crashAwkward {
		short = 7
	}
	var down time.Duration
	if s.rng.IntN(10) < short {
		down = s.between(time.Millisecond, 40*time.Millisecond)
	} else {
		down = s.between(100*time.Millisecond, 2*time.Second)
	}
	s.push(event{at: s.after(down), kind: evRestart, node: n.idx, inc: n.inc})
	s.trace.add(record{at: s.now, kind: recCrash, node: n.id, flag: why, a: uint64(kept), b: uint64(lost), c: uint64(down)})
}

// restart brings a crashed node back from its disk.
func (s *Sim) restart(n *simNode) {
	s.down--
	s.start(n)
}

// maybeAwkwardCrash crashes n, with a small probability, right after a
// step that left writes unsynced: a leader that just sent entries it has
// not made durable, a follower that just accepted entries, a voter that
// just granted its vote. Random crash times rarely land in these few
// milliseconds, and they are where ordering bugs (acking before durable,
// forgetting a vote) hide. Rare moments get better odds: a step that
// changed the term or vote (a few per election), and a node that has just
// become leader, whose no-op is not yet on any other node (Raft §5.4.2,
// Figure 8 starts with such a leader crashing).
func (s *Sim) maybeAwkwardCrash(n *simNode, hardState, newLeader bool) {
	if s.phase != phaseChaos || !n.up || len(n.unsynced) == 0 || !s.crashable(n) {
		return
	}
	p := s.faults.awkwardCrash
	switch {
	case newLeader:
		p *= newLeaderBoost
	case hardState:
		p *= hardStateBoost
	}
	if s.rng.Float64() < p {
		s.crash(n, crashAwkward)
	}
}

// Multipliers of the odds of an awkward crash at rare moments.
const (
	hardStateBoost = 20
	newLeaderBoost = 40
)

// heal ends the chaos phase: every crashed node restarts, partitions and
// network faults stop (small delays remain), and the liveness checks begin.
func (s *Sim) heal() {
	s.phase = phaseLiveness
	s.healAt = s.now
	s.faults = calmRates(s.faults.intensity)
	s.clearCuts()
	s.trace.add(record{at: s.now, kind: recHeal})
	for _, n := range s.nodes {
		if !n.up && !n.stopped {
			s.restart(n)
		}
		if s.violation != nil {
			return
		}
	}
	s.push(event{at: s.after(s.opts.ClientsAfterHeal), kind: evStopClients})
	s.push(event{at: s.after(livenessPoll), kind: evCheckLiveness})
}
