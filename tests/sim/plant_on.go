//go:build ketchbugs

package sim

import "github.com/ketch-raft/ketch/fsm"

// plantBug plants a seeded fsm bug (fsm.PlantBug, compiled only with the
// ketchbugs build tag).
func plantBug(cfg *fsm.Config, name string) error { return fsm.PlantBug(cfg, name) }
