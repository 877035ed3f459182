// Package loadgen is the engine behind `ketch bench`: it drives a running
// cluster through one Go client (actors/client) with a number of
// concurrent workers doing puts and gets on a fixed key space, for a
// duration or a number of operations, and reports throughput and latency
// percentiles (p50, p99, p99.9) per operation type, as JSON or as a table.
//
// Latencies go into a log-linear histogram of its own (histogram.go) whose
// percentiles are within 0.4% of the exact ones, from nanoseconds to hours,
// in a fixed 58 KiB per histogram.
//
// It must never write outside its key space (keys "bench-000000" up to
// Config.Keys), never delete or compare-and-swap, and never count as an
// error what is an answer: a get of a key that holds nothing answered
// "not found". It never prints: it calls Progress and returns a Report,
// and the caller renders them. It holds no global state; any number of
// runs may go on at once.
package loadgen
