package fsm

import (
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// TestViewOfTheLeader: Progress is the leader's Figure 2 state per
// follower (nil elsewhere), Recent the tail of the log; neither changes
// the node.
func TestViewOfTheLeader(t *testing.T) {
	f := newNode(t, testConfig(1), restoreLog(1, 0, 1, 1, 1))
	if f.Progress() != nil {
		t.Fatal("a follower reports progress")
	}
	if got := f.Recent(2); len(got) != 2 || got[0].Index != 2 || got[1].Index != 3 || got[1].Term != 1 {
		t.Fatalf("Recent(2) = %+v", got)
	}
	if got := f.Recent(10); len(got) != 3 {
		t.Fatalf("Recent(10) = %+v, want the 3 entries", got)
	}
	n := nodeInRole(t, testConfig(1), Leader)
	before := n.Status()
	pr := n.Progress()
	if len(pr) != 2 || pr[0].ID != 2 || pr[1].ID != 3 {
		t.Fatalf("Progress = %+v, want followers 2 and 3 in order", pr)
	}
	for _, p := range pr {
		if p.State != "probe" || p.Next == 0 || p.Next > 3 || p.Match != 0 {
			t.Errorf("a new leader's view of %d: %+v, want a probe, nothing matched", p.ID, p)
		}
	}
	n.Step(appendAck(2, 1, n.term, 2))
	if p := n.Progress()[0]; p.Match != 2 || p.State != "replicate" {
		t.Fatalf("after 2 acknowledged index 2: %+v", p)
	}
	last := n.Recent(1)
	if len(last) != 1 || last[0].Type != pb.EntryType_ENTRY_TYPE_NOOP || last[0].Term != n.term {
		t.Fatalf("the leader's last entry %+v, want its no-op", last)
	}
	if after := n.Status(); after.Term != before.Term || after.LastIndex != before.LastIndex {
		t.Fatal("the view changed the node")
	}
}
