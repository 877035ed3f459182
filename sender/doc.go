// Package sender carries a ketch node's Raft messages to its peers over
// Proto.Actor remoting, and makes that remoting safe to expose.
//
// It must never block the fsm actor, never crash the process on anything a
// peer sends, and never hold more than a bounded number of messages per
// peer. A slow or dead peer costs dropped messages, which Raft tolerates
// (the leader resends from its log); it never costs the other peers.
//
// # Starting remote: StartRemote, the wire guard, QuietLogger
//
// StartRemote wraps protoactor's remote.Start: a taken port or a bad host
// is an error (ErrAddrInUse, ErrRemoteStart), not a panic; it sets ketch's
// remote defaults (see StartRemote) and installs the wire guard in the
// gRPC server. protoactor trusts the wire: an unknown type name, an index
// out of range or an unknown serializer id panics in the gRPC stream
// goroutine and kills the process, an actor.Stop from any peer stops the
// addressed actor, a target PID on another node is relayed there. The guard
// (GuardConfig) inspects every inbound batch before protoactor deserializes
// it: it closes the stream of a malformed batch and drops, one envelope at a
// time, what this node does not accept (types outside DefaultAllowedTypes,
// oversized payloads, foreign targets, system messages with PIDs not of the
// peer). It also refuses protoactor's unary gRPC methods (which panic) and
// recovers a panic of the stream handler. QuietLogger is a logger factory
// for actor.WithLoggerFactory that keeps protoactor at Warn.
//
// # The sender actor
//
// The fsm actor sends one *Outbound per Step. The sender queues each message
// for the peer named by its To, in a bounded queue per peer (Config.MaxQueue),
// and sends everything queued for a peer as one *messages.RaftBatch,
// split only by Config.MaxBatchBytes. The receiving node's fsm actor gets the
// RaftBatch at the PID built by Config.Target.
//
// Batching uses a flush marker the actor sends itself when it queues the
// first message after a flush: the marker lands behind every Outbound
// already in the mailbox, so one flush takes all of them, and under no load
// a message leaves at once. protoactor's MailboxMiddleware.MailboxEmpty hook
// was the alternative; it was not used because the mailbox and its
// middleware survive a restart while the actor value is replaced, so the
// hook would have to find the current incarnation, and it runs outside
// Receive, so it could only post a message anyway. The marker is plain actor
// code: a marker left by a crashed incarnation causes one harmless extra
// flush.
//
// A queue drops its oldest message when full and the peer is unreachable
// (newer Raft messages supersede older ones: a newer heartbeat or append
// carries a newer term and commit index); for a reachable peer a full queue
// is flushed early instead. Drops are counted per peer; Sender.Stats reads
// the counters from any goroutine, and they survive restarts. A *Crash makes
// the actor panic, for fault tests.
//
// # Reachability and failover
//
// protoactor reconnects slowly: its endpoint writer, on a failed connect,
// sleeps a fixed 2 s (MaxRetryCount times, 5 by default, leaking a gRPC
// connection each time) with its mailbox blocked, then publishes
// EndpointTerminatedEvent and dead-letters what queued up. A peer that comes
// back is reached only after that sleep: 1.7 s after it listens again in
// TestBaselineReconnect, whatever the remote config. The only lever that
// avoids the sleep without forking protoactor is to not send to a peer that
// is down, so the sender tracks reachability itself:
//
//   - It subscribes to EndpointTerminatedEvent on the actor system's event
//     stream: a lost connection marks the peer unreachable at once (5-10 ms
//     after a peer process is killed).
//   - An unreachable peer's messages stay in its bounded queue, and the
//     sender probes the peer every Config.ProbeInterval. A probe connects
//     and waits for the HTTP/2 server preface: a bare TCP connect is fooled
//     by a dying process, whose listening socket outlives its connections
//     for a moment.
//   - When a probe succeeds (or protoactor reports EndpointConnectedEvent)
//     the peer is reachable again and its queue is flushed; protoactor
//     creates a fresh endpoint, which connects at the first attempt.
//
// Measured over loopback (TestFailover, -race): messages flow again 26-70
// ms after the restarted peer listens, against 1.7 s without the sender. A
// new incarnation of the actor starts with every peer unknown and probes
// them all (a millisecond for a live peer).
//
// What remains: a connect that fails right after a successful probe (the
// peer dies in between) still costs protoactor's 2 s; a peer that vanishes
// without closing its connections (host down, partition) is noticed by gRPC
// keepalive after 10-15 s, meanwhile what is sent piles up in protoactor's
// endpoint writer.
//
// # Tests
//
// remote.Start writes grpc's global logger while running gRPC goroutines
// read it, so two remotes in one process are a data race under -race. The
// tests run one remote per process: the test process has one shared node,
// and every peer is a child process (see helpers_test.go).
package sender
