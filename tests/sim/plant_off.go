//go:build !ketchbugs

package sim

import (
	"errors"

	"github.com/ketch-raft/ketch/fsm"
)

// plantBug fails: the seeded bugs are compiled only with -tags ketchbugs.
func plantBug(*fsm.Config, string) error {
	return errors.New("sim: the seeded bugs are compiled only into test builds with -tags ketchbugs (go test -tags ketchbugs ./tests/sim -bug=...)")
}
