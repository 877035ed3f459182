package sim

import (
	"errors"
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
)

// The hostile sender (issue 11): during the chaos phase, forged peer
// messages reach live nodes beside the real traffic. Each is built against
// its receiver's state at the moment it arrives, so that it is out of
// bounds or malformed for that receiver: another cluster's id, a sender
// it must not hear (0, itself, a server whose removal it knows committed),
// absurd terms (0, at or above fsm.MaxTerm, beyond
// fsm.MaxTermGap), impossible entry ranges (gaps, shrinking terms, terms
// above the leader's, indexes that wrap), entries over the size limit,
// absurd match and read indexes, an acknowledgement past a leader's log,
// and entries that would replace a committed one.
//
// Every one of them must be refused with a Rejected action
// (hostile-accepted otherwise); none may make a node panic (fsm-assertion);
// and the cluster must stay safe and, after the heal, live. No honest
// message may ever be rejected (rejected-honest): a rejection is evidence of
// a forged or broken peer, so one of a correct peer's messages means a bug.
//
// What the hostile sender does not send are lies within bounds, such as a
// forged AppendEntries from a member in the current term that agrees with
// everything committed: Raft cannot survive a member that lies like that,
// and authenticating peers is the transport's job.

// hostileKind names one forgery.
type hostileKind uint8

const (
	hWrongCluster hostileKind = iota
	hNonMember
	hNotForReceiver
	hTermZero
	hTermHuge
	hTermGap
	hNoBody
	hEntryGap
	hEntryTermsShrink
	hEntryTermAbove
	hEntryTooLarge
	hEntryWraps
	hPrevIndexAbsurd
	hTooManyEntries
	hMatchAbsurd
	hMatchPastLog // for a leader: an ack of entries it never had
	hVoteLastTermAbove
	hReadIndexAbsurd
	hReplaceCommitted // for a node with a commit index: entries that replace a committed one
	hRejectPastLog    // for a leader: a rejection of an index past its log
	hAppendToLeader   // for a leader: an AppendEntries of its own term (two leaders in one term)
	numHostileKinds
)

var hostileNames = [numHostileKinds]string{
	"wrong-cluster", "non-member", "not-for-receiver", "term-zero", "term-huge", "term-gap", "no-body",
	"entry-gap", "entry-terms-shrink", "entry-term-above", "entry-too-large", "entry-wraps", "prev-index-absurd",
	"too-many-entries", "match-absurd", "match-past-log", "vote-last-term-above", "read-index-absurd", "replace-committed",
	"reject-past-log", "append-to-leader",
}

func (k hostileKind) String() string {
	if k < numHostileKinds {
		return hostileNames[k]
	}
	return "hostile(?)"
}

// simLimits are the size limits of the simulated cluster: small, so that
// an entry over the limit costs the simulator little and the entry count
// bound shapes replication too.
var simLimits = pb.Limits{
	MaxKeyBytes:          16,
	MaxEntryBytes:        512,
	MaxEntriesPerMessage: 64,
	MaxMessageBytes:      4096,
	MaxBatchBytes:        8192,
}

// scheduleHostile arms the next hostile delivery, 20-200 ms from now,
// while the chaos phase lasts.
func (s *Sim) scheduleHostile() {
	if s.hostileEvery > 0 {
		s.push(event{at: s.after(s.between(s.hostileEvery/4, s.hostileEvery)), kind: evHostile})
	}
}

// hostile forges one message for a random live node and steps it there.
func (s *Sim) hostile() {
	if s.phase != phaseChaos {
		return
	}
	defer s.scheduleHostile()
	n := s.pick(func(n *simNode) bool { return n.up }) // a majority is always up
	kind := hostileKind(s.rng.IntN(int(numHostileKinds)))
	m, ok := s.forge(n, kind)
	if !ok {
		return // the receiver's state does not allow this kind now
	}
	s.stats.Hostile++
	s.trace.add(record{at: s.now, kind: recHostile, node: n.id, a: uint64(kind)})
	s.hostileNow, s.hostileRejected = true, false
	s.step(n, fsm.Message{Msg: m})
	s.hostileNow = false
	if s.violation == nil && !s.hostileRejected {
		s.fail("hostile-accepted", "n%d (%v of term %d) took a forged %s message without rejecting it: %v",
			n.id, n.status.Role, n.status.Term, kind, m)
	}
}

// onRejected checks a Rejected action: only forged messages are rejected.
func (s *Sim) onRejected(n *simNode, r fsm.Rejected) {
	s.trace.add(record{at: s.now, kind: recRejected, node: n.id, peer: r.From, a: rejectCode(r.Err)})
	if s.hostileNow {
		s.hostileRejected = true
		return
	}
	if errors.Is(r.Err, fsm.ErrNotForUs) && slices.Contains(s.committedConfAt(n.commit).Config.GetRemoved(), r.From) {
		// thesis §4.2.3: a removed server that has not learnt so keeps
		// writing to its old peers; once they know its removal has
		// committed they refuse it (the configuration in effect at their
		// commit index, which the step has not moved yet, is the
		// committed log's).
		s.stats.RejectedRemoved++
		return
	}
	if !s.opts.SafetyOnly {
		s.fail("rejected-honest", "n%d rejected a message from n%d that no forger sent: %v", n.id, r.From, r.Err)
	}
}

func rejectCode(err error) uint64 {
	for i, k := range []error{fsm.ErrNotForUs, fsm.ErrMalformed, fsm.ErrTermOutOfRange, fsm.ErrImpossible} {
		if errors.Is(err, k) {
			return uint64(i + 1)
		}
	}
	return 0
}

// forge builds a message of kind for receiver n, which it must reject.
func (s *Sim) forge(n *simNode, kind hostileKind) (*pb.RaftMessage, bool) {
	st := n.fsm.Status()
	// The forger claims to be one of the receiver's peers: a leader
	// ignores answers from servers it does not track, which would make a
	// forgery harmless rather than rejected.
	var others []uint64
	for m := n.peerMask; m != 0; m &= m - 1 {
		others = append(others, uint64(bits.TrailingZeros64(m))+1)
	}
	if len(others) == 0 {
		for _, i := range s.allBut(n.idx) {
			others = append(others, uint64(i+1))
		}
	}
	if len(others) == 0 {
		return nil, false
	}
	from := others[s.rng.IntN(len(others))]
	term := max(st.Term, 1)
	last := st.LastIndex
	msg := func(t uint64, body any) *pb.RaftMessage { return pb.NewRaftMessage(clusterID, from, n.id, t, body) }
	ae := func(t, prev, prevTerm uint64, ents ...*pb.Entry) *pb.RaftMessage {
		return msg(t, &pb.AppendEntries{PrevLogIndex: prev, PrevLogTerm: prevTerm, Entries: ents, LeaderCommit: st.Commit})
	}
	ent := func(i, t uint64) *pb.Entry { return &pb.Entry{Index: i, Term: t, Type: pb.EntryType_ENTRY_TYPE_NORMAL} }
	anyBody := func(t uint64) *pb.RaftMessage {
		switch s.rng.IntN(4) {
		case 0:
			return msg(t, &pb.RequestVote{LastLogIndex: last, LastLogTerm: st.LastTerm})
		case 1:
			return msg(t, &pb.AppendEntriesResponse{Success: true, MatchIndex: last})
		case 2:
			return ae(t, last, st.LastTerm, ent(last+1, t))
		}
		return msg(t, &pb.RequestVote{LastLogIndex: last, LastLogTerm: st.LastTerm, PreVote: true})
	}
	switch kind {
	case hWrongCluster:
		m := anyBody(term + 1)
		m.ClusterId = "elsewhere"
		return m, true
	case hNonMember:
		// thesis §4.1: any server may write to any other (a leader the
		// receiver's configuration does not name yet, a joining server);
		// only 0, the receiver itself and servers whose removal it knows
		// committed are refused.
		m := anyBody(term + 1)
		ids := []uint64{0, n.id}
		ids = append(ids, s.committedConfAt(n.commit).Config.GetRemoved()...)
		m.From = ids[s.rng.IntN(len(ids))]
		return m, true
	case hNotForReceiver:
		m := anyBody(term + 1)
		m.To = from
		return m, true
	case hTermZero:
		m := anyBody(0)
		if m.GetRequestVote() != nil {
			m.Body = &pb.RaftMessage_RequestVoteResponse{RequestVoteResponse: &pb.RequestVoteResponse{Granted: true, PreVote: true}}
		}
		return m, true
	case hTermHuge:
		return anyBody(fsm.MaxTerm + s.rng.Uint64N(math.MaxUint64-fsm.MaxTerm)), true
	case hTermGap:
		return anyBody(st.Term + fsm.MaxTermGap + 1 + s.rng.Uint64N(1<<20)), true
	case hNoBody:
		return &pb.RaftMessage{ClusterId: clusterID, From: from, To: n.id, Term: term}, true
	case hEntryGap:
		return ae(term, last, st.LastTerm, ent(last+1, term), ent(last+3, term)), true
	case hEntryTermsShrink:
		if term < 2 {
			return nil, false
		}
		return ae(term, last, min(st.LastTerm, term-1), ent(last+1, term), ent(last+2, term-1)), true
	case hEntryTermAbove:
		return ae(term, last, st.LastTerm, ent(last+1, term+1)), true
	case hEntryTooLarge:
		e := ent(last+1, term)
		e.Data = make([]byte, simLimits.MaxEntryBytes+1)
		return ae(term, last, st.LastTerm, e), true
	case hEntryWraps:
		return ae(term, fsm.MaxIndex-1, 1, ent(fsm.MaxIndex, term), ent(fsm.MaxIndex+1, term)), true
	case hPrevIndexAbsurd:
		return ae(term, fsm.MaxIndex+s.rng.Uint64N(1<<20), 1), true
	case hTooManyEntries:
		ents := make([]*pb.Entry, simLimits.MaxEntriesPerMessage+1)
		for i := range ents {
			ents[i] = ent(last+1+uint64(i), term)
		}
		return ae(term, last, st.LastTerm, ents...), true
	case hMatchAbsurd:
		return msg(term, &pb.AppendEntriesResponse{Success: true, MatchIndex: fsm.MaxIndex + s.rng.Uint64N(1<<20)}), true
	case hMatchPastLog:
		if st.Role != fsm.Leader {
			return nil, false
		}
		return msg(st.Term, &pb.AppendEntriesResponse{Success: true, MatchIndex: last + 1 + s.rng.Uint64N(1000)}), true
	case hRejectPastLog:
		if st.Role != fsm.Leader {
			return nil, false
		}
		past := last + 1 + s.rng.Uint64N(1000)
		return msg(st.Term, &pb.AppendEntriesResponse{RejectIndex: past, ConflictIndex: past}), true
	case hAppendToLeader:
		if st.Role != fsm.Leader {
			return nil, false
		}
		return ae(st.Term, 0, 0), true
	case hVoteLastTermAbove:
		return msg(term+1, &pb.RequestVote{LastLogIndex: last + 1, LastLogTerm: term + 2}), true
	case hReadIndexAbsurd:
		return msg(term, &pb.ReadIndexResponse{Context: s.rng.Uint64(), Index: fsm.MaxIndex}), true
	case hReplaceCommitted:
		// An entry at a committed index with another term; the receiver
		// may be of any role, and the message of its term or a later one.
		// Below the floor the receiver no longer knows the terms: those
		// entries are in its snapshot and cannot be replaced.
		floor := max(st.FirstIndex-1, 1)
		if st.Commit < floor {
			return nil, false
		}
		i := floor + s.rng.Uint64N(st.Commit-floor+1)
		t, _ := n.mirror.termAt(i)
		if t == 0 || term < 2 && t == 1 {
			return nil, false
		}
		other := t + 1
		if other > term {
			other = t - 1
		}
		prevTerm := uint64(0)
		if i > 1 {
			prevTerm, _ = n.mirror.termAt(i - 1)
		}
		if other == 0 || other < prevTerm {
			return nil, false
		}
		return ae(term+s.rng.Uint64N(2), i-1, prevTerm, ent(i, other)), true
	}
	return nil, false
}

// hostileInterval is the mean spacing of hostile deliveries for a seed:
// none in a quarter of the seeds, otherwise every 20 to 200 ms.
func (s *Sim) hostileInterval() time.Duration {
	if s.rng.IntN(4) == 0 {
		return 0
	}
	return s.between(20*time.Millisecond, 200*time.Millisecond)
}
