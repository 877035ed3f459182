package loadgen

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Stats are the figures of one operation type, or of all.
type Stats struct {
	// Ops is how many operations got an answer (a get's "not found"
	// included).
	Ops int64 `json:"ops"`
	// OpsPerSec is Ops over the run's duration.
	OpsPerSec float64 `json:"ops_per_sec"`
	// Latency percentiles of the answered operations, in microseconds
	// (0 without any).
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
	P999us float64 `json:"p999_us"`
	// Errors is how many operations returned an error.
	Errors int64 `json:"errors"`
}

// Report is what a run did: the figures over all operations, the same per
// operation type, and the configuration that produced them. Its JSON is
// the output of `ketch bench --json`.
type Report struct {
	Stats
	// ByOp holds the figures of each operation type, keyed OpPut and
	// OpGet (both always present).
	ByOp map[string]Stats `json:"by_op"`

	Clients int `json:"clients"`
	// DurationS is how long the timed phase took, in seconds: from the
	// first operation to the end of the last.
	DurationS  float64 `json:"duration_s"`
	ValueBytes int     `json:"value_bytes"`
	Keys       int     `json:"keys"`
	Reads      float64 `json:"reads"`
}

// report merges the workers' figures.
func report(cfg Config, elapsed time.Duration, workers []worker) Report {
	r := Report{ByOp: map[string]Stats{}, Clients: cfg.Clients, DurationS: elapsed.Seconds(),
		ValueBytes: cfg.ValueBytes, Keys: cfg.Keys, Reads: cfg.Reads}
	var all histogram
	for op, name := range opNames {
		var h histogram
		var errs int64
		for i := range workers {
			h.merge(&workers[i].latency[op])
			errs += workers[i].errors[op]
		}
		all.merge(&h)
		r.ByOp[name] = stats(&h, errs, elapsed)
		r.Errors += errs
	}
	r.Stats = stats(&all, r.Errors, elapsed)
	return r
}

func stats(h *histogram, errs int64, elapsed time.Duration) Stats {
	s := Stats{Ops: int64(h.n), Errors: errs, P50us: micros(h.quantile(0.5)), P99us: micros(h.quantile(0.99)),
		P999us: micros(h.quantile(0.999))}
	if elapsed > 0 {
		s.OpsPerSec = math.Round(float64(h.n)/elapsed.Seconds()*10) / 10
	}
	return s
}

// micros is d in microseconds, to a tenth.
func micros(d time.Duration) float64 { return math.Round(float64(d)/1e2) / 10 }

// WriteTable writes r for people: what ran, then one row per operation
// type that ran and a total row.
//
//	16 clients, 10.0s, 128-byte values, 1000 keys, 50% reads
//	op          ops     ops/s       p50       p99     p99.9   errors
//	put       51234    5123.4     2.1ms    8.45ms    21.2ms        0
//	get       ...
//	total     ...
func (r Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d clients, %.1fs, %d-byte values, %d keys, %g%% reads\n",
		r.Clients, r.DurationS, r.ValueBytes, r.Keys, r.Reads*100)
	const format = "%-6s %9v %9v %9v %9v %9v %8v\n"
	fmt.Fprintf(&b, format, "op", "ops", "ops/s", "p50", "p99", "p99.9", "errors")
	row := func(name string, s Stats) {
		fmt.Fprintf(&b, format, name, s.Ops, fmt.Sprintf("%.1f", s.OpsPerSec),
			latency(s.P50us), latency(s.P99us), latency(s.P999us), s.Errors)
	}
	for _, name := range opNames {
		if s := r.ByOp[name]; s.Ops > 0 || s.Errors > 0 {
			row(name, s)
		}
	}
	row("total", r.Stats)
	_, err := io.WriteString(w, b.String())
	return err
}

// latency renders microseconds to three significant digits or so:
// 812µs, 1.23ms, 2.5s.
func latency(us float64) string {
	d := time.Duration(us * 1e3)
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Microsecond:
		return d.Round(100 * time.Nanosecond).String()
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}
