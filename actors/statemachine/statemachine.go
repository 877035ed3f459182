// Package statemachine is what a replicated service built on ketch
// implements: a StateMachine that the node's state actor drives. The
// key-value store of package kv is one; examples/counter is another.
//
// The contract, in the order the state actor uses it:
//
//   - Apply gets committed commands, in log order, each exactly once per
//     state (a restarted node restores its latest snapshot and applies the
//     log after it), and returns one result per command. Every replica
//     applies the same commands in the same order and must reach the same
//     state and the same results: Apply must be deterministic (no clock,
//     no randomness, no map iteration order, no I/O whose outcome differs
//     between machines) and must not fail. A command it cannot execute gets
//     a result that says so, the same on every replica.
//   - Query answers a read-only query from the current state. The node
//     calls it only once the state is recent enough for the read to be
//     linearizable (ReadIndex, thesis §6.4). It must not change the state.
//   - Snapshot returns a point-in-time view of the state. The state actor
//     calls it between two Applies and then writes the view to a file on
//     another goroutine while Apply goes on, so the view must not change
//     as later commands are applied: copy on write, a versioned structure,
//     or a frozen view. COWMap is a frozen view for map-shaped state.
//   - Restore replaces the whole state with one that a Snapshot of the
//     same kind of state machine wrote.
//
// Client sessions (the deduplication of retried commands, thesis §6.3) are
// the state actor's business, not the state machine's: a command is handed
// to Apply once, however often its client retried it.
//
// It must never import the node's actors: it is what they depend on.
package statemachine

import "io"

// Command is one committed client command.
type Command struct {
	// Index and Term are the log position of the command.
	Index, Term uint64
	// Data is the command as the client proposed it.
	Data []byte
}

// StateMachine is a replicated state machine; see the package comment for
// the contract. The state actor calls every method on its own goroutine,
// one at a time, except Snapshot.Persist.
type StateMachine interface {
	// Apply applies cmds, in order, and returns one result per command
	// (nil for "nothing to say").
	Apply(cmds []Command) [][]byte
	// Query answers a read-only query; an error (a malformed query) is
	// answered to the client as an invalid request.
	Query(q []byte) ([]byte, error)
	// Snapshot returns a view of the state as it is now, which later
	// Applies must not change.
	Snapshot() (Snapshot, error)
	// Restore replaces the state with the one r holds. r yields exactly
	// what a Snapshot's Persist wrote; an error means the snapshot is
	// unusable, and the node does not start from it.
	Restore(r io.Reader) error
}

// Snapshot is a point-in-time view of a state machine.
type Snapshot interface {
	// Persist writes the view to w. It runs on a goroutine of its own,
	// concurrently with Apply.
	Persist(w io.Writer) error
	// Release says the view is no longer needed. It is called once, on
	// the goroutine that calls Apply, after Persist has returned (or when
	// the snapshot is abandoned).
	Release()
}
