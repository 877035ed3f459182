package fsm

import (
	"fmt"
	"slices"
	"sort"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// raftLog is the node's view of its log: everything durable plus everything
// it has asked the store to persist. Entries are immutable once created and
// are shared with actions, so the log never writes into a backing array a
// caller may hold: a truncation copies before it appends.
//
// Only the tail is in memory: entries[0] is index offset+1. Entries at or
// below offset were dropped from memory (they are committed, applied and
// durable, and the store still has them; see Node.maybeCompact), but their
// terms are kept, as runs, so that term() answers for them: the
// consistency check of AppendEntries and the election rule need terms,
// never old contents.
//
// Entries at or below floor are gone from the store too: they are in a
// snapshot (Raft §7), and the log starts after floor. The term of floor
// itself is kept (floorTerm, Figure 13's lastIncludedTerm), so that an
// AppendEntries that follows it can be checked; the terms of earlier
// indexes are unknown, and term() answers 0 for them. floor <= offset.
type raftLog struct {
	offset  uint64
	entries []*pb.Entry
	// runs holds the terms of indexes floor..offset: runs[k] says that from
	// index runs[k].first on (until the next run) entries have term
	// runs[k].term. Terms only change at elections, so it stays short.
	runs []termRun
	// floor and floorTerm: the last index and term compacted into a
	// snapshot, 0 when the log was never compacted.
	floor, floorTerm uint64
}

type termRun struct{ first, term uint64 }

func (l *raftLog) lastIndex() uint64 { return l.offset + uint64(len(l.entries)) }

func (l *raftLog) lastTerm() uint64 { return l.term(l.lastIndex()) }

// term returns the term of the entry at index i, or 0 when the log does not
// hold it (index 0 is the empty prefix, whose term is 0) or no longer knows
// it (below the floor).
func (l *raftLog) term(i uint64) uint64 {
	switch {
	case i == 0 || i > l.lastIndex() || i < l.floor:
		return 0
	case i == l.floor:
		return l.floorTerm
	case i > l.offset:
		return l.entries[i-l.offset-1].Term
	}
	// The last run that starts at or before i.
	k := sort.Search(len(l.runs), func(k int) bool { return l.runs[k].first > i }) - 1
	return l.runs[k].term
}

// compact drops entries up to and including index i from memory, keeping
// their terms. The caller guarantees they are committed and durable.
func (l *raftLog) compact(i uint64) {
	if i <= l.offset {
		return
	}
	if i > l.lastIndex() {
		panic(fmt.Sprintf("invariant: compacting to %d beyond the last index %d", i, l.lastIndex()))
	}
	drop := l.entries[:i-l.offset]
	for _, e := range drop {
		if n := len(l.runs); n == 0 || l.runs[n-1].term != e.Term {
			l.runs = append(l.runs, termRun{first: e.Index, term: e.Term})
		}
	}
	// A fresh array, so the dropped entries can be collected (the old
	// array may still be referenced by actions, which is fine).
	l.entries = slices.Clone(l.entries[i-l.offset:])
	l.offset = i
}

// compactTo moves the floor up to index i (whose term is t): the entries
// through i are in a snapshot and may be gone from the store. Entries after
// i are kept. The caller guarantees i is committed and i <= lastIndex.
func (l *raftLog) compactTo(i, t uint64) {
	if i <= l.floor {
		return
	}
	if i > l.lastIndex() {
		panic(fmt.Sprintf("invariant: compacting the log to %d beyond its last index %d", i, l.lastIndex()))
	}
	if got := l.term(i); got != t {
		panic(fmt.Sprintf("invariant: compacting to %d of term %d, but the log holds term %d there", i, t, got))
	}
	l.compact(i)
	l.floor, l.floorTerm = i, t
	// Forget the terms of the runs that end before the floor.
	k := sort.Search(len(l.runs), func(k int) bool { return l.runs[k].first > i }) - 1
	l.runs = append([]termRun(nil), l.runs[k:]...)
	l.runs[0].first = i
}

// reset discards the whole log for a snapshot through index i of term t
// (Figure 13 rule 7): the log is empty and starts after i.
func (l *raftLog) reset(i, t uint64) {
	l.entries = nil
	l.offset, l.floor, l.floorTerm = i, i, t
	l.runs = []termRun{{first: i, term: t}}
}

// slice returns entries lo..hi-1; the result cannot be appended into the log.
func (l *raftLog) slice(lo, hi uint64) []*pb.Entry {
	if lo >= hi {
		return nil
	}
	if lo <= l.offset || hi > l.lastIndex()+1 {
		panic(fmt.Sprintf("invariant: log slice [%d,%d) outside (%d,%d]", lo, hi, l.offset, l.lastIndex()))
	}
	return l.entries[lo-l.offset-1 : hi-l.offset-1 : hi-l.offset-1]
}

// sliceBytes returns entries from lo up to hi-1, at most maxEntries of
// them, whose encodings (framing included) add up to at most maxBytes, but
// always at least one entry when lo < hi.
func (l *raftLog) sliceBytes(lo, hi uint64, maxBytes, maxEntries int) []*pb.Entry {
	return limitEntries(l.slice(lo, hi), maxBytes, maxEntries)
}

// limitEntries is the longest prefix of ents, at most maxEntries long,
// whose encodings as repeated AppendEntries.entries add up to at most
// maxBytes; at least one entry when ents is not empty.
func limitEntries(ents []*pb.Entry, maxBytes, maxEntries int) []*pb.Entry {
	size := 0
	for i, e := range ents {
		size += protowire.SizeTag(3) + protowire.SizeBytes(proto.Size(e))
		if i > 0 && (size > maxBytes || i >= maxEntries) {
			return ents[:i:i]
		}
	}
	return ents
}

// append adds entries that follow the last one.
func (l *raftLog) append(ents ...*pb.Entry) {
	for _, e := range ents {
		if e.Index != l.lastIndex()+1 {
			panic(fmt.Sprintf("invariant: appending index %d after %d", e.Index, l.lastIndex()))
		}
		l.entries = append(l.entries, e)
	}
}

// truncateAndAppend deletes every entry from ents[0].Index on and appends
// ents in their place.
func (l *raftLog) truncateAndAppend(ents []*pb.Entry) {
	from := ents[0].Index
	if from <= l.offset || from > l.lastIndex()+1 {
		panic(fmt.Sprintf("invariant: truncating at %d outside (%d,%d]", from, l.offset, l.lastIndex()+1))
	}
	keep := from - l.offset - 1
	// The three-index slice forces append to copy, so slices of the old
	// array already handed out in actions stay as they were.
	l.entries = l.entries[:keep:keep]
	l.append(ents...)
}

// firstIndexOfTerm returns the first index of the run of entries with term t
// that ends at index i (which must hold term t).
func (l *raftLog) firstIndexOfTerm(t, i uint64) uint64 {
	for i-1 > l.offset && l.term(i-1) == t {
		i--
	}
	return i
}

// lastIndexOfTerm returns the largest index <= hi whose entry has term t,
// or 0 when there is none.
func (l *raftLog) lastIndexOfTerm(t, hi uint64) uint64 {
	if hi > l.lastIndex() {
		hi = l.lastIndex()
	}
	for i := hi; i > l.offset; i-- {
		switch et := l.term(i); {
		case et == t:
			return i
		case et < t:
			return 0 // terms only grow along the log
		}
	}
	return 0
}

// isUpToDate reports whether a candidate's log, ending at (lastIndex,
// lastTerm), is at least as up-to-date as this one (Raft §5.4.1): the later
// last term wins; with equal last terms the longer log wins.
func (l *raftLog) isUpToDate(lastIndex, lastTerm uint64) bool {
	return lastTerm > l.lastTerm() || (lastTerm == l.lastTerm() && lastIndex >= l.lastIndex())
}
