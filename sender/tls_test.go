package sender

import (
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

func TestIdentityRefusal(t *testing.T) {
	batch := func(from uint64) []byte {
		b, err := proto.Marshal(&pb.RaftBatch{From: from, FromAddress: "h:1", Messages: []*pb.RaftMessage{msgTo(1, 3)}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		node    uint64
		typ     string
		data    []byte
		refused bool
	}{
		{"its own batch", 2, raftBatchName, batch(2), false},
		{"another node's", 2, raftBatchName, batch(3), true},
		{"no sender id", 2, raftBatchName, batch(0), true},
		{"garbage", 2, raftBatchName, []byte{0xff, 0xff, 0xff}, true},
		{"a client's Raft batch", 0, raftBatchName, batch(2), true},
		{"a client's status request", 0, "ketch.v1.StatusRequest", nil, false},
		{"a node's status request", 2, "ketch.v1.StatusRequest", nil, false},
	} {
		if got := identityRefusal(tc.node, tc.typ, tc.data); (got != "") != tc.refused {
			t.Errorf("%s: identityRefusal = %q, want refused %v", tc.name, got, tc.refused)
		}
	}
	// The last from wins, as proto.Unmarshal reads it.
	twice := append(batch(2), batch(3)...)
	var b pb.RaftBatch
	if err := proto.Unmarshal(twice, &b); err != nil {
		t.Fatal(err)
	}
	if from, ok := batchFrom(twice); !ok || from != b.From {
		t.Fatalf("batchFrom = %d, %v; proto.Unmarshal says %d", from, ok, b.From)
	}
}
