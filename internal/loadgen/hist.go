package loadgen

import (
	"fmt"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Every duration histogram records microseconds from 1 µs to one hour with
// three significant digits (0.1 % resolution); larger values are clamped to
// the highest trackable value so that nothing is ever dropped.
const (
	histLowest  = 1
	histHighest = int64(time.Hour / time.Microsecond)
	histSigFigs = 3
)

func newHDR() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histSigFigs)
}

// hist is a goroutine-safe duration histogram.
type hist struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newHist() *hist { return &hist{h: newHDR()} }

func (h *hist) record(d time.Duration) {
	us := d.Microseconds()
	if us < histLowest {
		us = histLowest
	}
	if us > histHighest {
		us = histHighest
	}
	h.mu.Lock()
	_ = h.h.RecordValue(us)
	h.mu.Unlock()
}

func (h *hist) data() HistData {
	h.mu.Lock()
	defer h.mu.Unlock()
	return encodeHist(h.h)
}

// HistData is an HDR histogram in a compact exact form: its geometry and the
// non-zero bucket counts as [index, count] pairs of the HDR counts array.
// Decoding and merging reproduces the recorded histogram bucket for bucket.
type HistData struct {
	Unit    string     `json:"unit"` // always "us"
	Lowest  int64      `json:"lowest"`
	Highest int64      `json:"highest"`
	SigFigs int64      `json:"significant_figures"`
	Total   int64      `json:"total"`
	Counts  [][2]int64 `json:"counts"`
}

func encodeHist(h *hdrhistogram.Histogram) HistData {
	s := h.Export()
	d := HistData{Unit: "us", Lowest: s.LowestTrackableValue, Highest: s.HighestTrackableValue, SigFigs: s.SignificantFigures,
		Total: h.TotalCount(), Counts: [][2]int64{}}
	for i, c := range s.Counts {
		if c != 0 {
			d.Counts = append(d.Counts, [2]int64{int64(i), c})
		}
	}
	return d
}

// decodeHist rebuilds the histogram of d; an empty HistData gives an empty
// histogram of the standard geometry.
func decodeHist(d HistData) (*hdrhistogram.Histogram, error) {
	if d.Lowest == 0 && d.Highest == 0 {
		if len(d.Counts) > 0 {
			return nil, fmt.Errorf("histogram without geometry has %d buckets", len(d.Counts))
		}
		return newHDR(), nil
	}
	if d.Lowest != histLowest || d.Highest != histHighest || d.SigFigs != histSigFigs {
		return nil, fmt.Errorf("histogram geometry %d..%d/%d, want %d..%d/%d", d.Lowest, d.Highest, d.SigFigs, histLowest, histHighest, histSigFigs)
	}
	n := len(newHDR().Export().Counts)
	s := &hdrhistogram.Snapshot{LowestTrackableValue: d.Lowest, HighestTrackableValue: d.Highest, SignificantFigures: d.SigFigs,
		Counts: make([]int64, n)}
	var total int64
	for _, p := range d.Counts {
		if p[0] < 0 || p[0] >= int64(n) || p[1] < 0 {
			return nil, fmt.Errorf("histogram bucket %d (count %d) out of range", p[0], p[1])
		}
		s.Counts[p[0]] += p[1]
		total += p[1]
	}
	if total != d.Total {
		return nil, fmt.Errorf("histogram buckets add up to %d, total says %d", total, d.Total)
	}
	return hdrhistogram.Import(s), nil
}

// mergeHists adds the histograms up exactly (same geometry, bucket by bucket).
func mergeHists(parts ...HistData) (HistData, error) {
	acc := newHDR()
	for _, p := range parts {
		h, err := decodeHist(p)
		if err != nil {
			return HistData{}, err
		}
		if dropped := acc.Merge(h); dropped != 0 {
			return HistData{}, fmt.Errorf("merge dropped %d values", dropped)
		}
	}
	return encodeHist(acc), nil
}

// Summary is a distribution in milliseconds.
type Summary struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

func summarize(d HistData) Summary {
	h, err := decodeHist(d)
	if err != nil || h.TotalCount() == 0 {
		return Summary{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Summary{
		Count: h.TotalCount(),
		Min:   ms(h.Min()),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}
