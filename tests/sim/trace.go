package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
)

// The trace is always on, so it must be cheap: each event and action is a
// fixed-size record written into a ring buffer and folded into a running
// digest. Records become text only when a failure is reported.

// recKind says what a trace record describes.
type recKind uint8

const (
	recSend        recKind = iota + 1 // node sends to peer (flag: fate)
	recDeliver                        // a message reaches node from peer
	recTimeout                        // a timer fires on node
	recPersisted                      // node's disk reports an fsync
	recPropose                        // client proposals reach node
	recProposeLost                    // client proposals reach a crashed node
	recAppliedIn                      // node's state machine reports its applied index
	recStart                          // node starts from its disk
	recPersist                        // node asks its disk to persist
	recApply                          // node applies entries
	recReply                          // node answers a proposal with an error
	recStatus                         // node's role, term, leader, commit or vote changed
	recCrash                          // node crashes
	recNemesis                        // the nemesis acts
	recHeal                           // the chaos phase ends
	recReadReady                      // node answers a read
	recReadLost                       // a client read reaches a crashed node
	recReadIn                         // a client read reaches node
	recTransfer                       // node is asked to transfer leadership
	recHostile                        // a forged message is about to reach node (a: its hostileKind)
	recRejected                       // node rejected a message claimed from peer (a: the kind)
	recChange                         // node is asked for membership change a (b: kind, c/d: first id added/removed, e: expected index)
	recChanged                        // node answers change a (b: code, c: configuration index, d: leader hint)
	recConfig                         // node uses the configuration of index a (b: voters, c: learners, d: outgoing, e: peers; id sets)
	recRemoved                        // node reports it was removed at index a
	recSpawn                          // node is started to join the cluster
	recStop                           // node is shut down for good
	recCompact                        // node compacts its log through a (b: term, c: configuration index, flag: reset)
)

// record is one trace line, unformatted. The meaning of a..f depends on
// kind; see format.
type record struct {
	at         time.Duration
	kind       recKind
	flag       uint8
	node, peer uint64
	a, b, c    uint64
	d, e, f    uint64
}

// tracer keeps the last records in a ring and digests all of them.
type tracer struct {
	ring   []record
	next   int
	full   bool
	digest uint64
}

func (t *tracer) init(size int) { t.ring = make([]record, size) }

func (t *tracer) add(r record) {
	h := t.digest
	for _, x := range [...]uint64{uint64(r.at), uint64(r.kind) | uint64(r.flag)<<8 | r.node<<16 | r.peer<<40, r.a, r.b, r.c, r.d, r.e, r.f} {
		h = mix64(h ^ x)
	}
	t.digest = h
	t.ring[t.next] = r
	t.next++
	if t.next == len(t.ring) {
		t.next, t.full = 0, true
	}
}

// lines formats the records in the ring, oldest first.
func (t *tracer) lines() []string {
	var rs []record
	if t.full {
		rs = append(rs, t.ring[t.next:]...)
	}
	rs = append(rs, t.ring[:t.next]...)
	out := make([]string, len(rs))
	for i := range rs {
		out[i] = rs[i].format()
	}
	return out
}

// Message kinds in records.
const (
	msgRV uint64 = iota + 1
	msgRVR
	msgAE
	msgAER
	msgTN
	msgIS  // InstallSnapshot
	msgISR // InstallSnapshotResponse
	msgRI  // ReadIndexRequest
	msgRIR // ReadIndexResponse
)

// Flags of a message record, in bits 16 and up of a (beside the kind and
// the entry count).
const (
	msgPreVote  uint64 = 1 << 40
	msgTransfer uint64 = 1 << 41
)

// traceMsg records a message sent or delivered. a holds the message kind
// and the number of entries, b the term, c..f the body's fields.
func (s *Sim) traceMsg(kind recKind, node, peer uint64, fate uint8, m *pb.RaftMessage) {
	r := record{at: s.now, kind: kind, flag: fate, node: node, peer: peer, b: m.GetTerm()}
	switch {
	case m.GetRequestVote() != nil:
		rv := m.GetRequestVote()
		r.a, r.c, r.d = msgRV, rv.GetLastLogIndex(), rv.GetLastLogTerm()
		if rv.GetPreVote() {
			r.a |= msgPreVote
		}
		if rv.GetTransfer() {
			r.a |= msgTransfer
		}
	case m.GetRequestVoteResponse() != nil:
		r.a = msgRVR
		if m.GetRequestVoteResponse().GetGranted() {
			r.c = 1
		}
		if m.GetRequestVoteResponse().GetPreVote() {
			r.a |= msgPreVote
		}
	case m.GetTimeoutNow() != nil:
		r.a = msgTN
	case m.GetInstallSnapshot() != nil:
		is := m.GetInstallSnapshot()
		r.a, r.c, r.d, r.e, r.f = msgIS, is.GetLastIncludedIndex(), is.GetOffset(), uint64(len(is.GetData())), is.GetConfigurationIndex()
		if is.GetDone() {
			r.a |= 1 << 8
		}
	case m.GetInstallSnapshotResponse() != nil:
		ir := m.GetInstallSnapshotResponse()
		r.a, r.c, r.d, r.e = msgISR, ir.GetLastIncludedIndex(), ir.GetNextOffset(), ir.GetMatchIndex()
		if ir.GetRefused() {
			r.a |= 1 << 8
		}
		if ir.GetInstalled() {
			r.a |= 1 << 9
		}
	case m.GetReadIndexRequest() != nil:
		r.a, r.c = msgRI, m.GetReadIndexRequest().GetContext()
	case m.GetReadIndexResponse() != nil:
		ri := m.GetReadIndexResponse()
		r.a, r.c, r.d = msgRIR, ri.GetContext(), ri.GetIndex()
		if ri.GetRejected() {
			r.a |= 1 << 8
		}
	case m.GetAppendEntries() != nil:
		ae := m.GetAppendEntries()
		r.a = msgAE | uint64(len(ae.GetEntries()))<<8
		r.a |= ae.GetReadRound() << 44
		r.c, r.d, r.e = ae.GetPrevLogIndex(), ae.GetPrevLogTerm(), ae.GetLeaderCommit()
		if ents := ae.GetEntries(); len(ents) > 0 {
			r.f = ents[len(ents)-1].GetTerm()
		}
	case m.GetAppendEntriesResponse() != nil:
		ar := m.GetAppendEntriesResponse()
		r.a = msgAER | ar.GetReadRound()<<44
		if ar.GetSuccess() {
			r.c, r.d = 1, ar.GetMatchIndex()
		} else {
			r.d, r.e, r.f = ar.GetRejectIndex(), ar.GetConflictTerm(), ar.GetConflictIndex()
		}
	}
	s.trace.add(r)
}

// traceEvent records the event a node is about to step.
func (s *Sim) traceEvent(n *simNode, ev fsm.Event) {
	switch e := ev.(type) {
	case fsm.Message:
		s.traceMsg(recDeliver, n.id, e.Msg.GetFrom(), 0, e.Msg)
	case fsm.Timeout:
		s.trace.add(record{at: s.now, kind: recTimeout, node: n.id, a: uint64(e.Timer), b: e.Gen})
	case fsm.Persisted:
		s.trace.add(record{at: s.now, kind: recPersisted, node: n.id, a: e.Seq})
	case fsm.Propose:
		r := record{at: s.now, kind: recPropose, node: n.id, b: uint64(len(e.Proposals))}
		if len(e.Proposals) > 0 {
			r.a = e.Proposals[0].ID
		}
		s.trace.add(r)
	case fsm.Applied:
		s.trace.add(record{at: s.now, kind: recAppliedIn, node: n.id, a: e.Index})
	case fsm.ReadIndex:
		for _, id := range e.IDs {
			s.trace.add(record{at: s.now, kind: recReadIn, node: n.id, a: id})
		}
	case fsm.TransferLeadership:
		s.trace.add(record{at: s.now, kind: recTransfer, node: n.id, a: e.To})
	case fsm.ChangeMembers:
		r := record{at: s.now, kind: recChange, node: n.id, a: e.ID, e: e.ExpectIndex}
		if e.ID != 0 && e.ID <= uint64(len(s.changes)) {
			r.b = uint64(s.changes[e.ID-1].kind)
		}
		switch {
		case len(e.Add) > 0:
			r.c = e.Add[0].GetId()
		case len(e.Promote) > 0:
			r.c = e.Promote[0]
		}
		if len(e.Remove) > 0 {
			r.d = e.Remove[0]
		}
		s.trace.add(r)
	}
	// Start is recorded by start, with what the disk held.
}

func (s *Sim) tracePersist(n *simNode, p fsm.Persist) {
	r := record{at: s.now, kind: recPersist, node: n.id, a: p.Seq}
	if p.HardState != nil {
		r.flag, r.b, r.c = 1, p.HardState.GetTerm(), p.HardState.GetVote()
	}
	if len(p.Entries) > 0 {
		r.d, r.e, r.f = p.Entries[0].GetIndex(), uint64(len(p.Entries)), p.Entries[len(p.Entries)-1].GetTerm()
	}
	s.trace.add(r)
}

// format renders a record as one line of text.
func (r *record) format() string {
	t := fmtTime(r.at)
	switch r.kind {
	case recSend:
		return fmt.Sprintf("%s n%d -> n%d %s%s", t, r.node, r.peer, r.msgString(), fateString(r.flag))
	case recDeliver:
		if r.flag == fateDown {
			return fmt.Sprintf("%s n%d <- n%d %s [dropped: n%d is down]", t, r.node, r.peer, r.msgString(), r.node)
		}
		return fmt.Sprintf("%s n%d <- n%d %s", t, r.node, r.peer, r.msgString())
	case recTimeout:
		return fmt.Sprintf("%s n%d timeout %s gen %d", t, r.node, fsm.Timer(r.a), r.b)
	case recPersisted:
		return fmt.Sprintf("%s n%d persisted through seq %d", t, r.node, r.a)
	case recPropose:
		return fmt.Sprintf("%s n%d <- client propose %s", t, r.node, idRange(r.a, r.b))
	case recProposeLost:
		return fmt.Sprintf("%s n%d <- client propose %s [lost: n%d is down]", t, r.node, idRange(r.a, r.b), r.node)
	case recAppliedIn:
		return fmt.Sprintf("%s n%d state machine applied through %d", t, r.node, r.a)
	case recStart:
		return fmt.Sprintf("%s n%d START from disk: log ends at %d, term %d, vote %s", t, r.node, r.a, r.b, nodeName(r.c))
	case recPersist:
		var b strings.Builder
		fmt.Fprintf(&b, "%s n%d persist seq %d:", t, r.node, r.a)
		if r.flag == 1 {
			fmt.Fprintf(&b, " hardstate term %d vote %d", r.b, r.c)
		}
		if r.e > 0 {
			fmt.Fprintf(&b, " entries %d..%d (last term %d)", r.d, r.d+r.e-1, r.f)
		}
		return b.String()
	case recApply:
		return fmt.Sprintf("%s n%d apply %d..%d (%d acks)", t, r.node, r.a, r.b, r.c)
	case recReadReady:
		if r.c == 0 {
			return fmt.Sprintf("%s n%d read %d ready at index %d", t, r.node, r.a, r.b)
		}
		err := [...]string{1: "not leader", 2: "leadership lost", 3: "unknown error", 4: "transferring", 5: "read not confirmed"}[min(r.c, 5)]
		return fmt.Sprintf("%s n%d read %d failed: %s (leader hint %s)", t, r.node, r.a, err, nodeName(r.d))
	case recReadIn:
		return fmt.Sprintf("%s n%d <- client read %d", t, r.node, r.a)
	case recTransfer:
		return fmt.Sprintf("%s n%d <- transfer leadership to %s", t, r.node, nodeName(r.a))
	case recReadLost:
		return fmt.Sprintf("%s n%d <- client read %d [lost: n%d is down]", t, r.node, r.a, r.node)
	case recReply:
		err := [...]string{1: "not leader", 2: "leadership lost", 3: "unknown error", 4: "transferring", 5: "read not confirmed", 6: "busy"}[min(r.b, 6)]
		return fmt.Sprintf("%s n%d reply proposal %d: %s (leader hint %s)", t, r.node, r.a, err, nodeName(r.c))
	case recStatus:
		return fmt.Sprintf("%s n%d is %s: term %d vote %s leader %s last %d commit %d", t, r.node, fsm.Role(r.a), r.b, nodeName(r.f), nodeName(r.c), r.d, r.e)
	case recCrash:
		how := map[uint8]string{crashByNemesis: "nemesis", crashAwkward: "awkward moment"}[r.flag]
		return fmt.Sprintf("%s n%d CRASH (%s): %d unsynced writes kept, %d lost; down for %v", t, r.node, how, r.a, r.b, time.Duration(r.c))
	case recNemesis:
		target := ""
		if r.node != 0 {
			target = fmt.Sprintf(" n%d", r.node)
		}
		abrupt := ""
		if r.flag != 0 {
			abrupt = " (abrupt: messages in flight across it lost)"
		}
		return fmt.Sprintf("%s NEMESIS %s%s; cut links: %s%s", t, nemesisOp(r.a), target, cutString([4]uint64{r.b, r.c, r.d, r.e}, int(r.peer)), abrupt)
	case recHeal:
		return fmt.Sprintf("%s HEAL: all nodes up, no partitions, no drops", t)
	case recHostile:
		return fmt.Sprintf("%s HOSTILE %s message for n%d", t, hostileKind(r.a), r.node)
	case recRejected:
		kind := [...]string{"?", "not for us", "malformed", "term out of range", "impossible"}[min(r.a, 4)]
		return fmt.Sprintf("%s n%d rejected a message from %s: %s", t, r.node, nodeName(r.peer), kind)
	case recChange:
		return fmt.Sprintf("%s n%d <- change #%d %v (first added/promoted %s, first removed %s, expect index %d)", t, r.node, r.a, changeKind(r.b), nodeName(r.c), nodeName(r.d), r.e)
	case recChanged:
		return fmt.Sprintf("%s n%d answers change #%d: %s (configuration index %d, leader hint %s)", t, r.node, r.a, changeCodeNames[min(r.b, changeOther)], r.c, nodeName(r.d))
	case recConfig:
		s := fmt.Sprintf("%s n%d uses configuration %d: voters %s", t, r.node, r.a, maskString(r.b))
		if r.c != 0 {
			s += " learners " + maskString(r.c)
		}
		if r.d != 0 {
			s += " outgoing " + maskString(r.d)
		}
		return s + "; peers " + maskString(r.e)
	case recRemoved:
		return fmt.Sprintf("%s n%d REMOVED by the configuration at %d", t, r.node, r.a)
	case recSpawn:
		return fmt.Sprintf("%s n%d SPAWNED to join the cluster", t, r.node)
	case recStop:
		return fmt.Sprintf("%s n%d STOPPED for good", t, r.node)
	case recCompact:
		how := "compacts its log"
		if r.flag != 0 {
			how = "resets its log to a snapshot"
		}
		return fmt.Sprintf("%s n%d %s through %d (term %d), configuration there: index %d", t, r.node, how, r.a, r.b, r.c)
	}
	return fmt.Sprintf("%s record kind %d", t, r.kind)
}

func (r *record) msgString() string {
	pre := ""
	if r.a&msgPreVote != 0 {
		pre = "Pre"
	}
	round := ""
	if rr := r.a >> 44; rr != 0 {
		round = fmt.Sprintf(" read-round %d", rr)
	}
	switch r.a & 0xff {
	case msgRV:
		s := fmt.Sprintf("%sRequestVote t%d last %d/t%d", pre, r.b, r.c, r.d)
		if r.a&msgTransfer != 0 {
			s += " (transfer)"
		}
		return s
	case msgRVR:
		if r.c == 1 {
			return fmt.Sprintf("%sVoteGranted t%d", pre, r.b)
		}
		return fmt.Sprintf("%sVoteDenied t%d", pre, r.b)
	case msgTN:
		return fmt.Sprintf("TimeoutNow t%d", r.b)
	case msgAE:
		n := (r.a >> 8) & 0xffffffff
		s := fmt.Sprintf("AppendEntries t%d prev %d/t%d commit %d", r.b, r.c, r.d, r.e)
		if n > 0 {
			s += fmt.Sprintf(" entries %d..%d (last term %d)", r.c+1, r.c+n, r.f)
		}
		return s + round
	case msgAER:
		if r.c == 1 {
			return fmt.Sprintf("AppendOK t%d match %d%s", r.b, r.d, round)
		}
		return fmt.Sprintf("AppendReject t%d at %d conflict t%d from %d%s", r.b, r.d, r.e, r.f, round)
	case msgIS:
		s := fmt.Sprintf("InstallSnapshot t%d through %d: %d bytes at %d", r.b, r.c, r.e, r.d)
		if r.a&(1<<8) != 0 {
			s += fmt.Sprintf(", done, configuration index %d", r.f)
		}
		return s
	case msgISR:
		s := fmt.Sprintf("SnapshotAnswer t%d through %d: next offset %d match %d", r.b, r.c, r.d, r.e)
		if r.a&(1<<8) != 0 {
			s += ", refused"
		}
		if r.a&(1<<9) != 0 {
			s += ", installed"
		}
		return s
	case msgRI:
		return fmt.Sprintf("ReadIndexRequest t%d context %d", r.b, r.c)
	case msgRIR:
		if r.a&(1<<8) != 0 {
			return fmt.Sprintf("ReadIndexRefused t%d context %d", r.b, r.c)
		}
		return fmt.Sprintf("ReadIndexResponse t%d context %d index %d", r.b, r.c, r.d)
	}
	return "message?"
}

func fateString(f uint8) string {
	var parts []string
	for _, x := range []struct {
		bit  uint8
		name string
	}{{fateDup, "duplicated"}, {fateLate, "late"}, {fateLost, "lost"}, {fateCut, "cut by partition"}} {
		if f&x.bit != 0 {
			parts = append(parts, x.name)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " [" + strings.Join(parts, ", ") + "]"
}

func idRange(first, count uint64) string {
	if count <= 1 {
		return fmt.Sprintf("#%d", first)
	}
	return fmt.Sprintf("#%d..#%d", first, first+count-1)
}

// cutString renders the cut links of an n-node cluster, encoded as bits
// a*n+b (see cutMask).
func cutString(mask [4]uint64, n int) string {
	if mask == [4]uint64{} {
		return "none"
	}
	bit := func(k int) bool { return k < 256 && mask[k/64]&(1<<(k%64)) != 0 }
	var parts []string
	for a := range n {
		for b := range n {
			if !bit(a*n + b) {
				continue
			}
			if bit(b*n + a) {
				if a < b {
					parts = append(parts, fmt.Sprintf("n%d<->n%d", a+1, b+1))
				}
				continue
			}
			parts = append(parts, fmt.Sprintf("n%d->n%d", a+1, b+1))
		}
	}
	return strings.Join(parts, " ")
}

// msgName names a message's kind, for reports.
func msgName(m *pb.RaftMessage) string {
	switch m.Body.(type) {
	case *pb.RaftMessage_RequestVote:
		return "RequestVote"
	case *pb.RaftMessage_RequestVoteResponse:
		return "RequestVoteResponse"
	case *pb.RaftMessage_AppendEntries:
		return "AppendEntries"
	case *pb.RaftMessage_AppendEntriesResponse:
		return "AppendEntriesResponse"
	case *pb.RaftMessage_TimeoutNow:
		return "TimeoutNow"
	case *pb.RaftMessage_ReadIndexRequest:
		return "ReadIndexRequest"
	case *pb.RaftMessage_ReadIndexResponse:
		return "ReadIndexResponse"
	}
	return fmt.Sprintf("%T", m.Body)
}

// nodeName names node id, or "none" for 0.
func nodeName(id uint64) string {
	if id == 0 {
		return "none"
	}
	return fmt.Sprintf("n%d", id)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
