package sim

import (
	"errors"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
)

// Reads. Clients also read, through the fsm's ReadIndex (thesis §6.4). In
// the simulation the value a read returns is the applied log prefix up to
// its read index, so linearizability of reads comes down to one check:
//   - stale-read: a read that succeeds returns a read index at or above
//     the index of every proposal acknowledged before the read was issued
//     (a read never misses a write that completed before it began).
//
// And the fsm's contract for reads (fsm-contract): a ReadReady answers a
// read waiting on that node, once, and only when the state machine has
// reported applying its read index. And, unless Options.SafetyOnly:
//   - lease: a read a leader serves at once, under its lease (thesis
//     §6.4.1), is served less than ElectionTimeout / (1 + MaxClockDrift)
//     on its clock after it sent a heartbeat round that a quorum of its
//     configuration, itself included if it votes, has echoed (the
//     simulator sees every round the leader sends and every echo it
//     receives).

// read is one linearizable read a client issued.
type read struct {
	client int
	node   int
	// minIndex is the highest index acknowledged to any client when the
	// read was issued: the read must see at least that much.
	minIndex uint64
	settled  bool
}

// readOdds: one client tick in this many issues a read besides its
// proposals.
const readOdds = 3

// issueRead has client ci send a read to the node it believes leads, or
// half the time to any node: followers serve reads too (thesis §6.4, last
// paragraph).
func (s *Sim) issueRead(ci int) {
	c := &s.clients[ci]
	target := c.target
	if s.rng.IntN(2) == 0 {
		target = s.rng.IntN(len(s.nodes))
	}
	s.reads = append(s.reads, read{client: ci, node: target, minIndex: s.maxAcked})
	s.stats.Reads++
	id := uint64(len(s.reads))
	s.push(event{at: s.after(s.between(100*time.Microsecond, 3*time.Millisecond)), kind: evRead, node: target, a: id})
}

// readArrives steps a ReadIndex on the node, or loses the read if the node
// is down.
func (s *Sim) readArrives(ev *event) {
	n := s.nodes[ev.node]
	if !n.up {
		s.reads[ev.a-1].settled = true
		s.trace.add(record{at: s.now, kind: recReadLost, node: n.id, a: ev.a})
		return
	}
	s.readNow = ev.a
	s.step(n, fsm.ReadIndex{IDs: []uint64{ev.a}, Now: n.clock(s.now)})
	s.readNow = 0
}

// onReadReady checks a read's answer.
func (s *Sim) onReadReady(n *simNode, r fsm.ReadReady) {
	s.trace.add(record{at: s.now, kind: recReadReady, node: n.id, a: r.ID, b: r.Index, c: replyCode(r.Err), d: r.Leader})
	if r.ID == 0 || r.ID > uint64(len(s.reads)) {
		s.fail("fsm-contract", "n%d answered read %d, which no client made", n.id, r.ID)
		return
	}
	rd := &s.reads[r.ID-1]
	if rd.node != n.idx || rd.settled {
		s.fail("fsm-contract", "n%d answered read %d, which is not waiting on it", n.id, r.ID)
		return
	}
	rd.settled = true
	switch {
	case r.Err == nil:
		if r.Index > n.reported {
			s.fail("fsm-contract", "n%d made read %d ready at index %d, but its state machine has reported only %d applied", n.id, r.ID, r.Index, n.reported)
			return
		}
		if r.Index < rd.minIndex {
			s.fail("stale-read", "n%d served read %d at index %d, but index %d was acknowledged before the read was issued", n.id, r.ID, r.Index, rd.minIndex)
			return
		}
		s.stats.ReadsOK++
		if r.ID == s.readNow {
			s.stats.LeaseOK++ // served in the step that asked: by lease
			if !s.opts.SafetyOnly {
				s.checkLease(n, r)
				if s.violation != nil {
					return
				}
			}
		}
		if n.fsm.Status().Role == fsm.Leader {
			s.clients[rd.client].heard(n.idx, s.now)
		} else {
			s.stats.FollowerOK++
		}
	case errors.Is(r.Err, fsm.ErrNotLeader):
		c := &s.clients[rd.client]
		if r.Leader != 0 && r.Leader != n.id && r.Leader <= uint64(len(s.nodes)) {
			c.heard(int(r.Leader-1), s.now)
		}
	case errors.Is(r.Err, fsm.ErrReadNotConfirmed):
	default:
		s.fail("fsm-contract", "n%d answered read %d with unexpected error %v", n.id, r.ID, r.Err)
	}
}

// leaseRounds is what the simulator saw of a leader's read rounds in its
// term: when each was first sent (on the leader's clock) and the highest
// round each server echoed back to it.
type leaseRounds struct {
	term uint64
	sent []time.Duration // by round; 0: not seen
	echo [maxNodes + 1]uint64
}

// leaseSent records the read round of a message n sends as leader.
func (s *Sim) leaseSent(n *simNode, m *pb.RaftMessage) {
	ae := m.GetAppendEntries()
	if ae == nil || ae.GetReadRound() == 0 {
		return
	}
	lr := &n.lease
	if lr.term != m.GetTerm() {
		*lr = leaseRounds{term: m.GetTerm()}
	}
	r := ae.GetReadRound()
	for uint64(len(lr.sent)) <= r {
		lr.sent = append(lr.sent, 0)
	}
	if lr.sent[r] == 0 {
		lr.sent[r] = n.clock(s.now)
	}
}

// leaseEcho records a read round echoed to n in a message it is about to
// step.
func (s *Sim) leaseEcho(n *simNode, m *pb.RaftMessage) {
	r := m.GetAppendEntriesResponse().GetReadRound()
	if from := m.GetFrom(); r > 0 && m.GetTerm() == n.lease.term && from <= maxNodes && !s.hostileNow {
		n.lease.echo[from] = max(n.lease.echo[from], r)
	}
}

// checkLease checks a read leader n served under its lease (see the top of
// this file).
func (s *Sim) checkLease(n *simNode, r fsm.ReadReady) {
	lr := &n.lease
	st := n.fsm.Status()
	if st.Role != fsm.Leader || lr.term != st.Term {
		s.fail("lease", "n%d served read %d at once as %v of term %d, having sent no read round in it", n.id, r.ID, st.Role, st.Term)
		return
	}
	v := votersOf(n.fsm.Configuration().Config)
	// The highest round a quorum echoed: the leader counts for its
	// latest round.
	confirmed := uint64(0)
	for round := uint64(len(lr.sent)) - 1; round > 0; round-- {
		var set uint64
		for id := uint64(1); id <= maxNodes; id++ {
			if lr.echo[id] >= round || id == n.id {
				set |= idBit(id)
			}
		}
		if v.quorum(set) {
			confirmed = round
			break
		}
	}
	// The latest round at or below it that the simulator saw sent.
	for confirmed > 0 && lr.sent[confirmed] == 0 {
		confirmed--
	}
	now := n.clock(s.now)
	d := time.Duration(float64(n.cfg.ElectionTimeout) / (1 + fsm.DefaultMaxClockDrift))
	switch {
	case confirmed == 0:
		s.fail("lease", "n%d, leader of term %d, served read %d under a lease, but no quorum of %s has echoed any round it sent",
			n.id, st.Term, r.ID, confString(n.fsm.Configuration()))
	case now >= lr.sent[confirmed]+d:
		s.fail("lease", "n%d, leader of term %d, served read %d under a lease at %v on its clock, but the latest round a quorum echoed (%d) was sent at %v: the lease ended at %v",
			n.id, st.Term, r.ID, now, confirmed, lr.sent[confirmed], lr.sent[confirmed]+d)
	}
}
