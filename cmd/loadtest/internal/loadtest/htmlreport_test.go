package loadtest

import (
	"math"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// A steady 30 req/s over 20 s must chart as a flat 30/s in round (1 s) bins,
// with percentiles within the 1 % the buckets promise, and a late result
// still counted in the last bin.
func TestReportBinsAreRoundAndPercentilesAccurate(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	r := NewReport(start, time.Time{}, 20*time.Second)
	for i := range 600 {
		// Request i takes (i%100 + 1) ms: 1..100 ms, six times each.
		r.Add(&vegeta.Result{Timestamp: start.Add(time.Duration(i) * time.Second / 30), Code: 200,
			Latency: time.Duration(i%100+1) * time.Millisecond})
	}
	r.Add(&vegeta.Result{Timestamp: start.Add(20*time.Second + 5*time.Millisecond), Code: 429, Latency: time.Millisecond})
	d := r.data(&Summary{})

	if d.BinSeconds != 1 || len(d.Times) != 20 {
		t.Fatalf("bins of %gs x %d, want 1s x 20", d.BinSeconds, len(d.Times))
	}
	ok := d.Series[0]
	for i, v := range ok.Rate {
		if v != 30 {
			t.Errorf("bin %d: %g/s, want 30", i, v)
		}
	}
	if len(d.Series) != 2 || d.Series[1].Key != "429" || d.Series[1].Rate[19] != 1 {
		t.Errorf("the late 429 is not in the last bin: %+v", d.Series)
	}
	for _, q := range d.Quantiles {
		for i, v := range q.Ms {
			if v == nil || *v < 1 || *v > 101 {
				t.Errorf("%s of bin %d: %v, want a value in 1..100 ms", q.Key, i, v)
			}
		}
	}
	all := map[int]uint64{}
	for _, sl := range r.slots {
		for b, n := range sl.lat {
			all[b] += n
		}
	}
	for p, want := range map[float64]float64{0.5: 50, 0.9: 90, 0.99: 99} {
		if v, _ := quantile(all, p); math.Abs(v-want)/want > 0.02 {
			t.Errorf("p%g of 1..100 ms read as %.2f ms", 100*p, v)
		}
	}
}

func TestReportOfNothingHasNoSeries(t *testing.T) {
	d := NewReport(time.Now(), time.Time{}, time.Second).data(&Summary{})
	if len(d.Series) != 0 || len(d.Hist.Series) != 0 || len(d.Marks) != 0 {
		t.Errorf("empty run: %+v", d)
	}
}
