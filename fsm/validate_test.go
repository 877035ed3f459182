package fsm

import (
	"errors"
	"math"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Nothing a peer sends may reach an assert (validate.go). Every malformed,
// out-of-range or misaddressed message is dropped with exactly one Rejected
// action of the right kind, in every role, and leaves the node as it was.
func TestMalformedMessagesAreRejected(t *testing.T) {
	ae := func(term, prev, prevTerm uint64, ents ...*pb.Entry) *pb.RaftMessage {
		return raftMsg(2, 1, term, &pb.AppendEntries{PrevLogIndex: prev, PrevLogTerm: prevTerm, Entries: ents})
	}
	withData := func(e *pb.Entry, n int) *pb.Entry { e.Data = make([]byte, n); return e }
	env := func(m *pb.RaftMessage, f func(*pb.RaftMessage)) *pb.RaftMessage { f(m); return m }
	tests := []struct {
		name string
		msg  *pb.RaftMessage
		kind error
	}{
		{"nil message", nil, ErrMalformed},
		{"another cluster", env(voteMsg(2, 1, 3, 1, 1).Msg, func(m *pb.RaftMessage) { m.ClusterId = "other" }), ErrNotForUs},
		{"another receiver", voteMsg(2, 3, 3, 1, 1).Msg, ErrNotForUs},
		{"from itself", voteMsg(1, 1, 3, 1, 1).Msg, ErrNotForUs},
		{"from a removed server", voteMsg(9, 1, 3, 1, 1).Msg, ErrNotForUs},
		{"from node 0", voteMsg(0, 1, 3, 1, 1).Msg, ErrNotForUs},
		{"term 0", voteMsg(2, 1, 0, 0, 0).Msg, ErrTermOutOfRange},
		{"term 2^64-1", appendAck(2, 1, math.MaxUint64, 0).Msg, ErrTermOutOfRange},
		{"term MaxTerm", voteResp(2, 1, MaxTerm, false).Msg, ErrTermOutOfRange},
		{"term beyond the gap", appendAck(2, 1, 3+MaxTermGap+1, 0).Msg, ErrTermOutOfRange},
		{"no body", &pb.RaftMessage{ClusterId: testClusterID, From: 2, To: 1, Term: 3}, ErrMalformed},
		{"empty RequestVote body", &pb.RaftMessage{ClusterId: testClusterID, From: 2, To: 1, Term: 3, Body: &pb.RaftMessage_RequestVote{}}, ErrMalformed},
		{"empty AppendEntries body", &pb.RaftMessage{ClusterId: testClusterID, From: 2, To: 1, Term: 3, Body: &pb.RaftMessage_AppendEntries{}}, ErrMalformed},
		{"vote with last log term above its term", voteMsg(2, 1, 3, 5, 4).Msg, ErrMalformed},
		{"vote with a log term but no index", voteMsg(2, 1, 3, 0, 1).Msg, ErrMalformed},
		{"vote with an absurd last index", voteMsg(2, 1, 3, MaxIndex, 1).Msg, ErrMalformed},
		{"ack of an absurd index", appendAck(2, 1, 3, math.MaxUint64).Msg, ErrMalformed},
		{"rejection with a conflict term above its term", appendReject(2, 1, 3, 1, 4, 1).Msg, ErrMalformed},
		{"prev log term above the leader's", ae(3, 1, 4), ErrMalformed},
		{"prev log index 0 with a term", ae(3, 0, 1), ErrMalformed},
		{"an absurd prev log index", ae(3, math.MaxUint64, 1), ErrMalformed},
		{"entries wrapping past the largest index", ae(3, MaxIndex-1, 1, entries(MaxIndex, 1)...), ErrMalformed},
		{"a gap in the entries", ae(3, 0, 0, &pb.Entry{Index: 1, Term: 1}, &pb.Entry{Index: 3, Term: 1}), ErrMalformed},
		{"entries not after prev", ae(3, 1, 1, entries(1, 1)...), ErrMalformed},
		{"an entry of index 0", ae(3, 0, 0, &pb.Entry{Index: 0, Term: 1}), ErrMalformed},
		{"a nil entry", ae(3, 0, 0, nil), ErrMalformed},
		{"terms decreasing along the log", ae(3, 0, 0, entries(1, 2, 1)...), ErrMalformed},
		{"an entry of term 0", ae(3, 0, 0, entries(1, 0)...), ErrMalformed},
		{"an entry above the leader's term", ae(3, 0, 0, entries(1, 4)...), ErrMalformed},
		{"an entry of unknown type", ae(3, 0, 0, &pb.Entry{Index: 1, Term: 1, Type: 99}), ErrMalformed},
		{"an entry over the size limit", ae(3, 0, 0, withData(entries(1, 1)[0], pb.DefaultMaxEntryBytes+1)), ErrMalformed},
		{"a read index out of range", raftMsg(2, 1, 3, &pb.ReadIndexResponse{Index: MaxIndex}), ErrMalformed},
	}
	for _, role := range []Role{Follower, PreCandidate, Candidate, Leader} {
		for _, tt := range tests {
			t.Run(role.String()+"/"+tt.name, func(t *testing.T) {
				n := validationNode(t, role)
				before := n.Status()
				acts := n.Step(Message{Msg: tt.msg})
				r := actionsOf[Rejected](acts)
				if len(acts) != 1 || len(r) != 1 {
					t.Fatalf("got %v, want exactly one Rejected", describe(acts))
				}
				if !errors.Is(r[0].Err, tt.kind) {
					t.Errorf("rejected with %v, want kind %v", r[0].Err, tt.kind)
				}
				if after := n.Status(); after != before {
					t.Errorf("a rejected message changed the node: %+v -> %+v", before, after)
				}
			})
		}
	}
}

// The smallest bound a limit allows is accepted, one past it is not: the
// checks are at the limits, not somewhere near them.
func TestValidationAtTheLimits(t *testing.T) {
	cfg := testConfig(1)
	cfg.Limits = pb.Limits{MaxEntriesPerMessage: 3}
	for _, tt := range []struct {
		name string
		msg  *pb.RaftMessage
		ok   bool
	}{
		{"MaxEntriesPerMessage entries", raftMsg(2, 1, 3, &pb.AppendEntries{Entries: entries(1, 1, 1, 1)}), true},
		{"one entry more", raftMsg(2, 1, 3, &pb.AppendEntries{Entries: entries(1, 1, 1, 1, 1)}), false},
		{"an entry of MaxEntryBytes", raftMsg(2, 1, 3, &pb.AppendEntries{Entries: []*pb.Entry{{Index: 1, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: make([]byte, pb.DefaultMaxEntryBytes)}}}), true},
		{"the term gap exactly", appendAck(2, 1, 2+MaxTermGap, 0).Msg, true},
		{"a pre-vote refusal at term 0", raftMsg(2, 1, 0, &pb.RequestVoteResponse{PreVote: true}), true},
		{"a pre-vote grant at term 0", raftMsg(2, 1, 0, &pb.RequestVoteResponse{PreVote: true, Granted: true}), false},
		{"a vote refusal at term 0", raftMsg(2, 1, 0, &pb.RequestVoteResponse{}), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, cfg, restoreLog(2, 0))
			rejected := len(actionsOf[Rejected](n.Step(Message{Msg: tt.msg}))) > 0
			if rejected == tt.ok {
				t.Fatalf("rejected %v, want %v", rejected, !tt.ok)
			}
		})
	}
}

// Regression (issue 11): an AppendEntriesResponse claiming term 2^64-1 was
// adopted; the next pre-vote and election terms wrapped to 0, which every
// node refused, and the whole cluster stayed without a leader for good.
// Now the term is refused and the node still campaigns at term+1.
func TestAbsurdTermIsRefusedNotAdopted(t *testing.T) {
	n := extLeader(t, 1, 2, 3) // term 3
	acts := n.Step(appendAck(2, 1, math.MaxUint64, 0))
	if r := actionsOf[Rejected](acts); len(r) != 1 || !errors.Is(r[0].Err, ErrTermOutOfRange) {
		t.Fatalf("term 2^64-1: %v, want a Rejected for the term", describe(acts))
	}
	wantRoleTerm(t, n, Leader, 3)
	f := newNode(t, testConfig(1), restoreLog(2, 0))
	f.Step(voteResp(2, 1, math.MaxUint64, false))
	fireElection(t, f)
	wantRoleTerm(t, f, Candidate, 3)
}

// A term far ahead but within the gap is legitimate Raft (Raft §5.1): it is
// adopted, and the node can still campaign from there.
func TestTermWithinTheGapIsAdopted(t *testing.T) {
	n := newNode(t, testConfig(1), restoreLog(2, 0))
	stepSettled(t, n, voteResp(2, 1, 2+MaxTermGap, false))
	wantRoleTerm(t, n, Follower, 2+MaxTermGap)
	fireElection(t, n)
	wantRoleTerm(t, n, Candidate, 3+MaxTermGap)
}

// The arithmetic on terms cannot overflow: a node whose next term would
// reach MaxTerm (only forged messages can push it there, a gap at a time)
// does not campaign, and says why.
func TestNoTermReachesMaxTerm(t *testing.T) {
	if _, err := New(testConfig(1), restoreLog(MaxTerm, 0)); err == nil {
		t.Fatal("restored a term of MaxTerm")
	}
	for _, cfg := range []Config{testConfig(1), extConfig(1)} {
		n := newNode(t, cfg, restoreLog(MaxTerm-1, 0))
		acts := fireElection(t, n)
		if r := actionsOf[Rejected](acts); len(r) != 1 || !errors.Is(r[0].Err, ErrTermOutOfRange) {
			t.Fatalf("election at term MaxTerm-1: %v, want a Rejected saying why not", describe(acts))
		}
		if len(sent(acts)) != 0 || len(actionsOf[Persist](acts)) != 0 {
			t.Fatalf("a node at term MaxTerm-1 campaigned: %v", describe(acts))
		}
		wantRoleTerm(t, n, Follower, MaxTerm-1)
		if len(actionsOf[SetTimer](acts)) != 1 {
			t.Fatalf("no election timer set again: %v", describe(acts))
		}
	}
}

// Regression (issue 11): a forged AppendEntries in the current term whose
// entry 1 carried another term reached truncateAndAppend's assert
// ("invariant: truncating committed entries"); six such messages made a
// healthy node fail-stop. It is now rejected, and the log is kept.
func TestAppendReplacingCommittedEntriesIsRejected(t *testing.T) {
	n := newNode(t, testConfig(1), Restore{})
	stepSettled(t, n, appendMsg(2, 1, 2, 0, 0, 2, entries(1, 1, 1, 2)...))
	if st := n.Status(); st.Commit != 2 {
		t.Fatalf("commit %d, want 2", st.Commit)
	}
	before := n.Status()
	for _, forged := range []Message{
		appendMsg(3, 1, 2, 0, 0, 3, entries(1, 2)...),    // replaces entry 1
		appendMsg(3, 1, 5, 0, 0, 3, entries(1, 2)...),    // the same from a later term
		appendMsg(3, 1, 2, 2, 2, 3, entries(3, 2)...),    // prev term wrong at a committed index
		appendMsg(2, 1, 2, 1, 1, 3, entries(2, 2, 2)...), // from the leader itself
	} {
		for range 6 {
			acts := n.Step(forged)
			if r := actionsOf[Rejected](acts); len(r) != 1 || !errors.Is(r[0].Err, ErrImpossible) || len(acts) != 1 {
				t.Fatalf("forged AppendEntries: %v, want only a Rejected", describe(acts))
			}
		}
	}
	if after := n.Status(); after != before {
		t.Fatalf("forged messages changed the node: %+v -> %+v", before, after)
	}
	if got := logTerms(n); len(got) != 3 || got[0] != 1 || got[1] != 1 || got[2] != 2 {
		t.Fatalf("log terms %v after the forged messages, want [1 1 2]", got)
	}
	// Uncommitted entries still give way to a real conflict (Figure 2
	// AppendEntries rule 3).
	stepSettled(t, n, appendMsg(3, 1, 3, 2, 1, 2, entries(3, 3)...))
	if got := logTerms(n); got[2] != 3 {
		t.Fatalf("log terms %v, want entry 3 replaced by term 3", got)
	}
}

// Backpressure (etcd-io/raft MaxUncommittedEntriesSize): past
// MaxUncommittedBytes of uncommitted entries the leader refuses proposals
// with ErrBusy and appends nothing; commits make room again. A proposal
// always fits while nothing is uncommitted, and one over the entry limit
// is refused with ErrTooLarge whatever the room.
func TestUncommittedBytesAreBounded(t *testing.T) {
	cfg := testConfig(1)
	cfg.MaxUncommittedBytes = 4 * entrySize(make([]byte, 100))
	n := replicatingLeader(t, cfg) // its no-op (index 1) acknowledged by 2: committed
	settle(t, n)
	if n.uncommitted != 0 {
		t.Fatalf("uncommitted %d after the no-op committed, want 0", n.uncommitted)
	}
	data := string(make([]byte, 100))
	acts := propose(n, data, data, data, data, data, data)
	if got := len(actionsOf[Persist](acts)); got != 1 {
		t.Fatalf("want one Persist, got %v", describe(acts))
	}
	busy := 0
	for _, r := range actionsOf[Reply](acts) {
		if !errors.Is(r.Err, ErrBusy) || r.Leader != 1 {
			t.Fatalf("reply %+v, want ErrBusy naming leader 1", r)
		}
		busy++
	}
	if st := n.Status(); busy != 2 || st.LastIndex != 5 {
		t.Fatalf("%d refused, last index %d; want 2 refused and entries 2-5 appended", busy, st.LastIndex)
	}
	if got := actionsOf[Reply](propose(n, "x")); len(got) != 1 || !errors.Is(got[0].Err, ErrBusy) {
		t.Fatalf("a proposal while full: %v, want ErrBusy", got)
	}
	settle(t, n)
	n.Step(appendAck(2, 1, 1, 5)) // entries 2-5 commit
	if n.uncommitted != 0 || n.Status().Commit != 5 {
		t.Fatalf("uncommitted %d commit %d after the commit, want 0 and 5", n.uncommitted, n.Status().Commit)
	}
	big := string(make([]byte, 10*cfg.MaxUncommittedBytes))
	if acts := propose(n, big); len(actionsOf[Reply](acts)) != 0 || n.Status().LastIndex != 6 {
		t.Fatalf("a large proposal with nothing uncommitted: %v, want it appended", describe(acts))
	}
	tooLarge := Proposal{ID: 5, Data: make([]byte, pb.DefaultMaxEntryBytes+1)}
	if got := actionsOf[Reply](n.Step(Propose{Proposals: []Proposal{tooLarge}})); len(got) != 1 || !errors.Is(got[0].Err, ErrTooLarge) {
		t.Fatalf("a proposal over MaxEntryBytes: %v, want ErrTooLarge", got)
	}
}

// validationNode is a node of {1,2,3} in role at term 3 (a pre-candidate
// asks for term 3 from term 2).
func validationNode(t *testing.T, role Role) *Node {
	t.Helper()
	if role == PreCandidate {
		n := newNode(t, removed9(extConfig(1)), restoreLog(2, 0, 1))
		fireElection(t, n)
		if n.role != PreCandidate {
			t.Fatalf("role %v, want pre-candidate", n.role)
		}
		return n
	}
	return nodeInRole(t, removed9(testConfig(1)), role)
}

// removed9 bootstraps cfg's members with server 9 removed from the cluster.
func removed9(cfg Config) Config {
	cfg.Bootstrap = bootstrapConfig(&cfg)
	cfg.Bootstrap.Removed = []uint64{9}
	cfg.Members = nil
	return cfg
}

// FuzzStep: arbitrary peer messages never panic a node in any role. The
// input is a RaftMessage's encoding; the first byte says whether to stamp
// the envelope with this cluster, the node and a member as sender (so most
// inputs get past the envelope checks into the role functions). Every
// rejection must be a Rejected action of a known kind.
func FuzzStep(f *testing.F) {
	for _, m := range []*pb.RaftMessage{
		voteMsg(2, 1, 3, 1, 1).Msg,
		preVoteMsg(2, 1, 3, 1, 1).Msg,
		voteResp(2, 1, 3, true).Msg,
		appendMsg(2, 1, 3, 1, 1, 2, entries(2, 3, 3)...).Msg,
		appendMsg(2, 1, 3, 0, 0, 1, entries(1, 2)...).Msg,
		appendAck(2, 1, 3, 2).Msg,
		appendReject(2, 1, 3, 2, 1, 1).Msg,
		raftMsg(2, 1, 3, &pb.TimeoutNow{}),
		raftMsg(2, 1, 3, &pb.ReadIndexRequest{Context: 7}),
		raftMsg(2, 1, 3, &pb.ReadIndexResponse{Context: 7, Index: 1}),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(1), b)
		f.Add(byte(0), b)
	}
	f.Fuzz(func(t *testing.T, stamp byte, data []byte) {
		var m pb.RaftMessage
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		for _, role := range []Role{Follower, PreCandidate, Candidate, Leader} {
			n := validationNode(t, role)
			msg := proto.Clone(&m).(*pb.RaftMessage)
			if stamp&1 != 0 {
				msg.ClusterId, msg.To, msg.From = testClusterID, 1, 2+uint64(stamp>>1)%2
			}
			for _, a := range n.Step(Message{Msg: msg}) {
				if r, ok := a.(Rejected); ok && !errors.Is(r.Err, ErrNotForUs) && !errors.Is(r.Err, ErrMalformed) &&
					!errors.Is(r.Err, ErrTermOutOfRange) && !errors.Is(r.Err, ErrImpossible) {
					t.Fatalf("rejection of unknown kind: %v", r.Err)
				}
			}
			// The node still works: it settles and times out.
			settle(t, n)
			fireElection(t, n)
			settle(t, n)
		}
	})
}
