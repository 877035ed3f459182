// Package actors holds nothing itself; its folders are the actors of a
// ketch node and what sits beside them:
//
//	consensus  the fsm actor: drives package fsm with real timers, carries out its actions
//	state      the state actor: applies committed entries to a StateMachine, answers clients
//	kv         the key-value StateMachine, with client sessions (thesis §6.3)
//	gateway    the client boundary: validates requests, forwards them to the fsm actor
//	protocol   the Go messages a node's actors exchange (never on the wire)
//	node       assembles a node: actor system, remote, the supervision tree, identity on disk
//	client     the Go client the CLI and tests use
//	metrics    a node's Prometheus metrics: hot-path counters and histograms, scrape-time gauges
//	certs      mutual TLS: a development CA, identities in URI SANs, configurations that reread their files
//	web        a node's HTTP endpoint: /metrics, /status and the live view, fed by the viewer actor
//
// Actors never reach into each other's internals: they exchange the Go
// messages of package protocol (and of logstore and sender, the layers
// beneath), and the protobuf ones of package messages.
package actors
