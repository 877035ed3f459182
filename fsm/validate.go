package fsm

import (
	"errors"
	"fmt"
	"hash/crc32"

	pb "github.com/ketch-raft/ketch/messages"
)

// Validation of peer messages. Nothing a peer sends may reach an assert:
// every Message event is checked here first, and a message that fails is
// dropped with a Rejected action that says why. The checks come in two
// kinds:
//
//   - Stateless (checkMessage): the envelope names this cluster, this node
//     and another member; terms and indexes are in range; an
//     AppendEntries holds contiguous entries of known types, within the
//     size limits, with terms that never decrease and never exceed the
//     sender's. A message that fails cannot come from a correct peer of
//     this cluster.
//   - Against this node's state (in the role functions): an AppendEntries
//     that would overwrite a committed entry, an acknowledgement of
//     entries this leader never had. A correct peer never sends those
//     either (Raft §5.4, Leader Completeness), so they are evidence of a
//     forged or broken peer and are refused rather than asserted.
//
// Raft cannot survive a member that lies within these bounds (a forged
// leader's AppendEntries in the current term, say); authenticating peers is
// the transport's job. Such a message may do harm, but it never crashes a
// node.

// Bounds on terms and indexes.
const (
	// MaxTerm: no term at or above it is accepted, adopted or restored,
	// so term+1 never overflows.
	MaxTerm = 1 << 62
	// MaxTermGap: a message whose term is more than MaxTermGap above this
	// node's is refused. One election per millisecond would take 50 days
	// to get that far ahead; a forged term 2^64-1 must not end a cluster
	// (its next term would wrap to 0).
	MaxTermGap = 1 << 32
	// MaxIndex: no log index, commit index or read index on the wire may
	// reach it, so index arithmetic never overflows.
	MaxIndex = 1 << 62
)

// Kinds of rejection, wrapped by Rejected.Err; compare with errors.Is.
var (
	// ErrNotForUs: the message names another cluster, another receiver, or
	// a sender that is not another member of this cluster.
	ErrNotForUs = errors.New("not for this node")
	// ErrMalformed: the message is not one a correct peer could send (no
	// body, entries out of order or over the limits, indexes out of range).
	ErrMalformed = errors.New("malformed message")
	// ErrTermOutOfRange: the term is 0 (except on a pre-vote refusal), at
	// or above MaxTerm, or more than MaxTermGap above this node's.
	ErrTermOutOfRange = errors.New("term out of range")
	// ErrImpossible: the message contradicts what this node knows to be
	// committed or what it holds, which no correct peer can cause.
	ErrImpossible = errors.New("message contradicts this node's log")
)

// reject drops a message from peer `from` with a Rejected action.
func (n *Node) reject(from uint64, kind error, format string, args ...any) {
	n.acts = append(n.acts, Rejected{From: from, Err: fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))})
}

// checkMessage runs the stateless checks and the term bound, and reports
// the first problem as a Rejected action. It returns whether m may be
// stepped.
func (n *Node) checkMessage(m *pb.RaftMessage) bool {
	if m == nil {
		n.acts = append(n.acts, Rejected{Err: fmt.Errorf("%w: nil message", ErrMalformed)})
		return false
	}
	hear := n.mayHearFrom
	if m.From == n.leader && m.Term == n.term {
		// thesis §4.2.2: a leader that removed itself keeps leading until it
		// hands over, after its removal committed: its AppendEntries (which
		// catch the successor up) and its TimeoutNow are heard in its term.
		hear = func(id uint64) bool { return id != 0 && id != n.id }
	}
	why, kind := checkMessage(m, &n.cfg, hear)
	if why == "" && m.Term > n.term+MaxTermGap {
		why, kind = fmt.Sprintf("term %d is more than %d ahead of this node's term %d", m.Term, uint64(MaxTermGap), n.term), ErrTermOutOfRange
	}
	if ae := m.GetAppendEntries(); why == "" && ae != nil && m.Term >= n.term {
		why, kind = n.contradictsCommitted(ae), ErrImpossible
	}
	if is := m.GetInstallSnapshot(); why == "" && is != nil && m.Term >= n.term {
		// A snapshot through a committed index must agree with it.
		if i := is.LastIncludedIndex; i <= n.commit && i >= n.log.floor && i <= n.log.lastIndex() && n.log.term(i) != is.LastIncludedTerm {
			why, kind = fmt.Sprintf("a snapshot through %d of term %d, but committed entry %d is of term %d", i, is.LastIncludedTerm, i, n.log.term(i)), ErrImpossible
		}
	}
	if why != "" {
		n.reject(m.From, kind, "%s", why)
		return false
	}
	return true
}

// contradictsCommitted says how an AppendEntries of this term or a later
// one disagrees with this node's committed entries, or "". A correct leader
// holds every committed entry (Raft §5.4, Leader Completeness), so its
// prev_log_term matches at a committed index and none of its entries
// replaces a committed one. The check runs before the message can change
// the term, the leader or the election timer.
func (n *Node) contradictsCommitted(ae *pb.AppendEntries) string {
	// Below the floor the terms are gone with the compacted entries; they
	// are in the snapshot, and nothing there can be replaced.
	if p := ae.PrevLogIndex; p <= n.commit && p >= n.log.floor && p > 0 && n.log.term(p) != ae.PrevLogTerm {
		return fmt.Sprintf("prev log entry %d of term %d, but committed entry %d is of term %d (commit index %d)", p, ae.PrevLogTerm, p, n.log.term(p), n.commit)
	}
	for _, e := range ae.Entries {
		if e.Index > n.commit {
			break
		}
		if e.Index < n.log.floor {
			continue
		}
		if t := n.log.term(e.Index); t != e.Term {
			return fmt.Sprintf("entry %d of term %d would replace committed entry %d of term %d (commit index %d)", e.Index, e.Term, e.Index, t, n.commit)
		}
	}
	return ""
}

// mayHearFrom reports whether a message from id may be stepped: any
// server but this one and those removed from the cluster. thesis §4.1:
// servers process requests without consulting their configurations: a
// leader this node's (lagging) configuration does not name yet must be
// able to replicate to it, a candidate it does not know must get its vote,
// and a joining server knows nobody. Removed ids are never reused, so
// their messages are refused (thesis §4.2.3); the role rules ignore
// answers from servers the leader does not track.
func (n *Node) mayHearFrom(id uint64) bool {
	return id != 0 && id != n.id && !n.isRemoved(id)
}

// checkMessage is the stateless validation: the kind and a reason, or
// "" when m is well formed and for this node.
func checkMessage(m *pb.RaftMessage, cfg *Config, isPeer func(uint64) bool) (string, error) {
	switch {
	case m.ClusterId != cfg.ClusterID:
		return fmt.Sprintf("cluster id %.*q, this node is in %q", pb.MaxClusterIDBytes, m.ClusterId, cfg.ClusterID), ErrNotForUs
	case m.To != cfg.ID:
		return fmt.Sprintf("addressed to node %d, this is node %d", m.To, cfg.ID), ErrNotForUs
	case !isPeer(m.From):
		return fmt.Sprintf("sender %d is this node, 0, or a server removed from this cluster", m.From), ErrNotForUs
	case m.Term >= MaxTerm:
		return fmt.Sprintf("term %d", m.Term), ErrTermOutOfRange
	case m.Term == 0 && !isPreVoteRefusal(m):
		// Only a node that never left term 0 refusing a pre-vote sends
		// term 0 (thesis §9.6: a refusal carries the voter's term).
		return "term 0", ErrTermOutOfRange
	}
	switch b := m.Body.(type) {
	case *pb.RaftMessage_RequestVote:
		rv := b.RequestVote
		switch {
		case rv == nil:
			return "empty RequestVote", ErrMalformed
		case rv.LastLogTerm > m.Term:
			return fmt.Sprintf("last log term %d above the candidate's term %d", rv.LastLogTerm, m.Term), ErrMalformed
		case rv.LastLogIndex >= MaxIndex:
			return fmt.Sprintf("last log index %d out of range", rv.LastLogIndex), ErrMalformed
		case (rv.LastLogIndex == 0) != (rv.LastLogTerm == 0):
			return fmt.Sprintf("last log index %d with last log term %d", rv.LastLogIndex, rv.LastLogTerm), ErrMalformed
		}
	case *pb.RaftMessage_RequestVoteResponse:
		if b.RequestVoteResponse == nil {
			return "empty RequestVoteResponse", ErrMalformed
		}
	case *pb.RaftMessage_AppendEntriesResponse:
		r := b.AppendEntriesResponse
		switch {
		case r == nil:
			return "empty AppendEntriesResponse", ErrMalformed
		case r.MatchIndex >= MaxIndex || r.RejectIndex >= MaxIndex || r.ConflictIndex >= MaxIndex || r.LastLogIndex >= MaxIndex:
			return "an index out of range", ErrMalformed
		case r.ConflictTerm > m.Term:
			return fmt.Sprintf("conflict term %d above the sender's term %d", r.ConflictTerm, m.Term), ErrMalformed
		}
	case *pb.RaftMessage_TimeoutNow: // thesis §3.10: start an election now
		if b.TimeoutNow == nil {
			return "empty TimeoutNow", ErrMalformed
		}
	case *pb.RaftMessage_ReadIndexRequest: // thesis §6.4: a follower's read
		if b.ReadIndexRequest == nil {
			return "empty ReadIndexRequest", ErrMalformed
		}
	case *pb.RaftMessage_ReadIndexResponse:
		switch r := b.ReadIndexResponse; {
		case r == nil:
			return "empty ReadIndexResponse", ErrMalformed
		case r.Index >= MaxIndex:
			return fmt.Sprintf("read index %d out of range", r.Index), ErrMalformed
		}
	case *pb.RaftMessage_AppendEntries:
		return checkAppendEntries(m, b.AppendEntries, cfg)
	case *pb.RaftMessage_InstallSnapshot:
		return checkInstallSnapshot(m, b.InstallSnapshot, cfg)
	case *pb.RaftMessage_InstallSnapshotResponse:
		switch r := b.InstallSnapshotResponse; {
		case r == nil:
			return "empty InstallSnapshotResponse", ErrMalformed
		case r.LastIncludedIndex >= MaxIndex || r.MatchIndex >= MaxIndex || r.NextOffset >= MaxIndex:
			return "an index or offset out of range", ErrMalformed
		case r.LastIncludedTerm > m.Term:
			return fmt.Sprintf("snapshot term %d above the sender's term %d", r.LastIncludedTerm, m.Term), ErrMalformed
		}
	default:
		return "no body", ErrMalformed
	}
	return "", nil
}

func isPreVoteRefusal(m *pb.RaftMessage) bool {
	r := m.GetRequestVoteResponse()
	return r != nil && r.PreVote && !r.Granted
}

// checkAppendEntries: the entries follow prev_log_index one by one, with
// known types, data within MaxEntryBytes, and terms that never decrease
// along the log (Raft §5.3: a log's terms only grow) and never exceed the
// leader's.
func checkAppendEntries(m *pb.RaftMessage, ae *pb.AppendEntries, cfg *Config) (string, error) {
	lim := &cfg.Limits
	switch {
	case ae == nil:
		return "empty AppendEntries", ErrMalformed
	case ae.PrevLogIndex >= MaxIndex || ae.LeaderCommit >= MaxIndex:
		return "an index out of range", ErrMalformed
	case ae.PrevLogTerm > m.Term:
		return fmt.Sprintf("prev log term %d above the leader's term %d", ae.PrevLogTerm, m.Term), ErrMalformed
	case (ae.PrevLogIndex == 0) != (ae.PrevLogTerm == 0):
		return fmt.Sprintf("prev log index %d with prev log term %d", ae.PrevLogIndex, ae.PrevLogTerm), ErrMalformed
	case len(ae.Entries) > lim.MaxEntriesPerMessage:
		return fmt.Sprintf("%d entries, the limit is %d", len(ae.Entries), lim.MaxEntriesPerMessage), ErrMalformed
	case uint64(len(ae.Entries)) >= MaxIndex-ae.PrevLogIndex:
		return "entries reach past the largest index", ErrMalformed
	}
	prevTerm := ae.PrevLogTerm
	for i, e := range ae.Entries {
		want := ae.PrevLogIndex + uint64(i) + 1
		switch {
		case e == nil:
			return fmt.Sprintf("entry %d is empty", want), ErrMalformed
		case e.Index != want:
			return fmt.Sprintf("entry %d has index %d", want, e.Index), ErrMalformed
		case e.Term < prevTerm || e.Term > m.Term || e.Term == 0:
			return fmt.Sprintf("entry %d has term %d (previous %d, leader's %d)", e.Index, e.Term, prevTerm, m.Term), ErrMalformed
		case e.Type != pb.EntryType_ENTRY_TYPE_NORMAL && e.Type != pb.EntryType_ENTRY_TYPE_NOOP && e.Type != pb.EntryType_ENTRY_TYPE_CONFIG:
			return fmt.Sprintf("entry %d has unknown type %v", e.Index, e.Type), ErrMalformed
		case len(e.Data) > lim.MaxEntryBytes:
			return fmt.Sprintf("entry %d holds %d bytes, the limit is %d", e.Index, len(e.Data), lim.MaxEntryBytes), ErrMalformed
		}
		if e.Type == pb.EntryType_ENTRY_TYPE_CONFIG {
			if _, err := decodeConfig(e.Data); err != nil {
				return fmt.Sprintf("configuration entry %d: %v", e.Index, err), ErrMalformed
			}
		}
		prevTerm = e.Term
	}
	return "", nil
}

// checkInstallSnapshot: a chunk of a snapshot of something (index and term
// positive, the term at most the leader's) that lies within the file, whose
// bytes match its checksum, and that is done exactly when it ends the file
// (Figure 13).
func checkInstallSnapshot(m *pb.RaftMessage, is *pb.InstallSnapshot, cfg *Config) (string, error) {
	switch {
	case is == nil:
		return "empty InstallSnapshot", ErrMalformed
	case is.LastIncludedIndex == 0 || is.LastIncludedIndex >= MaxIndex:
		return fmt.Sprintf("snapshot through index %d", is.LastIncludedIndex), ErrMalformed
	case is.LastIncludedTerm == 0 || is.LastIncludedTerm > m.Term:
		return fmt.Sprintf("snapshot term %d (the leader's is %d)", is.LastIncludedTerm, m.Term), ErrMalformed
	case is.Size >= MaxIndex || is.Offset >= is.Size:
		return fmt.Sprintf("chunk at %d of a snapshot of %d bytes", is.Offset, is.Size), ErrMalformed
	case len(is.Data) == 0 || len(is.Data) > cfg.Limits.AppendBudget():
		return fmt.Sprintf("chunk of %d bytes (at most %d)", len(is.Data), cfg.Limits.AppendBudget()), ErrMalformed
	case uint64(len(is.Data)) > is.Size-is.Offset:
		return fmt.Sprintf("chunk of %d bytes at %d runs past the snapshot's %d", len(is.Data), is.Offset, is.Size), ErrMalformed
	case is.Done != (is.Offset+uint64(len(is.Data)) == is.Size):
		return fmt.Sprintf("chunk ending at %d of %d marked done=%v", is.Offset+uint64(len(is.Data)), is.Size, is.Done), ErrMalformed
	case crc32.Checksum(is.Data, crc32c) != is.ChunkCrc:
		return fmt.Sprintf("chunk at %d fails its checksum", is.Offset), ErrMalformed
	case is.Done && is.ConfigurationIndex > is.LastIncludedIndex:
		return fmt.Sprintf("a configuration of index %d in a snapshot through %d", is.ConfigurationIndex, is.LastIncludedIndex), ErrMalformed
	}
	if is.Done {
		// thesis §4.1: the last chunk carries the snapshot's configuration.
		if why := checkConfiguration(is.Configuration); why != "" {
			return "the snapshot's configuration: " + why, ErrMalformed
		}
	}
	return "", nil
}
