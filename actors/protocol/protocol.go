// Package protocol holds the Go messages the actors of one node exchange:
// the gateway with the fsm actor, the fsm actor with the state actor. No
// actor package imports another's internals; they share these types (and
// those of package messages).
//
// These messages never cross the network. The wire guard admits only
// protobuf types, and a Go struct cannot be sent from another process, so
// only a node's own actors can send them: a ClientRequest that reaches the
// fsm actor from anywhere but the gateway is not a Command and is refused.
//
// It must never hold state or logic. Every reply that depends on the
// incarnation of the actor that asked carries that incarnation's epoch, and
// a receiver ignores replies of an epoch other than its own (a mailbox
// survives its actor's restart, so a reply to a dead incarnation can reach
// the new one).
package protocol

import (
	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
)

// ---------------------------------------------------------- gateway -> fsm

// Command is a client request the gateway has validated: the cluster id,
// the client's identity, the command's shape, key and size. The fsm actor
// proposes it (or, for a read-only command, serves it through ReadIndex)
// and the answer, a pb.ClientResponse, goes to ReplyTo.
type Command struct {
	Req     *pb.ClientRequest
	ReplyTo *actor.PID
}

// Transfer is a TransferRequest the gateway has validated (thesis §3.10):
// hand leadership to To (0: the most up-to-date voter). The answer, a
// pb.TransferResponse, goes to ReplyTo.
type Transfer struct {
	To      uint64
	ReplyTo *actor.PID
}

// Members is a MemberRequest the gateway has validated (thesis chapter 4):
// list the configuration, or change it. The answer, a pb.MemberResponse,
// goes to ReplyTo.
type Members struct {
	Req     *pb.MemberRequest
	ReplyTo *actor.PID
}

// ------------------------------------------------------------ fsm -> state

// ApplyRequest hands committed entries, in index order, to the state
// actor. Waiters names the clients to answer once their entry is applied.
// The state actor answers every ApplyRequest with an AppliedInfo carrying
// the same Epoch.
type ApplyRequest struct {
	// Epoch is the asking fsm incarnation's.
	Epoch   uint64
	Entries []*pb.Entry
	Waiters []Waiter
}

// Waiter is a client waiting for the entry at Index. Typed says the client
// sent a typed key-value command (ClientRequest.command): its answer carries
// found, value and swapped rather than the state machine's result bytes.
type Waiter struct {
	Index   uint64
	ReplyTo *actor.PID
	Typed   bool
}

// AppliedQuery asks the state actor for its applied index; the answer is
// an AppliedInfo with the same Epoch.
type AppliedQuery struct{ Epoch uint64 }

// AppliedInfo reports the state machine's applied index to the fsm
// incarnation of Epoch. An AppliedInfo of another epoch answers an earlier
// incarnation and says nothing about the state the current one talks to:
// the state actor may have restarted since (and started empty).
//
// At a start it also tells what the state's disk holds: its latest durable
// snapshot (which it restored) and the snapshot being received, for
// fsm.Restore.
type AppliedInfo struct {
	Epoch    uint64
	Index    uint64
	Snapshot fsm.SnapshotMeta
	Staging  fsm.Staging
	// SnapshotConfig is the configuration Snapshot's header records.
	SnapshotConfig fsm.ConfigState
}

// ------------------------------------------------------- snapshots (§7)

// SnapshotTaken tells the fsm actor that the state actor's snapshot through
// Meta is durable: the fsm may compact the log behind it. It carries no
// epoch: it is a fact about the disk, true for every incarnation.
type SnapshotTaken struct {
	Meta  fsm.SnapshotMeta
	Bytes uint64
}

// ReadChunk carries an fsm.ReadChunk to the state actor, which owns the
// snapshot files; it answers ChunkRead with the same Epoch.
type ReadChunk struct {
	Epoch uint64
	fsm.ReadChunk
}

// ChunkRead answers ReadChunk.
type ChunkRead struct {
	Epoch uint64
	fsm.ChunkRead
}

// EndTransfer carries an fsm.EndTransfer: the state actor unpins the
// snapshot it kept open for the peer.
type EndTransfer struct{ Peer uint64 }

// StageChunk carries an fsm.StageChunk to the state actor; it answers
// ChunkStaged with the same Epoch once the chunk is durable.
type StageChunk struct {
	Epoch uint64
	fsm.StageChunk
}

// ChunkStaged answers StageChunk.
type ChunkStaged struct {
	Epoch uint64
	fsm.ChunkStaged
}

// InstallSnapshot carries an fsm.InstallSnapshot: the state actor restores
// its state from the snapshot Meta, its latest on disk, and answers an
// AppliedInfo with the same Epoch.
type InstallSnapshot struct {
	Epoch uint64
	Meta  fsm.SnapshotMeta
}

// SnapshotNow asks the state actor for a snapshot now (`ketch snapshot`):
// it answers ReplyTo with a pb.SnapshotResponse once one through its
// applied index is durable.
type SnapshotNow struct{ ReplyTo *actor.PID }

// ReadRequest asks for a linearizable read, already confirmed by ReadIndex
// (thesis §6.4): the state machine answers Query to ReplyTo once it has
// applied Index. The fsm sends it only after the state reported Applied >=
// Index, so it is answered at once; a state restarted since then (behind
// Index) answers UNAVAILABLE and the client retries. Typed is Waiter's.
type ReadRequest struct {
	Index            uint64
	Query            []byte
	Typed            bool
	ReplyTo          *actor.PID
	ClientID, SeqNum uint64
}
