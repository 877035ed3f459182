package supervisor

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// waitFor bounds every wait in these tests; nothing sleeps a fixed time.
const waitFor = 5 * time.Second

// eventLog is the shared, mutex-guarded record of what the test children saw,
// as "name#incarnation event" lines.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(name string, inc int32, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf("%s#%d %s", name, inc, fmt.Sprintf(format, args...)))
}

func (l *eventLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

func (l *eventLog) has(event string) bool { return l.count(event) > 0 }

func (l *eventLog) count(event string) int {
	n := 0
	for _, e := range l.snapshot() {
		if e == event {
			n++
		}
	}
	return n
}

// matching returns the events that end with suffix, in order.
func (l *eventLog) matching(suffix string) []string {
	var out []string
	for _, e := range l.snapshot() {
		if strings.HasSuffix(e, suffix) {
			out = append(out, e)
		}
	}
	return out
}

// Messages the test children understand.
type (
	boom  struct{}                     // panic
	note  struct{ text string }        // log "note <text>"
	hold  struct{ gate chan struct{} } // log "hold", then block until gate closes
	whois struct{ sibling string }     // log the sibling's PID id
)

// childOpts customise a test child.
type childOpts struct {
	onStarted    func(ctx actor.Context, inc int32)
	onRestarting func(ctx actor.Context, inc int32)
	dispatcher   actor.Dispatcher
}

// testChild records its lifecycle in the log and panics on boom.
type testChild struct {
	name string
	inc  int32 // incarnation: 1 for the first instance, +1 per restart
	log  *eventLog
	opts childOpts
}

func (c *testChild) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.log.add(c.name, c.inc, "started")
		if c.opts.onStarted != nil {
			c.opts.onStarted(ctx, c.inc)
		}
	case *actor.Restarting:
		c.log.add(c.name, c.inc, "restarting")
		if c.opts.onRestarting != nil {
			c.opts.onRestarting(ctx, c.inc)
		}
	case *actor.Stopping:
		c.log.add(c.name, c.inc, "stopping")
	case *actor.Stopped:
		c.log.add(c.name, c.inc, "stopped")
	case *boom:
		c.log.add(c.name, c.inc, "boom")
		panic(fmt.Sprintf("boom in %s", c.name))
	case *note:
		c.log.add(c.name, c.inc, "note %s", m.text)
	case *hold:
		c.log.add(c.name, c.inc, "hold")
		select {
		case <-m.gate:
		case <-time.After(2 * waitFor):
		}
	case *whois:
		c.log.add(c.name, c.inc, "sibling %s", Sibling(ctx, m.sibling).Id)
	}
}

func childProps(name string, log *eventLog, opts childOpts) *actor.Props {
	var incarnations atomic.Int32
	producer := func() actor.Actor {
		return &testChild{name: name, inc: incarnations.Add(1), log: log, opts: opts}
	}
	if opts.dispatcher != nil {
		return actor.PropsFromProducer(producer, actor.WithDispatcher(opts.dispatcher))
	}
	return actor.PropsFromProducer(producer)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newSystem is an actor system that logs nowhere (protoactor logs every
// recovered panic at Info).
func newSystem(t *testing.T) *actor.ActorSystem {
	t.Helper()
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return discardLogger() }))
}

// node is a running supervisor with test children.
type node struct {
	t      *testing.T
	system *actor.ActorSystem
	sup    *Supervisor
	pid    *actor.PID
	log    *eventLog
	names  []string
	// failStops counts OnFailStop calls; failReason is the last reason.
	failStops  atomic.Int32
	failReason atomic.Value
}

const nodeID = "raft/1"

// startNode spawns a supervisor named nodeID over children with the given
// names (options per name in opts), waits until every child has started,
// and stops the node when the test ends.
func startNode(t *testing.T, cfg Config, opts map[string]childOpts, names ...string) *node {
	t.Helper()
	n := &node{t: t, system: newSystem(t), log: &eventLog{}, names: names}
	n.spawn(cfg, opts, nil)
	select {
	case <-n.sup.Ready():
	case <-time.After(waitFor):
		t.Fatalf("supervisor not ready after %v; status %+v", waitFor, n.sup.Status())
	}
	for _, name := range names {
		n.waitEvent(name + "#1 started")
	}
	return n
}

// spawn creates and spawns the supervisor; before runs between New and the
// spawn (to replace the clock).
func (n *node) spawn(cfg Config, opts map[string]childOpts, before func(*Supervisor)) {
	t := n.t
	t.Helper()
	cfg.Logger = discardLogger()
	cfg.OnFailStop = func(reason string) {
		n.failStops.Add(1)
		n.failReason.Store(reason)
	}
	children := make([]Child, len(n.names))
	for i, name := range n.names {
		children[i] = Child{Name: name, Props: childProps(name, n.log, opts[name])}
	}
	sup, err := New(cfg, children...)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(sup)
	}
	n.sup = sup
	pid, err := n.system.Root.SpawnNamed(sup.Props(), nodeID)
	if err != nil {
		t.Fatal(err)
	}
	n.pid = pid
	t.Cleanup(func() {
		n.system.Root.Send(pid, &Shutdown{})
		select {
		case <-sup.Stopped():
		case <-time.After(waitFor):
			t.Errorf("supervisor did not stop at the end of the test; status %+v", sup.Status())
		}
	})
}

func (n *node) send(name string, msg any) {
	n.t.Helper()
	pid := n.sup.ChildPID(name)
	if pid == nil {
		n.t.Fatalf("no PID for child %q", name)
	}
	n.system.Root.Send(pid, msg)
}

// eventually polls cond until it holds or waitFor passes; what describes
// the wait (evaluated only on failure, so it can show the latest state).
func eventually(t *testing.T, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitFor, what())
		}
		time.Sleep(time.Millisecond)
	}
}

func (n *node) waitEvent(event string) {
	n.t.Helper()
	eventually(n.t, func() string { return fmt.Sprintf("%q; log: %q", event, n.log.snapshot()) },
		func() bool { return n.log.has(event) })
}

// syncAll sends a note to every child still running and waits until each
// has handled it. A mailbox handles system messages (Restart among them)
// before user messages, so afterwards every Restart the supervisor posted
// before the call has been handled.
func (n *node) syncAll(tag string) {
	n.t.Helper()
	for _, name := range n.names {
		n.send(name, &note{text: tag})
	}
	for _, name := range n.names {
		what := func() string { return fmt.Sprintf("%s to handle %q; log: %q", name, tag, n.log.snapshot()) }
		eventually(n.t, what, func() bool {
			return slices.ContainsFunc(n.log.matching(" note "+tag), func(e string) bool {
				return strings.HasPrefix(e, name+"#")
			})
		})
	}
}

func (n *node) waitStopped() {
	n.t.Helper()
	select {
	case <-n.sup.Stopped():
	case <-time.After(waitFor):
		n.t.Fatalf("Stopped() not closed after %v; status %+v; log %q", waitFor, n.sup.Status(), n.log.snapshot())
	}
}

// fakeClock is a settable clock for the restart window.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// hookDispatcher runs each mailbox batch on a new goroutine, like
// protoactor's default, and calls after once the batch is done.
type hookDispatcher struct{ after func() }

func (d hookDispatcher) Schedule(fn func()) {
	go func() {
		fn()
		d.after()
	}()
}

func (d hookDispatcher) Throughput() int { return 300 }

// newGate is a channel to block a child on, and its idempotent release,
// which also runs when the test ends.
func newGate(t *testing.T) (chan struct{}, func()) {
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return gate, release
}
