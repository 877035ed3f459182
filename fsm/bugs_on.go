//go:build ketchbugs

package fsm

import (
	"fmt"
	"testing"
)

// BugsCompiled reports whether the seeded bugs are compiled in: true in
// builds with the ketchbugs tag.
const BugsCompiled = true

const bugsCompiled = BugsCompiled

// PlantBug turns on the named bug in cfg. It exists only in builds with
// the ketchbugs tag, and even there works only inside a test binary.
func PlantBug(cfg *Config, name string) error {
	if !testing.Testing() {
		panic("fsm: PlantBug may only be called from tests")
	}
	return plantBug(cfg, name)
}

// plantBug turns on the named bug in cfg.
func plantBug(cfg *Config, name string) error {
	for _, b := range bugNames {
		if b.name == name {
			cfg.bugs |= b.bug
			return nil
		}
	}
	return fmt.Errorf("fsm: unknown bug %q (known: %v)", name, BugNames())
}
