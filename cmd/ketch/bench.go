package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ketch-raft/ketch/actors/client/loadgen"
)

// ketch bench: drive a running cluster through the Go client and report
// throughput and latency per operation type (package loadgen does the
// work). It is what a user runs to size a cluster, as etcd's 'benchmark'.
func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench [--clients N] [--duration D | --ops N] [--value-bytes B] [--keys K] [--reads FRACTION]",
		Short: "Measure a running cluster: ops/s and latency percentiles",
		Long: `Drive the cluster with --clients concurrent workers, each with one operation
in flight, through one Go client, for --duration or until --ops operations
have completed. Each operation puts --value-bytes random bytes under one of
--keys keys (bench-000000, ...), or, for a fraction --reads of them, gets
one (linearizably; with --reads > 0 every key is written once first, not
timed). It prints ops/s and p50/p99/p999 latency per operation type and in
all, with a live progress line when stderr is a terminal.

It overwrites the keys bench-*. It exits 0 when every operation got an
answer, and 2 when any failed (the counts say how many) or the run could
not start. Ctrl-C stops it early and reports what was done.`,
		Example: `  ketch bench --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  ketch bench --clients 64 --duration 30s --value-bytes 1024
  ketch bench --ops 10000 --reads 0.9 --json`,
		Args: noArgs,
	}
	cf := addClientFlags(cmd, kvTimeout)
	out := addOutput(cmd, "print one object: ops, ops_per_sec, p50_us, p99_us, p999_us, errors, and the same per operation under by_op")
	var cfg loadgen.Config
	fl := cmd.Flags()
	fl.IntVar(&cfg.Clients, "clients", loadgen.DefaultClients, "concurrent workers, each with one operation in flight")
	fl.DurationVar(&cfg.Duration, "duration", 0, "run this long (default 10s; not with --ops)")
	fl.IntVar(&cfg.Ops, "ops", 0, "stop after this many operations in all (not with --duration)")
	fl.IntVar(&cfg.ValueBytes, "value-bytes", loadgen.DefaultValueBytes, "bytes per value put")
	fl.IntVar(&cfg.Keys, "keys", loadgen.DefaultKeys, "size of the key space")
	fl.Float64Var(&cfg.Reads, "reads", 0, "fraction of operations that are gets, 0 to 1")
	cmd.RunE = body(func(cmd *cobra.Command, _ []string) int {
		if err := out.check(); err != nil {
			return fail(stderr, "bench: %v", err)
		}
		// Flags given as 0 are refused, not taken for "the default".
		for _, f := range []string{"clients", "ops", "value-bytes", "keys"} {
			if cmd.Flags().Changed(f) && cmd.Flags().Lookup(f).Value.String() == "0" {
				return fail(stderr, "bench: --%s must be at least 1", f)
			}
		}
		if cmd.Flags().Changed("duration") && cfg.Duration <= 0 {
			return fail(stderr, "bench: --duration must be positive")
		}
		if err := cfg.Validate(); err != nil {
			return fail(stderr, "bench: %v", err)
		}
		cl, _, err := cf.open()
		if err != nil {
			return fail(stderr, "%v", err)
		}
		defer cl.Close()
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		var progress func(loadgen.Progress)
		tty := isTerminal(stderr)
		if tty {
			progress = func(p loadgen.Progress) {
				what := "running"
				if p.Preloading {
					what = "preloading keys"
				}
				fmt.Fprintf(stderr, "\r\x1b[K%s: %5.1fs  %d ops  %.0f ops/s  %d errors", what, p.Elapsed.Seconds(), p.Ops, p.OpsPerSec, p.Errors)
			}
		}
		r, err := loadgen.Run(ctx, cl, cfg, progress)
		if tty {
			fmt.Fprint(stderr, "\r\x1b[K")
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			return fail(stderr, "bench: %v", err)
		}
		if out.json {
			emit(stdout, r)
		} else if err := r.WriteTable(stdout); err != nil {
			return fail(stderr, "bench: %v", err)
		}
		switch {
		case err != nil:
			return fail(stderr, "bench: stopped early after %.1fs", r.DurationS)
		case r.Errors > 0:
			return fail(stderr, "bench: %d of %d operations failed", r.Errors, r.Ops+r.Errors)
		}
		return exitOK
	})
	return cmd
}
