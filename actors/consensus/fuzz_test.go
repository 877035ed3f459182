package consensus

import (
	"testing"

	"github.com/ketch-raft/ketch/actors/protocol"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// FuzzConsensusActor: whatever RaftBatch a peer sends, the fsm actor never
// crashes (a restart would show as a second LoadRequest) and keeps
// answering. The input is a RaftBatch's encoding; the first byte says
// whether to stamp every message's envelope with this cluster, this node
// and a member as sender, so most inputs reach the fsm's deeper checks.
func FuzzConsensusActor(f *testing.F) {
	for _, b := range []*pb.RaftBatch{
		{Messages: []*pb.RaftMessage{pb.NewRaftMessage("c", 2, 1, 2, &pb.RequestVote{LastLogIndex: 1, LastLogTerm: 1})}},
		{Messages: []*pb.RaftMessage{pb.NewRaftMessage("c", 2, 1, 2, &pb.AppendEntries{PrevLogIndex: 0, Entries: []*pb.Entry{{Index: 1, Term: 2, Type: pb.EntryType_ENTRY_TYPE_NORMAL}}, LeaderCommit: 1})}},
		{Messages: []*pb.RaftMessage{pb.NewRaftMessage("c", 3, 1, 5, &pb.AppendEntriesResponse{Success: true, MatchIndex: 9})}},
		{Messages: []*pb.RaftMessage{pb.NewRaftMessage("c", 3, 1, 1, &pb.TimeoutNow{}), nil, {}}},
		{Messages: []*pb.RaftMessage{pb.NewRaftMessage("c", 2, 1, 3, &pb.ReadIndexRequest{Context: 1}), pb.NewRaftMessage("c", 2, 1, 3, &pb.ReadIndexResponse{Context: 1, Index: 4})}},
	} {
		data, err := proto.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(0), data)
		f.Add(byte(1), data)
	}
	f.Fuzz(func(t *testing.T, stamp byte, data []byte) {
		var b pb.RaftBatch
		if proto.Unmarshal(data, &b) != nil {
			return
		}
		if stamp&1 != 0 {
			for _, m := range b.Messages {
				if m != nil {
					m.ClusterId, m.To, m.From = "c", 1, 2+uint64(stamp>>1)%2
				}
			}
		}
		h := newHarness(t, []uint64{1, 2, 3}, nil)
		h.incarnation(noops(2), 1, nil)
		h.sys.Root.Send(h.fsm, &b)
		h.sys.Root.Send(h.fsm, &pb.RaftBatch{Messages: b.Messages}) // and again, in a new state
		h.sync()
		if n := count[*logstore.LoadRequest](h.store, nil); n != 1 {
			t.Fatalf("the fsm actor restarted (%d LoadRequests)", n)
		}
		if n := count[*protocol.AppliedQuery](h.state, nil); n != 1 {
			t.Fatalf("the fsm actor restarted (%d AppliedQuerys)", n)
		}
	})
}
