//go:build race

package cluster

// raceDetector reports whether the race detector is on; see New.
const raceDetector = true
