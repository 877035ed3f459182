// Package logstore will hold the Store interface (append, truncate,
// entries, hard state), its bbolt implementation, an in-memory one for
// tests, and the store actor that group-commits appends and reports what is
// durable.
//
// Not built yet: the node issue builds it. A store must never report an
// entry durable before its fsync returned, and never return stale data as
// good: a failed fsync or a corrupt read crashes the store actor.
package logstore
