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
