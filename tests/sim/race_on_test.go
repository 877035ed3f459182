//go:build race

package sim

// raceDetector: the race detector is on. The simulator is single-threaded
// per seed (runSeeds runs seeds side by side, sharing nothing), so the
// detector has little to find in it and slows it about tenfold: under it
// TestSimulation runs a sample (raceSeeds seeds) and the planted-bug hunt
// is skipped; .ci/test runs both in full without it.
const raceDetector = true
