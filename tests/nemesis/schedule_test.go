package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	pb "github.com/ketch-raft/ketch/messages"
)

// The nemeses.
var (
	allNemeses = []string{"kill", "pause", "isolate", "partition", "bridge", "oneway", "crash", "restart", "combo", "lag", "member"}
	// netNemeses need iptables.
	netNemeses = []string{"isolate", "partition", "bridge", "oneway", "combo"}
	crashables = []string{"store", "state", "fsm", "sender"}
)

// step is one fault of a schedule: a quiet spell, then the fault, held for
// hold, then healed. Nodes are 0-based indexes into cluster.nodes.
type step struct {
	quiet, hold time.Duration
	kind        string
	a, b        []int // kill/pause/isolate/oneway: a; partition/bridge: the sides a and b
	leader      bool  // kill/pause/isolate/oneway: aim at the leader of the moment instead of a[0]
	bridge      int   // bridge: the node that sees both sides; combo: the node killed
	out         bool  // oneway: a's messages to the others are lost (else theirs to a)
	crashes     []crash
}

type crash struct {
	node  int
	actor string
}

func one(i int) string { return fmt.Sprint(i + 1) }

func ids(is []int) string {
	var s []string
	for _, i := range is {
		s = append(s, one(i))
	}
	return "{" + strings.Join(s, ",") + "}"
}

func (s step) String() string {
	var what string
	switch s.kind {
	case "kill", "pause", "isolate":
		what = "node " + one(s.a[0])
		if s.leader {
			what = "the leader"
		}
	case "lag":
		what = "a follower (killed while the log moves past what the others keep: it can only catch up by snapshot)"
	case "partition":
		what = ids(s.a) + " | " + ids(s.b)
	case "bridge":
		what = fmt.Sprintf("%s | %s, node %s sees both", ids(s.a), ids(s.b), one(s.bridge))
	case "oneway":
		who := "node " + one(s.a[0])
		if s.leader {
			who = "the leader"
		}
		if s.out {
			what = fmt.Sprintf("%s's messages to the others lost", who)
		} else {
			what = fmt.Sprintf("the others' messages to %s lost", who)
		}
	case "crash":
		var cs []string
		for _, c := range s.crashes {
			cs = append(cs, fmt.Sprintf("%s of node %s", c.actor, one(c.node)))
		}
		what = strings.Join(cs, ", then ")
	case "restart":
		what = "every node"
	case "member":
		who := "node in slot " + one(s.a[0])
		if s.leader {
			who = "the leader"
		}
		how := "a learner, promoted, then the old one removed"
		if s.out {
			how = "one joint change"
		}
		return fmt.Sprintf("after %v: member: replace %s by a new server (%s)", s.quiet.Round(time.Millisecond), who, how)
	case "combo":
		what = fmt.Sprintf("%s | %s, node %s killed, %s of node %s crashed", ids(s.a), ids(s.b), one(s.bridge), s.crashes[0].actor, one(s.crashes[0].node))
	}
	return fmt.Sprintf("after %v: %s %s for %v", s.quiet.Round(time.Millisecond), s.kind, what, s.hold.Round(time.Millisecond))
}

// plan draws a schedule of about duration from seed: the given kinds in
// turn (drawn at random when there are several), on random nodes of n.
func plan(seed uint64, kinds []string, n int, duration time.Duration) []step {
	rng := rand.New(rand.NewPCG(seed, 0x6e656d65736973))
	var steps []step
	for total := time.Duration(0); total < duration; {
		s := step{
			quiet: time.Second + time.Duration(rng.Int64N(int64(2*time.Second))),
			hold:  2*time.Second + time.Duration(rng.Int64N(int64(3*time.Second))),
			kind:  kinds[rng.IntN(len(kinds))],
		}
		perm := rng.Perm(n)
		switch s.kind {
		case "kill", "pause", "isolate":
			s.a, s.leader = perm[:1], rng.IntN(2) == 0
		case "oneway":
			s.a, s.leader, s.out = perm[:1], rng.IntN(2) == 0, rng.IntN(2) == 0
		case "partition":
			k := 1 + rng.IntN((n-1)/2) // the minority's size
			s.a, s.b = sorted(perm[:k]), sorted(perm[k:])
		case "bridge":
			s.bridge = perm[0]
			half := (n - 1) / 2
			s.a, s.b = sorted(perm[1:1+half]), sorted(perm[1+half:])
		case "crash":
			for range 1 + rng.IntN(2) {
				s.crashes = append(s.crashes, crash{node: rng.IntN(n), actor: crashables[rng.IntN(len(crashables))]})
			}
		case "combo": // a partition, a kill on one side and an actor crash, at once
			k := 1 + rng.IntN((n-1)/2)
			s.a, s.b = sorted(perm[:k]), sorted(perm[k:])
			s.bridge = perm[rng.IntN(n)] // the node killed
			s.crashes = []crash{{node: perm[rng.IntN(n)], actor: crashables[rng.IntN(len(crashables))]}}
		case "restart":
			s.hold = 500*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
		case "lag":
			s.hold = 8*time.Second + time.Duration(rng.Int64N(int64(4*time.Second)))
		case "member": // replace a node: learner, promote, remove; or one joint change (out)
			s.a, s.leader, s.out = perm[:1], rng.IntN(2) == 0, rng.IntN(2) == 0
			s.hold = 0
		}
		steps = append(steps, s)
		total += s.quiet + s.hold
	}
	// A mixed schedule always lags one follower, early (Raft §7: it
	// must be caught up by InstallSnapshot).
	if len(kinds) > 1 && slices.Contains(kinds, "lag") && !slices.ContainsFunc(steps, func(s step) bool { return s.kind == "lag" }) {
		lag := step{quiet: time.Second, hold: 8*time.Second + time.Duration(rng.Int64N(int64(4*time.Second))), kind: "lag"}
		steps = slices.Insert(steps, min(1, len(steps)), lag)
	}
	// And replaces a server, the leader in one schedule of two (thesis
	// chapter 4: membership changes under load and faults).
	if len(kinds) > 1 && slices.Contains(kinds, "member") && !slices.ContainsFunc(steps, func(s step) bool { return s.kind == "member" }) {
		mem := step{quiet: time.Second, kind: "member", a: []int{rng.IntN(n)}, leader: rng.IntN(2) == 0, out: rng.IntN(2) == 0}
		steps = slices.Insert(steps, min(3, len(steps)), mem)
	}
	return steps
}

func sorted(s []int) []int {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// journal is the timestamped record of what the nemesis did.
type journal struct {
	start time.Time
	mu    sync.Mutex
	lines []string
	logf  func(string, ...any)
}

func (j *journal) add(format string, args ...any) {
	line := fmt.Sprintf("[+%6.2fs] ", time.Since(j.start).Seconds()) + fmt.Sprintf(format, args...)
	j.mu.Lock()
	j.lines = append(j.lines, line)
	j.mu.Unlock()
	j.logf("%s", line)
}

func (j *journal) String() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Join(j.lines, "\n") + "\n"
}

// nemesis carries out a schedule against a cluster.
type nemesis struct {
	c      *cluster
	cl     *client.Client
	j      *journal
	err    []string // commands that failed (the harness's own errors)
	lagged int      // lag steps done
	// member steps done, and servers replaced by them
	members, replaced int
}

func (m *nemesis) check(what string, err error) {
	if err != nil {
		m.j.add("ERROR %s: %v", what, err)
		m.err = append(m.err, fmt.Sprintf("%s: %v", what, err))
	}
}

func (m *nemesis) pick(is []int) []*node {
	var ns []*node
	for _, i := range is {
		ns = append(ns, m.c.nodes[i])
	}
	return ns
}

func (m *nemesis) others(i int) []*node {
	var ns []*node
	for j, n := range m.c.nodes {
		if j != i {
			ns = append(ns, n)
		}
	}
	return ns
}

// run carries out the steps in order.
func (m *nemesis) run(steps []step) {
	for _, s := range steps {
		time.Sleep(s.quiet) // the schedule's quiet spell, not a wait for a condition
		m.j.add("start %v", s)
		m.apply(s)
		m.j.add("healed %s", s.kind)
	}
}

// target resolves a step's node: the leader of the moment if it aims at
// the leader (a[0] when there is none), else a[0].
func (m *nemesis) target(s step) int {
	if !s.leader {
		return s.a[0]
	}
	for _, st := range statuses(m.cl, m.c) {
		if st != nil && st.Role == "leader" {
			for i, n := range m.c.nodes {
				if n.id == st.Id {
					m.j.add("the leader is node %d", n.id)
					return i
				}
			}
		}
	}
	m.j.add("no leader now: node %d instead", m.c.nodes[s.a[0]].id)
	return s.a[0]
}

// follower picks a node that is not the leader.
func (m *nemesis) follower() int {
	for _, st := range statuses(m.cl, m.c) {
		if st != nil && st.Role == "follower" {
			for i, n := range m.c.nodes {
				if n.id == st.Id {
					return i
				}
			}
		}
	}
	return len(m.c.nodes) - 1
}

func (m *nemesis) apply(s step) {
	c := m.c
	switch s.kind {
	case "kill", "pause", "isolate", "oneway", "member":
		s.a = []int{m.target(s)}
	}
	switch s.kind {
	case "kill":
		n := c.nodes[s.a[0]]
		m.check("kill", c.kill(n))
		time.Sleep(s.hold)
		m.check("start", c.start(n))
	case "pause":
		n := c.nodes[s.a[0]]
		if st, code, err := c.state(n); err == nil && st != "running" {
			m.j.add("node %d is %s (exit code %d): not paused", n.id, st, code)
			time.Sleep(s.hold)
			return
		}
		_, err := docker("pause", n.name)
		m.check("pause", err)
		time.Sleep(s.hold)
		_, err = docker("unpause", n.name)
		m.check("unpause", err)
	case "isolate":
		m.check("isolate", c.cut(m.pick(s.a), m.others(s.a[0])))
		time.Sleep(s.hold)
		c.healNetwork()
	case "partition", "bridge":
		m.check(s.kind, c.cut(m.pick(s.a), m.pick(s.b)))
		time.Sleep(s.hold)
		c.healNetwork()
	case "oneway":
		x := c.nodes[s.a[0]]
		for _, o := range m.others(s.a[0]) {
			if s.out {
				m.check("oneway", c.drop(x, o, port))
			} else {
				m.check("oneway", c.drop(o, x, port))
			}
		}
		time.Sleep(s.hold)
		c.healNetwork()
	case "crash":
		gap := s.hold / time.Duration(len(s.crashes))
		for _, cr := range s.crashes {
			n := c.nodes[cr.node]
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := m.cl.Crash(ctx, n.addr(), cr.actor)
			cancel()
			if err != nil { // a node busy restarting may not answer: not the harness's fault
				m.j.add("crash %s of node %d: %v", cr.actor, n.id, err)
			} else {
				m.j.add("crashed %s of node %d", cr.actor, n.id)
			}
			time.Sleep(gap)
		}
	case "combo":
		m.check("partition", c.cut(m.pick(s.a), m.pick(s.b)))
		killed := c.nodes[s.bridge]
		m.check("kill", c.kill(killed))
		if cr := s.crashes[0]; cr.node != s.bridge {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := m.cl.Crash(ctx, c.nodes[cr.node].addr(), cr.actor)
			cancel()
			m.j.add("crash %s of node %d: %v", cr.actor, c.nodes[cr.node].id, err)
		}
		time.Sleep(s.hold)
		c.healNetwork()
		m.check("start", c.start(killed))
	case "lag":
		n := c.nodes[m.follower()]
		m.j.add("node %d lags", n.id)
		m.check("kill", c.kill(n))
		time.Sleep(s.hold)
		m.check("start", c.start(n))
		m.lagged++
	case "restart":
		m.check("kill all", c.kill(c.nodes...))
		time.Sleep(s.hold)
		m.check("start all", c.start(c.nodes...))
	case "member":
		m.members++
		m.replace(s.a[0], s.out)
	default:
		panic("nemesis: unknown kind " + s.kind)
	}
}

// replace replaces the node in slot i by a new server (thesis chapter 4),
// under the workload: it starts the new server with --join, then either
// adds it as a learner, promotes it and removes the old one, or (joint)
// replaces the old by the new in one joint-consensus change. The old node
// is stopped and retired; the slot holds the new one from then on. A change
// that is refused (under load the catch-up can run out of rounds) is
// undone: the new server is removed again if it was added, and stopped.
func (m *nemesis) replace(i int, joint bool) {
	c := m.c
	old := c.nodes[i]
	nw, err := c.join()
	if err != nil {
		m.check("join", err)
		return
	}
	change := func(what string, req *pb.MemberRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := m.cl.ChangeMembers(ctx, req)
		if err != nil {
			m.j.add("member %s: %v", what, err)
			return err
		}
		m.j.add("member %s: configuration %d: %s", what, r.ConfigurationIndex, memberList(r.Configuration))
		return nil
	}
	addr := &pb.Member{Id: nw.id, Address: nw.addr(), Role: pb.MemberRole_MEMBER_ROLE_LEARNER}
	var steps []func() error
	if joint {
		addr.Role = pb.MemberRole_MEMBER_ROLE_VOTER
		steps = []func() error{func() error {
			return change(fmt.Sprintf("replace %d=%d", old.id, nw.id), &pb.MemberRequest{Add: []*pb.Member{addr}, Remove: []uint64{old.id}})
		}}
	} else {
		steps = []func() error{
			func() error {
				return change(fmt.Sprintf("add %d as a learner", nw.id), &pb.MemberRequest{Add: []*pb.Member{addr}})
			},
			func() error {
				return change(fmt.Sprintf("promote %d", nw.id), &pb.MemberRequest{Promote: []uint64{nw.id}})
			},
			func() error {
				return change(fmt.Sprintf("remove %d", old.id), &pb.MemberRequest{Remove: []uint64{old.id}})
			},
		}
	}
	for k, step := range steps {
		if err := step(); err != nil {
			if !joint && k == 2 {
				// The new voter is in, the old one could not be removed:
				// a harness failure worth seeing (it has no reason to).
				m.check("remove the replaced node", err)
			}
			if !joint && k == 1 { // the learner was added: take it out again
				_ = change(fmt.Sprintf("undo: remove %d", nw.id), &pb.MemberRequest{Remove: []uint64{nw.id}})
			}
			m.check("stop the unused server", c.kill(nw))
			return
		}
	}
	m.check("stop the removed node", c.kill(old))
	c.mu.Lock()
	c.nodes[i] = nw
	c.retired = slices.DeleteFunc(c.retired, func(n *node) bool { return n == nw })
	c.retired = append(c.retired, old)
	c.mu.Unlock()
	m.check("client addresses", m.cl.SetCluster(c.addrs()))
	m.replaced++
	m.j.add("node %d replaced by node %d (%s)", old.id, nw.id, map[bool]string{true: "joint", false: "learner, promote, remove"}[joint])
}

func memberList(c *pb.Configuration) string {
	if c == nil {
		return "none"
	}
	var s []string
	for _, m := range c.Members {
		s = append(s, fmt.Sprintf("%d=%s", m.Id, strings.TrimPrefix(m.Role.String(), "MEMBER_ROLE_")))
	}
	return strings.Join(s, ",")
}
