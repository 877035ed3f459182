package fsm

// Applying committed entries and restarting: Raft Figure 2 ("If commitIndex
// > lastApplied: increment lastApplied, apply log[lastApplied] to state
// machine"), ARCHITECTURE §3 rules 6 and 7.

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Figure 2 and ARCHITECTURE §3 rule 7: every committed index is handed to
// Apply exactly once, in order, however the commit index advances.
func TestApplyEachIndexOnceInOrder(t *testing.T) {
	tests := []struct {
		name  string
		acks  []uint64 // match indexes follower 2 acknowledges, in order
		wants [][]uint64
	}{
		{"in one jump", []uint64{5}, [][]uint64{{1, 2, 3, 4, 5}}},
		{"step by step", []uint64{1, 2, 3, 4, 5}, [][]uint64{{1}, {2}, {3}, {4}, {5}}},
		{"with repeats and reordering", []uint64{3, 3, 1, 2, 5, 4, 5}, [][]uint64{{1, 2, 3}, nil, nil, nil, {4, 5}, nil, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, testConfig(1), Restore{})
			makeLeader(t, n)
			propose(n, "a", "b", "c", "d")
			settle(t, n)
			for i, match := range tt.acks {
				acts := n.Step(appendAck(2, 1, 1, match))
				if len(actionsOf[Apply](acts)) > 1 {
					t.Fatalf("ack %d: several Apply actions in one step: %v", match, describe(acts))
				}
				if got := appliedIndexes(acts); !slices.Equal(got, tt.wants[i]) {
					t.Fatalf("ack %d: applied %v, want %v", match, got, tt.wants[i])
				}
			}
			if st := n.Status(); st.Applied != 5 || st.Commit != 5 {
				t.Fatalf("status %+v, want commit and applied 5", st)
			}
		})
	}
}

// ARCHITECTURE §3 rule 7: the state actor reporting its applied index (after
// a replay, say) never makes the fsm hand out entries again.
func TestAppliedReportDoesNotReapply(t *testing.T) {
	n := newNode(t, testConfig(1), restoreLog(1, 0, 1, 1, 1))
	if got := appliedIndexes(stepSettled(t, n, appendMsg(2, 1, 1, 3, 1, 2))); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("applied %v, want [1 2]", got)
	}
	for _, idx := range []uint64{0, 1, 2, 3} {
		before := n.Status()
		if acts := n.Step(Applied{Index: idx}); len(acts) != 0 || n.Status() != before {
			t.Fatalf("Applied{%d} caused %v", idx, describe(acts))
		}
	}
	if got := appliedIndexes(stepSettled(t, n, appendMsg(2, 1, 1, 3, 1, 3))); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("applied %v after commit 3, want [3]", got)
	}
}

// cluster is a small deterministic simulation of nodes exchanging messages
// over a network that delays, reorders, duplicates and drops, with stores
// that report durability late. It checks, as it goes, what this file's
// rules promise: each node applies each index once and in order, and no two
// nodes apply different entries at one index (Raft §5.4.3, State Machine
// Safety).
type cluster struct {
	t       *testing.T
	rng     *rand.Rand
	ids     []uint64
	nodes   map[uint64]*Node
	pending map[uint64][]uint64 // Persist seqs not yet reported durable
	net     []*pb.RaftMessage
	applied map[uint64][]*pb.Entry
	refs    map[uint64]uint64 // proposal id -> index it committed at
	nextID  uint64
}

func newCluster(t *testing.T, seed uint64, size int) *cluster {
	t.Helper()
	c := &cluster{
		t: t, rng: seededRand(seed), nodes: map[uint64]*Node{}, pending: map[uint64][]uint64{},
		applied: map[uint64][]*pb.Entry{}, refs: map[uint64]uint64{},
	}
	for id := uint64(1); id <= uint64(size); id++ {
		c.ids = append(c.ids, id)
	}
	for _, id := range c.ids {
		cfg := testConfig(id, c.ids...)
		cfg.Rand = seededRand(seed*100 + id)
		cfg.MaxInflight = 4
		cfg.MaxMsgBytes = 64
		n, err := New(cfg, Restore{})
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[id] = n
		c.run(id, n.Step(Start{}))
	}
	return c
}

// run carries out the actions node id returned.
func (c *cluster) run(id uint64, acts []Action) {
	c.t.Helper()
	for _, a := range acts {
		switch a := a.(type) {
		case Persist:
			c.pending[id] = append(c.pending[id], a.Seq)
		case Send:
			c.net = append(c.net, a.Msg)
		case Apply:
			if len(a.Entries) == 0 {
				c.t.Fatalf("node %d: empty Apply", id)
			}
			for _, e := range a.Entries {
				if want := uint64(len(c.applied[id])) + 1; e.Index != want {
					c.t.Fatalf("node %d applied index %d, want %d: each index once and in order", id, e.Index, want)
				}
				for _, other := range c.ids {
					if o := c.applied[other]; uint64(len(o)) >= e.Index && !proto.Equal(o[e.Index-1], e) {
						c.t.Fatalf("nodes %d and %d applied different entries at %d: %v, %v", id, other, e.Index, e, o[e.Index-1])
					}
				}
				c.applied[id] = append(c.applied[id], e)
			}
			for _, r := range a.Refs {
				if e := c.applied[id][r.Index-1]; string(e.Data) != fmt.Sprint("p", r.ID) {
					c.t.Fatalf("node %d: ref %d names index %d, which holds %q", id, r.ID, r.Index, e.Data)
				}
				if _, dup := c.refs[r.ID]; dup {
					c.t.Fatalf("proposal %d acknowledged twice", r.ID)
				}
				c.refs[r.ID] = r.Index
			}
		}
	}
}

func (c *cluster) step(id uint64, ev Event) { c.t.Helper(); c.run(id, c.nodes[id].Step(ev)) }

// persistSome reports a prefix of node id's pending Persists durable.
func (c *cluster) persistSome(id uint64, all bool) {
	p := c.pending[id]
	if len(p) == 0 {
		return
	}
	k := len(p) - 1
	if !all {
		k = c.rng.IntN(len(p))
	}
	c.pending[id] = p[k+1:]
	c.step(id, Persisted{Seq: p[k]})
}

// deliver hands message i of the network to its receiver.
func (c *cluster) deliver(i int, keep bool) {
	m := c.net[i]
	if !keep {
		c.net = slices.Delete(c.net, i, i+1)
	}
	c.step(m.To, Message{Msg: m})
}

func (c *cluster) leader() *Node {
	var best *Node
	for _, id := range c.ids {
		if n := c.nodes[id]; n.role == Leader && (best == nil || n.term > best.term) {
			best = n
		}
	}
	return best
}

func (c *cluster) propose(id uint64) {
	c.nextID++
	c.step(id, Propose{Proposals: []Proposal{{ID: c.nextID, Data: fmt.Append(nil, "p", c.nextID)}}})
}

// chaos runs steps random events.
func (c *cluster) chaos(steps int) {
	for range steps {
		id := c.ids[c.rng.IntN(len(c.ids))]
		switch x := c.rng.IntN(100); {
		case x < 50 && len(c.net) > 0:
			i := c.rng.IntN(len(c.net))
			switch y := c.rng.IntN(100); {
			case y < 5: // lost
				c.net = slices.Delete(c.net, i, i+1)
			default: // delivered, sometimes twice
				c.deliver(i, y < 10)
			}
		case x < 75:
			c.persistSome(id, false)
		case x < 85:
			c.propose(id)
		case x < 98:
			if n := c.nodes[id]; n.role == Leader {
				c.step(id, Timeout{Timer: HeartbeatTimer, Gen: n.timerGen[HeartbeatTimer]})
			}
		default:
			if n := c.nodes[id]; n.role != Leader {
				c.step(id, Timeout{Timer: ElectionTimer, Gen: n.timerGen[ElectionTimer]})
			}
		}
	}
}

// drain delivers every message in order and makes everything durable.
func (c *cluster) drain() {
	for i := 0; len(c.net) > 0 || c.anyPending(); i++ {
		if i > 100000 {
			c.t.Fatal("the network never quiesces")
		}
		for _, id := range c.ids {
			c.persistSome(id, true)
		}
		if len(c.net) > 0 {
			c.deliver(0, false)
		}
	}
}

func (c *cluster) anyPending() bool {
	for _, p := range c.pending {
		if len(p) > 0 {
			return true
		}
	}
	return false
}

// heal runs a fault-free network until every node has applied the whole of
// a leader's log, and reports whether that happened.
func (c *cluster) heal() bool {
	for range 100 {
		c.drain()
		l := c.leader()
		if l == nil {
			id := c.ids[c.rng.IntN(len(c.ids))]
			c.step(id, Timeout{Timer: ElectionTimer, Gen: c.nodes[id].timerGen[ElectionTimer]})
			continue
		}
		done := l.commit == l.log.lastIndex()
		for _, id := range c.ids {
			done = done && uint64(len(c.applied[id])) == l.log.lastIndex()
		}
		if done {
			return true
		}
		c.step(l.id, Timeout{Timer: HeartbeatTimer, Gen: l.timerGen[HeartbeatTimer]})
	}
	return false
}

// Raft Figure 2 and §5.4.3 under faults: with messages delayed, reordered,
// duplicated and lost, stores reporting late and elections at random, each
// node still applies each index once and in order, all nodes apply the same
// entries, each acknowledged proposal names the entry it became, and once
// the network heals every node applies the whole log.
func TestApplyOnceInOrderUnderFaults(t *testing.T) {
	seeds := uint64(30)
	if testing.Short() {
		seeds = 5
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			c := newCluster(t, seed, 3)
			c.step(1, Timeout{Timer: ElectionTimer, Gen: c.nodes[1].timerGen[ElectionTimer]})
			c.chaos(3000)
			if !c.heal() {
				for _, id := range c.ids {
					t.Logf("node %d: %+v applied %d", id, c.nodes[id].Status(), len(c.applied[id]))
				}
				t.Fatal("the cluster did not converge after the faults stopped")
			}
			if len(c.refs) == 0 {
				t.Fatal("no proposal was acknowledged: the run proves nothing")
			}
			l := c.leader()
			t.Logf("final term %d, %d entries applied on every node, %d of %d proposals acknowledged",
				l.term, len(c.applied[l.id]), len(c.refs), c.nextID)
		})
	}
}

// ARCHITECTURE §3 rule 6: "A restarted fsm reloads term, vote and log from
// the store and starts as a follower; commit index and leadership are
// relearned, never read from a cache." Entries the state machine already
// applied count as committed and are not handed to Apply again.
func TestRestartStartsAsFollowerFromDurableState(t *testing.T) {
	tests := []struct {
		name    string
		restore Restore
	}{
		{"empty", Restore{}},
		{"term only", Restore{HardState: &pb.HardState{Term: 3}}},
		{"voted, log partly applied", Restore{HardState: &pb.HardState{Term: 5, Vote: 2}, Entries: entries(1, 1, 3, 5), Applied: 2}},
		{"voted for itself, nothing applied", Restore{HardState: &pb.HardState{Term: 4, Vote: 1}, Entries: entries(1, 1, 1)}},
		{"everything applied", Restore{HardState: &pb.HardState{Term: 2}, Entries: entries(1, 2, 2), Applied: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(testConfig(1), tt.restore)
			if err != nil {
				t.Fatal(err)
			}
			hs := tt.restore.HardState
			if hs == nil {
				hs = &pb.HardState{}
			}
			last := uint64(len(tt.restore.Entries))
			want := Status{
				ID: 1, Role: Follower, Term: hs.Term, Vote: hs.Vote, LastIndex: last, LastTerm: n.log.term(last),
				Commit: tt.restore.Applied, Applied: tt.restore.Applied, Durable: last, InMemory: last, FirstIndex: 1,
				Voter: true, Member: true,
			}
			if last > 0 {
				want.LastTerm = tt.restore.Entries[last-1].Term
			}
			if st := n.Status(); st != want {
				t.Fatalf("restored status %+v, want %+v", st, want)
			}
			acts := n.Step(Start{})
			if len(acts) == 2 {
				if _, ok := acts[0].(ConfigChanged); ok {
					acts = acts[1:] // the configuration in use, for the driver
				}
			}
			if len(acts) != 1 {
				t.Fatalf("Start: %v, want only the election timer", describe(acts))
			}
			if s, ok := acts[0].(SetTimer); !ok || s.Timer != ElectionTimer {
				t.Fatalf("Start: %v, want only the election timer", describe(acts))
			}
			// The vote survives the restart (Raft §5.2, one vote per term).
			if hs.Vote != 0 {
				if voteAnswer(t, n, voteMsg(hs.Vote%3+1, 1, hs.Term, 99, hs.Term)) {
					t.Fatalf("restored vote for %d, yet granted %d in term %d", hs.Vote, hs.Vote%3+1, hs.Term)
				}
			}
			// A leader's commit index reaching the end of the log applies only
			// what was not applied before the restart.
			acts = stepSettled(t, n, appendMsg(2, 1, hs.Term, last, n.log.term(last), last))
			var wantApplied []uint64
			for i := tt.restore.Applied + 1; i <= last; i++ {
				wantApplied = append(wantApplied, i)
			}
			if got := appliedIndexes(acts); !slices.Equal(got, wantApplied) {
				t.Fatalf("applied %v after the restart, want %v", got, wantApplied)
			}
		})
	}
}

// ARCHITECTURE §3 rule 6, end to end: a leader that wrote its term, vote and
// log through Persist actions restarts from exactly that as a follower,
// relearns nothing from memory, and can win the next election with its log.
func TestRestartFromWhatWasPersisted(t *testing.T) {
	var store memStore
	n := newNode(t, testConfig(1), Restore{})
	store.applyAll(t, fireElection(t, n))
	store.applyAll(t, settle(t, n))
	store.applyAll(t, n.Step(voteResp(2, 1, 1, true)))
	store.applyAll(t, propose(n, "a", "b"))
	settle(t, n)
	applied := uint64(len(appliedIndexes(n.Step(appendAck(2, 1, 1, 2)))))
	if applied != 2 {
		t.Fatalf("applied %d before the crash, want 2", applied)
	}

	r, err := New(testConfig(1), store.restore(applied))
	if err != nil {
		t.Fatal(err)
	}
	st := r.Status()
	if st.Role != Follower || st.Term != 1 || st.Vote != 1 || st.Leader != 0 || st.LastIndex != 3 || st.Commit != 2 || st.Applied != 2 {
		t.Fatalf("restarted as %+v, want follower at term 1, vote 1, log to 3, commit 2", st)
	}
	if got := logTerms(r); !slices.Equal(got, logTerms(n)) {
		t.Fatalf("restarted log %v, want %v", got, logTerms(n))
	}
	r.Step(Start{})
	makeLeader(t, r)
	wantRoleTerm(t, r, Leader, 2)
}

// ARCHITECTURE §3 rule 6 and CONVENTIONS (a corrupted read never passes as
// good): New refuses a durable state that cannot have been written by Raft.
func TestNewRejectsCorruptRestore(t *testing.T) {
	hs := func(term uint64) *pb.HardState { return &pb.HardState{Term: term} }
	tests := []struct {
		name    string
		restore Restore
		ok      bool
	}{
		{"valid", Restore{HardState: hs(3), Entries: entries(1, 1, 2, 3), Applied: 3}, true},
		{"gap", Restore{HardState: hs(3), Entries: append(entries(1, 1), entries(3, 1)...)}, false},
		{"does not start at 1", Restore{HardState: hs(3), Entries: entries(2, 1, 1)}, false},
		{"repeated index", Restore{HardState: hs(3), Entries: append(entries(1, 1), entries(1, 1)...)}, false},
		{"decreasing terms", Restore{HardState: hs(3), Entries: entries(1, 2, 1)}, false},
		{"entry term above the current term", Restore{HardState: hs(2), Entries: entries(1, 1, 3)}, false},
		{"entries without hard state", Restore{Entries: entries(1, 1)}, false},
		{"applied beyond the log", Restore{HardState: hs(3), Entries: entries(1, 1, 2), Applied: 3}, false},
		{"applied with no log", Restore{HardState: hs(3), Applied: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(testConfig(1), tt.restore)
			if tt.ok && err != nil {
				t.Fatalf("New: %v", err)
			}
			if !tt.ok && (err == nil || n != nil) {
				t.Fatalf("New accepted a corrupt restore: node %v, error %v", n != nil, err)
			}
		})
	}
}

// ARCHITECTURE §3 rule 6: the restored log is copied, so the store's slice
// may be reused by its owner without changing the node.
func TestNewCopiesRestoredLog(t *testing.T) {
	r := restoreLog(2, 0, 1, 2)
	n := newNode(t, testConfig(1), r)
	r.Entries[0] = &pb.Entry{Index: 1, Term: 9}
	if got := logTerms(n); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("log %v changed with the caller's slice", got)
	}
}
