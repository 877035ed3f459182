package fsm

// The test harness: building nodes, driving them into a role, building peer
// messages and picking actions apart. Tests in this package may read the
// node's unexported fields (timer generations, progress) but change its
// state only through Step, as the real actor does.

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

const (
	testClusterID       = "test"
	testElectionTimeout = 100 * time.Millisecond
	testHeartbeat       = 10 * time.Millisecond
)

// seededRand returns a deterministic math/rand/v2 source for election jitter.
func seededRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x6b65746368))
}

// testConfig returns a valid Config for node id in a cluster of members
// (1, 2, 3 when none are given), with short timeouts and a Rand seeded from
// the node id. It pins pre-vote and check-quorum off: the tests of Raft's
// base rules (Raft §5) drive elections by firing one election timer and
// expect the candidate's term at once. The tests of those two extensions
// build on extConfig, which has the defaults.
func testConfig(id uint64, members ...uint64) Config {
	if len(members) == 0 {
		members = []uint64{1, 2, 3}
	}
	return Config{
		ID:                id,
		ClusterID:         testClusterID,
		Members:           members,
		ElectionTimeout:   testElectionTimeout,
		HeartbeatInterval: testHeartbeat,
		Rand:              seededRand(id),

		DisablePreVote:     true,
		DisableCheckQuorum: true,
	}
}

// extConfig is testConfig with pre-vote and check-quorum at their
// defaults (on).
func extConfig(id uint64, members ...uint64) Config {
	cfg := testConfig(id, members...)
	cfg.DisablePreVote, cfg.DisableCheckQuorum = false, false
	return cfg
}

// newNode creates a node from cfg and r and steps it through Start{}.
func newNode(t *testing.T, cfg Config, r Restore) *Node {
	t.Helper()
	n, err := New(cfg, r)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n.Step(Start{})
	return n
}

// restoreLog is the durable state of a node at term with vote whose log
// holds one entry per element of terms, at indexes 1, 2, ...
func restoreLog(term, vote uint64, terms ...uint64) Restore {
	return Restore{HardState: &pb.HardState{Term: term, Vote: vote}, Entries: entries(1, terms...)}
}

// entries returns normal entries at indexes first, first+1, ... with the
// given terms.
func entries(first uint64, terms ...uint64) []*pb.Entry {
	ents := make([]*pb.Entry, len(terms))
	for i, term := range terms {
		ents[i] = &pb.Entry{Index: first + uint64(i), Term: term, Type: pb.EntryType_ENTRY_TYPE_NORMAL}
	}
	return ents
}

// logTerms lists the term of every entry of n's log, for comparisons.
func logTerms(n *Node) []uint64 {
	terms := make([]uint64, 0, n.log.lastIndex())
	for i := uint64(1); i <= n.log.lastIndex(); i++ {
		terms = append(terms, n.log.term(i))
	}
	return terms
}

// ---------------------------------------------------------------- actions

// actionsOf returns the actions of type T in acts, in order.
func actionsOf[T Action](acts []Action) []T {
	var out []T
	for _, a := range acts {
		if x, ok := a.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// sent returns the messages of the Send actions in acts, in order.
func sent(acts []Action) []*pb.RaftMessage {
	var out []*pb.RaftMessage
	for _, s := range actionsOf[Send](acts) {
		out = append(out, s.Msg)
	}
	return out
}

// sentTo returns the messages in acts addressed to peer to.
func sentTo(acts []Action, to uint64) []*pb.RaftMessage {
	var out []*pb.RaftMessage
	for _, m := range sent(acts) {
		if m.To == to {
			out = append(out, m)
		}
	}
	return out
}

// onlyPersist returns the one Persist in acts and fails the test when there
// is not exactly one.
func onlyPersist(t *testing.T, acts []Action) Persist {
	t.Helper()
	ps := actionsOf[Persist](acts)
	if len(ps) != 1 {
		t.Fatalf("want exactly one Persist, got %d in %v", len(ps), describe(acts))
	}
	return ps[0]
}

// appliedIndexes lists the indexes handed to Apply in acts, in order.
func appliedIndexes(acts []Action) []uint64 {
	var out []uint64
	for _, a := range actionsOf[Apply](acts) {
		for _, e := range a.Entries {
			out = append(out, e.Index)
		}
	}
	return out
}

// describe renders actions compactly for failure messages.
func describe(acts []Action) []string {
	out := make([]string, 0, len(acts))
	for _, a := range acts {
		switch a := a.(type) {
		case Persist:
			s := "Persist{seq " + itoa(a.Seq)
			if a.HardState != nil {
				s += " hs " + itoa(a.HardState.Term) + "/" + itoa(a.HardState.Vote)
			}
			if len(a.Entries) > 0 {
				s += " entries " + itoa(a.Entries[0].Index) + ".." + itoa(a.Entries[len(a.Entries)-1].Index)
			}
			out = append(out, s+"}")
		case Send:
			out = append(out, "Send{"+a.Msg.String()+"}")
		case Apply:
			out = append(out, "Apply{"+itoa(uint64(len(a.Entries)))+" entries}")
		case Reply:
			out = append(out, "Reply{"+itoa(a.ID)+" "+a.Err.Error()+"}")
		case SetTimer:
			out = append(out, "SetTimer{"+a.Timer.String()+" gen "+itoa(a.Gen)+"}")
		case Rejected:
			out = append(out, "Rejected{from "+itoa(a.From)+": "+a.Err.Error()+"}")
		default:
			out = append(out, fmt.Sprintf("%T%+v", a, a))
		}
	}
	return out
}

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }

// ------------------------------------------------------------ durability

// deliverPersisted reports the last Persist in acts durable and returns the
// actions that causes. It fails the test when acts hold no Persist.
func deliverPersisted(t *testing.T, n *Node, acts []Action) []Action {
	t.Helper()
	ps := actionsOf[Persist](acts)
	if len(ps) == 0 {
		t.Fatalf("no Persist to deliver in %v", describe(acts))
	}
	return n.Step(Persisted{Seq: ps[len(ps)-1].Seq})
}

// settle reports every Persist issued so far durable (a no-op when none is
// pending) and returns the actions that causes.
func settle(t *testing.T, n *Node) []Action {
	t.Helper()
	if n.persistSeq == n.durableSeq {
		return nil
	}
	return n.Step(Persisted{Seq: n.persistSeq})
}

// stepSettled steps ev, then reports everything durable; it returns the
// actions of both steps.
func stepSettled(t *testing.T, n *Node, ev Event) []Action {
	t.Helper()
	acts := n.Step(ev)
	return append(acts, settle(t, n)...)
}

// ------------------------------------------------------------- messages

// raftMsg wraps body in an envelope from -> to at term.
func raftMsg(from, to, term uint64, body any) *pb.RaftMessage {
	if is, ok := body.(*pb.InstallSnapshot); ok && is.Done && is.Configuration == nil {
		// The last chunk carries the snapshot's configuration: the test
		// cluster's bootstrap one.
		is.Configuration = bootstrapConfig(&Config{Members: []uint64{1, 2, 3}})
	}
	return pb.NewRaftMessage(testClusterID, from, to, term, body)
}

// appendMsg is an AppendEntries event.
func appendMsg(from, to, term, prevIndex, prevTerm, commit uint64, ents ...*pb.Entry) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.AppendEntries{
		PrevLogIndex: prevIndex, PrevLogTerm: prevTerm, Entries: ents, LeaderCommit: commit,
	})}
}

// voteMsg is a RequestVote event from a candidate whose log ends at
// (lastIndex, lastTerm).
func voteMsg(from, to, term, lastIndex, lastTerm uint64) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.RequestVote{LastLogIndex: lastIndex, LastLogTerm: lastTerm})}
}

// voteResp is a RequestVoteResponse event.
func voteResp(from, to, term uint64, granted bool) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.RequestVoteResponse{Granted: granted})}
}

// appendAck is a successful AppendEntriesResponse event.
func appendAck(from, to, term, match uint64) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.AppendEntriesResponse{Success: true, MatchIndex: match})}
}

// appendReject is a rejecting AppendEntriesResponse event.
func appendReject(from, to, term, rejectIndex, conflictTerm, conflictIndex uint64) Message {
	return Message{Msg: raftMsg(from, to, term, &pb.AppendEntriesResponse{
		RejectIndex: rejectIndex, ConflictTerm: conflictTerm, ConflictIndex: conflictIndex,
	})}
}

// ---------------------------------------------------------------- timers

// fireElection fires the node's current election timer.
func fireElection(t *testing.T, n *Node) []Action {
	t.Helper()
	return n.Step(Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer]})
}

// fireHeartbeat fires the node's current heartbeat timer.
func fireHeartbeat(t *testing.T, n *Node) []Action {
	t.Helper()
	return n.Step(Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer]})
}

// ----------------------------------------------------------------- roles

// makeCandidate fires the election timer and reports the candidate's term
// and vote durable, so its RequestVotes are out and its own vote counts.
func makeCandidate(t *testing.T, n *Node) {
	t.Helper()
	fireElection(t, n)
	settle(t, n)
	if st := n.Status(); st.Role != Candidate {
		t.Fatalf("makeCandidate: node is %v, want candidate", st.Role)
	}
}

// makeLeader runs an election that the node wins with the votes of just
// enough peers (the lowest ids), and returns the actions of the step that
// made it leader. Its no-op is not yet durable.
func makeLeader(t *testing.T, n *Node) []Action {
	t.Helper()
	fireElection(t, n)
	acts := settle(t, n)
	for _, p := range n.peers {
		if n.role == Leader {
			break
		}
		acts = n.Step(voteResp(p, n.id, n.term, true))
	}
	if n.role != Leader {
		t.Fatalf("makeLeader: node is %v after every peer voted", n.role)
	}
	return acts
}

// nodeInRole returns a node restored at term 2 with a durable log of one
// entry of term 1, playing role: a follower at term 2 (knowing no leader), or
// a candidate or leader at term 3 with everything durable (a leader's log
// then ends with its no-op at index 2, and every follower is being probed).
func nodeInRole(t *testing.T, cfg Config, role Role) *Node {
	t.Helper()
	n := newNode(t, cfg, restoreLog(2, 0, 1))
	switch role {
	case Candidate:
		makeCandidate(t, n)
	case Leader:
		makeLeader(t, n)
		settle(t, n)
	}
	return n
}

// wantRoleTerm fails the test when n's role or term differ from the expected.
func wantRoleTerm(t *testing.T, n *Node, role Role, term uint64) {
	t.Helper()
	if st := n.Status(); st.Role != role || st.Term != term {
		t.Fatalf("node %d is %v at term %d, want %v at term %d", n.id, st.Role, st.Term, role, term)
	}
}

// ----------------------------------------------------------------- store

// memStore is a store as Persist describes it: it keeps the hard state and
// the log, so a test can restart a node from what it wrote.
type memStore struct {
	hs   *pb.HardState
	ents []*pb.Entry
}

// apply carries out p: new hard state, and entries replacing every stored
// entry from p.Entries[0].Index on.
func (s *memStore) apply(t *testing.T, p Persist) {
	t.Helper()
	if p.HardState != nil {
		s.hs = &pb.HardState{Term: p.HardState.Term, Vote: p.HardState.Vote}
	}
	if len(p.Entries) > 0 {
		from := p.Entries[0].Index
		if from < 1 || from > uint64(len(s.ents))+1 {
			t.Fatalf("store: Persist writes from %d but the log ends at %d", from, len(s.ents))
		}
		s.ents = append(s.ents[:from-1:from-1], p.Entries...)
	}
}

// applyAll applies every Persist in acts.
func (s *memStore) applyAll(t *testing.T, acts []Action) {
	t.Helper()
	for _, p := range actionsOf[Persist](acts) {
		s.apply(t, p)
	}
}

// restore is what a node restarted from this store starts with.
func (s *memStore) restore(applied uint64) Restore {
	return Restore{HardState: s.hs, Entries: slices.Clone(s.ents), Applied: applied}
}

// mustPanic fails the test unless f panics with a message containing want.
func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatalf("no panic, want one mentioning %q", want)
		}
		msg, _ := r.(string)
		if err, ok := r.(error); ok {
			msg = err.Error()
		}
		if !strings.Contains(msg, want) {
			t.Fatalf("panic %v, want one mentioning %q", r, want)
		}
	}()
	f()
}
