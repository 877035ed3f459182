// Package logstore keeps the durable state of a Raft group — its hard state
// (term and vote) and its log — and the store actor that writes it with
// group commit.
//
// # Store
//
// Store is the durable log: Load returns everything on disk, Write applies a
// list of Updates (a hard state and/or a suffix of the log, with the
// semantics of the fsm's Persist action) atomically with one fsync, Close
// releases it. Two implementations:
//
//   - BoltStore (OpenBolt): one bbolt file with an "entries" bucket, keyed
//     by the big-endian uint64 index, holding proto-marshalled Entry values,
//     and a "meta" bucket whose "hardstate" key holds the proto-marshalled
//     HardState; in front of it a write-ahead journal (journal.go). A bbolt
//     commit costs two fdatasyncs (data pages, then the meta page), so Write
//     instead appends the batch to the journal as one checksummed record
//     and fdatasyncs once; full journal files (1 MiB by default) are moved
//     into bbolt in the background, in one synced transaction each, and
//     deleted. OpenBolt replays what bbolt lacks and drops a torn last
//     record (a write never acknowledged); a clean Close leaves everything
//     in bbolt and no journal.
//   - MemoryStore (NewMemory): the same semantics in memory, for tests.
//
// # The store actor
//
// Props(open) spawns the Proto.Actor actor that owns a Store. It receives
// WriteRequest (one fsm Persist) and answers Durable{Epoch, Seq} to the
// sender once the write is fsynced; every WriteRequest that is queued when it
// looks goes into the same Store.Write, so N queued writes cost one fsync.
// LoadRequest is answered with Loaded after every earlier write is on disk.
// The actor opens the store when it starts and closes it when it stops or
// restarts, so a restart reads what is really on disk. A WriteRequest of an
// fsm epoch whose earlier writes a crash lost is answered with Fenced.
//
// # What it must never do
//
//   - Report a write durable before the fsync of the journal record (or
//     transaction) holding it returned, or report a later write of an
//     epoch after losing an earlier
//     one (Raft's votes and acknowledgements are promises about the disk).
//   - Return stale, partial or undecodable data as good: a corrupt file
//     (undecodable value, gap, key that disagrees with its entry) is an
//     error wrapping ErrCorrupt, and the store actor crashes on it.
//   - Carry on after a failed write: the actor crashes and its supervisor
//     restarts it from the file.
//   - Turn fsync off unless BoltOptions.UnsafeNoSync, whose name says what
//     it is, asks for it.
//   - Import fsm/ or any actor package: it knows messages/, bbolt and
//     protoactor only, and its in-process messages are plain Go structs.
package logstore
