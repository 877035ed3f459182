package loadgen

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

func TestConfigValidate(t *testing.T) {
	maxValue := pb.DefaultLimits().MaxValueBytes()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // a part of the error; "" for none
	}{
		{"defaults", Config{}, ""},
		{"ops instead of duration", Config{Ops: 500}, ""},
		{"everything given", Config{Clients: 4, Duration: time.Second, ValueBytes: maxValue, Keys: 10, Reads: 1}, ""},
		{"negative clients", Config{Clients: -1}, "--clients must be at least 1"},
		{"negative duration", Config{Duration: -time.Second}, "--duration must be positive"},
		{"negative ops", Config{Ops: -5}, "--ops must be at least 1"},
		{"duration and ops", Config{Duration: time.Second, Ops: 10}, "--duration and --ops exclude each other"},
		{"negative value bytes", Config{ValueBytes: -1}, "--value-bytes must be at least 1"},
		{"value above the limit", Config{ValueBytes: maxValue + 1}, "the cluster's value limit of " + strconv.Itoa(maxValue) + " bytes"},
		{"value above a smaller limit", Config{ValueBytes: 3869, Limits: pb.Limits{MaxEntryBytes: 1 << 12, MaxKeyBytes: 100}},
			"value limit of 3868 bytes"},
		{"keys above the key limit", Config{Keys: 1e7, Limits: pb.Limits{MaxKeyBytes: 12}}, "--keys 10000000 makes keys of 13 bytes"},
		{"negative keys", Config{Keys: -1}, "--keys must be at least 1"},
		{"reads above 1", Config{Reads: 1.5}, "--reads 1.5 must be a fraction from 0 to 1"},
		{"negative reads", Config{Reads: -0.1}, "--reads -0.1 must be a fraction"},
		{"reads NaN", Config{Reads: math.NaN()}, "--reads NaN must be a fraction"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Fatalf("Validate() = %q: not one line", err)
			}
		})
	}
}

// Zero fields take the documented defaults; given ones stay.
func TestConfigDefaults(t *testing.T) {
	var cfg Config
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Clients != 16 || cfg.Duration != 10*time.Second || cfg.Ops != 0 || cfg.ValueBytes != 128 || cfg.Keys != 1000 || cfg.Reads != 0 {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg = Config{Ops: 7, Clients: 2, ValueBytes: 1, Keys: 3, Reads: 0.5}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Duration != 0 || cfg.Ops != 7 || cfg.Clients != 2 || cfg.ValueBytes != 1 || cfg.Keys != 3 || cfg.Reads != 0.5 {
		t.Fatalf("given values changed: %+v", cfg)
	}
}
