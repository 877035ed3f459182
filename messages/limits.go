package messages

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
)

// Limits bounds what ketch's messages may carry. A node validates one set
// at start-up and hands it to every layer that enforces a bound, so that
// they agree: the gateway (keys and commands), the fsm (proposals it
// appends, AppendEntries it packs and accepts), the sender (batches) and
// the wire guard (envelopes). Each bound holds the one before it with room
// to spare:
//
//	key  <  entry  <  message  <=  batch  (<= one wire envelope)
//
// A command of the largest key and the largest value always fits one
// entry, the largest entry always fits one AppendEntries with its
// envelope, and the largest message always fits one RaftBatch. Every node
// of a cluster must use the same Limits (the defaults, unless an embedder
// changes them everywhere): a follower refuses an AppendEntries whose
// entries exceed its own bounds.
type Limits struct {
	// MaxKeyBytes bounds a key of the key-value store. Default 4 KiB.
	MaxKeyBytes int
	// MaxEntryBytes bounds the data of one log entry: one encoded client
	// command. Default 1 MiB.
	MaxEntryBytes int
	// MaxEntriesPerMessage bounds the entries of one AppendEntries.
	// Default 65536.
	MaxEntriesPerMessage int
	// MaxMessageBytes bounds one encoded peer message (RaftMessage), and
	// one client request or response. Default 2 MiB.
	MaxMessageBytes int
	// MaxBatchBytes bounds one RaftBatch the sender packs for a peer, and
	// so the largest envelope the wire guard admits. Default 4 MiB.
	MaxBatchBytes int
}

// Defaults of Limits.
const (
	DefaultMaxKeyBytes          = 4 << 10
	DefaultMaxEntryBytes        = 1 << 20
	DefaultMaxEntriesPerMessage = 1 << 16
	DefaultMaxMessageBytes      = 2 << 20
	DefaultMaxBatchBytes        = 4 << 20
)

// Fixed bounds of the protocol, independent of Limits.
const (
	// MaxClusterIDBytes bounds a cluster id.
	MaxClusterIDBytes = 128
	// MessageOverhead is what a peer message may need beyond its entries:
	// the envelope (a cluster id of at most MaxClusterIDBytes, ids, term)
	// and the fixed fields of an AppendEntries, with room to spare.
	MessageOverhead = 1 << 10
	// EntryOverhead is what one entry adds to a message beyond its data:
	// index, term, type and framing.
	EntryOverhead = 48
	// CommandOverhead is what a command adds to an entry beyond its key
	// and values: client id, sequence and framing.
	CommandOverhead = 128
	// batchFraming is what one message adds to a RaftBatch: its field tag
	// and length, with room to spare.
	batchFraming = 16
	// maxBatchLimit keeps a frame of several batches (protoactor packs
	// up to 8 per gRPC frame) far below gRPC's own limits.
	maxBatchLimit = 16 << 20
)

// DefaultLimits returns the default Limits.
func DefaultLimits() Limits {
	return Limits{
		MaxKeyBytes:          DefaultMaxKeyBytes,
		MaxEntryBytes:        DefaultMaxEntryBytes,
		MaxEntriesPerMessage: DefaultMaxEntriesPerMessage,
		MaxMessageBytes:      DefaultMaxMessageBytes,
		MaxBatchBytes:        DefaultMaxBatchBytes,
	}
}

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.MaxEntryBytes == 0 {
		l.MaxEntryBytes = d.MaxEntryBytes
	}
	if l.MaxEntriesPerMessage == 0 {
		l.MaxEntriesPerMessage = d.MaxEntriesPerMessage
	}
	if l.MaxMessageBytes == 0 {
		l.MaxMessageBytes = d.MaxMessageBytes
	}
	if l.MaxBatchBytes == 0 {
		l.MaxBatchBytes = d.MaxBatchBytes
	}
	return l
}

// Validate reports the first bound that does not hold the one before it
// (after filling in defaults for zero fields).
func (l Limits) Validate() error {
	l = l.WithDefaults()
	switch {
	case l.MaxKeyBytes < 1 || l.MaxEntryBytes < 1 || l.MaxEntriesPerMessage < 1 || l.MaxMessageBytes < 1 || l.MaxBatchBytes < 1:
		return errors.New("limits: every limit must be positive")
	case l.MaxKeyBytes+CommandOverhead >= l.MaxEntryBytes:
		return fmt.Errorf("limits: MaxEntryBytes %d must exceed MaxKeyBytes %d plus %d bytes of command", l.MaxEntryBytes, l.MaxKeyBytes, CommandOverhead)
	case l.MaxEntryBytes+EntryOverhead > l.AppendBudget():
		return fmt.Errorf("limits: MaxMessageBytes %d must hold one entry of MaxEntryBytes %d plus %d bytes of envelope", l.MaxMessageBytes, l.MaxEntryBytes, EntryOverhead+MessageOverhead)
	case l.MaxMessageBytes+batchFraming > l.MaxBatchBytes:
		return fmt.Errorf("limits: MaxBatchBytes %d must hold one message of MaxMessageBytes %d and its framing (%d bytes)", l.MaxBatchBytes, l.MaxMessageBytes, batchFraming)
	case l.MaxBatchBytes > maxBatchLimit:
		return fmt.Errorf("limits: MaxBatchBytes %d is above %d", l.MaxBatchBytes, maxBatchLimit)
	}
	return nil
}

// AppendBudget is how many bytes of entries (framing included) one
// AppendEntries may carry so that the whole message stays within
// MaxMessageBytes.
func (l Limits) AppendBudget() int { return l.MaxMessageBytes - MessageOverhead }

// MaxValueBytes is the largest value a put of any key can carry: what an
// entry holds beyond the largest key and the command's own fields. A
// compare-and-swap carries two values, which together must fit.
func (l Limits) MaxValueBytes() int { return l.MaxEntryBytes - l.MaxKeyBytes - CommandOverhead }

// CheckData checks an opaque command or query of a ClientRequest (data,
// for a state machine other than the key-value store): a command must fit
// one log entry as the ClientCommand that carries it, a query one entry's
// bytes too (it travels in one client message).
func (l Limits) CheckData(clientID, seq uint64, data []byte, query bool) error {
	l = l.WithDefaults()
	if query {
		if len(data) > l.MaxEntryBytes {
			return fmt.Errorf("the query is %d bytes; the limit is %d", len(data), l.MaxEntryBytes)
		}
		return nil
	}
	if n := commandSize(clientID, seq, data); n > l.MaxEntryBytes {
		return fmt.Errorf("the command is %d bytes encoded; the limit is %d (its data may be up to %d bytes)", n, l.MaxEntryBytes, l.MaxDataBytes())
	}
	return nil
}

// MaxDataBytes is the largest opaque command a client can propose: what an
// entry holds beyond the command's own fields.
func (l Limits) MaxDataBytes() int { return l.WithDefaults().MaxEntryBytes - CommandOverhead }

func commandSize(clientID, seq uint64, data []byte) int {
	return proto.Size(&ClientCommand{ClientId: clientID, Sequence: seq, Data: data})
}
