package sim

import (
	"bytes"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// faultRates are the network and crash faults in force. The chaos phase
// uses chaosRates(intensity); the heal switches to calmRates.
type faultRates struct {
	intensity float64
	maxDelay  time.Duration // every message takes [0, maxDelay)
	// Requests are RequestVote and AppendEntries, replies their responses.
	dropRequest, dropReply float64
	duplicate              float64 // a second copy, with its own delay
	lateRequest, lateReply float64 // delivered 200-2200 ms late: long reordering
	// awkwardCrash is the chance that a node crashes right after a step
	// that left writes unsynced, such as a leader that has just sent new
	// entries or a follower that has just accepted them (see
	// maybeAwkwardCrash).
	awkwardCrash float64
	// The nemesis acts every nemesisMin..nemesisMax.
	nemesisMin, nemesisMax time.Duration
}

// chaosRates scales the faults with x in [0, 1]. x = 0 is the simulator's
// specification; x = 1 is about twice as harsh.
func chaosRates(x float64) faultRates {
	lerp := func(lo, hi float64) float64 { return lo + (hi-lo)*x }
	return faultRates{
		intensity:    x,
		maxDelay:     27 * time.Millisecond,
		dropRequest:  lerp(0.10, 0.25),
		dropReply:    lerp(0.10, 0.25),
		duplicate:    lerp(0.02, 0.06),
		lateRequest:  lerp(0.01, 0.04),
		lateReply:    lerp(0.05, 0.12),
		awkwardCrash: lerp(0.0005, 0.004),
		nemesisMin:   time.Duration(lerp(300, 100)) * time.Millisecond,
		nemesisMax:   time.Duration(lerp(1500, 500)) * time.Millisecond,
	}
}

// calmRates hold after the heal: small delays and nothing else.
func calmRates(x float64) faultRates {
	return faultRates{intensity: x, maxDelay: 5 * time.Millisecond}
}

// onSend checks an outbound message and hands it to the network.
func (s *Sim) onSend(n *simNode, m *pb.RaftMessage) {
	to := m.GetTo()
	switch {
	case m == nil || m.Body == nil:
		s.fail("fsm-contract", "n%d sent an empty message", n.id)
	case m.GetFrom() != n.id || m.GetClusterId() != clusterID:
		s.fail("fsm-contract", "n%d sent a message stamped from n%d of cluster %q", n.id, m.GetFrom(), m.GetClusterId())
	case to == 0 || to > uint64(len(s.nodes)) || to == n.id:
		s.fail("fsm-contract", "n%d sent a message to n%d, which is not a peer", n.id, to)
	case (n.peerMask|n.heardMask)&idBit(to) == 0 && n.stepPeers&idBit(to) != 0:
		// A peer until this step's ConfigChanged: the leader's last
		// message to a server whose removal just committed comes after
		// the ConfigChanged that drops it. The driver keeps the old peers
		// until the step's messages are out (ketch's fsm actor does).
		s.stats.LastWords++
	case (n.peerMask|n.heardMask)&idBit(to) == 0 && !s.opts.SafetyOnly:
		// The driver knows the address of the peers of the last
		// ConfigChanged and of the servers that wrote to it, no others.
		s.fail("fsm-contract", "n%d sent %s to n%d, which is not among the peers of its configuration (%s) and never wrote to it",
			n.id, msgName(m), to, maskString(n.peerMask))
	}
	if s.violation != nil {
		return
	}
	if !s.opts.SafetyOnly {
		s.checkDurableBeforeSend(n, m)
		if s.violation != nil {
			return
		}
	}
	if s.stats.LeaseReads {
		s.leaseSent(n, m)
	}
	s.transmit(n.idx, int(to-1), m)
}

// Message fates, for the trace.
const (
	fateSent uint8 = 1 << iota // on its way
	fateDup                    // and a duplicate with it
	fateLate                   // delayed 200-2200 ms
	fateLost                   // dropped by the network
	fateCut                    // dropped by a partition
	fateDown                   // reached a crashed node and was dropped
)

// transmit puts a message on the network from node index `from` to `to`.
// Partitions apply at send time: a message already in flight when a
// partition starts still arrives.
func (s *Sim) transmit(from, to int, m *pb.RaftMessage) {
	s.stats.Messages++
	f := &s.faults
	reply := isReply(m)
	drop := f.dropRequest
	if reply {
		drop = f.dropReply
	}
	var fate uint8
	switch {
	case s.cut[from][to]:
		fate = fateCut
	case s.rng.Float64() < drop:
		fate = fateLost
	default:
		fate = fateSent
		copies := 1
		if s.rng.Float64() < f.duplicate {
			copies, fate = 2, fate|fateDup
		}
		for range copies {
			d, late := s.delay(reply)
			if late {
				fate |= fateLate
			}
			// Each copy is the receiver's own, as after a real wire.
			s.push(event{at: s.after(d), kind: evDeliver, node: to, msg: cloneMsg(m)})
		}
	}
	if fate&(fateCut|fateLost) != 0 {
		s.stats.Dropped++
	}
	s.traceMsg(recSend, uint64(from+1), uint64(to+1), fate, m)
}

// delay draws how long a message takes, and whether it is one of the
// rare very late ones that reorder the stream by seconds.
func (s *Sim) delay(reply bool) (time.Duration, bool) {
	late := s.faults.lateRequest
	if reply {
		late = s.faults.lateReply
	}
	if late > 0 && s.rng.Float64() < late {
		return s.between(200*time.Millisecond, 2200*time.Millisecond), true
	}
	return randDuration(s.rng, s.faults.maxDelay), false
}

// deliver hands a message to its receiver, unless the receiver is down.
func (s *Sim) deliver(ev *event) {
	n := s.nodes[ev.node]
	if !n.up {
		s.stats.Dropped++
		s.traceMsg(recDeliver, n.id, ev.msg.GetFrom(), fateDown, ev.msg)
		return
	}
	s.step(n, fsm.Message{Msg: ev.msg})
}

func isReply(m *pb.RaftMessage) bool {
	switch m.Body.(type) {
	case *pb.RaftMessage_RequestVoteResponse, *pb.RaftMessage_AppendEntriesResponse, *pb.RaftMessage_ReadIndexResponse:
		return true
	}
	return false
}

// cloneMsg deep-copies a message, entry payloads included, so that no two
// nodes ever share a message or an entry, as over a real network. It is
// written out because proto.Clone, which works by reflection, took a fifth
// of the simulator's time; TestCloneMsgCopiesEveryField fails when a field
// is added to the protocol and not here. Unknown bodies fall back to
// proto.Clone.
func cloneMsg(m *pb.RaftMessage) *pb.RaftMessage {
	c := &pb.RaftMessage{ClusterId: m.GetClusterId(), From: m.GetFrom(), To: m.GetTo(), Term: m.GetTerm()}
	switch b := m.Body.(type) {
	case *pb.RaftMessage_RequestVote:
		rv := b.RequestVote
		c.Body = &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{
			LastLogIndex: rv.GetLastLogIndex(),
			LastLogTerm:  rv.GetLastLogTerm(),
			PreVote:      rv.GetPreVote(),
			Transfer:     rv.GetTransfer(),
		}}
	case *pb.RaftMessage_RequestVoteResponse:
		c.Body = &pb.RaftMessage_RequestVoteResponse{RequestVoteResponse: &pb.RequestVoteResponse{
			Granted: b.RequestVoteResponse.GetGranted(),
			PreVote: b.RequestVoteResponse.GetPreVote(),
		}}
	case *pb.RaftMessage_AppendEntries:
		ae := b.AppendEntries
		var ents []*pb.Entry
		if len(ae.GetEntries()) > 0 {
			ents = make([]*pb.Entry, len(ae.GetEntries()))
			for i, e := range ae.GetEntries() {
				ents[i] = &pb.Entry{Index: e.GetIndex(), Term: e.GetTerm(), Type: e.GetType(), Data: bytes.Clone(e.GetData())}
			}
		}
		c.Body = &pb.RaftMessage_AppendEntries{AppendEntries: &pb.AppendEntries{
			PrevLogIndex: ae.GetPrevLogIndex(),
			PrevLogTerm:  ae.GetPrevLogTerm(),
			Entries:      ents,
			LeaderCommit: ae.GetLeaderCommit(),
			ReadRound:    ae.GetReadRound(),
		}}
	case *pb.RaftMessage_AppendEntriesResponse:
		r := b.AppendEntriesResponse
		c.Body = &pb.RaftMessage_AppendEntriesResponse{AppendEntriesResponse: &pb.AppendEntriesResponse{
			Success:       r.GetSuccess(),
			MatchIndex:    r.GetMatchIndex(),
			RejectIndex:   r.GetRejectIndex(),
			ConflictTerm:  r.GetConflictTerm(),
			ConflictIndex: r.GetConflictIndex(),
			LastLogIndex:  r.GetLastLogIndex(),
			ReadRound:     r.GetReadRound(),
		}}
	case *pb.RaftMessage_TimeoutNow:
		c.Body = &pb.RaftMessage_TimeoutNow{TimeoutNow: &pb.TimeoutNow{}}
	case *pb.RaftMessage_ReadIndexRequest:
		c.Body = &pb.RaftMessage_ReadIndexRequest{ReadIndexRequest: &pb.ReadIndexRequest{
			Context: b.ReadIndexRequest.GetContext(),
		}}
	case *pb.RaftMessage_ReadIndexResponse:
		r := b.ReadIndexResponse
		c.Body = &pb.RaftMessage_ReadIndexResponse{ReadIndexResponse: &pb.ReadIndexResponse{
			Context:  r.GetContext(),
			Index:    r.GetIndex(),
			Rejected: r.GetRejected(),
		}}
	default:
		return proto.Clone(m).(*pb.RaftMessage)
	}
	return c
}
