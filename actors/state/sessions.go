package state

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/ketch-raft/ketch/actors/statemachine"
)

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

// maxSessionResult bounds a session's result when a snapshot is read.
const maxSessionResult = 64 << 20

// writeSessions writes a frozen session table: the count, then per client,
// in id order (equal tables write equal bytes), its id, sequence, index,
// term and result, each length a uvarint.
func writeSessions(w io.Writer, view statemachine.FrozenMap[uint64, session]) error {
	ids := make([]uint64, 0, view.Len())
	byID := make(map[uint64]session, view.Len())
	view.Range(func(id uint64, ss session) bool {
		ids = append(ids, id)
		byID[id] = ss
		return true
	})
	slices.Sort(ids)
	buf := binary.AppendUvarint(nil, uint64(len(ids)))
	for _, id := range ids {
		ss := byID[id]
		buf = binary.AppendUvarint(buf, id)
		buf = binary.AppendUvarint(buf, ss.seq)
		buf = binary.AppendUvarint(buf, ss.index)
		buf = binary.AppendUvarint(buf, ss.term)
		buf = binary.AppendUvarint(buf, uint64(len(ss.result)))
		buf = append(buf, ss.result...)
		if len(buf) >= 64<<10 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	_, err := w.Write(buf)
	return err
}

// readSessions reads what writeSessions wrote into a new table.
func readSessions(r *bufio.Reader, max int) (*sessions, error) {
	s := newSessions(max)
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("the session table is cut short: %w", err)
	}
	for i := uint64(0); i < n; i++ {
		var f [5]uint64
		for k := range f {
			if f[k], err = binary.ReadUvarint(r); err != nil {
				return nil, fmt.Errorf("session %d is cut short: %w", i, err)
			}
		}
		if f[4] > maxSessionResult {
			return nil, fmt.Errorf("session %d holds a result of %d bytes", i, f[4])
		}
		var result []byte
		if f[4] > 0 {
			result = make([]byte, f[4])
			if _, err := io.ReadFull(r, result); err != nil {
				return nil, fmt.Errorf("session %d is cut short: %w", i, err)
			}
		}
		s.m.Set(f[0], session{seq: f[1], index: f[2], term: f[3], result: result})
	}
	return s, nil
}
