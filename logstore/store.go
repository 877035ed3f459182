package logstore

import (
	"errors"
	"fmt"

	pb "github.com/ketch-raft/ketch/messages"
)

// Errors callers branch on. Every error a Store returns for one of these
// reasons wraps the sentinel, so test it with errors.Is.
var (
	// ErrCorrupt: the durable log cannot be trusted (a value that does not
	// decode, a gap in the indexes, a key that disagrees with its entry, a
	// file that is not a ketch log). The store actor crashes on it; the node
	// must not take part in the cluster with this log.
	ErrCorrupt = errors.New("logstore: log is corrupt")
	// ErrInvalidUpdate: Write was asked for something no correct caller asks
	// for (entries that are not contiguous, a first index beyond the last
	// stored index + 1, an index 0, a nil entry). Nothing was written. It is
	// a bug in the caller, and the store actor crashes on it.
	ErrInvalidUpdate = errors.New("logstore: invalid update")
	// ErrLocked: the data file is held by another process (or another open
	// Store in this process).
	ErrLocked = errors.New("logstore: data file is locked")
	// ErrClosed: the Store was used after Close.
	ErrClosed = errors.New("logstore: store is closed")
)

// Store is the durable log of one Raft group: its hard state (term and
// vote, Raft Figure 2 "persistent state on all servers") and its entries,
// indexes 1..n without gaps.
//
// A Store is the only place in ketch that decides what "durable" means: when
// Write returns nil the data survives a crash of the process and of the
// machine (unless the store was explicitly opened unsafe), and Load returns
// exactly what the last successful Write left, or an error wrapping
// ErrCorrupt — never stale or partial data presented as good.
type Store interface {
	// Load returns the whole durable state. A store that was never written
	// returns a nil HardState and no entries.
	Load() (State, error)
	// Write applies updates in order, atomically and with one fsync
	// (group commit), and returns only once they are durable. Updates are
	// validated first; an invalid one fails the whole call with an error
	// wrapping ErrInvalidUpdate and nothing is written. After any other
	// error the Store's on-disk state is what the last successful Write
	// left, and the caller should Close it and open it again.
	Write(updates []Update) error
	// Entries returns durable entries lo..hi-1 in order, stopping once
	// their data passes maxBytes (but returning at least one). It returns
	// fewer, or none, when the log ends before hi. The fsm reads entries
	// it no longer keeps in memory this way (fsm.Fetch).
	Entries(lo, hi uint64, maxBytes int) ([]*pb.Entry, error)
	// Close releases the store (the file and its lock).
	Close() error
}

// State is the durable state of a Raft group as Load returns it; it has the
// shape fsm.Restore wants.
type State struct {
	// HardState is nil when none was ever written.
	HardState *pb.HardState
	// Base is where the log starts: the entries through Base.Index were
	// compacted away into a snapshot (Update.Compact). Zero when the log
	// was never compacted.
	Base Base
	// Entries is the whole durable log after Base, indexes Base.Index+1..n
	// in order.
	Entries []*pb.Entry
}

// Base is the last index and term compacted away (Raft §7's last included
// index and term), and the configuration in effect at Index with the index
// of its entry (thesis §4.1; nil when the compaction recorded none: the
// bootstrap configuration).
type Base struct {
	Index, Term uint64
	Config      *pb.Configuration
	ConfigIndex uint64
}

// LastIndex is the index of the last entry; Base.Index for an empty log.
func (s State) LastIndex() uint64 {
	if len(s.Entries) == 0 {
		return s.Base.Index
	}
	return s.Entries[len(s.Entries)-1].Index
}

// Update is one change to the durable state, with the semantics of the
// fsm's Persist action.
type Update struct {
	// HardState replaces the stored hard state; nil leaves it unchanged.
	HardState *pb.HardState
	// Entries, when not empty, replaces the log's suffix: every stored entry
	// with index >= Entries[0].Index is deleted and Entries are written in
	// their place. When Entries[0].Index is the last stored index + 1 this
	// is a plain append. Entries must be contiguous and Entries[0].Index
	// must lie in [base + 1, last stored index + 1].
	Entries []*pb.Entry
	// Compact, when set, is applied after HardState and Entries: the
	// entries through Compact.Through are deleted and the log starts
	// after it (the fsm's Compact action). With Reset every entry is
	// deleted (Figure 13 rule 7); otherwise Through must not pass the last
	// stored index.
	Compact *Compaction
}

// Compaction deletes the log's prefix through Through, whose entry has
// term Term; with Reset, the whole log.
type Compaction struct {
	Through, Term uint64
	Reset         bool
	// Config is the configuration in effect at Through and ConfigIndex
	// its entry's index; the store keeps them with the base (Load's
	// State.Base) so a restart knows the membership.
	Config      *pb.Configuration
	ConfigIndex uint64
}

// checkUpdates validates updates against a log that starts after base and
// ends at last, applying their effect in order, and returns the base and
// last index after all of them. Its errors wrap ErrInvalidUpdate.
func checkUpdates(base, last uint64, updates []Update) (uint64, uint64, error) {
	for u, up := range updates {
		if len(up.Entries) > 0 {
			for i, e := range up.Entries {
				if e == nil {
					return 0, 0, fmt.Errorf("%w: update %d: entry %d is nil", ErrInvalidUpdate, u, i)
				}
			}
			first := up.Entries[0].Index
			if first == 0 {
				return 0, 0, fmt.Errorf("%w: update %d: entry index 0 (indexes start at 1)", ErrInvalidUpdate, u)
			}
			if first <= base {
				return 0, 0, fmt.Errorf("%w: update %d: entry %d is at or below the compacted index %d", ErrInvalidUpdate, u, first, base)
			}
			if first > last+1 {
				return 0, 0, fmt.Errorf("%w: update %d: first index %d would leave a gap after last index %d", ErrInvalidUpdate, u, first, last)
			}
			for i, e := range up.Entries {
				if e.Index != first+uint64(i) {
					return 0, 0, fmt.Errorf("%w: update %d: entry %d has index %d, want %d (entries must be contiguous)", ErrInvalidUpdate, u, i, e.Index, first+uint64(i))
				}
			}
			last = up.Entries[len(up.Entries)-1].Index
		}
		if c := up.Compact; c != nil {
			switch {
			case c.Through == 0 || c.Term == 0:
				return 0, 0, fmt.Errorf("%w: update %d: compaction through %d of term %d", ErrInvalidUpdate, u, c.Through, c.Term)
			case c.Reset:
				base, last = c.Through, c.Through
			case c.Through > last:
				return 0, 0, fmt.Errorf("%w: update %d: compaction through %d past the last index %d", ErrInvalidUpdate, u, c.Through, last)
			default:
				base = max(base, c.Through)
			}
		}
	}
	return base, last, nil
}

// storeError is an error whose message is written for the operator (one
// line, saying what to do) while errors.Is still finds both its kind (one of
// the sentinels above) and its cause.
type storeError struct {
	msg   string
	kind  error
	cause error
}

func (e *storeError) Error() string { return e.msg }

func (e *storeError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}
