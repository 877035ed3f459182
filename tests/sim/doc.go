// Package sim is ketch's deterministic fault simulator (ARCHITECTURE §8,
// layer 2). It drives several pure Raft cores (fsm.Node) in virtual time
// through the faults a real cluster meets: a network that delays, drops,
// duplicates, reorders and partitions messages (one-way too), disks that
// lose unsynced writes when their node crashes, and crashes and restarts of
// nodes at random and at awkward moments, and, in most seeds, membership
// changes (learners and voters added, promoted and removed, the leader
// too, several voters at once through joint consensus) with fresh servers
// joining and removed ones shut down. After every Step it checks Raft's
// safety properties, and that configurations commit one per index with
// overlapping quorums; once the faults heal it checks liveness: a leader is
// elected and every acknowledged proposal is applied on every member.
//
// A run is a function of its seed. One math/rand/v2 source feeds every
// decision, events wait in a queue ordered by (virtual time, insertion
// sequence), and nothing reads a clock, starts a goroutine or iterates a
// map where order matters. The same seed gives the same trace, so every
// failure reproduces with `go test ./tests/sim -run TestSimulation -seed=S`.
//
// Layout: sim.go runs one seed (Options, Run, Result); node.go drives one
// fsm and carries out its actions; chain.go holds the disk and the rolling
// hashes of logs; network.go, nemesis.go and client.go are the environment;
// membership.go changes the membership; check.go holds the invariants (and
// snapshot.go, membership.go and hostile.go theirs); trace.go the cheap
// always-on trace.
//
// It must never reach into the fsm's internals: it sees the fsm only through
// its public API (New, Step, Status, PlantBug), exactly as the fsm actor
// does, and it never edits what the fsm hands it.
package sim
