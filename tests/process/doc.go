// Package process holds ketch's multi-process tests: the real `ketch`
// binary, built once per test run, started as separate `ketch node`
// processes on loopback, driven through the CLI (put, get, cas, status,
// crash) the way an operator would, and killed with SIGKILL to measure
// failover and catch-up.
//
// Membership changes run the same way (membership_test.go): servers
// started with `ketch node --join` replace every member through `ketch
// member add|promote|remove` while Go clients in child processes
// (kvload_test.go) put, get and cas, recorded for the linearizability
// checker (tests/lincheck, porcupine).
//
// The tests also pin the CLI's contract: exit codes (0 ok, 1 a negative
// answer, 2 a failure with one line on stderr, 3 a node fail-stop) and
// `status --json`'s keys.
//
// Run with -v to see the key figures (failover and catch-up times);
// -failover-runs N repeats the kill/restart cycle N times and prints the
// median and maximum. KETCH_TEST_LOG=debug raises the nodes' log level.
//
// It must never leave a process behind (every node is killed in
// t.Cleanup, even on failure), never use a fixed port (it asks the OS),
// and never wait with a fixed sleep (it polls with bounded deadlines).
// The race detector covers the test process only, not the nodes.
package process
