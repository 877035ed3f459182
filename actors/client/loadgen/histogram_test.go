package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The histogram's percentiles are within 1/(2·subBuckets) of the exact
// ones (the value of rank ceil(q·n) in sorted order), for data spread over
// many orders of magnitude, merged from several histograms like the
// workers'.
func TestHistogramQuantilesMatchSortedData(t *testing.T) {
	const bound = 1.0 / (2 * subBuckets)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		n    int
		gen  func() time.Duration
	}{
		{"tiny exact values", 1000, func() time.Duration { return time.Duration(rng.IntN(300)) }},
		{"log-uniform 1µs to 10min", 100_000, func() time.Duration {
			return time.Duration(math.Exp(rng.Float64()*math.Log(float64(10*time.Minute/time.Microsecond)))) * time.Microsecond
		}},
		{"latency-like with a tail", 50_000, func() time.Duration {
			d := time.Duration(rng.NormFloat64()*50e3 + 500e3) // ~500µs
			if rng.IntN(100) == 0 {
				d *= 100
			}
			return d
		}},
		{"one value", 1, func() time.Duration { return 3 * time.Minute }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := make([]histogram, 4)
			var data []time.Duration
			for i := range tc.n {
				d := tc.gen()
				data = append(data, max(d, 0))
				parts[i%len(parts)].record(d)
			}
			var h histogram
			for i := range parts {
				h.merge(&parts[i])
			}
			slices.Sort(data)
			if h.n != uint64(len(data)) {
				t.Fatalf("n = %d, want %d", h.n, len(data))
			}
			var worst float64
			for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
				want := data[int(math.Ceil(q*float64(len(data))))-1]
				got := h.quantile(q)
				rel := math.Abs(float64(got-want)) / max(float64(want), 1)
				worst = max(worst, rel)
				if rel > bound {
					t.Errorf("q%v = %v, want %v (relative error %.4f%% > %.4f%%)", q, got, want, rel*100, bound*100)
				}
			}
			t.Logf("worst relative error %.4f%% (bound %.4f%%)", worst*100, bound*100)
		})
	}
}

// Every value falls in the bucket bucketRange says, and buckets tile the
// range of time.Duration in order, none wider than 1/subBuckets of its
// lower bound.
func TestHistogramBuckets(t *testing.T) {
	var prevEnd uint64
	for i := range buckets {
		low, width := bucketRange(i)
		if low != prevEnd {
			t.Fatalf("bucket %d starts at %d, the previous ended at %d", i, low, prevEnd)
		}
		if i >= subBuckets && width*subBuckets > low {
			t.Fatalf("bucket %d [%d, +%d) is wider than 1/%d of its lower bound", i, low, width, subBuckets)
		}
		for _, v := range []uint64{low, low + width/2, low + width - 1} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		prevEnd = low + width
	}
	if got := bucketOf(math.MaxUint64); got != buckets-1 {
		t.Fatalf("bucketOf(MaxUint64) = %d, want the last bucket %d", got, buckets-1)
	}
	var h histogram
	if h.quantile(0.99) != 0 {
		t.Fatal("an empty histogram's p99 is not 0")
	}
	h.record(-time.Second) // a clock step: counted as 0
	h.record(time.Duration(math.MaxInt64))
	if got := h.quantile(1); got != time.Duration(math.MaxInt64) {
		t.Fatalf("max = %v", got)
	}
	if got := h.quantile(0.5); got != 0 {
		t.Fatalf("p50 of {0, max} = %v, want 0", got)
	}
}
