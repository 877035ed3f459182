package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
)

// medianOf reads the -json files of several runs and returns, per system
// and client count, the median of each figure over the runs (each figure
// on its own: the median ops/s and the median p99 may come from different
// runs). Issue 17's targets are medians of three runs.
func medianOf(files []string) ([]Result, error) {
	type key struct {
		system  string
		clients int
	}
	runs := map[key][]Result{}
	var order []key
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var rs []Result
		if err := json.Unmarshal(b, &rs); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, r := range rs {
			k := key{r.System, r.Clients}
			if _, ok := runs[k]; !ok {
				order = append(order, k)
			}
			runs[k] = append(runs[k], r)
		}
	}
	med := func(rs []Result, f func(Result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].clients < order[j].clients })
	var out []Result
	for _, k := range order {
		rs := runs[k]
		m := Result{System: k.system, Clients: k.clients,
			OpsPerSec: med(rs, func(r Result) float64 { return r.OpsPerSec }),
			P50us:     med(rs, func(r Result) float64 { return r.P50us }),
			P99us:     med(rs, func(r Result) float64 { return r.P99us }),
			P999us:    med(rs, func(r Result) float64 { return r.P999us }),
			CPUPer1k:  med(rs, func(r Result) float64 { return r.CPUPer1k }),
			HeapInuse: med(rs, func(r Result) float64 { return r.HeapInuse }),
			HeapLive:  med(rs, func(r Result) float64 { return r.HeapLive }),
			LivePeak:  med(rs, func(r Result) float64 { return r.LivePeak }),
			RSSPeak:   med(rs, func(r Result) float64 { return r.RSSPeak - r.RSSBase }),
		}
		for _, r := range rs {
			m.Ops += r.Ops
			m.Errors += r.Errors
		}
		out = append(out, m)
	}
	return out, nil
}

// printTargets prints, per client count, ketch's figures against the best
// peer's (the highest median ops/s among the systems other than ketch's
// variants): issue 17's targets are throughput at least 1.2x at 16 clients
// and more, p99 no worse at every level, and p50 no worse at 1 client.
func printTargets(rs []Result) {
	levels := map[int][]Result{}
	var ns []int
	for _, r := range rs {
		if _, ok := levels[r.Clients]; !ok {
			ns = append(ns, r.Clients)
		}
		levels[r.Clients] = append(levels[r.Clients], r)
	}
	slices.Sort(ns)
	fmt.Printf("\n%-7s %-11s %12s %14s %14s %14s\n", "clients", "best peer", "ops/s ratio", "p99 ketch/peer", "p50 ketch/peer", "live MB ratio")
	for _, n := range ns {
		var k, best *Result
		for i := range levels[n] {
			r := &levels[n][i]
			switch {
			case r.System == "ketch":
				k = r
			case strings.HasPrefix(r.System, "ketch"):
			case best == nil || r.OpsPerSec > best.OpsPerSec:
				best = r
			}
		}
		if k == nil || best == nil {
			continue
		}
		fmt.Printf("%-7d %-11s %11.2fx %14.2f %14.2f %14.2f\n", n, best.System, k.OpsPerSec/best.OpsPerSec, k.P99us/best.P99us, k.P50us/best.P50us, k.LivePeak/best.LivePeak)
	}
}
