package lincheck

import (
	"strings"
	"testing"
)

// LostWrites flags a final read that is older than an acknowledged write:
// absent, a value nobody wrote, or a write overwritten by one acknowledged
// after it returned; and no loss when the final value is the latest write
// (an unknown write may take effect late).
func TestLostWrites(t *testing.T) {
	put := func(id int, key, v string, call, ret int64, o Outcome) Entry {
		return Entry{ID: id, Client: 1, Op: Op{Kind: KindPut, Key: key, Value: []byte(v)}, Outcome: o, Call: call, Return: ret}
	}
	get := func(id int, key, v string, found bool, call int64) Entry {
		return Entry{ID: id, Client: 9, Op: Op{Kind: KindGet, Key: key}, Result: Result{Found: found, Value: []byte(v)}, Outcome: OK, Call: call, Return: call + 1}
	}
	tests := []struct {
		name    string
		entries []Entry
		want    string // "" for no loss
	}{
		{"latest value", []Entry{put(0, "k", "a", 1, 2, OK), put(1, "k", "b", 3, 4, OK), get(2, "k", "b", true, 5)}, ""},
		{"an unknown write taking effect late", []Entry{put(0, "k", "a", 1, 2, OK), put(1, "k", "b", 3, 0, Unknown), get(2, "k", "b", true, 5)}, ""},
		{"absent after an acknowledged write", []Entry{put(0, "k", "a", 1, 2, OK), get(1, "k", "", false, 3)}, "absent"},
		{"a value never written", []Entry{put(0, "k", "a", 1, 2, OK), get(1, "k", "z", true, 3)}, "never written"},
		{"overwritten by a later acknowledged write", []Entry{put(0, "k", "a", 1, 2, OK), put(1, "k", "b", 3, 4, OK), get(2, "k", "a", true, 5)}, "overwritten"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lost := LostWrites(tt.entries, 9)
			switch {
			case tt.want == "" && len(lost) > 0:
				t.Fatalf("lost %v, want none", lost)
			case tt.want != "" && (len(lost) != 1 || !strings.Contains(lost[0], tt.want)):
				t.Fatalf("lost %v, want one mentioning %q", lost, tt.want)
			}
		})
	}
}
