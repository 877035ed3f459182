package kv

import (
	"strings"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

func entry(t *testing.T, index, client, seq uint64, c *pb.KVCommand) *pb.Entry {
	t.Helper()
	data, err := proto.Marshal(&pb.KVEntry{ClientId: client, Sequence: seq, Command: c})
	if err != nil {
		t.Fatal(err)
	}
	return &pb.Entry{Index: index, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: data}
}

func put(k, v string) *pb.KVCommand {
	return &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: k, Value: []byte(v)}}}
}
func get(k string) *pb.KVCommand { return &pb.KVCommand{Op: &pb.KVCommand_Get{Get: &pb.Get{Key: k}}} }
func del(k string) *pb.KVCommand {
	return &pb.KVCommand{Op: &pb.KVCommand_Delete{Delete: &pb.Delete{Key: k}}}
}
func cas(k, old, v string, absent bool) *pb.KVCommand {
	return &pb.KVCommand{Op: &pb.KVCommand_Cas{Cas: &pb.CompareAndSwap{Key: k, Expected: []byte(old), ExpectAbsent: absent, Value: []byte(v)}}}
}

func TestOperations(t *testing.T) {
	s := New()
	steps := []struct {
		name    string
		cmd     *pb.KVCommand
		found   bool
		value   string
		swapped bool
	}{
		{"get missing", get("a"), false, "", false},
		{"cas absent swaps", cas("a", "", "1", true), false, "", true},
		{"cas absent on present fails", cas("a", "", "2", true), true, "1", false},
		{"get", get("a"), true, "1", false},
		{"cas wrong old fails", cas("a", "9", "2", false), true, "1", false},
		{"cas right old swaps", cas("a", "1", "2", false), false, "", true},
		{"put", put("a", "3"), false, "", false},
		{"get after put", get("a"), true, "3", false},
		{"delete present", del("a"), true, "", false},
		{"delete missing", del("a"), false, "", false},
		{"cas on missing fails", cas("a", "3", "4", false), false, "", false},
	}
	for i, st := range steps {
		r := s.Apply(entry(t, uint64(i+1), 0, 0, st.cmd))
		if r.Status != pb.ClientStatus_CLIENT_STATUS_OK || r.Found != st.found || string(r.Value) != st.value || r.Swapped != st.swapped {
			t.Errorf("%s: got %v", st.name, r)
		}
	}
}

// Raft thesis §6.3: a retried command (same client and sequence) is not
// applied twice and gets the first answer.
func TestRetriedCommandAppliesOnce(t *testing.T) {
	s := New()
	s.Apply(entry(t, 1, 7, 1, cas("k", "", "first", true)))
	s.Apply(entry(t, 2, 8, 1, put("k", "other")))
	r := s.Apply(entry(t, 3, 7, 1, cas("k", "", "first", true))) // the retry
	if !r.Swapped || r.Index != 1 {
		t.Fatalf("retry should get the first answer (swapped at index 1), got %v", r)
	}
	if v, _ := s.Lookup("k"); string(v) != "other" {
		t.Fatalf("retry was applied again: k=%q", v)
	}
	if r := s.Apply(entry(t, 4, 7, 0, get("k"))); r.Status != pb.ClientStatus_CLIENT_STATUS_INVALID {
		t.Fatalf("an older sequence must be refused, got %v", r)
	}
}

func TestNoopAndGarbage(t *testing.T) {
	s := New()
	if r := s.Apply(&pb.Entry{Index: 1, Type: pb.EntryType_ENTRY_TYPE_NOOP}); r != nil {
		t.Fatalf("no-op answered %v", r)
	}
	if r := s.Apply(&pb.Entry{Index: 2, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: []byte{0xff, 0xff}}); r.Status != pb.ClientStatus_CLIENT_STATUS_INVALID {
		t.Fatalf("garbage answered %v", r)
	}
	if s.Applied() != 2 {
		t.Fatalf("applied %d", s.Applied())
	}
}

func TestApplyOutOfOrderPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("applying index 3 after 0 did not panic")
		}
	}()
	New().Apply(&pb.Entry{Index: 3})
}

func TestSessionEvictionFollowsTheLog(t *testing.T) {
	s := New()
	for i := uint64(1); i <= MaxSessions+1; i++ {
		s.Apply(entry(t, i, i, 1, get("x")))
	}
	if _, ok := s.sessions[1]; ok {
		t.Fatal("the oldest session should have been evicted")
	}
	if len(s.sessions) != MaxSessions {
		t.Fatalf("%d sessions", len(s.sessions))
	}
}

// The boundary refuses what must never reach the log: no command, an empty,
// oversized or non-UTF-8 key, a command whose entry would exceed the limit.
// The limits are exact: the largest key and the largest entry pass.
func TestValidateRequest(t *testing.T) {
	lim := pb.Limits{MaxKeyBytes: 10, MaxEntryBytes: 200, MaxMessageBytes: 2048, MaxBatchBytes: 4096}
	if err := lim.Validate(); err != nil {
		t.Fatal(err)
	}
	req := func(c *pb.KVCommand) *pb.ClientRequest {
		return &pb.ClientRequest{ClientId: 1, Sequence: 1, Command: c}
	}
	// The longest value for which a put of a 1-byte key is an entry of at
	// most MaxEntryBytes.
	fit := 0
	for proto.Size(&pb.KVEntry{ClientId: 1, Sequence: 1, Command: put("k", strings.Repeat("v", fit+1))}) <= 200 {
		fit++
	}
	for _, c := range []struct {
		name string
		cmd  *pb.KVCommand
		ok   bool
	}{
		{"put", put("k", "v"), true},
		{"empty", &pb.KVCommand{}, false},
		{"nil", nil, false},
		{"empty key", get(""), false},
		{"key of the limit", get(strings.Repeat("k", 10)), true},
		{"key over the limit", get(strings.Repeat("k", 11)), false},
		{"key not UTF-8", get("\xff\xfe"), false},
		{"entry of the limit", put("k", strings.Repeat("v", fit)), true},
		{"entry over the limit", put("k", strings.Repeat("v", fit+1)), false},
		{"cas values over the limit together", cas("k", strings.Repeat("o", fit/2+1), strings.Repeat("n", fit/2+1), false), false},
	} {
		if err := ValidateRequest(req(c.cmd), lim); (err == nil) != c.ok {
			t.Errorf("%s: err=%v", c.name, err)
		}
	}
}
