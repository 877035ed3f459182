package supervisor

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

var abcd = []string{"a", "b", "c", "d"}

// TestRestForOne crashes children of a four-child node one after another
// and checks that exactly the crashed child and those started after it are
// restarted (OTP supervisor, rest_for_one), with the statistics `ketch
// status` shows.
func TestRestForOne(t *testing.T) {
	type want struct{ restarts, crashes int }
	tests := []struct {
		name    string
		crashes []string // crashed one after another, each after the last restart settled
		want    map[string]want
	}{
		{
			name:    "middle child restarts itself and the later ones",
			crashes: []string{"b"},
			want:    map[string]want{"a": {0, 0}, "b": {1, 1}, "c": {1, 0}, "d": {1, 0}},
		},
		{
			name:    "last child restarts alone",
			crashes: []string{"d"},
			want:    map[string]want{"a": {0, 0}, "b": {0, 0}, "c": {0, 0}, "d": {1, 1}},
		},
		{
			name:    "first child restarts everyone",
			crashes: []string{"a"},
			want:    map[string]want{"a": {1, 1}, "b": {1, 0}, "c": {1, 0}, "d": {1, 0}},
		},
		{
			name:    "counters add up",
			crashes: []string{"b", "d", "a", "b"},
			want:    map[string]want{"a": {1, 1}, "b": {3, 2}, "c": {3, 0}, "d": {4, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := startNode(t, Config{MaxRestarts: 100}, nil, abcd...)
			inc := map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}
			for step, crashed := range tt.crashes {
				before := len(n.log.matching(" restarting"))
				n.send(crashed, &boom{})
				from := slices.Index(abcd, crashed)
				for _, name := range abcd[from:] {
					n.waitEvent(fmt.Sprintf("%s#%d restarting", name, inc[name]))
					inc[name]++
					n.waitEvent(fmt.Sprintf("%s#%d started", name, inc[name]))
				}
				// Flush any Restart still in flight, then check that only
				// the children from the crashed one on were restarted.
				n.syncAll(fmt.Sprintf("sync%d", step))
				restarting := n.log.matching(" restarting")[before:]
				var got []string
				for _, e := range restarting {
					got = append(got, e[:1])
				}
				slices.Sort(got)
				if want := abcd[from:]; !slices.Equal(got, want) {
					t.Errorf("crash of %s restarted %v, want %v (rest_for_one); log %q", crashed, got, want, n.log.snapshot())
				}
			}
			for _, name := range abcd {
				if got, want := n.log.count(fmt.Sprintf("%s#%d started", name, inc[name])), 1; got != want {
					t.Errorf("%s: incarnation %d started %d times, want %d", name, inc[name], got, want)
				}
			}
			st := n.sup.Status()
			if st.State != Running || st.Reason != "" {
				t.Errorf("status %v %q, want running with no reason", st.State, st.Reason)
			}
			stats := n.sup.Stats()
			for name, w := range tt.want {
				cs := stats[name]
				if cs.Restarts != w.restarts || cs.Crashes != w.crashes {
					t.Errorf("%s: restarts %d crashes %d, want %d and %d", name, cs.Restarts, cs.Crashes, w.restarts, w.crashes)
				}
				wantReason := ""
				if w.crashes > 0 {
					wantReason = "boom in " + name
				}
				if cs.LastCrash != wantReason {
					t.Errorf("%s: last crash %q, want %q (a crash reason belongs to the child that crashed)", name, cs.LastCrash, wantReason)
				}
				if cs.ID != ChildID(nodeID, name) {
					t.Errorf("%s: id %q, want %q", name, cs.ID, ChildID(nodeID, name))
				}
			}
			if n.failStops.Load() != 0 {
				t.Errorf("OnFailStop called %d times, want 0", n.failStops.Load())
			}
		})
	}
}

// TestQueuedMessagesSurviveRestart: the message a child panicked on is not
// redelivered, but the messages queued behind it are handled by the new
// instance; a later sibling first finishes the message it is handling,
// then restarts, then handles what was queued for it.
func TestQueuedMessagesSurviveRestart(t *testing.T) {
	n := startNode(t, Config{MaxRestarts: 100}, nil, "a", "b", "c")
	gateB, releaseB := newGate(t)
	gateC, releaseC := newGate(t)

	// Park both so that the next messages are queued, not handled.
	n.send("b", &hold{gate: gateB})
	n.send("c", &hold{gate: gateC})
	n.waitEvent("b#1 hold")
	n.waitEvent("c#1 hold")
	n.send("b", &boom{})
	n.send("b", &note{text: "behind-boom"})
	n.send("c", &note{text: "queued-in-c"})
	releaseB()
	n.waitEvent("b#2 started")
	releaseC() // c is still inside hold; the supervisor has suspended it and posted its restart
	n.waitEvent("b#2 note behind-boom")
	n.waitEvent("c#2 note queued-in-c")

	if got := n.log.count("b#1 boom") + n.log.count("b#2 boom"); got != 1 {
		t.Errorf("boom handled %d times, want 1 (the panicking message is not redelivered)", got)
	}
	for _, e := range []string{"b#1 note behind-boom", "c#1 note queued-in-c"} {
		if n.log.has(e) {
			t.Errorf("%q: handled by the old instance", e)
		}
	}
	log := n.log.snapshot()
	if i, j := slices.Index(log, "c#1 restarting"), slices.Index(log, "c#2 started"); i < 0 || j < i {
		t.Errorf("c did not see Restarting then Started: %q", log)
	}
	if n.log.has("a#1 restarting") {
		t.Errorf("a was restarted: %q", log)
	}
}

// TestRestartedSiblingServesNoStaleMessages checks the supervisor's
// ordering guarantee: once a rest_for_one restart begins, a later sibling
// handles no user message on its old instance. Child c has a grandchild that
// is slow to stop, so c spends a while restarting; the message it sends
// itself while restarting must wait for its new instance. (protoactor alone
// would hand it to the old instance, which is what a restart without the
// supervisor's SuspendMailbox does.)
func TestRestartedSiblingServesNoStaleMessages(t *testing.T) {
	gate, release := newGate(t)
	elog := &eventLog{}
	grandchild := actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Stopping); ok {
			select {
			case <-gate:
			case <-time.After(2 * waitFor):
			}
		}
	})
	c := childOpts{
		onStarted: func(ctx actor.Context, inc int32) {
			if inc == 1 {
				ctx.Spawn(grandchild)
			}
		},
		onRestarting: func(ctx actor.Context, inc int32) {
			ctx.Send(ctx.Self(), &note{text: "sent-while-restarting"})
		},
		// When c's mailbox goes idle after c#1 saw Restarting, it has had
		// every chance to hand the note to its old instance: only then let
		// the grandchild stop, which lets c's restart finish.
		dispatcher: hookDispatcher{after: func() {
			if elog.has("c#1 restarting") {
				release()
			}
		}},
	}
	n := &node{t: t, system: newSystem(t), log: elog, names: []string{"a", "b", "c"}}
	n.spawn(Config{MaxRestarts: 100}, map[string]childOpts{"c": c}, nil)
	n.waitEvent("c#1 started")

	n.send("b", &boom{})
	eventually(t, func() string { return fmt.Sprintf("c to handle its note; log %q", n.log.snapshot()) }, func() bool {
		return len(n.log.matching(" note sent-while-restarting")) > 0
	})
	if got := n.log.matching(" note sent-while-restarting"); !slices.Equal(got, []string{"c#2 note sent-while-restarting"}) {
		t.Errorf("note handled as %q, want only by c#2: the old instance served a message after its restart began; log %q", got, n.log.snapshot())
	}
}

// TestRestartIntensity: MaxRestarts=3 within 1s. Three crashes are
// restarted; the fourth inside the window stops the node: OnFailStop once,
// with a reason naming the child and its panic, every child stopped in
// reverse start order, Stopped() closed. The window's clock is frozen so
// that all four crashes are inside it however slow the machine.
func TestRestartIntensity(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	n := &node{t: t, system: newSystem(t), log: &eventLog{}, names: abcd}
	n.spawn(Config{MaxRestarts: 3, Within: time.Second}, nil, func(s *Supervisor) { s.now = clock.now })
	n.waitEvent("d#1 started")

	for i := 1; i <= 3; i++ {
		n.send("b", &boom{})
		n.waitEvent(fmt.Sprintf("d#%d started", i+1))
		clock.advance(100 * time.Millisecond)
	}
	n.syncAll("after-three")
	if st := n.sup.Status(); st.State != Running || n.failStops.Load() != 0 {
		t.Fatalf("after 3 crashes: state %v, OnFailStop called %d times; want running and 0", st.State, n.failStops.Load())
	}

	n.send("c", &boom{})
	n.waitStopped()

	if got := n.failStops.Load(); got != 1 {
		t.Errorf("OnFailStop called %d times, want 1", got)
	}
	reason, _ := n.failReason.Load().(string)
	for _, part := range []string{nodeID, `child "c"`, "boom in c", "more than 3 restarts within 1s"} {
		if !strings.Contains(reason, part) {
			t.Errorf("fail-stop reason %q does not mention %q", reason, part)
		}
	}
	if strings.ContainsAny(reason, "\n") {
		t.Errorf("fail-stop reason is not one line: %q", reason)
	}
	st := n.sup.Status()
	if st.State != Stopped || st.Reason != reason {
		t.Errorf("status %v %q, want stopped with the fail-stop reason", st.State, st.Reason)
	}
	// Each child's last incarnation saw Stopped, in reverse start order,
	// and nothing was restarted after the fourth crash.
	var order []string
	for _, e := range n.log.matching(" stopped") {
		order = append(order, e[:1])
	}
	if want := []string{"d", "c", "b", "a"}; !slices.Equal(order, want) {
		t.Errorf("children stopped in order %v, want %v; log %q", order, want, n.log.snapshot())
	}
	log := n.log.snapshot()
	if i := slices.Index(log, "c#4 boom"); i < 0 || slices.ContainsFunc(log[i:], func(e string) bool {
		return strings.HasSuffix(e, " started") || strings.HasSuffix(e, " restarting")
	}) {
		t.Errorf("a child restarted after the crash that exceeded the intensity: %q", log)
	}
	stats := n.sup.Stats()
	if cs := stats["c"]; cs.Crashes != 1 || cs.Restarts != 3 || cs.LastCrash != "boom in c" {
		t.Errorf("c: %+v, want 1 crash (boom in c) and 3 restarts", cs)
	}
	if cs := stats["b"]; cs.Crashes != 3 || cs.Restarts != 3 {
		t.Errorf("b: %+v, want 3 crashes and 3 restarts", cs)
	}
	// The supervisor actor itself goes too.
	eventually(t, func() string { return "the supervisor actor to stop" }, func() bool {
		_, ok := n.system.ProcessRegistry.GetLocal(nodeID)
		return !ok
	})
}

// TestRestartWindowSlides: crashes further apart than Within never add up,
// with the real clock; crashes closer together do.
func TestRestartWindowSlides(t *testing.T) {
	const within = 50 * time.Millisecond
	n := startNode(t, Config{MaxRestarts: 1, Within: within}, nil, "a", "b")
	for i := 1; i <= 3; i++ {
		if i > 1 {
			// Let the previous crash leave the window.
			last := n.sup.Stats()["b"].LastCrashAt
			eventually(t, func() string { return "the restart window to pass" }, func() bool {
				return time.Since(last) > 2*within
			})
		}
		n.send("b", &boom{})
		n.waitEvent(fmt.Sprintf("b#%d started", i+1))
	}
	if st := n.sup.Status(); st.State != Running || n.failStops.Load() != 0 {
		t.Fatalf("3 crashes spaced beyond the window: state %v, %d fail-stops; want running", st.State, n.failStops.Load())
	}

	// Fake clock from here: two crashes in the same instant exceed 1.
	clock := &fakeClock{t: time.Unix(2_000_000, 0)}
	n2 := &node{t: t, system: newSystem(t), log: &eventLog{}, names: []string{"a", "b"}}
	n2.spawn(Config{MaxRestarts: 1, Within: within}, nil, func(s *Supervisor) { s.now = clock.now })
	n2.waitEvent("b#1 started")
	n2.send("b", &boom{})
	n2.waitEvent("b#2 started")
	clock.advance(within) // exactly Within later is outside the window
	n2.send("b", &boom{})
	n2.waitEvent("b#3 started")
	n2.send("b", &boom{})
	n2.waitStopped()
	if got := n2.failStops.Load(); got != 1 {
		t.Errorf("OnFailStop called %d times, want 1", got)
	}
}

// TestNoRestartsAndShutdownTimeout: with NoRestarts the first crash stops
// the node, and a child stuck in its Receive does not keep it from
// reporting itself stopped after ShutdownTimeout.
func TestNoRestartsAndShutdownTimeout(t *testing.T) {
	n := startNode(t, Config{MaxRestarts: NoRestarts, ShutdownTimeout: 100 * time.Millisecond}, nil, "a", "b", "c")
	gate, _ := newGate(t)
	n.send("b", &hold{gate: gate})
	n.waitEvent("b#1 hold")
	n.send("c", &boom{})
	n.waitStopped()

	reason, _ := n.failReason.Load().(string)
	for _, part := range []string{`child "c" crashed: boom in c`, "restarts are disabled", "children [a b] did not stop within 100ms"} {
		if !strings.Contains(reason, part) {
			t.Errorf("fail-stop reason %q does not mention %q", reason, part)
		}
	}
	if n.failStops.Load() != 1 {
		t.Errorf("OnFailStop called %d times, want 1", n.failStops.Load())
	}
	if !n.log.has("c#1 stopped") || n.log.has("c#2 started") {
		t.Errorf("c was not stopped, or was restarted: %q", n.log.snapshot())
	}
}

// TestShutdown stops the node on request: reverse start order, no
// OnFailStop, state stopped with no reason.
func TestShutdown(t *testing.T) {
	n := startNode(t, Config{}, nil, abcd...)
	n.system.Root.Send(n.pid, &Shutdown{})
	n.waitStopped()
	var order []string
	for _, e := range n.log.matching(" stopped") {
		order = append(order, e[:1])
	}
	if want := []string{"d", "c", "b", "a"}; !slices.Equal(order, want) {
		t.Errorf("children stopped in order %v, want %v", order, want)
	}
	if st := n.sup.Status(); st.State != Stopped || st.Reason != "" || n.failStops.Load() != 0 {
		t.Errorf("after Shutdown: state %v reason %q fail-stops %d; want stopped, no reason, none", st.State, st.Reason, n.failStops.Load())
	}
}

// TestStopSupervisorPID: stopping the supervisor's PID (protoactor's way)
// stops every child and closes Stopped without a fail-stop.
func TestStopSupervisorPID(t *testing.T) {
	n := startNode(t, Config{}, nil, abcd...)
	n.system.Root.Stop(n.pid)
	n.waitStopped()
	for _, name := range abcd {
		if !n.log.has(name + "#1 stopped") {
			t.Errorf("%s not stopped: %q", name, n.log.snapshot())
		}
	}
	if st := n.sup.Status(); st.State != Stopped || n.failStops.Load() != 0 {
		t.Errorf("state %v, fail-stops %d; want stopped and none", st.State, n.failStops.Load())
	}
}

// TestChildStoppedUnexpectedly: a child that stops without the supervisor
// asking is a crash: it is spawned again under the same name, and the
// children after it are restarted.
func TestChildStoppedUnexpectedly(t *testing.T) {
	n := startNode(t, Config{}, nil, abcd...)
	n.system.Root.Stop(n.sup.ChildPID("c"))
	n.waitEvent("c#2 started")
	n.waitEvent("d#2 started")
	n.syncAll("after")
	for _, e := range []string{"a#1 restarting", "b#1 restarting", "a#2 started", "b#2 started"} {
		if n.log.has(e) {
			t.Errorf("%q: an earlier child was restarted", e)
		}
	}
	cs := n.sup.Stats()["c"]
	if cs.Crashes != 1 || cs.Restarts != 1 || cs.LastCrash != "stopped unexpectedly" || cs.ID != "raft/1/c" {
		t.Errorf("c: %+v, want one crash 'stopped unexpectedly', one restart, id raft/1/c", cs)
	}
	if pid := n.sup.ChildPID("c"); pid.Id != "raft/1/c" {
		t.Errorf("respawned c has id %q", pid.Id)
	}
}

// TestChildSpawnFails: a child that cannot be spawned (its name is taken)
// fail-stops the node after stopping the children already started.
func TestChildSpawnFails(t *testing.T) {
	system := newSystem(t)
	squatter, err := system.Root.SpawnNamed(actor.PropsFromFunc(func(actor.Context) {}), ChildID(nodeID, "b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { system.Root.Stop(squatter) })
	n := &node{t: t, system: system, log: &eventLog{}, names: []string{"a", "b", "c"}}
	n.spawn(Config{}, nil, nil)
	n.waitStopped()
	reason, _ := n.failReason.Load().(string)
	if !strings.Contains(reason, `starting child "b"`) || !strings.Contains(reason, "name exists") {
		t.Errorf("reason %q does not say that b could not be started", reason)
	}
	if !n.log.has("a#1 stopped") || n.log.has("c#1 started") {
		t.Errorf("a should have been started and stopped, c never started: %q", n.log.snapshot())
	}
	select {
	case <-n.sup.Ready():
		t.Error("Ready closed although a child could not be started")
	default:
	}
}

// TestNamesAndStatusMessage: children's ids follow ChildID, a child finds
// its siblings with Sibling, and GetStatus answers an actor with the same
// snapshot Status gives.
func TestNamesAndStatusMessage(t *testing.T) {
	n := startNode(t, Config{}, nil, "store", "fsm")
	if got := ChildID("raft/7", "fsm"); got != "raft/7/fsm" {
		t.Errorf("ChildID = %q", got)
	}
	for _, name := range n.names {
		if pid := n.sup.ChildPID(name); pid == nil || pid.Id != ChildID(nodeID, name) {
			t.Errorf("ChildPID(%q) = %v, want id %q", name, pid, ChildID(nodeID, name))
		}
	}
	if n.sup.ChildPID("nope") != nil {
		t.Error("ChildPID of an unknown name is not nil")
	}
	n.send("fsm", &whois{sibling: "store"})
	n.waitEvent("fsm#1 sibling raft/1/store")

	n.send("fsm", &boom{})
	n.waitEvent("fsm#2 started")
	replies := make(chan *Status, 1)
	probe := n.system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *actor.Started:
			ctx.Request(n.pid, &GetStatus{})
		case *Status:
			replies <- m
		}
	}))
	t.Cleanup(func() { n.system.Root.Stop(probe) })
	select {
	case got := <-replies:
		want := n.sup.Status()
		if got.State != Running || fmt.Sprint(got.Children) != fmt.Sprint(want.Children) {
			t.Errorf("GetStatus answered %+v, Status() is %+v", got, want)
		}
		if cs := got.Children[1]; cs.Name != "fsm" || cs.Crashes != 1 || cs.LastCrash != "boom in fsm" {
			t.Errorf("fsm stats %+v", cs)
		}
	case <-time.After(waitFor):
		t.Fatal("no answer to GetStatus")
	}
}

// TestSpawnTwice: the second spawn of the same Supervisor's Props stops
// itself and starts no children.
func TestSpawnTwice(t *testing.T) {
	n := startNode(t, Config{}, nil, "a")
	dup, err := n.system.Root.SpawnNamed(n.sup.Props(), "raft/2")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, func() string { return "the duplicate to stop" }, func() bool {
		_, ok := n.system.ProcessRegistry.GetLocal(dup.Id)
		return !ok
	})
	if _, ok := n.system.ProcessRegistry.GetLocal("raft/2/a"); ok {
		t.Error("the duplicate started a child")
	}
	if st := n.sup.Status(); st.State != Running || n.sup.ChildPID("a").Id != "raft/1/a" {
		t.Errorf("the original was disturbed: %+v", st)
	}
}

func TestConfigValidate(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MaxRestarts != DefaultMaxRestarts || c.Within != DefaultWithin || c.ShutdownTimeout != DefaultShutdownTimeout || c.Logger == nil {
		t.Errorf("defaults not filled in: %+v", c)
	}
	c = Config{MaxRestarts: -7}
	if err := c.Validate(); err != nil || c.MaxRestarts != NoRestarts {
		t.Errorf("negative MaxRestarts: %v, %d; want NoRestarts", err, c.MaxRestarts)
	}
	for _, bad := range []Config{{Within: -time.Second}, {ShutdownTimeout: -time.Second}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}

func TestNewRejectsBadChildren(t *testing.T) {
	p := actor.PropsFromFunc(func(actor.Context) {})
	tests := []struct {
		name     string
		children []Child
		want     string
	}{
		{"none", nil, "no children"},
		{"empty name", []Child{{Name: "", Props: p}}, "no name"},
		{"slash", []Child{{Name: "raft/1/fsm", Props: p}}, "contains '/'"},
		{"dollar", []Child{{Name: "$1", Props: p}}, "reserves"},
		{"duplicate", []Child{{Name: "a", Props: p}, {Name: "a", Props: p}}, "used twice"},
		{"no props", []Child{{Name: "a"}}, "no Props"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{}, tt.children...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestFormatReason(t *testing.T) {
	long := strings.Repeat("é", 300)
	tests := []struct {
		in   any
		want string
	}{
		{"boom", "boom"},
		{fmt.Errorf("fsync: %w", fmt.Errorf("input/output error")), "fsync: input/output error"},
		{"line one\n\tline two  ", "line one line two"},
		{long, strings.Repeat("é", maxReasonLen-1) + "…"},
	}
	for _, tt := range tests {
		if got := formatReason(tt.in); got != tt.want {
			t.Errorf("formatReason(%.20q) = %.40q, want %.40q", tt.in, got, tt.want)
		}
	}
}
