package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// histogram counts durations in log-linear buckets, the layout of HDR
// histograms: values below 2·subBuckets nanoseconds have a bucket each;
// above, every power-of-two range [2^k, 2^(k+1)) is cut into subBuckets
// equal buckets, so a bucket is at most 1/subBuckets of its lower bound
// wide. A percentile is reported as its bucket's midpoint, within
// 1/(2·subBuckets) (0.4%) of the exact value, from 1ns to the longest
// time.Duration. The zero value is empty and ready; it is not safe for
// concurrent use (each worker keeps its own and they are merged).
type histogram struct {
	counts   [buckets]uint64
	n        uint64
	min, max time.Duration
}

const (
	subBits    = 7
	subBuckets = 1 << subBits // 128: relative bucket width <= 1/128
	// buckets: the values below subBuckets, then one row of subBuckets
	// per shift of the largest value (64 bits: shifts 0..63-subBits).
	buckets = subBuckets + (64-subBits)*subBuckets
)

// bucketOf is the index of v's bucket; it grows with v.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1 // v>>shift is in [subBuckets, 2·subBuckets)
	return subBuckets + shift*subBuckets + int(v>>shift) - subBuckets
}

// bucketRange is the lowest value of bucket i and its width.
func bucketRange(i int) (low, width uint64) {
	if i < subBuckets {
		return uint64(i), 1
	}
	shift := (i - subBuckets) / subBuckets
	mantissa := uint64(subBuckets + (i-subBuckets)%subBuckets)
	return mantissa << shift, 1 << shift
}

func (h *histogram) record(d time.Duration) {
	d = max(d, 0)
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.counts[bucketOf(uint64(d))]++
	h.n++
}

// merge adds o's counts to h.
func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q <= 1): the value of rank
// ceil(q·n) in sorted order, as its bucket's midpoint kept within the
// smallest and largest values recorded (the largest exactly); 0 when
// empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	if rank == h.n {
		return h.max // exact
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketRange(i)
			mid := time.Duration(low + (width-1)/2)
			return min(max(mid, h.min), h.max)
		}
	}
	panic("histogram: counts add up to less than n") // invariant: n is the sum of counts
}
