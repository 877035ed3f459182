package loadgen

import (
	"errors"
	"fmt"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

// Defaults of Config.
const (
	DefaultClients    = 16
	DefaultDuration   = 10 * time.Second
	DefaultValueBytes = 128
	DefaultKeys       = 1000
)

// Config says what load to put on the cluster. Zero fields take the
// defaults; Validate fills them in. The error messages name the flags of
// `ketch bench`.
type Config struct {
	// Clients is how many workers run at once, each with one operation in
	// flight, all sharing one client. Default 16.
	Clients int
	// Duration and Ops say when to stop: after Duration, or once Ops
	// operations were answered or failed, in all. At most one may be
	// given; with neither, Duration is 10s.
	Duration time.Duration
	Ops      int
	// ValueBytes is the size of every value put, random bytes. Default
	// 128; at most Limits.MaxValueBytes().
	ValueBytes int
	// Keys is the size of the key space: keys bench-000000 up to
	// bench-(Keys-1), picked uniformly. Default 1000.
	Keys int
	// Reads is the fraction of operations that are gets, from 0 (the
	// default: puts only) to 1 (gets only).
	Reads float64
	// Limits are the cluster's (zero fields: messages.DefaultLimits), as
	// given to client.Config.
	Limits pb.Limits
}

// Validate fills in the defaults and reports the first problem in one
// line that names the flag.
func (c *Config) Validate() error {
	switch {
	case c.Clients < 0:
		return errors.New("--clients must be at least 1")
	case c.Duration < 0:
		return errors.New("--duration must be positive")
	case c.Ops < 0:
		return errors.New("--ops must be at least 1")
	case c.Duration > 0 && c.Ops > 0:
		return errors.New("--duration and --ops exclude each other: give one")
	case c.ValueBytes < 0:
		return errors.New("--value-bytes must be at least 1")
	case c.Keys < 0:
		return errors.New("--keys must be at least 1")
	case !(c.Reads >= 0 && c.Reads <= 1): // NaN too
		return fmt.Errorf("--reads %v must be a fraction from 0 to 1 (0.9: 90%% gets)", c.Reads)
	}
	c.Limits = c.Limits.WithDefaults()
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if c.Clients == 0 {
		c.Clients = DefaultClients
	}
	if c.Duration == 0 && c.Ops == 0 {
		c.Duration = DefaultDuration
	}
	if c.ValueBytes == 0 {
		c.ValueBytes = DefaultValueBytes
	}
	if c.Keys == 0 {
		c.Keys = DefaultKeys
	}
	if lim := c.Limits.MaxValueBytes(); c.ValueBytes > lim {
		return fmt.Errorf("--value-bytes %d is above the cluster's value limit of %d bytes", c.ValueBytes, lim)
	}
	if n, lim := len(key(c.Keys-1)), c.Limits.MaxKeyBytes; n > lim {
		return fmt.Errorf("--keys %d makes keys of %d bytes, above the cluster's key limit of %d", c.Keys, n, lim)
	}
	return nil
}
