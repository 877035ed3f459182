package web

import (
	"strings"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

func TestChanges(t *testing.T) {
	base := NodeView{ID: 2, Role: "follower", Term: 1, Children: []ChildView{{Name: "store"}, {Name: "fsm"}, {Name: "sender"}}}
	with := func(edit func(*NodeView)) NodeView {
		v := base
		v.Children = append([]ChildView(nil), base.Children...)
		edit(&v)
		return v
	}
	for _, tc := range []struct {
		name string
		cur  NodeView
		want []string // the events' kinds, in order
	}{
		{"nothing", base, nil},
		{"pre-vote", with(func(v *NodeView) { v.Role = "pre-candidate" }), []string{"election"}},
		{"election", with(func(v *NodeView) { v.Role, v.Term = "candidate", 2 }), []string{"election"}},
		{"leader", with(func(v *NodeView) { v.Role, v.Term = "leader", 2 }), []string{"leader"}},
		{"crash and rest_for_one", with(func(v *NodeView) {
			v.Children[1] = ChildView{Name: "fsm", Restarts: 1, Crashes: 1, LastCrash: "boom\nstack"}
			v.Children[2] = ChildView{Name: "sender", Restarts: 1}
		}), []string{"crash", "restart"}},
		{"fail-stop", with(func(v *NodeView) { v.Role, v.Error = "stopped", "too many restarts" }), []string{"down"}},
		{"configuration", with(func(v *NodeView) {
			v.ConfigurationIndex = 9
			v.Members = []MemberJSON{{ID: 1, Role: "voter"}, {ID: 4, Role: "learner"}}
		}), []string{"membership"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Changes(base, tc.cur, 5)
			var kinds []string
			for _, e := range got {
				kinds = append(kinds, e.Kind)
				if e.Node != 2 || e.AtUnixMillis != 5 || e.Text == "" || strings.Contains(e.Text, "\n") {
					t.Errorf("event %+v", e)
				}
			}
			if strings.Join(kinds, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("Changes = %v, want kinds %v", got, tc.want)
			}
		})
	}
	// The restart names every child restarted, in one line.
	ev := Changes(base, with(func(v *NodeView) {
		v.Children[1] = ChildView{Name: "fsm", Restarts: 1, Crashes: 1}
		v.Children[2] = ChildView{Name: "sender", Restarts: 1}
	}), 0)
	if len(ev) != 2 || !strings.Contains(ev[1].Text, "fsm, sender") {
		t.Fatalf("restart event %v", ev)
	}
}

func TestViewOf(t *testing.T) {
	st := &pb.NodeStatus{Id: 3, Role: "leader", Term: 4, Commit: 10, Applied: 9,
		Configuration: &pb.Configuration{Members: []*pb.Member{{Id: 3, Role: pb.MemberRole_MEMBER_ROLE_VOTER}, {Id: 5, Role: pb.MemberRole_MEMBER_ROLE_LEARNER}}},
		Children:      map[string]*pb.ChildStatus{"fsm": {Restarts: 2, Crashes: 1, LastCrash: "x"}, "store": {}},
		Detail: &pb.NodeDetail{Durable: 11, Children: []string{"store", "fsm"},
			Recent:   []*pb.EntryInfo{{Index: 10, Term: 4, Type: pb.EntryType_ENTRY_TYPE_NOOP}, {Index: 11, Term: 4, Type: pb.EntryType_ENTRY_TYPE_CONFIG, Bytes: 30}},
			Progress: []*pb.PeerProgress{{Id: 5, Match: 9, Next: 12, State: "replicate", Inflight: 1}},
			Traffic:  []*pb.PeerTraffic{{Peer: 5, SentMessages: 7}}}}
	v := ViewOf(st, "h:1")
	if v.ID != 3 || v.Address != "h:1" || v.Durable != 11 || len(v.Members) != 2 || v.Members[1].Role != "learner" {
		t.Fatalf("ViewOf = %+v", v)
	}
	if len(v.Children) != 2 || v.Children[0].Name != "store" || v.Children[1].Restarts != 2 {
		t.Fatalf("children %+v: want the supervisor's order", v.Children)
	}
	if len(v.Recent) != 2 || v.Recent[0].Type != "noop" || v.Recent[1].Type != "config" || v.Progress[0].State != "replicate" || v.Traffic[0].SentMessages != 7 {
		t.Fatalf("detail %+v", v)
	}
	// Without detail: nothing is nil (the page reads arrays).
	v = ViewOf(&pb.NodeStatus{Id: 1}, "")
	if v.Recent == nil || v.Progress == nil || v.Traffic == nil || v.Children == nil || v.Members == nil || v.Outgoing == nil {
		t.Fatalf("nil slices in %+v", v)
	}
}

func TestValidateListen(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:0", ":8080", "localhost:65535"} {
		if err := ValidateListen(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "8080", "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:http-nope", "127.0.0.1"} {
		if err := ValidateListen(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
