package kv

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/ketch-raft/ketch/actors/statemachine"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// run applies one command at index and decodes its result.
func run(t *testing.T, s *Store, index uint64, c *pb.KVCommand) *pb.KVResult {
	t.Helper()
	data, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, s.Apply([]statemachine.Command{{Index: index, Term: 1, Data: data}})[0])
}

func decode(t *testing.T, b []byte) *pb.KVResult {
	t.Helper()
	var r pb.KVResult
	if err := proto.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
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
		r := run(t, s, uint64(i+1), st.cmd)
		if r.Error != "" || r.Found != st.found || string(r.Value) != st.value || r.Swapped != st.swapped {
			t.Errorf("%s: got %v", st.name, r)
		}
	}
}

// A command the store cannot run gets an error result, the same on every
// replica, and changes nothing; a query must be a get.
func TestGarbageAndQueries(t *testing.T) {
	s := New()
	res := s.Apply([]statemachine.Command{{Index: 1, Data: []byte{0xff, 0xff}}, {Index: 2, Data: nil}})
	if r := decode(t, res[0]); r.Error == "" {
		t.Fatalf("garbage answered %v", r)
	}
	if r := decode(t, res[1]); !strings.Contains(r.Error, "empty") {
		t.Fatalf("an empty command answered %v", r)
	}
	run(t, s, 3, put("a", "1"))
	q, _ := proto.Marshal(get("a"))
	if b, err := s.Query(q); err != nil || string(decode(t, b).Value) != "1" {
		t.Fatalf("query of a: %v %v", b, err)
	}
	p, _ := proto.Marshal(put("a", "2"))
	if _, err := s.Query(p); err == nil {
		t.Fatal("a put served as a query")
	}
	if _, err := s.Query([]byte{0xff}); err == nil {
		t.Fatal("garbage served as a query")
	}
}

// A snapshot is a frozen view: writes after Snapshot do not reach it, and
// a store restored from it holds exactly the state at Snapshot. After
// Release the writes made meanwhile are all there.
func TestSnapshotIsAPointInTimeView(t *testing.T) {
	s := New()
	for i := range 1000 {
		run(t, s, uint64(i+1), put(fmt.Sprintf("k%d", i), strings.Repeat("v", i%50)))
	}
	run(t, s, 1001, del("k7"))
	want := map[string]string{}
	s.data.Range(func(k string, v []byte) bool { want[k] = string(v); return true })

	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- snap.Persist(&buf) }() // concurrently with the applies below
	for i := range 500 {
		run(t, s, uint64(1002+i), put(fmt.Sprintf("k%d", i), "new"))
		run(t, s, uint64(1002+500+i), del(fmt.Sprintf("k%d", 500+i)))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if v, _ := s.Lookup("k3"); string(v) != "new" || s.Len() != 500 {
		t.Fatalf("after Release: k3=%q, %d keys; want new, 500", v, s.Len())
	}

	r := New()
	if err := r.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if r.Len() != len(want) {
		t.Fatalf("restored %d keys, want %d", r.Len(), len(want))
	}
	for k, v := range want {
		if got, ok := r.Lookup(k); !ok || string(got) != v {
			t.Fatalf("restored %s=%q, want %q", k, got, v)
		}
	}
}

// Restore refuses what a snapshot of this store could not have written:
// every truncation of a valid snapshot, and trailing bytes.
func TestRestoreRefusesDamage(t *testing.T) {
	s := New()
	for i := range 20 {
		run(t, s, uint64(i+1), put(fmt.Sprintf("key%d", i), "value"))
	}
	snap, _ := s.Snapshot()
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	b := buf.Bytes()
	for n := range len(b) {
		if err := New().Restore(bytes.NewReader(b[:n])); err == nil {
			t.Fatalf("a snapshot cut to %d of %d bytes restored", n, len(b))
		}
	}
	if err := New().Restore(bytes.NewReader(append(bytes.Clone(b), 0))); err == nil {
		t.Fatal("a snapshot with a trailing byte restored")
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
	size := func(c *pb.KVCommand) int {
		b, _ := proto.Marshal(c)
		return proto.Size(&pb.ClientCommand{ClientId: 1, Sequence: 1, Data: b})
	}
	for size(put("k", strings.Repeat("v", fit+1))) <= 200 {
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
