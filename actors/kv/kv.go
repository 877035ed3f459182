// Package kv is ketch's built-in replicated state machine: an in-memory
// key-value map with put, get, delete and compare-and-swap. It is one
// implementation of statemachine.StateMachine (what the CLI, the demo and
// the tests use); its commands are KVCommand messages and its results
// KVResult messages.
//
// Apply must be deterministic: every replica applies the same entries in
// the same order and must reach the same state and the same answers. So it
// never reads a clock, draws randomness, or depends on map iteration order,
// and it never panics on a command's content: a malformed command gets the
// same error result on every replica.
//
// Its snapshots are frozen views (statemachine.COWMap): taking one costs
// nothing, and the writes made while it is written are folded in after.
package kv

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ketch-raft/ketch/actors/statemachine"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Store is the key-value state machine. It is not safe for concurrent use:
// the state actor owns it (a snapshot's view is written concurrently, as
// statemachine.COWMap allows).
type Store struct {
	data *statemachine.COWMap[string, []byte]
}

var _ statemachine.StateMachine = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{data: statemachine.NewCOWMap[string, []byte]()} }

// NewStateMachine is New as the node wants it.
func NewStateMachine() statemachine.StateMachine { return New() }

// Len is the number of keys.
func (s *Store) Len() int { return s.data.Len() }

// Lookup reads a key directly, bypassing the log: for tests and for
// inspecting a replica, never for answering clients (that would not be
// linearizable).
func (s *Store) Lookup(key string) ([]byte, bool) { return s.data.Get(key) }

// Apply executes each command (a KVCommand) and returns its KVResult.
func (s *Store) Apply(cmds []statemachine.Command) [][]byte {
	out := make([][]byte, len(cmds))
	for i, c := range cmds {
		out[i] = encode(s.execute(c.Data))
	}
	return out
}

// Query answers a read-only command (a Get) from the current state.
func (s *Store) Query(q []byte) ([]byte, error) {
	var c pb.KVCommand
	if err := proto.Unmarshal(q, &c); err != nil {
		return nil, fmt.Errorf("kv: the query is not a KVCommand: %v", err)
	}
	get := c.GetGet()
	if get == nil {
		return nil, errors.New("kv: only get can be served as a query")
	}
	v, ok := s.data.Get(get.Key)
	return encode(&pb.KVResult{Found: ok, Value: v}), nil
}

// execute runs one command; an undecodable or empty command gets an error
// result, the same on every replica.
func (s *Store) execute(data []byte) *pb.KVResult {
	var c pb.KVCommand
	if err := proto.Unmarshal(data, &c); err != nil {
		return &pb.KVResult{Error: "kv: undecodable command in the log"}
	}
	r := &pb.KVResult{}
	switch op := c.GetOp().(type) {
	case *pb.KVCommand_Put:
		s.data.Set(op.Put.Key, bytes.Clone(op.Put.Value))
	case *pb.KVCommand_Get:
		r.Value, r.Found = s.data.Get(op.Get.Key)
	case *pb.KVCommand_Delete:
		r.Found = s.data.Delete(op.Delete.Key)
	case *pb.KVCommand_Cas:
		cur, exists := s.data.Get(op.Cas.Key)
		match := !exists && op.Cas.ExpectAbsent || exists && !op.Cas.ExpectAbsent && bytes.Equal(cur, op.Cas.Expected)
		if match {
			s.data.Set(op.Cas.Key, bytes.Clone(op.Cas.Value))
			r.Swapped = true
		} else {
			r.Found, r.Value = exists, cur
		}
	default:
		return &pb.KVResult{Error: "kv: empty command"}
	}
	return r
}

// FillResponse turns a KVResult into the typed fields of a client's answer:
// found, value and swapped, or INVALID with the store's error.
func FillResponse(result []byte, resp *pb.ClientResponse) {
	var r pb.KVResult
	if err := proto.Unmarshal(result, &r); err != nil {
		resp.Status, resp.Error = pb.ClientStatus_CLIENT_STATUS_INVALID, "kv: undecodable result"
		return
	}
	if r.Error != "" {
		resp.Status, resp.Error = pb.ClientStatus_CLIENT_STATUS_INVALID, r.Error
		return
	}
	resp.Found, resp.Value, resp.Swapped = r.Found, r.Value, r.Swapped
}

func encode(r *pb.KVResult) []byte {
	b, err := proto.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("kv: invariant: a KVResult does not encode: %v", err))
	}
	return b
}

// Snapshot freezes the map; its Persist writes the frozen view while Apply
// goes on, and Release folds the writes made meanwhile back in.
func (s *Store) Snapshot() (statemachine.Snapshot, error) {
	return &snapshot{m: s.data, view: s.data.Freeze()}, nil
}

// The snapshot format: the magic, then per key its length (uvarint), the
// key, the value's length (uvarint) and the value, then a zero-length key
// flagged by the end marker. Restore checks every length against what
// remains.
const snapMagic = "ketch-kv-1\n"

type snapshot struct {
	m    *statemachine.COWMap[string, []byte] // the map frozen (a Restore may replace the store's since)
	view statemachine.FrozenMap[string, []byte]
}

// persistBuckets is how many groups Persist splits the keys into, by a
// hash of the key, each sorted and written on its own.
const persistBuckets = 256

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Persist writes the view in an order that depends on the state alone: equal
// states write equal files, so a follower can resume a transfer from
// another leader's copy of the same snapshot. The order is by bucket (the
// key's CRC-32C modulo persistBuckets), then by key: sorting 256 small
// groups as they are written, instead of all keys up front, costs less and
// spreads the work over the writes, whose writer paces the snapshot (a
// million keys sorted in one go is half a second of CPU with no pause).
func (sn *snapshot) Persist(w io.Writer) error {
	type kv struct {
		k string
		v []byte
	}
	buckets := make([][]kv, persistBuckets)
	sn.view.Range(func(k string, v []byte) bool {
		b := crc32.Checksum([]byte(k), castagnoli) % persistBuckets
		buckets[b] = append(buckets[b], kv{k, v})
		return true
	})
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := bw.WriteString(snapMagic); err != nil {
		return err
	}
	binary.Write(bw, binary.BigEndian, uint64(sn.view.Len())) //nolint:errcheck // bw keeps the error
	var lenBuf [binary.MaxVarintLen64]byte
	for i, b := range buckets {
		slices.SortFunc(b, func(x, y kv) int { return strings.Compare(x.k, y.k) })
		for _, e := range b {
			bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(e.k)))])
			bw.WriteString(e.k)
			bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(e.v)))])
			bw.Write(e.v)
		}
		buckets[i] = nil
	}
	return bw.Flush()
}

func (sn *snapshot) Release() { sn.m.Thaw() }

// Restore replaces the store with the snapshot r holds.
func (s *Store) Restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapMagic {
		return errors.New("kv: not a key-value snapshot")
	}
	var n uint64
	if err := binary.Read(br, binary.BigEndian, &n); err != nil {
		return fmt.Errorf("kv: snapshot cut short: %w", err)
	}
	data := statemachine.NewCOWMap[string, []byte]()
	readField := func(what string, limit uint64) ([]byte, error) {
		l, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, fmt.Errorf("kv: snapshot cut short in a %s: %w", what, err)
		}
		if l > limit {
			return nil, fmt.Errorf("kv: snapshot holds a %s of %d bytes", what, l)
		}
		b := make([]byte, l)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("kv: snapshot cut short in a %s: %w", what, err)
		}
		return b, nil
	}
	for i := uint64(0); i < n; i++ {
		k, err := readField("key", pb.DefaultMaxEntryBytes)
		if err != nil {
			return err
		}
		v, err := readField("value", pb.DefaultMaxEntryBytes)
		if err != nil {
			return err
		}
		if !utf8.Valid(k) {
			return errors.New("kv: snapshot holds a key that is not UTF-8")
		}
		data.Set(string(k), v)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return errors.New("kv: snapshot holds more than its keys")
	}
	s.data = data
	return nil
}

// ValidateRequest checks a client's request at the boundary, before it is
// proposed: a missing operation, an empty or oversized key, a key that is
// not valid UTF-8 (keys are protobuf strings), or a command whose log entry
// would exceed lim.MaxEntryBytes is refused with a one-line reason. The
// Go client runs the same checks before it sends anything.
func ValidateRequest(r *pb.ClientRequest, lim pb.Limits) error {
	lim = lim.WithDefaults()
	var key string
	switch op := r.GetCommand().GetOp().(type) {
	case *pb.KVCommand_Put:
		key = op.Put.Key
	case *pb.KVCommand_Get:
		key = op.Get.Key
	case *pb.KVCommand_Delete:
		key = op.Delete.Key
	case *pb.KVCommand_Cas:
		key = op.Cas.Key
	default:
		return fmt.Errorf("the request has no command (put, get, delete or cas)")
	}
	switch {
	case key == "":
		return fmt.Errorf("the key is empty")
	case len(key) > lim.MaxKeyBytes:
		return fmt.Errorf("the key is %d bytes; the limit is %d", len(key), lim.MaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("the key %.64q is not valid UTF-8; keys are UTF-8 strings", key)
	}
	if n := proto.Size(&pb.ClientCommand{ClientId: r.ClientId, Sequence: r.Sequence, Data: mustMarshal(r.Command)}); n > lim.MaxEntryBytes {
		return fmt.Errorf("the command is %d bytes encoded; the limit is %d (a value may be up to %d bytes)", n, lim.MaxEntryBytes, lim.MaxValueBytes())
	}
	return nil
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil // caught by the caller's other checks (an invalid key)
	}
	return b
}
