//go:build !ketchbugs

package fsm

// BugsCompiled reports whether the seeded bugs are compiled in: false
// without the ketchbugs build tag, and then PlantBug does not exist.
const BugsCompiled = false

const bugsCompiled = BugsCompiled
