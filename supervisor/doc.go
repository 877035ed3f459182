// Package supervisor will hold the node's supervision tree: rest_for_one
// restarts (which protoactor lacks), restart intensity, fail-stop past it,
// and per-child restart counters.
//
// Not built yet: the node issue builds it. A supervisor must never let a
// node limp on past its restart intensity: it stops the node cleanly.
package supervisor
