package logstore

import (
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/ketch-raft/ketch/messages"
)

// MemoryStore is a Store held in memory, for tests and the simulator. It has
// the same semantics as BoltStore (validation, suffix replacement, order of
// updates) and is safe for concurrent use. It copies what it is given and
// what it returns, so callers may not alias its contents.
//
// Close does nothing and the data stays: one MemoryStore stands for a disk
// that survives restarts of the store actor (open func returns the same
// store every time).
type MemoryStore struct {
	mu      sync.Mutex
	hs      *pb.HardState
	base    Base
	entries []*pb.Entry // base.Index+1 ...
}

var _ Store = (*MemoryStore)(nil)

// NewMemory returns an empty MemoryStore.
func NewMemory() *MemoryStore { return &MemoryStore{} }

// Load returns a copy of the stored state.
func (m *MemoryStore) Load() (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st State
	if m.hs != nil {
		st.HardState = proto.Clone(m.hs).(*pb.HardState)
	}
	st.Base = m.base
	st.Entries = make([]*pb.Entry, len(m.entries))
	for i, e := range m.entries {
		st.Entries[i] = proto.Clone(e).(*pb.Entry)
	}
	return st, nil
}

func (m *MemoryStore) last() uint64 { return m.base.Index + uint64(len(m.entries)) }

// Write validates updates and applies copies of them, all or nothing.
func (m *MemoryStore) Write(updates []Update) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, _, err := checkUpdates(m.base.Index, m.last(), updates); err != nil {
		return err
	}
	for _, u := range updates {
		if u.HardState != nil {
			m.hs = proto.Clone(u.HardState).(*pb.HardState)
		}
		if len(u.Entries) > 0 {
			// Entry i lives at position i-base-1.
			keep := u.Entries[0].Index - m.base.Index - 1
			clear(m.entries[keep:]) // let the replaced entries be collected
			m.entries = m.entries[:keep]
			for _, e := range u.Entries {
				m.entries = append(m.entries, proto.Clone(e).(*pb.Entry))
			}
		}
		if c := u.Compact; c != nil {
			if c.Reset {
				m.entries = nil
			} else if c.Through > m.base.Index {
				m.entries = append([]*pb.Entry(nil), m.entries[c.Through-m.base.Index:]...)
			}
			if c.Reset || c.Through > m.base.Index {
				m.base = Base{Index: c.Through, Term: c.Term, Config: c.Config, ConfigIndex: c.ConfigIndex}
			}
		}
	}
	return nil
}

// Entries returns copies of entries lo..hi-1, at least one and at most
// maxBytes of data beyond the first.
func (m *MemoryStore) Entries(lo, hi uint64, maxBytes int) ([]*pb.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*pb.Entry
	size := 0
	if lo <= m.base.Index {
		return nil, nil // compacted away
	}
	for i := lo; i < hi && i <= m.last(); i++ {
		e := m.entries[i-m.base.Index-1]
		size += proto.Size(e)
		if len(out) > 0 && size > maxBytes {
			break
		}
		out = append(out, proto.Clone(e).(*pb.Entry))
	}
	return out, nil
}

// Close does nothing; see MemoryStore.
func (m *MemoryStore) Close() error { return nil }
