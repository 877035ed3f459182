// Several protoactor remotes in one process race inside gRPC's global
// logger (remote.Start calls grpclog.SetLoggerV2), so this test, which
// starts three nodes and a client, runs without -race only (the unit tests
// cover Run's logic under -race with a fake store).

//go:build !race

package loadgen_test

import (
	"context"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/client/loadgen"
	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/tests/cluster"
)

// Run against a real three-node cluster: every operation answered, the
// puts went through the log, and the keys hold values of the size asked.
func TestRunAgainstCluster(t *testing.T) {
	c := cluster.New(t, 3, false, func(cfg *node.Config) { cfg.UnsafeNoSync = true })
	leader, err := c.Leader(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := c.Nodes[leader].Status().Applied

	cfg := loadgen.Config{Ops: 600, Clients: 8, Keys: 100, ValueBytes: 256, Reads: 0.5}
	r, err := loadgen.Run(ctx, cl, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	put, get := r.ByOp[loadgen.OpPut], r.ByOp[loadgen.OpGet]
	if r.Ops != 600 || r.Errors != 0 || put.Ops+get.Ops != 600 || put.Ops == 0 || get.Ops == 0 {
		t.Fatalf("report: %+v", r)
	}
	if !(0 < r.P50us && r.P50us <= r.P99us && r.P99us <= r.P999us) || r.OpsPerSec <= 0 {
		t.Fatalf("figures out of order: %+v", r.Stats)
	}
	// Each put (preload and timed) is an entry; gets are not (ReadIndex).
	if applied, want := c.Nodes[leader].Status().Applied-before, uint64(cfg.Keys)+uint64(put.Ops); applied < want {
		t.Errorf("the leader applied %d entries during the run, want at least %d puts", applied, want)
	}
	for _, k := range []string{"bench-000000", "bench-000099"} {
		v, err := cl.Get(ctx, k)
		if err != nil || len(v) != cfg.ValueBytes {
			t.Errorf("get %s: %d bytes, %v; want %d bytes", k, len(v), err, cfg.ValueBytes)
		}
	}
	t.Logf("%d ops in %.2fs: %.0f ops/s, p50 %.0fµs p99 %.0fµs p99.9 %.0fµs (put p50 %.0fµs, get p50 %.0fµs)",
		r.Ops, r.DurationS, r.OpsPerSec, r.P50us, r.P99us, r.P999us, put.P50us, get.P50us)
}
