package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Defaults for the zero fields of Config.
const (
	// DefaultMaxRestarts and DefaultWithin are the node's restart intensity:
	// at most 5 restarts in 10 seconds (ARCHITECTURE §5). OTP's own default
	// is 1 in 5 seconds; a Raft node's children reload their state from disk
	// or from a sibling, so a few more tries are cheap and still bounded.
	DefaultMaxRestarts = 5
	DefaultWithin      = 10 * time.Second
	// DefaultShutdownTimeout bounds how long stopping all children may take,
	// like OTP's shutdown value for workers (5000 ms), but for the whole
	// node rather than per child.
	DefaultShutdownTimeout = 5 * time.Second
)

// NoRestarts as Config.MaxRestarts allows no restart at all: the first crash
// stops the node (OTP's intensity 0).
const NoRestarts = -1

// Config is a supervisor's restart policy. Zero fields take the defaults
// documented on each; Validate fills them in and reports what is wrong.
type Config struct {
	// MaxRestarts is how many restarts the node may make within Within. The
	// crash that would be restart number MaxRestarts+1 inside the window
	// stops the node instead (OTP's intensity). Each crash counts once,
	// however many children its rest_for_one restart takes down.
	// Default 5; NoRestarts (or any negative value) means none.
	MaxRestarts int
	// Within is the sliding window over which restarts are counted
	// (OTP's period). Default 10s.
	Within time.Duration
	// ShutdownTimeout bounds the orderly stop of all children, on a
	// fail-stop or a Shutdown. A child that has not stopped by then (stuck
	// in its Receive, or panicking in its Stopping handler) is given up on:
	// the reason says so and the supervisor reports itself stopped anyway.
	// Go cannot kill a goroutine, so this is the nearest thing to OTP's
	// brutal_kill: the process is expected to exit. Default 5s.
	ShutdownTimeout time.Duration
	// OnFailStop is called once, with a one-line reason naming the child and
	// its crash, when the node gives up: restart intensity exceeded or a
	// child could not be (re)started. It runs on the supervisor's goroutine
	// after every child has stopped (or ShutdownTimeout expired) and before
	// Stopped() is closed. The ketch binary exits non-zero here so that an
	// outer supervisor (systemd, a container runtime) takes over. It must
	// not wait for the supervisor. Nil means only Stopped() tells.
	OnFailStop func(reason string)
	// Logger receives a Warn for every restart and an Error for a fail-stop
	// (never anything per message). Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.MaxRestarts == 0 {
		c.MaxRestarts = DefaultMaxRestarts
	}
	if c.MaxRestarts < 0 {
		c.MaxRestarts = NoRestarts
	}
	if c.Within == 0 {
		c.Within = DefaultWithin
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate fills in defaults for zero fields and reports the first problem.
func (c *Config) Validate() error {
	c.setDefaults()
	if c.Within < 0 {
		return fmt.Errorf("supervisor: Within is %v; use a positive duration (or 0 for the default %v)", c.Within, DefaultWithin)
	}
	if c.ShutdownTimeout < 0 {
		return fmt.Errorf("supervisor: ShutdownTimeout is %v; use a positive duration (or 0 for the default %v)", c.ShutdownTimeout, DefaultShutdownTimeout)
	}
	return nil
}

// Child is one supervised actor: a permanent worker in OTP's terms (it is
// restarted whatever the reason it died).
type Child struct {
	// Name is the child's name under the supervisor: one path segment such
	// as "store" or "fsm". Its PID id is ChildID(supervisor id, Name).
	Name string
	// Props spawn the child. Its producer must return a fresh actor on every
	// call: a restart throws the old instance away and asks for a new one,
	// and a producer that hands back the same instance restarts nothing.
	Props *actor.Props
}

func validateChildren(children []Child) error {
	if len(children) == 0 {
		return errors.New("supervisor: no children to supervise")
	}
	seen := make(map[string]bool, len(children))
	for i, c := range children {
		switch {
		case c.Name == "":
			return fmt.Errorf("supervisor: child %d has no name", i)
		case strings.Contains(c.Name, "/"):
			return fmt.Errorf("supervisor: child name %q contains '/'; use one path segment (the supervisor's own name carries the prefix)", c.Name)
		case strings.HasPrefix(c.Name, "$"):
			return fmt.Errorf("supervisor: child name %q starts with '$', which protoactor reserves for generated names", c.Name)
		case seen[c.Name]:
			return fmt.Errorf("supervisor: child name %q is used twice", c.Name)
		case c.Props == nil:
			return fmt.Errorf("supervisor: child %q has no Props", c.Name)
		}
		seen[c.Name] = true
	}
	return nil
}

// ChildID is the PID id a child named name gets under a supervisor whose
// PID id is supervisorID: protoactor's SpawnNamed, called from an actor,
// prefixes the name with the spawning actor's id and a slash. A supervisor
// spawned from the root context with system.Root.SpawnNamed(props, "raft/1")
// has the id "raft/1", so its child "fsm" is "raft/1/fsm", and a peer
// addresses it as actor.NewPID(addr, ChildID("raft/1", "fsm")) with nothing
// but the node's configuration.
func ChildID(supervisorID, name string) string {
	return supervisorID + "/" + name
}

// Sibling is the PID of the child called name under the same supervisor as
// the actor owning ctx, which must be a child of a Supervisor. A child uses
// it to find the siblings it talks to without being told their PIDs; the
// PID stays valid across the sibling's restarts.
func Sibling(ctx actor.Context, name string) *actor.PID {
	parent := ctx.Parent()
	return actor.NewPID(parent.Address, ChildID(parent.Id, name))
}
