package consensus

import (
	"errors"
	"strings"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

// Everything a peer sends is checked before it reaches the fsm, whose
// invariants are asserted with panics.
func TestValidatePeer(t *testing.T) {
	members := map[uint64]bool{1: true, 2: true, 3: true}
	lim := Limits{}
	lim.setDefaults()
	lim.MaxEntryBytes = 8
	ae := func(prev, prevTerm uint64, ents ...*pb.Entry) *pb.RaftMessage {
		return &pb.RaftMessage{ClusterId: "c", From: 2, To: 1, Term: 3, Body: &pb.RaftMessage_AppendEntries{
			AppendEntries: &pb.AppendEntries{PrevLogIndex: prev, PrevLogTerm: prevTerm, Entries: ents}}}
	}
	ent := func(i, term uint64, data string) *pb.Entry {
		return &pb.Entry{Index: i, Term: term, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: []byte(data)}
	}
	with := func(m *pb.RaftMessage, f func(*pb.RaftMessage)) *pb.RaftMessage { f(m); return m }
	for _, c := range []struct {
		name string
		msg  *pb.RaftMessage
		want string // substring of the error; "" for valid
	}{
		{"valid append", ae(1, 1, ent(2, 2, "x"), ent(3, 3, "y")), ""},
		{"valid heartbeat", ae(5, 3), ""},
		{"valid vote", &pb.RaftMessage{ClusterId: "c", From: 3, To: 1, Term: 2, Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{LastLogIndex: 4, LastLogTerm: 2}}}, ""},
		{"valid timeout now", &pb.RaftMessage{ClusterId: "c", From: 2, To: 1, Term: 3, Body: &pb.RaftMessage_TimeoutNow{TimeoutNow: &pb.TimeoutNow{}}}, ""},
		{"valid pre-vote", &pb.RaftMessage{ClusterId: "c", From: 3, To: 1, Term: 4, Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{LastLogIndex: 4, LastLogTerm: 3, PreVote: true}}}, ""},
		{"valid read index request", &pb.RaftMessage{ClusterId: "c", From: 2, To: 1, Term: 3, Body: &pb.RaftMessage_ReadIndexRequest{ReadIndexRequest: &pb.ReadIndexRequest{Context: 7}}}, ""},
		{"valid read index response", &pb.RaftMessage{ClusterId: "c", From: 2, To: 1, Term: 3, Body: &pb.RaftMessage_ReadIndexResponse{ReadIndexResponse: &pb.ReadIndexResponse{Context: 7, Index: 9}}}, ""},
		{"nil", nil, "empty"},
		{"other cluster", with(ae(0, 0), func(m *pb.RaftMessage) { m.ClusterId = "other" }), "another cluster"},
		{"not for us", with(ae(0, 0), func(m *pb.RaftMessage) { m.To = 2 }), "addressed to node 2"},
		{"from a stranger", with(ae(0, 0), func(m *pb.RaftMessage) { m.From = 9 }), "not another member"},
		{"from ourselves", with(ae(0, 0), func(m *pb.RaftMessage) { m.From = 1 }), "not another member"},
		{"term 0", with(ae(0, 0), func(m *pb.RaftMessage) { m.Term = 0 }), "term 0"},
		{"no body", &pb.RaftMessage{ClusterId: "c", From: 2, To: 1, Term: 1}, "no body"},
		{"gap in entries", ae(1, 1, ent(2, 2, ""), ent(4, 2, "")), "has index 4, want 3"},
		{"entries not after prev", ae(1, 1, ent(5, 2, "")), "has index 5, want 2"},
		{"entry term above leader's", ae(1, 1, ent(2, 4, "")), "has term 4"},
		{"entry terms decrease", ae(1, 1, ent(2, 3, ""), ent(3, 2, "")), "has term 2"},
		{"entry below prev term", ae(1, 3, ent(2, 2, "")), "has term 2"},
		{"prev term above leader's", ae(1, 9), "prev log term 9"},
		{"prev 0 with a term", ae(0, 1), "prev log index 0"},
		{"oversized entry", ae(1, 1, ent(2, 2, "123456789")), "holds 9 bytes"},
		{"unknown entry type", ae(1, 1, &pb.Entry{Index: 2, Term: 2, Type: 7}), "unknown type"},
		{"nil entry", ae(1, 1, nil), "is empty"},
		{"vote with future log", &pb.RaftMessage{ClusterId: "c", From: 3, To: 1, Term: 2, Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{LastLogTerm: 5}}}, "last log term 5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := validatePeer(c.msg, "c", 1, members, lim)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("valid message refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	err := validatePeer(with(ae(0, 0), func(m *pb.RaftMessage) { m.ClusterId = "x" }), "c", 1, members, lim)
	if !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("wrong cluster is not ErrWrongCluster: %v", err)
	}
}
