package fsm

import (
	"math/rand/v2"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
)

func TestSmokeThreeNodes(t *testing.T) {
	nodes := map[uint64]*Node{}
	for id := uint64(1); id <= 3; id++ {
		n, err := New(Config{ID: id, ClusterID: "c", Members: []uint64{1, 2, 3}, Rand: rand.New(rand.NewPCG(id, 1))}, Restore{})
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = n
	}
	type ev struct {
		to uint64
		e  Event
	}
	var q []ev
	applied := map[uint64]int{}
	run := func(to uint64, acts []Action) {
		for _, a := range acts {
			switch a := a.(type) {
			case Persist:
				q = append(q, ev{to, Persisted{Seq: a.Seq}})
			case Send:
				q = append(q, ev{a.Msg.To, Message{Msg: a.Msg}})
			case Apply:
				applied[to] += len(a.Entries)
			}
		}
	}
	for id, n := range nodes {
		run(id, n.Step(Start{}))
	}
	run(1, nodes[1].Step(Timeout{Timer: ElectionTimer, Gen: nodes[1].timerGen[ElectionTimer]}))
	for len(q) > 0 {
		e := q[0]
		q = q[1:]
		run(e.to, nodes[e.to].Step(e.e))
	}
	if st := nodes[1].Status(); st.Role != Leader || st.Commit != 1 {
		t.Fatalf("node 1: %+v", st)
	}
	run(1, nodes[1].Step(Propose{Proposals: []Proposal{{ID: 7, Data: []byte("x")}}}))
	for len(q) > 0 {
		e := q[0]
		q = q[1:]
		run(e.to, nodes[e.to].Step(e.e))
	}
	run(1, nodes[1].Step(Timeout{Timer: HeartbeatTimer, Gen: nodes[1].timerGen[HeartbeatTimer]}))
	for len(q) > 0 {
		e := q[0]
		q = q[1:]
		run(e.to, nodes[e.to].Step(e.e))
	}
	for id, n := range nodes {
		if st := n.Status(); st.Commit != 2 || applied[id] != 2 {
			t.Errorf("node %d: %+v applied %d", id, st, applied[id])
		}
	}
	_ = pb.EntryType_ENTRY_TYPE_NOOP
}
