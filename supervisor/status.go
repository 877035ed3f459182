package supervisor

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
)

// State is where a supervisor is in its life.
type State int

const (
	// Starting: created or spawned, children not all started yet.
	Starting State = iota
	// Running: every child was started; crashes are being restarted.
	Running
	// Stopping: the children are being stopped (fail-stop, Shutdown or the
	// supervisor's own stop); nothing is restarted any more.
	Stopping
	// Stopped: every child has stopped (or ShutdownTimeout gave up on them).
	Stopped
)

func (s State) String() string {
	switch s {
	case Starting:
		return "starting"
	case Running:
		return "running"
	case Stopping:
		return "stopping"
	case Stopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// ChildStats is what `ketch status` shows for one child.
//
// Restarts counts every restart of the child, including the rest_for_one
// restarts it got because an earlier sibling crashed: from the outside
// that child lost its state just the same. Crashes counts only the child's
// own crashes, and LastCrash is the reason of its own latest crash, never
// a sibling's, so a reader can tell the culprit (Crashes > 0) from the
// collateral (Restarts > Crashes).
type ChildStats struct {
	// Name is the child's name under the supervisor.
	Name string
	// ID is the child's PID id (see ChildID); empty before it was spawned.
	ID string
	// Restarts is how often the child was restarted, for any reason.
	Restarts int
	// Crashes is how often the child itself crashed (panicked, or stopped
	// without being asked to).
	Crashes int
	// LastCrash is the reason of the latest crash as one line of at most
	// 200 characters: the panic value formatted with %v. Empty if none.
	LastCrash string
	// LastCrashAt is when the supervisor handled that crash.
	LastCrashAt time.Time
}

// Status is a snapshot of a supervisor.
type Status struct {
	State State
	// Reason says why the node stopped or is stopping; empty while running
	// and after a requested stop (Shutdown, or stopping the supervisor).
	Reason string
	// Children in start order.
	Children []ChildStats
}

// GetStatus asks the supervisor actor for a snapshot of its Status; it
// answers the sender with a *Status. Use ctx.Request from an actor. Code
// that is not an actor can call Supervisor.Status instead.
type GetStatus struct{}

// Shutdown asks the supervisor for an orderly stop: children are stopped
// one at a time in reverse start order, each after the later one has
// stopped, then the supervisor stops itself and closes Stopped(). OnFailStop
// is not called. (Stopping the supervisor's PID directly also stops
// everything, but protoactor then stops all children at once.)
type Shutdown struct{}

// FailStopped is published on the actor system's EventStream when a
// supervisor gives up, just before OnFailStop is called.
type FailStopped struct {
	Supervisor *actor.PID
	Reason     string
}

// maxReasonLen bounds a crash reason, in runes, so a panic carrying a huge
// value cannot flood `ketch status`.
const maxReasonLen = 200

// formatReason renders a panic value as one line of at most maxReasonLen
// runes: %v, runs of white space (newlines included) folded to one space.
func formatReason(v any) string {
	s := strings.Join(strings.Fields(fmt.Sprint(v)), " ")
	if utf8.RuneCountInString(s) <= maxReasonLen {
		return s
	}
	r := []rune(s)
	return string(r[:maxReasonLen-1]) + "…"
}
