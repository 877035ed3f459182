// Package actors will hold the node's actors that run on Proto.Actor: the
// fsm actor (drives package fsm with real timers and carries out its
// actions), the state actor (applies committed entries to a StateMachine,
// starting with a key-value store) and the client gateway.
//
// Not built yet: the node issue builds it on the fsm API. Actors here must
// never reach into each other's internals, only exchange messages.
package actors
