package sim

import (
	"errors"
	"time"

	"github.com/ketch-raft/ketch/fsm"
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
// reported applying its read index.

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
