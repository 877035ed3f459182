// Package sender will hold the sender actor: it turns the fsm's outbound
// messages into remote sends to peer PIDs, packing everything queued for a
// peer into one RaftBatch, with bounded per-peer queues.
//
// Not built yet: the node issue builds it. It must never block the fsm: a
// slow or dead peer costs dropped messages, which Raft tolerates.
package sender
