package sim

import (
	"encoding/binary"
	"time"

	"github.com/ketch-raft/ketch/fsm"
)

// The workload: a few open-loop clients, each sending a proposal every
// 5-40 ms to the node it believes leads. A client learns the leader from
// acknowledgments and ErrNotLeader hints, and picks a node at random when
// it has heard nothing for a while. Every proposal carries a unique
// command (its id, then filler), so the checks can tell commands apart.

// client is one simulated client.
type client struct {
	target  int           // index of the node it believes leads
	heardAt time.Duration // last time a node answered it
}

// heard records that node idx answered the client as leader would.
func (c *client) heard(idx int, now time.Duration) {
	c.target, c.heardAt = idx, now
}

// proposal is one command a client proposed.
type proposal struct {
	data   []byte
	client int
	node   int // the node it was last sent to
	tries  int
	// settled: the node it was sent to answered it (applied, or replied
	// with an error). Until then it is waiting on that node.
	settled   bool
	ackIndex  uint64 // index it was acknowledged at, 0 if not
	appliedAt uint64 // index it was first applied at, 0 if not
}

const (
	// maxTries bounds the sends of one proposal after ErrNotLeader.
	maxTries = 4
	// clientPatience: after this long without an answer a client tries a
	// random node (the one it believes leads may be down or partitioned
	// away).
	clientPatience = 120 * time.Millisecond
)

// proposal returns proposal id, or nil if there is none.
func (s *Sim) proposal(id uint64) *proposal {
	if id == 0 || id > uint64(len(s.proposals)) {
		return nil
	}
	return &s.proposals[id-1]
}

// clientTick sends client ci's next proposals (usually one, sometimes a
// small batch) and schedules the tick after.
func (s *Sim) clientTick(ci int) {
	if !s.clientsOn {
		return
	}
	c := &s.clients[ci]
	if s.now-c.heardAt > clientPatience {
		c.target, c.heardAt = s.rng.IntN(len(s.nodes)), s.now
	}
	count := 1
	if s.rng.IntN(10) == 0 {
		count = 2 + s.rng.IntN(2)
	}
	first := uint64(len(s.proposals) + 1)
	for i := range uint64(count) {
		s.proposals = append(s.proposals, proposal{data: command(first + i), client: ci, node: c.target, tries: 1})
	}
	s.stats.Proposals += uint64(count)
	s.sendProposals(c.target, first, uint64(count), 0)
	// Reads come on top of the writes, so the write load (and the log
	// states it drives the cluster into) stays what it was.
	if s.rng.IntN(readOdds) == 0 {
		s.issueRead(ci)
	}
	s.push(event{at: s.after(s.between(5*time.Millisecond, 40*time.Millisecond)), kind: evClientTick, node: ci})
}

// command builds the unique command of proposal id: the id, then 0-24
// bytes of filler so that entry sizes vary.
func command(id uint64) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 32), id)
	for i := range id % 25 {
		b = append(b, byte(id+i))
	}
	return b
}

// sendProposals delivers proposals first..first+count-1 to node idx after
// wait and a short client-to-node delay. Clients are never partitioned.
func (s *Sim) sendProposals(idx int, first, count uint64, wait time.Duration) {
	s.push(event{at: s.after(wait + s.between(100*time.Microsecond, 3*time.Millisecond)), kind: evPropose, node: idx, a: first, b: count})
}

// proposeArrives steps a Propose on the node, or loses the proposals if it
// is down (the client never learns their outcome).
func (s *Sim) proposeArrives(ev *event) {
	n := s.nodes[ev.node]
	if !n.up {
		for id := ev.a; id < ev.a+ev.b; id++ {
			s.proposal(id).settled = true
		}
		s.stats.Lost += ev.b
		s.trace.add(record{at: s.now, kind: recProposeLost, node: n.id, a: ev.a, b: ev.b})
		return
	}
	ps := make([]fsm.Proposal, 0, ev.b)
	for id := ev.a; id < ev.a+ev.b; id++ {
		ps = append(ps, fsm.Proposal{ID: id, Data: s.proposal(id).data})
	}
	s.step(n, fsm.Propose{Proposals: ps})
}

// retryBusy handles ErrBusy from leader n: the proposal was not appended;
// the client sends it to n again after a pause that grows with each try.
func (s *Sim) retryBusy(p *proposal, n *simNode) {
	if p.tries >= maxTries {
		s.stats.GaveUp++
		return
	}
	p.tries++
	p.settled = false
	s.sendProposals(n.idx, proposalID(p.data), 1, time.Duration(p.tries)*s.between(10*time.Millisecond, 40*time.Millisecond))
}

// notLeader handles ErrNotLeader from node n: the proposal was not
// appended anywhere, so the client sends it again to the node n names as
// leader, or to another node when n knows none.
func (s *Sim) notLeader(p *proposal, n *simNode, hint uint64) {
	c := &s.clients[p.client]
	if hint != 0 && hint != n.id && hint <= uint64(len(s.nodes)) {
		c.heard(int(hint-1), s.now)
	} else {
		others := s.allBut(n.idx)
		if len(others) == 0 {
			return
		}
		c.heard(others[s.rng.IntN(len(others))], s.now)
	}
	if p.tries >= maxTries {
		s.stats.GaveUp++
		return
	}
	p.tries++
	p.node, p.settled = c.target, false
	// Back off a little more with every try: an election takes a while.
	s.sendProposals(c.target, proposalID(p.data), 1, time.Duration(p.tries-1)*s.between(5*time.Millisecond, 25*time.Millisecond))
}
