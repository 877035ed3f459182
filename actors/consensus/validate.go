package consensus

import (
	"errors"
	"fmt"

	pb "github.com/ketch-raft/ketch/messages"
)

// ErrWrongCluster marks a peer message from another cluster.
var ErrWrongCluster = errors.New("message from another cluster")

// Limits bounds what a peer message may carry.
type Limits struct {
	// MaxEntryBytes bounds one entry's data. Default 1 MiB.
	MaxEntryBytes int
	// MaxEntries bounds the entries of one AppendEntries. Default 65536.
	MaxEntries int
}

func (l *Limits) setDefaults() {
	if l.MaxEntryBytes == 0 {
		l.MaxEntryBytes = 1 << 20
	}
	if l.MaxEntries == 0 {
		l.MaxEntries = 1 << 16
	}
}

// validatePeer checks a peer message at the boundary, before it reaches the
// fsm: right cluster, addressed to this node from another member, a body,
// and an AppendEntries whose entries are contiguous, follow prev_log_index,
// and carry no term above the sender's. The fsm asserts its invariants with
// panics; nothing a peer sends may reach those asserts unchecked.
func validatePeer(m *pb.RaftMessage, clusterID string, self uint64, members map[uint64]bool, lim Limits) error {
	if m == nil {
		return errors.New("empty message")
	}
	if m.ClusterId != clusterID {
		return fmt.Errorf("%w: cluster id %q, this node is in %q", ErrWrongCluster, m.ClusterId, clusterID)
	}
	if m.To != self {
		return fmt.Errorf("addressed to node %d, this is node %d", m.To, self)
	}
	if m.From == self || !members[m.From] {
		return fmt.Errorf("sender %d is not another member of this cluster", m.From)
	}
	if m.Term == 0 {
		return errors.New("term 0")
	}
	switch b := m.Body.(type) {
	case *pb.RaftMessage_RequestVote:
		if b.RequestVote.LastLogTerm > m.Term {
			return fmt.Errorf("last log term %d above the candidate's term %d", b.RequestVote.LastLogTerm, m.Term)
		}
	case *pb.RaftMessage_RequestVoteResponse:
	case *pb.RaftMessage_AppendEntriesResponse:
	case *pb.RaftMessage_TimeoutNow: // thesis §3.10: start an election now
	case *pb.RaftMessage_ReadIndexRequest: // thesis §6.4: a follower's read
	case *pb.RaftMessage_ReadIndexResponse:
	case *pb.RaftMessage_AppendEntries:
		ae := b.AppendEntries
		if ae.PrevLogTerm > m.Term {
			return fmt.Errorf("prev log term %d above the leader's term %d", ae.PrevLogTerm, m.Term)
		}
		if ae.PrevLogIndex == 0 && ae.PrevLogTerm != 0 {
			return errors.New("prev log index 0 with a non-zero term")
		}
		if len(ae.Entries) > lim.MaxEntries {
			return fmt.Errorf("%d entries, the limit is %d", len(ae.Entries), lim.MaxEntries)
		}
		prevTerm := ae.PrevLogTerm
		for i, e := range ae.Entries {
			if e == nil {
				return fmt.Errorf("entry %d is empty", i)
			}
			if e.Index != ae.PrevLogIndex+uint64(i)+1 {
				return fmt.Errorf("entry %d has index %d, want %d", i, e.Index, ae.PrevLogIndex+uint64(i)+1)
			}
			if e.Term < prevTerm || e.Term > m.Term || e.Term == 0 {
				return fmt.Errorf("entry %d has term %d (previous %d, leader's %d)", e.Index, e.Term, prevTerm, m.Term)
			}
			prevTerm = e.Term
			if e.Type != pb.EntryType_ENTRY_TYPE_NORMAL && e.Type != pb.EntryType_ENTRY_TYPE_NOOP {
				return fmt.Errorf("entry %d has unknown type %v", e.Index, e.Type)
			}
			if len(e.Data) > lim.MaxEntryBytes {
				return fmt.Errorf("entry %d holds %d bytes, the limit is %d", e.Index, len(e.Data), lim.MaxEntryBytes)
			}
		}
	default:
		return errors.New("no body")
	}
	return nil
}
