package supervisor

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Supervisor supervises one node's children with OTP's rest_for_one
// strategy. Create it with New, spawn Props() once, and read its state from
// any goroutine with Status, Stats, ChildPID, Ready and Stopped.
type Supervisor struct {
	cfg      Config
	children []Child // start order; never changes

	// now is the clock of the restart window; tests replace it.
	now func() time.Time
	// spawned is set by the first spawn of Props(); a second spawn is refused.
	spawned atomic.Bool

	mu     sync.Mutex // guards the fields below: written by the actor, read by anyone
	self   *actor.PID
	pids   []*actor.PID
	stats  []ChildStats
	state  State
	reason string
	failed bool // the stop under way or done is a fail-stop

	ready      chan struct{}
	readyOnce  sync.Once
	stopped    chan struct{}
	finishOnce sync.Once
}

// New checks cfg and children and returns a supervisor ready to be spawned.
// Children are started in the order given, which should be dependency
// order: a child may rely on every child before it (see the package doc).
func New(cfg Config, children ...Child) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := validateChildren(children); err != nil {
		return nil, err
	}
	s := &Supervisor{
		cfg:      cfg,
		children: append([]Child(nil), children...),
		now:      time.Now,
		pids:     make([]*actor.PID, len(children)),
		stats:    make([]ChildStats, len(children)),
		ready:    make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	for i, c := range children {
		s.stats[i].Name = c.Name
	}
	return s, nil
}

// Props spawn the supervisor actor. Spawn them exactly once, with a stable
// name (system.Root.SpawnNamed(s.Props(), "raft/1")): the children's PID ids
// are that id plus "/" plus their names. A second spawn stops itself at
// once and logs an error, because one Supervisor keeps one node's state.
func (s *Supervisor) Props() *actor.Props {
	return actor.PropsFromProducer(
		func() actor.Actor { return &supervisorActor{s: s} },
		actor.WithOnInit(func(ctx actor.Context) {
			// OnInit runs once per spawn, not on restarts.
			if s.spawned.Swap(true) {
				if a, ok := ctx.Actor().(*supervisorActor); ok {
					a.rejected = true
				}
			}
		}),
	)
}

// Ready is closed once every child has been spawned. A child's own Started
// handler may still be running then; messages sent to it wait in its
// mailbox. If a child cannot be spawned, Ready stays open and Stopped closes.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Stopped is closed when the node has stopped: after a fail-stop (then
// OnFailStop has already returned), a Shutdown, or a stop of the
// supervisor's PID. Status().Reason tells which.
func (s *Supervisor) Stopped() <-chan struct{} { return s.stopped }

// ChildPID is the current PID of the child called name, or nil before the
// supervisor has spawned it (or for an unknown name). The PID stays the same
// across restarts. After the node stopped it refers to a stopped actor.
func (s *Supervisor) ChildPID(name string) *actor.PID {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.children {
		if c.Name == name {
			return s.pids[i]
		}
	}
	return nil
}

// Status is a snapshot of the supervisor's state and per-child statistics,
// safe to call from any goroutine.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{
		State:    s.state,
		Reason:   s.reason,
		Children: append([]ChildStats(nil), s.stats...),
	}
}

// Stats is the per-child statistics keyed by child name, safe to call from
// any goroutine.
func (s *Supervisor) Stats() map[string]ChildStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]ChildStats, len(s.stats))
	for _, st := range s.stats {
		m[st.Name] = st
	}
	return m
}

// The setters below are called by the supervisor actor only.

func (s *Supervisor) setState(st State, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.reason = st, reason
}

// setSelf records a new incarnation of the supervisor actor. It reports
// whether the node may start: not if a stop was already decided (an earlier
// incarnation crashed while stopping the node; protoactor has stopped the
// children since). Then it returns the reason and whether it was a failure.
func (s *Supervisor) setSelf(self *actor.PID) (ok bool, reason string, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.self = self
	if s.state >= Stopping {
		return false, s.reason, s.failed
	}
	s.state, s.reason = Starting, ""
	return true, "", false
}

func (s *Supervisor) beginStop(reason string, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.reason, s.failed = Stopping, reason, failed
}

func (s *Supervisor) setPID(i int, pid *actor.PID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pids[i] = pid
	s.stats[i].ID = pid.Id
}

func (s *Supervisor) recordCrash(i int, reason string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats[i].Crashes++
	s.stats[i].LastCrash = reason
	s.stats[i].LastCrashAt = at
}

func (s *Supervisor) recordRestarts(from int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := from; i < len(s.stats); i++ {
		s.stats[i].Restarts++
	}
}

// finish records the end of the node, calls OnFailStop if it failed, and
// closes Stopped, all at most once.
func (s *Supervisor) finish(system *actor.ActorSystem, reason string, failed bool, log *slog.Logger) {
	s.finishOnce.Do(func() {
		s.mu.Lock()
		s.state, s.reason = Stopped, reason
		self := s.self
		s.mu.Unlock()
		if failed {
			system.EventStream.Publish(&FailStopped{Supervisor: self, Reason: reason})
			if s.cfg.OnFailStop != nil {
				func() {
					// A panicking callback must not make the supervisor
					// crash and be restarted by its own parent.
					defer func() {
						if r := recover(); r != nil {
							log.Error("supervisor: OnFailStop panicked", "reason", formatReason(r))
						}
					}()
					s.cfg.OnFailStop(reason)
				}()
			}
		}
		close(s.stopped)
	})
}

// phase is the supervisor actor's own view of where it is; Status.State is
// the published one.
type phase int

const (
	phaseStarting     phase = iota
	phaseRunning            // restarting crashed children
	phaseShuttingDown       // stopping children one by one, in reverse order
	phaseStopping           // protoactor is stopping or restarting us and stops the children itself
	phaseDone               // finished; waiting for nothing
)

// shutdownTimedOut is sent to the supervisor by its ShutdownTimeout timer.
type shutdownTimedOut struct{}

// supervisorActor is one incarnation of the supervisor actor. Everything in
// it belongs to the actor's goroutine: Receive and HandleFailure both run
// there (protoactor calls HandleFailure while processing the *actor.Failure
// system message), so no locks are needed. What other goroutines may read
// is published into the Supervisor under its mutex.
type supervisorActor struct {
	s        *Supervisor
	rejected bool // a second spawn of the same Supervisor

	ctx   actor.Context
	log   *slog.Logger
	phase phase

	// Our own ordered view of the children (Children() is a set whose
	// order changes as children come and go).
	pids     []*actor.PID
	alive    []bool // spawned and not yet seen Terminated
	stopSent []bool

	// crashes are the times of the crash events inside the restart window.
	crashes []time.Time

	// The orderly stop in progress.
	reason string
	failed bool
	timer  *time.Timer
}

var _ actor.SupervisorStrategy = (*supervisorActor)(nil)

// Receive handles the supervisor's lifecycle and its requests.
func (a *supervisorActor) Receive(ctx actor.Context) {
	if a.rejected {
		if _, ok := ctx.Message().(*actor.Started); ok {
			a.s.cfg.Logger.Error("supervisor: Props spawned a second time; stopping the duplicate", "actor", ctx.Self().Id)
			ctx.Stop(ctx.Self())
		}
		return
	}
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case *actor.Restarting:
		// Our own parent restarts us (our Receive or HandleFailure
		// panicked, which they are written never to do). protoactor stops
		// every child, then a fresh incarnation gets Started and starts them
		// again: the whole subtree restarts, as in OTP. A stop already
		// decided stands (see setSelf).
		if a.phase < phaseShuttingDown {
			a.phase = phaseStopping
			a.s.setState(Starting, "")
		}
	case *actor.Stopping:
		if a.phase < phaseShuttingDown {
			// Someone stopped our PID; protoactor stops all children at once.
			a.phase = phaseStopping
			a.s.beginStop("", false)
		}
	case *actor.Stopped:
		a.finish("", false)
	case *actor.Terminated:
		a.terminated(msg.Who)
	case *GetStatus:
		st := a.s.Status()
		ctx.Respond(&st)
	case *Shutdown:
		a.shutdown("", false)
	case *shutdownTimedOut:
		a.shutdownTimedOut()
	}
}

// start spawns the children in order. protoactor's SpawnNamed registers a
// child and posts its Started before returning, so by the time a child
// handles Started every child before it is registered and can be sent to.
func (a *supervisorActor) start(ctx actor.Context) {
	a.ctx = ctx
	a.log = a.s.cfg.Logger.With("actor", ctx.Self().Id)
	a.phase = phaseStarting
	if ok, reason, failed := a.s.setSelf(ctx.Self()); !ok {
		// Never start the node again once it was decided to stop it.
		a.reason, a.failed = reason, failed
		a.finish("", true)
		return
	}
	n := len(a.s.children)
	a.pids = make([]*actor.PID, n)
	a.alive = make([]bool, n)
	a.stopSent = make([]bool, n)
	a.crashes = nil
	for i := range a.s.children {
		if err := a.spawn(i); err != nil {
			a.shutdown(fmt.Sprintf("%s: starting child %q: %v", ctx.Self().Id, a.s.children[i].Name, err), true)
			return
		}
	}
	a.phase = phaseRunning
	a.s.setState(Running, "")
	a.s.readyOnce.Do(func() { close(a.s.ready) })
}

// spawn starts child i under its stable name, turning a panic in protoactor's
// spawn (bad Props) into an error.
func (a *supervisorActor) spawn(i int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("spawn panicked: %s", formatReason(r))
		}
	}()
	pid, err := a.ctx.SpawnNamed(a.s.children[i].Props, a.s.children[i].Name)
	if err != nil {
		return err
	}
	a.pids[i], a.alive[i], a.stopSent[i] = pid, true, false
	a.s.setPID(i, pid)
	return nil
}

// HandleFailure implements actor.SupervisorStrategy. protoactor calls it,
// on this actor's goroutine, when a child panics in its Receive: the child's
// mailbox is already suspended and the message it panicked on is gone
// (it is never redelivered).
func (a *supervisorActor) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, _ any) {
	i := a.indexOf(child)
	if i < 0 {
		// Only our children can report to us; stop a stranger rather than guess.
		a.log.Error("supervisor: failure from an unknown child; stopping it", "child", child.String(), "reason", formatReason(reason))
		sup.StopChildren(child)
		return
	}
	why := formatReason(reason)
	a.s.recordCrash(i, why, a.s.now())
	if a.phase != phaseRunning {
		// Stopping: nothing restarts. The child stays suspended until the
		// Stop we send (or protoactor sends) reaches it.
		return
	}
	a.restartFrom(i, fmt.Sprintf("child %q crashed: %s", a.s.children[i].Name, why), reason, false)
}

// terminated handles a child's Terminated: the next step of an orderly stop,
// or, while running, a child that stopped without being asked, which is a
// crash like any other (OTP restarts a permanent child whatever its exit
// reason).
func (a *supervisorActor) terminated(who *actor.PID) {
	i := a.indexOf(who)
	if i < 0 {
		return
	}
	a.alive[i] = false
	switch a.phase {
	case phaseRunning:
		const why = "stopped unexpectedly"
		a.s.recordCrash(i, why, a.s.now())
		a.restartFrom(i, fmt.Sprintf("child %q %s", a.s.children[i].Name, why), why, true)
	case phaseShuttingDown:
		a.stopNext()
	}
}

// restartFrom is rest_for_one (OTP supervisor): child i crashed, so child i
// and every child started after it are restarted; the children before it
// are left alone. The crash counts once against the restart intensity; past
// it the node fail-stops instead. respawn is set when child i is gone
// altogether (it stopped) and must be spawned again rather than restarted.
func (a *supervisorActor) restartFrom(i int, desc string, reason any, respawn bool) {
	self := a.ctx.Self()
	now := a.s.now()
	if a.intensityExceeded(now) {
		a.publish(a.pids[i], reason, actor.StopDirective)
		limit := "restarts are disabled"
		if a.s.cfg.MaxRestarts > 0 {
			limit = fmt.Sprintf("more than %d restarts within %v", a.s.cfg.MaxRestarts, a.s.cfg.Within)
		}
		a.shutdown(fmt.Sprintf("%s: %s; %s, stopping the node", self.Id, desc, limit), true)
		return
	}
	names := make([]string, 0, len(a.pids)-i)
	for j := i; j < len(a.pids); j++ {
		names = append(names, a.s.children[j].Name)
	}
	a.log.Warn("supervisor: restarting (rest_for_one)", "reason", desc, "restart", names,
		"restarts_in_window", len(a.crashes))
	a.publish(a.pids[i], reason, actor.RestartDirective)

	// 1. Suspend every later child before restarting anything. System
	// messages are handled before user messages and in order, so from here
	// on each of them handles no user message until its Restart has given
	// it a fresh instance: whatever a restarted child sends a later sibling,
	// even from its Started handler, is handled by the sibling's new
	// incarnation. (Child i is already suspended if it crashed.) Without
	// this a sibling could hand a message to its stale instance: one sent
	// by an already restarted child before the sibling's Restart arrives,
	// or any message while it waits for its own children to stop (both
	// happen with protoactor's AllForOne strategy).
	for j := i + 1; j < len(a.pids); j++ {
		if a.alive[j] {
			a.sendSystem(a.pids[j], &actor.SuspendMailbox{})
		}
	}
	// 2. Restart in start order. Each child then gets *actor.Restarting (old
	// instance), its own children are stopped, and a new instance gets
	// *actor.Started; then its mailbox resumes with the messages still
	// queued in it. The restarts run concurrently on the children's own
	// goroutines; see the package doc for why start order is kept anyway.
	if respawn {
		if err := a.spawn(i); err != nil {
			a.shutdown(fmt.Sprintf("%s: %s; restarting it failed: %v", self.Id, desc, err), true)
			return
		}
	} else {
		a.sendSystem(a.pids[i], &actor.Restart{})
	}
	for j := i + 1; j < len(a.pids); j++ {
		if a.alive[j] {
			a.sendSystem(a.pids[j], &actor.Restart{})
		}
	}
	a.s.recordRestarts(i)
}

// intensityExceeded records a crash at now and reports whether it is one
// too many: OTP's restart intensity, more than MaxRestarts restarts within
// the last Within, counted for the whole node.
func (a *supervisorActor) intensityExceeded(now time.Time) bool {
	kept := a.crashes[:0]
	for _, t := range a.crashes {
		if now.Sub(t) < a.s.cfg.Within {
			kept = append(kept, t)
		}
	}
	a.crashes = append(kept, now)
	return len(a.crashes) > max(a.s.cfg.MaxRestarts, 0)
}

// shutdown begins the orderly stop: no more restarts, children stopped one
// at a time in reverse start order (OTP terminates children in reverse start
// order and waits for each), then finish. failed marks a fail-stop.
func (a *supervisorActor) shutdown(reason string, failed bool) {
	if a.phase >= phaseShuttingDown {
		return // already stopping: the first reason stands
	}
	a.phase = phaseShuttingDown
	a.reason, a.failed = reason, failed
	a.s.beginStop(reason, failed)
	if failed {
		a.log.Error("supervisor: fail-stop", "reason", reason)
	} else {
		a.log.Info("supervisor: shutting down")
	}
	system, self := a.ctx.ActorSystem(), a.ctx.Self()
	a.timer = time.AfterFunc(a.s.cfg.ShutdownTimeout, func() {
		system.Root.Send(self, &shutdownTimedOut{})
	})
	a.stopNext()
}

// stopNext stops the last child still alive, or finishes when none is left.
func (a *supervisorActor) stopNext() {
	for j := len(a.pids) - 1; j >= 0; j-- {
		if !a.alive[j] {
			continue
		}
		if !a.stopSent[j] {
			a.stopSent[j] = true
			a.ctx.Stop(a.pids[j])
		}
		return // wait for its Terminated
	}
	a.finish("", true)
}

// shutdownTimedOut gives up on children that did not stop in time.
func (a *supervisorActor) shutdownTimedOut() {
	if a.phase != phaseShuttingDown {
		return
	}
	var stuck []string
	for j := range a.pids {
		if a.alive[j] {
			stuck = append(stuck, a.s.children[j].Name)
		}
	}
	a.finish(fmt.Sprintf("children %v did not stop within %v", stuck, a.s.cfg.ShutdownTimeout), true)
}

// finish ends the node: state Stopped, OnFailStop if it failed, Stopped()
// closed. stopSelf is set when the stop was ours; then the supervisor
// actor stops itself too, leaving nothing of the node running.
func (a *supervisorActor) finish(extra string, stopSelf bool) {
	if a.phase == phaseDone || a.ctx == nil {
		return
	}
	a.phase = phaseDone
	if a.timer != nil {
		a.timer.Stop()
	}
	reason := a.reason
	if extra != "" {
		reason = strings.TrimPrefix(reason+"; "+extra, "; ")
	}
	a.s.finish(a.ctx.ActorSystem(), reason, a.failed, a.log)
	if stopSelf {
		a.ctx.Stop(a.ctx.Self())
	}
}

func (a *supervisorActor) indexOf(pid *actor.PID) int {
	for i, p := range a.pids {
		if p != nil && p.Address == pid.Address && p.Id == pid.Id {
			return i
		}
	}
	return -1
}

// sendSystem posts a system message (Suspend, Restart) to a local child.
// actor.Supervisor.RestartChildren does the same for Restart; suspending has
// no such method, so both go through the process registry.
func (a *supervisorActor) sendSystem(pid *actor.PID, msg any) {
	proc, _ := a.ctx.ActorSystem().ProcessRegistry.Get(pid)
	proc.SendSystemMessage(pid, msg)
}

// publish announces a decision on the EventStream as protoactor's own
// strategies do, so its supervision logging and tools see it.
func (a *supervisorActor) publish(child *actor.PID, reason any, d actor.Directive) {
	a.ctx.ActorSystem().EventStream.Publish(&actor.SupervisorEvent{Child: child, Reason: reason, Directive: d})
}
