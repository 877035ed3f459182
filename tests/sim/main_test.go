package sim

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestMain(m *testing.M) {
	// A run allocates many small, short-lived objects (a message copy per
	// delivery, an event per timer). Unless GOGC says otherwise, trade
	// about 100 MB of heap for a third less wall time.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	os.Exit(m.Run())
}
