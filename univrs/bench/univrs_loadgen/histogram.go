// Latencies in the log-linear buckets of univrs/bench/latency.py, merged there.
package main

import (
	"math/bits"
	"sort"
	"time"
)

// ------------------------------------------------------------------------- the histogram

type histogram struct {
	counts       map[int]int64
	count, total int64
	min, max     int64
}

func newHistogram() *histogram { return &histogram{counts: map[int]int64{}, min: -1, max: -1} }

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	index := int(us)
	if us >= histSub {
		shift := bits.Len64(uint64(us)) - 1 - histShift
		index = histSub*shift + int(us>>shift)
	}
	h.counts[index]++
	h.count++
	h.total += us
	if h.min < 0 || us < h.min {
		h.min = us
	}
	if us > h.max {
		h.max = us
	}
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.count += o.count
	h.total += o.total
	if o.min >= 0 && (h.min < 0 || o.min < h.min) {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
}

func (h *histogram) toJSON() map[string]any {
	indices := make([]int, 0, len(h.counts))
	for i := range h.counts {
		indices = append(indices, i)
	}
	sort.Ints(indices)
	counts := make([][2]int64, 0, len(indices))
	for _, i := range indices {
		counts = append(counts, [2]int64{int64(i), h.counts[i]})
	}
	var low, high any
	if h.min >= 0 {
		low, high = h.min, h.max
	}
	return map[string]any{"counts": counts, "count": h.count, "total_us": h.total,
		"min_us": low, "max_us": high}
}
