package fsm_test

// Micro-benchmarks of the pure Raft core on the write path, through the
// exported API only (Step in, actions out), as the fsm actor drives it:
//
//   - BenchmarkLeaderPropose: a leader of 3 nodes, every follower in
//     pipelined replication, steps Propose of 1 or 64 entries, the store's
//     Persisted, and both followers' acknowledgements, which commit the
//     entries and emit their Apply. One op is that whole round.
//   - BenchmarkFollowerAppend: a follower steps an AppendEntries of 1 or 64
//     new entries and the Persisted that releases its acknowledgement. One
//     op includes building the incoming message and its entries (what the
//     wire decoder would allocate).
//
// The log lives in memory and is never compacted (no snapshots yet); so
// that memory stays bounded whatever b.N, each benchmark starts a fresh node
// (outside the timer) every resetEvery rounds. Run with
//
//	go test ./fsm -run '^$' -bench . -count 6 | benchstat -

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
)

// benchData is a proposal's payload: a 16-byte key and a 128-byte value
// with their ClientCommand framing, about what the fsm actor proposes.
var benchData = make([]byte, 160)

// resetEvery bounds the rounds one node runs before it is replaced.
const resetEvery = 1024

func benchConfig(id uint64) fsm.Config {
	return fsm.Config{
		ID: id, ClusterID: "bench", Members: []uint64{1, 2, 3},
		ElectionTimeout: 300 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond,
		Rand: rand.New(rand.NewPCG(id, 1)),
	}
}

func peerMsg(from, to, term uint64, body any) *pb.RaftMessage {
	m := &pb.RaftMessage{ClusterId: "bench", From: from, To: to, Term: term}
	switch b := body.(type) {
	case *pb.RequestVoteResponse:
		m.Body = &pb.RaftMessage_RequestVoteResponse{RequestVoteResponse: b}
	case *pb.AppendEntries:
		m.Body = &pb.RaftMessage_AppendEntries{AppendEntries: b}
	case *pb.AppendEntriesResponse:
		m.Body = &pb.RaftMessage_AppendEntriesResponse{AppendEntriesResponse: b}
	default:
		panic(fmt.Sprintf("peerMsg: %T", body))
	}
	return m
}

// lastPersist returns the seq of the last Persist in acts, 0 if none.
func lastPersist(acts []fsm.Action) uint64 {
	seq := uint64(0)
	for _, a := range acts {
		if p, ok := a.(fsm.Persist); ok {
			seq = p.Seq
		}
	}
	return seq
}

func timerGen(acts []fsm.Action, t fsm.Timer) uint64 {
	gen := uint64(0)
	for _, a := range acts {
		if s, ok := a.(fsm.SetTimer); ok && s.Timer == t {
			gen = s.Gen
		}
	}
	return gen
}

// benchLeader returns node 1 of {1, 2, 3} as leader with its no-op
// committed and both followers in pipelined replication.
func benchLeader(b *testing.B) *fsm.Node {
	b.Helper()
	n, err := fsm.New(benchConfig(1), fsm.Restore{})
	if err != nil {
		b.Fatal(err)
	}
	// Run the election as the actor would, whatever it takes (a pre-vote,
	// then the vote): report every Persist durable and grant every
	// RequestVote (pre-vote or not) until the node leads.
	acts := n.Step(fsm.Start{})
	queue := n.Step(fsm.Timeout{Timer: fsm.ElectionTimer, Gen: timerGen(acts, fsm.ElectionTimer)})
	for len(queue) > 0 {
		a := queue[0]
		queue = queue[1:]
		switch x := a.(type) {
		case fsm.Persist:
			queue = append(queue, n.Step(fsm.Persisted{Seq: x.Seq})...)
		case fsm.Send:
			if rv := x.Msg.GetRequestVote(); rv != nil && n.Status().Role != fsm.Leader {
				resp := &pb.RequestVoteResponse{Granted: true, PreVote: rv.PreVote}
				queue = append(queue, n.Step(fsm.Message{Msg: peerMsg(x.Msg.To, 1, x.Msg.Term, resp)})...)
			}
		}
	}
	if st := n.Status(); st.Role != fsm.Leader {
		b.Fatalf("node is %v after winning the votes, want leader", st.Role)
	}
	term := n.Status().Term
	last := n.Status().LastIndex
	for _, p := range []uint64{2, 3} {
		n.Step(fsm.Message{Msg: peerMsg(p, 1, term, &pb.AppendEntriesResponse{Success: true, MatchIndex: last, LastLogIndex: last})})
	}
	if st := n.Status(); st.Commit != last {
		b.Fatalf("leader commit %d, want its no-op %d committed", st.Commit, last)
	}
	return n
}

func BenchmarkLeaderPropose(b *testing.B) {
	for _, k := range []int{1, 64} {
		b.Run(fmt.Sprintf("entries=%d", k), func(b *testing.B) {
			n := benchLeader(b)
			term := n.Status().Term
			ps := make([]fsm.Proposal, k)
			id := uint64(0)
			acks := [2]*pb.AppendEntriesResponse{{Success: true}, {Success: true}}
			rounds := 0
			b.ReportAllocs()
			for b.Loop() {
				if rounds++; rounds%resetEvery == 0 {
					b.StopTimer()
					n = benchLeader(b)
					term = n.Status().Term
					b.StartTimer()
				}
				for i := range ps {
					id++
					ps[i] = fsm.Proposal{ID: id, Data: benchData}
				}
				acts := n.Step(fsm.Propose{Proposals: ps})
				n.Step(fsm.Persisted{Seq: lastPersist(acts)})
				last := n.Status().LastIndex
				for i, p := range []uint64{2, 3} {
					acks[i].MatchIndex, acks[i].LastLogIndex = last, last
					n.Step(fsm.Message{Msg: peerMsg(p, 1, term, acks[i])})
				}
			}
			if st := n.Status(); st.Commit != st.LastIndex || st.Role != fsm.Leader {
				b.Fatalf("after the run: %+v, want a leader with everything committed", st)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/entry")
		})
	}
}

func BenchmarkFollowerAppend(b *testing.B) {
	for _, k := range []int{1, 64} {
		b.Run(fmt.Sprintf("entries=%d", k), func(b *testing.B) {
			follower := func() *fsm.Node {
				n, err := fsm.New(benchConfig(2), fsm.Restore{})
				if err != nil {
					b.Fatal(err)
				}
				n.Step(fsm.Start{})
				return n
			}
			n := follower()
			const term = 1
			prev := uint64(0)
			rounds := 0
			b.ReportAllocs()
			for b.Loop() {
				if rounds++; rounds%resetEvery == 0 {
					b.StopTimer()
					n, prev = follower(), 0
					b.StartTimer()
				}
				ents := make([]*pb.Entry, k)
				for i := range ents {
					ents[i] = &pb.Entry{Index: prev + 1 + uint64(i), Term: term, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: benchData}
				}
				prevTerm := uint64(0)
				if prev > 0 {
					prevTerm = term
				}
				acts := n.Step(fsm.Message{Msg: peerMsg(1, 2, term, &pb.AppendEntries{
					PrevLogIndex: prev, PrevLogTerm: prevTerm, Entries: ents, LeaderCommit: prev,
				})})
				acts = n.Step(fsm.Persisted{Seq: lastPersist(acts)})
				if len(acts) == 0 {
					b.Fatal("no acknowledgement released by Persisted")
				}
				prev += uint64(k)
			}
			if st := n.Status(); st.LastIndex != prev || st.Durable != prev {
				b.Fatalf("after the run: %+v, want last index and durable %d", st, prev)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/entry")
		})
	}
}
