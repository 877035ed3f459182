// Package tests holds ketch's tests above the unit level, one layer per
// folder: sim (the deterministic fault simulator of the fsm core), and,
// as later issues land, actor, cluster, multi-process and fault-injection
// tests and benchmarks. It holds no code of its own.
package tests
