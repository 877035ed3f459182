// Package lincheck records the history of a key-value workload against a
// ketch cluster and checks it for linearizability with porcupine
// (github.com/anishathalye/porcupine), one key at a time.
//
// A test calls Recorder.Invoke just before it sends a command and
// Recorder.Complete as soon as the answer (or the error) is back, from any
// number of goroutines; then Recorder.Check decides whether some order of
// the operations, each taking effect at one instant between its invocation
// and its completion, explains every answer the clients got. The recorder
// uses a logical clock taken under its lock, so the real-time order it
// records is exact: an operation completed before another was invoked only
// if that really happened.
//
// # Outcomes
//
// Every operation ends in one of three outcomes:
//
//   - OK: the cluster answered; the result must be explained.
//   - Failed: the operation definitely did not take effect (the cluster
//     refused it, e.g. client.ErrInvalid). It is left out of the history.
//   - Unknown: it may or may not have taken effect, now or at any later
//     time (a timeout: the command may sit in a log and commit after the
//     client gave up). Following Knossos, etcd's robustness tests and
//     porcupine's own users, such an operation is given a return time after
//     every other event of the history and an output that matches any
//     result, so the checker may place it anywhere after its invocation —
//     including after everything else, which is the same as never. An
//     unknown Get has no effect and no constraint, so it is dropped. An
//     operation that was invoked and never completed counts as Unknown.
//
// A client whose operation ended Unknown is, as far as the history can
// tell, still running it; so its later operations are put on a fresh
// porcupine client id (a new "stream"), which keeps the visualization's
// one-operation-at-a-time rows honest.
//
// # The model
//
// Model is a single-key register with put, get, delete and compare-and-swap
// (CAS with a nil expected value swaps only if the key is absent, as ketch's
// client does), partitioned by key: a history is linearizable iff each
// key's sub-history is (P-compositionality), which keeps the check fast.
//
// It must never accept a history it cannot explain, and never be handed a
// clock: times are the recorder's logical ones.
package lincheck
