package counter

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/ketch-raft/ketch/actors/statemachine"
)

func add(t *testing.T, sm statemachine.StateMachine, name string, d int64) (int64, error) {
	t.Helper()
	return DecodeResult(sm.Apply([]statemachine.Command{{Index: 1, Data: EncodeAdd(name, d)}})[0])
}

// Errors are results, the same on every replica, and change nothing.
func TestApplyRefusesWithResults(t *testing.T) {
	sm := New()
	if v, err := add(t, sm, "x", math.MaxInt64); err != nil || v != math.MaxInt64 {
		t.Fatalf("add max: %d %v", v, err)
	}
	if _, err := add(t, sm, "x", 1); err == nil || !strings.Contains(err.Error(), "overflows") {
		t.Fatalf("overflow: %v", err)
	}
	if _, err := add(t, sm, "", 1); err == nil {
		t.Fatal("an empty name was added to")
	}
	if _, err := DecodeResult(sm.Apply([]statemachine.Command{{Data: []byte("zz")}})[0]); err == nil {
		t.Fatal("garbage was applied")
	}
	q, err := sm.Query(EncodeGet("x"))
	if v, _ := DecodeResult(q); err != nil || v != math.MaxInt64 {
		t.Fatalf("the refused commands changed x to %d (%v)", v, err)
	}
	if _, err := sm.Query([]byte("a")); err == nil {
		t.Fatal("a command served as a query")
	}
}

// A snapshot is the state at Snapshot, whatever is applied while it is
// written; equal states write equal bytes; damage is refused.
func TestSnapshot(t *testing.T) {
	sm := New()
	for i := range 100 {
		add(t, sm, fmt.Sprintf("c%d", i), int64(i))
	}
	snap, _ := sm.Snapshot()
	add(t, sm, "c1", 1000) // after the snapshot
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	r := New()
	if err := r.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(r), strings.Replace(fmt.Sprint(sm), "c1=1001", "c1=1", 1); got != want {
		t.Fatalf("restored %s\nwant     %s", got, want)
	}
	again, _ := r.Snapshot()
	var buf2 bytes.Buffer
	again.Persist(&buf2)
	again.Release()
	if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
		t.Fatal("equal states wrote different snapshots")
	}
	b := buf.Bytes()
	for n := range len(b) {
		if err := New().Restore(bytes.NewReader(b[:n])); err == nil {
			t.Fatalf("a snapshot cut to %d bytes restored", n)
		}
	}
}
