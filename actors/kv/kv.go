// Package kv is ketch's first replicated state machine: an in-memory
// key-value map with put, get, delete and compare-and-swap, plus client
// sessions so that a retried command is applied at most once (Raft thesis
// §6.3).
//
// Apply must be deterministic: every replica applies the same entries in
// the same order and must reach the same state and the same answers. So it
// never reads a clock, draws randomness, or depends on map iteration order,
// and it never panics on a command's content: a malformed entry gets the
// same INVALID answer on every replica.
package kv

import (
	"bytes"
	"fmt"
	"unicode/utf8"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// MaxSessions bounds the client sessions remembered. When a new client
// would exceed it, the session applied longest ago is forgotten; a retry
// from that client for its last command then gets an INVALID answer
// ("session expired") rather than a second application. Eviction follows
// the log, so it is the same on every replica.
const MaxSessions = 100_000

// Store is the key-value state machine. It is not safe for concurrent use:
// the state actor owns it.
type Store struct {
	data     map[string][]byte
	sessions map[uint64]*session
	applied  uint64
}

// session is what the store remembers of one client (thesis §6.3): its
// last sequence number and the answer it got.
type session struct {
	seq   uint64
	resp  *pb.ClientResponse
	index uint64 // log index of the session's last command, for eviction
}

// New returns an empty store.
func New() *Store {
	return &Store{data: map[string][]byte{}, sessions: map[uint64]*session{}}
}

// Applied is the index of the last entry applied.
func (s *Store) Applied() uint64 { return s.applied }

// Len is the number of keys.
func (s *Store) Len() int { return len(s.data) }

// Lookup reads a key directly, bypassing the log: for tests and for
// inspecting a replica, never for answering clients (that would not be
// linearizable).
func (s *Store) Lookup(key string) ([]byte, bool) {
	v, ok := s.data[key]
	return v, ok
}

// Apply applies the entry at index, which must be the next one. It returns
// the answer for the client that proposed it (nil for entries that answer
// nobody, such as a leader's no-op).
func (s *Store) Apply(e *pb.Entry) *pb.ClientResponse {
	if e.Index != s.applied+1 {
		panic(fmt.Sprintf("invariant: kv applies index %d after %d; entries must come in order, once each", e.Index, s.applied))
	}
	s.applied = e.Index
	if e.Type != pb.EntryType_ENTRY_TYPE_NORMAL {
		return nil
	}
	var ent pb.KVEntry
	if err := proto.Unmarshal(e.Data, &ent); err != nil {
		return &pb.ClientResponse{Status: pb.ClientStatus_CLIENT_STATUS_INVALID, Error: "kv: undecodable command in the log", Index: e.Index}
	}
	// Thesis §6.3: a command whose sequence number the session has seen
	// is not applied again; the client gets the answer it got then.
	if ent.ClientId != 0 {
		if ss, ok := s.sessions[ent.ClientId]; ok {
			switch {
			case ent.Sequence == ss.seq:
				return ss.resp
			case ent.Sequence < ss.seq:
				return &pb.ClientResponse{ClientId: ent.ClientId, Sequence: ent.Sequence, Status: pb.ClientStatus_CLIENT_STATUS_INVALID,
					Error: fmt.Sprintf("kv: sequence %d is older than the client's last (%d); it was answered already", ent.Sequence, ss.seq), Index: e.Index}
			}
		}
	}
	resp := s.execute(ent.Command)
	resp.ClientId, resp.Sequence, resp.Index = ent.ClientId, ent.Sequence, e.Index
	if ent.ClientId != 0 {
		s.remember(ent.ClientId, ent.Sequence, resp, e.Index)
	}
	return resp
}

// Read answers a read-only command (a Get) from the current state, without
// the log: the caller must have made sure, by ReadIndex (thesis §6.4), that
// the state is recent enough. Other commands are refused.
func (s *Store) Read(c *pb.KVCommand) *pb.ClientResponse {
	get := c.GetGet()
	if get == nil {
		return &pb.ClientResponse{Status: pb.ClientStatus_CLIENT_STATUS_INVALID, Error: "kv: only get can be served as a read"}
	}
	v, ok := s.data[get.Key]
	return &pb.ClientResponse{Status: pb.ClientStatus_CLIENT_STATUS_OK, Found: ok, Value: v, Index: s.applied}
}

func (s *Store) execute(c *pb.KVCommand) *pb.ClientResponse {
	ok := &pb.ClientResponse{Status: pb.ClientStatus_CLIENT_STATUS_OK}
	switch op := c.GetOp().(type) {
	case *pb.KVCommand_Put:
		s.data[op.Put.Key] = bytes.Clone(op.Put.Value)
	case *pb.KVCommand_Get:
		ok.Value, ok.Found = s.data[op.Get.Key]
	case *pb.KVCommand_Delete:
		_, ok.Found = s.data[op.Delete.Key]
		delete(s.data, op.Delete.Key)
	case *pb.KVCommand_Cas:
		cur, exists := s.data[op.Cas.Key]
		match := !exists && op.Cas.ExpectAbsent || exists && !op.Cas.ExpectAbsent && bytes.Equal(cur, op.Cas.Expected)
		if match {
			s.data[op.Cas.Key] = bytes.Clone(op.Cas.Value)
			ok.Swapped = true
		} else {
			ok.Found, ok.Value = exists, cur
		}
	default:
		return &pb.ClientResponse{Status: pb.ClientStatus_CLIENT_STATUS_INVALID, Error: "kv: empty command"}
	}
	return ok
}

func (s *Store) remember(client, seq uint64, resp *pb.ClientResponse, index uint64) {
	if ss, ok := s.sessions[client]; ok {
		ss.seq, ss.resp, ss.index = seq, resp, index
		return
	}
	if len(s.sessions) >= MaxSessions {
		s.evictOldest()
	}
	s.sessions[client] = &session{seq: seq, resp: resp, index: index}
}

// evictOldest forgets the session whose last command is oldest in the log.
// Indexes are unique, so the choice does not depend on map order.
func (s *Store) evictOldest() {
	var oldest uint64
	var at uint64
	for id, ss := range s.sessions {
		if at == 0 || ss.index < at {
			oldest, at = id, ss.index
		}
	}
	delete(s.sessions, oldest)
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
	if n := proto.Size(&pb.KVEntry{ClientId: r.ClientId, Sequence: r.Sequence, Command: r.Command}); n > lim.MaxEntryBytes {
		return fmt.Errorf("the command is %d bytes encoded; the limit is %d (a value may be up to %d bytes)", n, lim.MaxEntryBytes, lim.MaxValueBytes())
	}
	return nil
}
