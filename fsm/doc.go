// Package fsm is ketch's Raft consensus core: the rules of the Raft paper
// (Ongaro & Ousterhout, "In Search of an Understandable Consensus
// Algorithm", and Ongaro's thesis) as a pure, deterministic state machine.
//
// It must never start a goroutine, read a clock, draw randomness other than
// from Config.Rand, or do I/O. Everything that touches the world lives in the
// actors that drive it. That makes it testable by simulation (tests/sim)
// and lets its actor crash and restart from durable state.
//
// # The contract (gen_statem in Go)
//
//	Step(event) -> []Action
//
//	          events                                actions
//	  Start ─────────────┐                  ┌──▶ Persist{Seq, HardState, Entries} ─▶ store
//	  Message (peer) ────┤                  ├──▶ Send{Msg}                          ─▶ sender
//	  Timeout{Timer,Gen}─┤   ┌──────────┐   ├──▶ Apply{Entries, Refs}               ─▶ state
//	  Propose ───────────┼──▶│   Node   │───┼──▶ Reply{ID, Err, Leader}            ─▶ client
//	  Persisted{Seq} ────┤   └──────────┘   └──▶ SetTimer{Timer, After, Gen}        ─▶ timers
//	  Applied{Index} ────┘
//
// One Step settles the rules common to every role (terms, stale messages;
// Raft §5.1) and then calls the role's function: stepFollower,
// stepCandidate or stepLeader. Roles change only through becomeFollower,
// becomeCandidate and becomeLeader.
//
// # Durability
//
// Every change to term, vote or log leaves a Step as one Persist action
// with a sequence number; the store answers Persisted{Seq} after its fsync.
// A message that promises durable state (a granted vote, an acknowledged
// append, any answer given in a new term) is held inside the Node until that
// Persisted arrives. The leader's own AppendEntries go out at once (thesis
// §10.2.1), but the leader counts itself toward a quorum only for entries
// its store reported durable.
//
// # Time and randomness
//
// The Node asks for timers with SetTimer and learns they fired through
// Timeout events carrying the timer's generation; a superseded timer's
// Timeout is ignored, so the driver never has to cancel anything. Election
// jitter comes from Config.Rand, which a simulator seeds.
//
// # Seeded bugs
//
// PlantBug turns on one of a few classic Raft mistakes, for the simulator to
// prove that it catches them. It works only inside test binaries.
package fsm
