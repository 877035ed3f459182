package messages

import (
	"strings"
	"testing"
)

// The limits hold each other, and Validate says which does not: each case
// breaks one relation by one byte.
func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	d := DefaultLimits()
	for _, tc := range []struct {
		name string
		l    Limits
		want string // in the error; "" for valid
	}{
		{"zero fields take the defaults", Limits{}, ""},
		{"a key that fills the entry", Limits{MaxKeyBytes: d.MaxEntryBytes - CommandOverhead}, "MaxKeyBytes"},
		{"an entry one byte too large for a message", Limits{MaxEntryBytes: d.AppendBudget() - EntryOverhead + 1}, "MaxMessageBytes"},
		{"the largest entry that fits a message", Limits{MaxEntryBytes: d.AppendBudget() - EntryOverhead}, ""},
		{"a batch as small as a message", Limits{MaxBatchBytes: d.MaxMessageBytes}, "MaxBatchBytes"},
		{"a batch one message and its framing", Limits{MaxBatchBytes: d.MaxMessageBytes + batchFraming}, ""},
		{"a batch over the frame limit", Limits{MaxBatchBytes: maxBatchLimit + 1}, "above"},
		{"negative", Limits{MaxEntriesPerMessage: -1}, "positive"},
	} {
		err := tc.l.Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if d.MaxValueBytes() != 1<<20-4<<10-CommandOverhead {
		t.Errorf("MaxValueBytes %d", d.MaxValueBytes())
	}
}

// An opaque command of MaxDataBytes fits one entry with any client id and
// sequence; one entry's worth of data does not. Queries are bounded by the
// entry size alone.
func TestCheckData(t *testing.T) {
	l := DefaultLimits()
	const maxID = ^uint64(0)
	if err := l.CheckData(maxID, maxID, make([]byte, l.MaxDataBytes()), false); err != nil {
		t.Errorf("MaxDataBytes refused: %v", err)
	}
	if err := l.CheckData(1, 1, make([]byte, l.MaxEntryBytes), false); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("an entry's worth of data: %v", err)
	}
	if err := l.CheckData(1, 1, make([]byte, l.MaxEntryBytes), true); err != nil {
		t.Errorf("a query of MaxEntryBytes: %v", err)
	}
	if err := l.CheckData(1, 1, make([]byte, l.MaxEntryBytes+1), true); err == nil {
		t.Error("a query over MaxEntryBytes accepted")
	}
}

// TestProtoFilesHaveTheirPackagePath: the files register as ketch/v1/...,
// never as a bare raft.proto, which etcd-io/raft's raftpb also registers
// (the protobuf runtime panics at start-up on such a conflict; tests/bench
// links both).
func TestProtoFilesHaveTheirPackagePath(t *testing.T) {
	for _, f := range []interface{ Path() string }{File_ketch_v1_raft_proto, File_ketch_v1_node_proto} {
		if !strings.HasPrefix(f.Path(), "ketch/v1/") {
			t.Errorf("%s is registered without its package's path", f.Path())
		}
	}
}
