// Package actors holds nothing itself; its folders are the actors of a
// ketch node and what sits beside them:
//
//	consensus  the fsm actor: drives package fsm with real timers, carries out its actions
//	state      the state actor: applies committed entries to a StateMachine, answers clients
//	kv         the key-value StateMachine, with client sessions (thesis §6.3)
//	gateway    the client boundary: validates requests, forwards them to the fsm actor
//	node       assembles a node: actor system, remote, the supervision tree
//	client     the Go client the CLI and tests use
//
// Actors never reach into each other's internals: they exchange messages,
// the exported message types of each package and those of package messages.
package actors
