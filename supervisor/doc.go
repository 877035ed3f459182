// Package supervisor is a ketch node's supervision tree: an OTP-style
// supervisor with the rest_for_one strategy (which protoactor lacks), a
// node-wide restart intensity, fail-stop past it, and per-child restart
// statistics for `ketch status`.
//
// It must never let a node limp on: when restarts stop helping it stops
// every child and reports the node dead (Config.OnFailStop, where the
// binary exits non-zero so that systemd or a container runtime takes over —
// the OTP way). It imports protoactor and the standard library only; it
// knows nothing about Raft.
//
// # Usage
//
//	sup, err := supervisor.New(supervisor.Config{OnFailStop: exit1},
//		supervisor.Child{Name: "store", Props: storeProps},
//		supervisor.Child{Name: "state", Props: stateProps},
//		supervisor.Child{Name: "fsm", Props: fsmProps},
//		supervisor.Child{Name: "sender", Props: senderProps})
//	pid, err := system.Root.SpawnNamed(sup.Props(), "raft/1")
//	<-sup.Ready()   // all four spawned: raft/1/store, raft/1/state, raft/1/fsm, raft/1/sender
//	...
//	<-sup.Stopped() // after a fail-stop, a Shutdown or a stop of pid
//
// # Names
//
// protoactor's SpawnNamed, called from an actor, names the child
// "<parent id>/<name>"; called from the root context it uses the name as
// is. The supervisor spawns its children itself (it must, to supervise
// them), so a child's PID id is ChildID(supervisor id, child name). Spawn
// the supervisor from the root context with a name carrying the Raft group,
// "raft/<group>", and give children one-segment names: the fsm of group 1
// is then "raft/1/fsm" on every node, and a peer addresses it as
// actor.NewPID(peerAddress, supervisor.ChildID("raft/1", "fsm")) knowing
// only the node's configuration. The id survives restarts (a restart keeps
// the PID; a child that stopped is respawned under the same name).
// ChildPID gives the live PID of a child; Sibling gives a child the PID of
// a sibling.
//
// # rest_for_one
//
// Children are started in the order given, which is dependency order: each
// may depend on those before it, never on those after. In OTP's words, "if
// a child process terminates, the rest of the child processes (that is,
// the child processes after the terminated process in start order) are
// terminated. Then the terminated child process and the rest of the child
// processes are restarted." For ketch's node (ARCHITECTURE §5):
//
//	store → state → fsm → sender
//	store crash:  restart store, state, fsm, sender
//	state crash:  restart state, fsm, sender
//	fsm crash:    restart fsm, sender
//	sender crash: restart sender
//
// A child that panics in Receive is reported by protoactor to its parent,
// and the supervisor actor is its own actor.SupervisorStrategy. A child
// that stops without being asked is treated as a crash too (OTP restarts a
// permanent child whatever its exit reason); it is spawned again under the
// same name, with an empty mailbox.
//
// # What a child sees
//
// The crashed child: the message it panicked on is gone (never
// redelivered). Its mailbox was suspended at the panic; it gets
// *actor.Restarting on its old instance, its own children are stopped, a
// new instance from its Props' producer gets *actor.Started, and then the
// messages still queued in its mailbox are delivered to the new instance
// in order. Nothing queued is lost.
//
// A later sibling restarted because of it sees exactly the same
// (*actor.Restarting, then *actor.Started on a fresh instance, then its
// queued messages), except that it loses no message: whatever it was
// handling when the supervisor acted completes first. It gets no
// *actor.Stopping or *actor.Stopped, and it cannot tell a restart caused by
// a sibling from one caused by itself; it must not care. Its PID is
// unchanged.
//
// # Restart order, and why protoactor's is enough
//
// OTP stops the affected children in reverse start order and restarts them
// one by one in start order, each init finishing before the next starts.
// protoactor restarts a child by posting it a Restart system message; each
// child restarts on its own goroutine, so the Started handlers of the
// restarted children run concurrently and may finish in any order. The
// supervisor posts the Restarts in start order, but that orders nothing by
// itself. What it guarantees instead:
//
//  1. Before restarting anything it posts SuspendMailbox to every later
//     child, then Restart to each in start order. A mailbox handles system
//     messages in order and before any user message, so from that moment
//     every restarted child handles no user message until its new instance
//     has run Started. In particular, anything a restarted child sends to
//     another restarted child — even from its Started handler — is handled
//     by the receiver's new instance, never by its stale one. (protoactor's
//     AllForOne strategy does not suspend: a sibling whose Restart has not
//     arrived yet, or that waits for its own children to stop, keeps
//     serving messages on its old instance. TestRestartedSiblingServesNoStaleMessages
//     shows it.)
//  2. Earlier children are untouched and keep running.
//
// Start order matters in OTP because a child's init may call an earlier
// sibling synchronously. ketch's children talk only through mailboxes, and
// a restarted child re-reads its state by message from its upstream
// sibling (the fsm asks the store for the log; the state actor replays from
// the log) or from disk. A request sent to an upstream sibling that is still
// restarting waits in that sibling's mailbox and is answered by its new
// instance, after its Started. So no child can observe a stale upstream,
// and for children that follow these rules the concurrent restart serves as
// well as OTP's sequential one. What it
// does not give: a child's Started may run before an earlier sibling's
// Started has finished, so Started must not assume the sibling is ready —
// only that messages to it will be handled after it is. At first start,
// every earlier sibling is already registered when a child's Started runs;
// a later one may not be, so messages to later siblings sent from Started
// can be lost (dead letters). Children should ask upstream, not push
// downstream, when they start.
//
// # Restart intensity and fail-stop
//
// As OTP's intensity and period: if more than Config.MaxRestarts restarts
// happen within Config.Within, the supervisor stops instead of restarting.
// A crash event counts once for the whole node, however many children its
// rest_for_one restart takes down (so a store crash costs the same as a
// sender crash). On fail-stop the supervisor:
//
//  1. restarts nothing any more, and publishes state Stopping with the reason;
//  2. stops the children one at a time in reverse start order, each after
//     the later one has reported Terminated (OTP's shutdown order), giving
//     up on children still running after Config.ShutdownTimeout;
//  3. records state Stopped and the reason, publishes FailStopped on the
//     EventStream and calls Config.OnFailStop(reason) once;
//  4. closes Stopped() and stops its own actor.
//
// The reason is one line naming the supervisor, the child and its crash,
// e.g. `raft/1: child "store" crashed: fsync: input/output error; more than
// 5 restarts within 10s, stopping the node`. A child that cannot be spawned
// fail-stops the node the same way.
//
// # Statistics
//
// Status (any goroutine) or the GetStatus message (for actors) give the
// state, the stop reason, and per child: restarts, own crashes and the last
// crash reason (%v of the panic value, one line, at most 200 characters).
// A rest_for_one restart counts as a restart of every child it restarted,
// but the crash and its reason belong only to the child that crashed, so
// the culprit is the child with Crashes > 0.
//
// # Known limits
//
//   - Two crashes at once can cost two restarts. If a later child crashes
//     while an earlier child's restart is under way, its Failure may reach
//     the supervisor after the restart already gave it a fresh instance; the
//     supervisor cannot tell (protoactor keeps the PID across restarts and a
//     Failure carries no incarnation), so it restarts it and the children
//     after it once more, and counts the crash. Harmless to Raft, and it
//     errs towards fail-stop, never towards limping.
//   - The supervisor keeps restart intensity per incarnation and expects
//     never to be restarted itself; if its own Receive panicked, its parent
//     would restart it and with it every child.
package supervisor
