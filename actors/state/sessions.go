package state

import "github.com/ketch-raft/ketch/actors/statemachine"

// DefaultMaxSessions bounds the client sessions remembered. When a new
// client would exceed it, the session applied longest ago is forgotten; a
// retry from that client for its last command is then applied again, as a
// new command would be, so clients should not pause for longer than the
// cluster takes to see DefaultMaxSessions other clients. Eviction follows
// the log, so it is the same on every replica.
const DefaultMaxSessions = 100_000

// session is what a node remembers of one client (thesis §6.3): its last
// sequence number, where that command was applied, and the state machine's
// result, so a retry is answered with it instead of being applied again.
type session struct {
	seq         uint64
	index, term uint64
	result      []byte
}

// sessions is the table of client sessions. It is part of the replicated
// state (every replica builds the same table from the same log) and goes
// into every snapshot with the state machine, so it is a COWMap: a snapshot
// freezes it like the state machine's own state.
type sessions struct {
	m   *statemachine.COWMap[uint64, session]
	max int
}

func newSessions(max int) *sessions {
	return &sessions{m: statemachine.NewCOWMap[uint64, session](), max: max}
}

func (s *sessions) get(client uint64) (session, bool) { return s.m.Get(client) }

// remember records the command a client's session last applied.
func (s *sessions) remember(client uint64, ss session) {
	if _, ok := s.m.Get(client); !ok && s.m.Len() >= s.max {
		s.evictOldest()
	}
	s.m.Set(client, ss)
}

// evictOldest forgets the session whose last command is oldest in the log.
// Indexes are unique, so the choice does not depend on map order.
func (s *sessions) evictOldest() {
	var oldest, at uint64
	s.m.Range(func(id uint64, ss session) bool {
		if at == 0 || ss.index < at {
			oldest, at = id, ss.index
		}
		return true
	})
	s.m.Delete(oldest)
}
