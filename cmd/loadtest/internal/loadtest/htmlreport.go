package loadtest

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The -html report: one self-contained page (no network, no external
// library) with the summary table, latency percentiles over time, responses
// per second by outcome (stacked, so errors take their share of the height),
// and a latency histogram. The Go side aggregates as results arrive, so the
// memory it needs is bounded by the number of time slots, not by the length
// of the run; the page's inline script draws SVG from that aggregate.

// Outcome categories of the report, in stacking order (bottom first). A
// small fixed set so that a server answering many odd statuses cannot make
// an unreadable legend.
const (
	catOK = iota
	cat429
	cat4xx
	cat5xx
	catTransport
	catOther
	numCats
)

var catNames = [numCats]string{"2xx", "429", "4xx", "5xx", "transport", "other"}

// catLabels are the legend texts.
var catLabels = [numCats]string{"2xx OK", "429 overloaded", "other 4xx", "5xx", "transport error", "other status"}

func category(code uint16) int {
	switch {
	case code == 0:
		return catTransport
	case isSuccess(code):
		return catOK
	case code == http.StatusTooManyRequests:
		return cat429
	case code >= 400 && code < 500:
		return cat4xx
	case code >= 500 && code < 600:
		return cat5xx
	default:
		return catOther
	}
}

const (
	// maxSlots is the number of collection slots over the whole run; the
	// page merges adjacent slots into at most maxDisplayBins.
	maxSlots       = 600
	minSlotWidth   = 10 * time.Millisecond
	maxDisplayBins = 150
	// minPerBin is the sample count a display bin should have on average,
	// so that its p99 means something; fewer bins are used for short runs.
	minPerBin      = 20
	minDisplayBins = 20

	// Latencies are kept in logarithmic buckets of 2% width from 1 µs: a
	// quantile read from them is within 1% of the true value.
	latGrowth = 1.02
	// maxHistBars bounds the histogram's bars: each bar is the smallest
	// whole number of fine buckets that keeps them at most this many (a
	// narrow distribution gets 2 % bars, a wide one coarser ones).
	maxHistBars = 48
)

var lnLatGrowth = math.Log(latGrowth)

func latBucket(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		us = 1
	}
	return int(math.Log(us) / lnLatGrowth)
}

// latBucketMs is the representative value (geometric middle) of bucket i.
func latBucketMs(i int) float64 {
	return math.Exp((float64(i)+0.5)*lnLatGrowth) / 1000
}

type slot struct {
	counts [numCats]uint64
	lat    map[int]uint64 // latBucket -> count, every category
}

// Report accumulates what the HTML page shows. Add is called from the results
// loop only, but the mutex keeps it safe for any caller.
type Report struct {
	mu        sync.Mutex
	start     time.Time
	warmupEnd time.Time // zero: no warmup
	width     time.Duration
	maxSlots  int // slots of the planned run; a result sent late joins the last
	slots     []slot
	hist      [numCats]map[int]uint64 // measured window only, like the summary
}

// NewReport prepares a report for a run that starts sending at start and
// lasts total (warmup included).
func NewReport(start, warmupEnd time.Time, total time.Duration) *Report {
	w := max(minSlotWidth, (total+maxSlots-1)/maxSlots)
	if i := slices.IndexFunc(niceWidths, func(n time.Duration) bool { return n >= w }); i >= 0 {
		w = niceWidths[i]
	}
	r := &Report{start: start, warmupEnd: warmupEnd, width: w, maxSlots: max(1, int((total+w-1)/w))}
	for i := range r.hist {
		r.hist[i] = map[int]uint64{}
	}
	return r
}

// Add records one result by the time its request was sent.
func (r *Report) Add(res *vegeta.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	if off := res.Timestamp.Sub(r.start); off > 0 {
		i = min(int(off/r.width), r.maxSlots-1)
	}
	for len(r.slots) <= i {
		r.slots = append(r.slots, slot{lat: map[int]uint64{}})
	}
	c := category(res.Code)
	b := latBucket(res.Latency)
	r.slots[i].counts[c]++
	r.slots[i].lat[b]++
	if r.warmupEnd.IsZero() || !res.Timestamp.Before(r.warmupEnd) {
		r.hist[c][b]++
	}
}

// reportData is what the page's script draws; field names are the JS ones.
type reportData struct {
	BinSeconds    float64     `json:"bin_s"`
	WarmupSeconds float64     `json:"warmup_s"`
	EndSeconds    float64     `json:"end_s"`
	Times         []float64   `json:"t"` // start of each bin, seconds since the first request
	Series        []tsSeries  `json:"series"`
	Quantiles     []qSeries   `json:"quantiles"`
	Hist          histData    `json:"hist"`
	Marks         []valueMark `json:"marks"` // summary percentiles, drawn on the histogram
}

type tsSeries struct {
	Key   string    `json:"key"`
	Label string    `json:"label"`
	Rate  []float64 `json:"rate"`  // responses per second in each bin
	Total uint64    `json:"total"` // measured window
}

type qSeries struct {
	Key   string     `json:"key"`
	Label string     `json:"label"`
	Ms    []*float64 `json:"ms"` // nil: no request in that bin
}

type histData struct {
	EdgesMs []float64  `json:"edges_ms"` // len(counts)+1 bar edges
	Series  []histBars `json:"series"`
}

type histBars struct {
	Key    string   `json:"key"`
	Label  string   `json:"label"`
	Counts []uint64 `json:"counts"`
}

type valueMark struct {
	Label string  `json:"label"`
	Ms    float64 `json:"ms"`
}

func (r *Report) data(s *Summary) reportData {
	r.mu.Lock()
	defer r.mu.Unlock()

	k := r.slotsPerBin()
	bins := (len(r.slots) + k - 1) / k
	binW := r.width * time.Duration(k)
	d := reportData{
		BinSeconds: binW.Seconds(),
		EndSeconds: (r.width * time.Duration(len(r.slots))).Seconds(),
		Times:      make([]float64, bins),
	}
	if !r.warmupEnd.IsZero() {
		d.WarmupSeconds = r.warmupEnd.Sub(r.start).Seconds()
	}
	for b := range bins {
		d.Times[b] = (binW * time.Duration(b)).Seconds()
	}
	counts, lats := r.mergeSlots(k, bins)
	d.Series = r.rateSeries(counts, k)
	d.Quantiles = quantileSeries(lats)
	d.Hist = r.histogram()
	if s.Requests > 0 {
		d.Marks = []valueMark{{"p50", s.Latency.P50}, {"p90", s.Latency.P90}, {"p99", s.Latency.P99}}
	}
	return d
}

// slotsPerBin is how many adjacent slots one display bin merges: at most
// maxDisplayBins, and enough samples per bin for a meaningful p99 unless that
// would leave fewer than minDisplayBins. Bins are a round width (1 s, not
// 0.575 s) whenever the slots allow, or a steady rate would show as a saw of
// 17 and 18 requests per bin. r.mu must be held.
func (r *Report) slotsPerBin() int {
	var n uint64
	for _, sl := range r.slots {
		for _, c := range sl.counts {
			n += c
		}
	}
	k := 1
	for len(r.slots) > 0 {
		bins := (len(r.slots) + k - 1) / k
		if bins <= maxDisplayBins && (bins <= minDisplayBins || n/uint64(bins) >= minPerBin) && r.niceMultiple(k) {
			break
		}
		k++
	}
	return k
}

// mergeSlots adds up the counts and latencies of k slots per bin. r.mu must
// be held.
func (r *Report) mergeSlots(k, bins int) ([][numCats]uint64, []map[int]uint64) {
	counts := make([][numCats]uint64, bins)
	lats := make([]map[int]uint64, bins)
	for b := range bins {
		lats[b] = map[int]uint64{}
		for _, sl := range r.slots[b*k : min((b+1)*k, len(r.slots))] {
			for c := range numCats {
				counts[b][c] += sl.counts[c]
			}
			for lb, v := range sl.lat {
				lats[b][lb] += v
			}
		}
	}
	return counts, lats
}

// rateSeries is the rate of each category per bin, for the categories seen.
// r.mu must be held.
func (r *Report) rateSeries(counts [][numCats]uint64, k int) []tsSeries {
	bins := len(counts)
	var measured [numCats]uint64
	for c := range numCats {
		for _, v := range r.hist[c] {
			measured[c] += v
		}
	}
	// The last bin may hold fewer slots than the others: its rate is over
	// the time it covers.
	secs := make([]float64, bins)
	for b := range bins {
		secs[b] = (r.width * time.Duration(min((b+1)*k, len(r.slots))-b*k)).Seconds()
	}
	var series []tsSeries
	for c := range numCats {
		seen := measured[c] > 0
		rate := make([]float64, bins)
		for b := range bins {
			rate[b] = float64(counts[b][c]) / secs[b]
			seen = seen || counts[b][c] > 0
		}
		if seen {
			series = append(series, tsSeries{Key: catNames[c], Label: catLabels[c], Rate: rate, Total: measured[c]})
		}
	}
	return series
}

// quantileSeries is p50, p90 and p99 per bin (nil where a bin is empty).
func quantileSeries(lats []map[int]uint64) []qSeries {
	var out []qSeries
	for _, q := range []struct {
		key string
		p   float64
	}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}} {
		qs := qSeries{Key: q.key, Label: q.key, Ms: make([]*float64, len(lats))}
		for b := range lats {
			if v, ok := quantile(lats[b], q.p); ok {
				qs.Ms[b] = &v
			}
		}
		out = append(out, qs)
	}
	return out
}

// niceWidths are the round bin widths of the charts.
var niceWidths = []time.Duration{
	10 * time.Millisecond, 20 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour,
}

// niceMultiple reports whether k slots make a round width (any k does past
// the longest round width).
func (r *Report) niceMultiple(k int) bool {
	w := r.width * time.Duration(k)
	return w > niceWidths[len(niceWidths)-1] || slices.Contains(niceWidths, w)
}

// histogram groups the fine buckets of the measured window into bars, from
// the fastest to the slowest bar with a count.
func (r *Report) histogram() histData {
	lo, hi := math.MaxInt, math.MinInt
	for c := range numCats {
		for b := range r.hist[c] {
			lo, hi = min(lo, b), max(hi, b)
		}
	}
	var h histData
	if lo > hi {
		return h
	}
	group := (hi - lo + maxHistBars) / maxHistBars
	lo, hi = floorDiv(lo, group), floorDiv(hi, group)
	for g := lo; g <= hi+1; g++ {
		h.EdgesMs = append(h.EdgesMs, math.Exp(float64(g*group)*lnLatGrowth)/1000)
	}
	for c := range numCats {
		if len(r.hist[c]) == 0 {
			continue
		}
		counts := make([]uint64, hi-lo+1)
		for b, v := range r.hist[c] {
			counts[floorDiv(b, group)-lo] += v
		}
		h.Series = append(h.Series, histBars{Key: catNames[c], Label: catLabels[c], Counts: counts})
	}
	return h
}

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// quantile returns the p-quantile of a bucketed latency distribution in ms.
func quantile(h map[int]uint64, p float64) (float64, bool) {
	var n uint64
	keys := make([]int, 0, len(h))
	for k, v := range h {
		keys = append(keys, k)
		n += v
	}
	if n == 0 {
		return 0, false
	}
	sort.Ints(keys)
	rank := uint64(math.Ceil(p * float64(n)))
	var cum uint64
	for _, k := range keys {
		cum += h[k]
		if cum >= rank {
			return latBucketMs(k), true
		}
	}
	return latBucketMs(keys[len(keys)-1]), true
}

// summaryRow is one line of the page's summary table.
type summaryRow struct {
	Name, Value string
	Note        string
}

type countRow struct {
	Key   string // category key for the colour swatch; empty: none
	Name  string
	Note  string
	Count uint64
	Share string
}

type pageData struct {
	Title       string
	Generated   string
	Rows        []summaryRow
	Latency     [][]string // header + all + 2xx
	Statuses    []countRow
	ErrorTypes  []countRow
	Transport   []string
	Interrupted bool
	Data        reportData
}

//go:embed htmlreport.html
var reportTemplateText string

var reportTemplate = template.Must(template.New("report").Parse(reportTemplateText))

// WriteHTML writes the report page for summary s.
func (r *Report) WriteHTML(w io.Writer, cfg *Config, s *Summary, generated time.Time) error {
	p := pageData{
		Title:       fmt.Sprintf("Load test: %s, %s", cfg.URL, modeDescription(cfg)),
		Generated:   generated.UTC().Format("2006-01-02 15:04:05 UTC"),
		Interrupted: s.Interrupted,
		Data:        r.data(s),
		Rows:        summaryRows(s),
		Latency:     latencyRows(s),
		Statuses:    statusRows(s),
		Transport:   s.TransportErrorExamples,
	}
	for _, t := range sortedKeys(s.ErrorTypes) {
		p.ErrorTypes = append(p.ErrorTypes, countRow{"", t, "", s.ErrorTypes[t], share(s, s.ErrorTypes[t])})
	}
	return reportTemplate.Execute(w, p)
}

// summaryRows are the target, mode, script and totals of the run.
func summaryRows(s *Summary) []summaryRow {
	mode := fmt.Sprintf("closed loop, %d workers", s.Concurrency)
	if s.Mode != "closed" {
		mode = fmt.Sprintf("open loop, %d req/s target", s.TargetRate)
		if s.Concurrency > 0 {
			mode += fmt.Sprintf(", at most %d in flight", s.Concurrency)
		}
	}
	script := s.Script
	if s.BatchSize > 0 {
		script += fmt.Sprintf(" (batch of %d inputs)", s.BatchSize)
	}
	rows := []summaryRow{
		{"Target", s.URL, ""},
		{"Mode", mode, ""},
		{"Script", script, ""},
	}
	if s.WarmupSeconds > 0 {
		rows = append(rows, summaryRow{"Warmup", fmt.Sprintf("%gs", s.WarmupSeconds), fmt.Sprintf("%d requests, shaded in the charts, excluded from every figure", s.WarmupRequests)})
	}
	return append(rows,
		summaryRow{"Duration", fmt.Sprintf("%.2f s", s.DurationSeconds), fmt.Sprintf("sending, + %.3f s waiting for the last responses", s.WaitSeconds)},
		summaryRow{"Requests", strconv.FormatUint(s.Requests, 10), fmt.Sprintf("%.1f req/s sent", s.Rate)},
		summaryRow{"Throughput", fmt.Sprintf("%.1f /s", s.Throughput), "successful responses per second"},
		summaryRow{"Success", fmt.Sprintf("%.2f %%", 100*s.SuccessRatio), fmt.Sprintf("%d of %d", s.Successes, s.Requests)},
	)
}

// latencyRows is the latency table: all requests, and 2xx only.
func latencyRows(s *Summary) [][]string {
	rows := [][]string{{"", "mean", "p50", "p90", "p99", "max"}}
	lrow := func(name string, l LatencySummary) []string {
		return []string{name, fmtMs(l.Mean), fmtMs(l.P50), fmtMs(l.P90), fmtMs(l.P99), fmtMs(l.Max)}
	}
	rows = append(rows, lrow("all requests", s.Latency))
	if s.Successes > 0 {
		rows = append(rows, lrow("2xx only", s.SuccessLatency))
	}
	return rows
}

// share is n as a percentage of all requests ("" without requests).
func share(s *Summary, n uint64) string {
	if s.Requests == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f %%", 100*float64(n)/float64(s.Requests))
}

// statusRows counts each status code in numeric order, then transport errors.
func statusRows(s *Summary) []countRow {
	codes := make([]string, 0, len(s.StatusCodes))
	for c := range s.StatusCodes {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool {
		a, _ := strconv.Atoi(codes[i])
		b, _ := strconv.Atoi(codes[j])
		return a < b
	})
	var rows []countRow
	for _, c := range codes {
		code, _ := strconv.Atoi(c)
		name := c
		if t := http.StatusText(code); t != "" {
			name += " " + t
		}
		note := ""
		if c == "429" {
			note = fmt.Sprintf("%d with Retry-After", s.RetryAfter429)
			if s.RetryAfter429 == s.StatusCodes[c] {
				note = "all with Retry-After"
			}
		}
		rows = append(rows, countRow{catNames[category(uint16(code))], name, note, s.StatusCodes[c], share(s, s.StatusCodes[c])})
	}
	if s.TransportErrors > 0 {
		rows = append(rows, countRow{catNames[catTransport], "transport error", "no HTTP response", s.TransportErrors, share(s, s.TransportErrors)})
	}
	return rows
}

// fmtMs prints a latency with a sensible unit and 3 significant digits.
func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', sigDecimals(v/1000), 64) + " s"
	case v >= 1:
		return strconv.FormatFloat(v, 'f', sigDecimals(v), 64) + " ms"
	default:
		return strconv.FormatFloat(v*1000, 'f', sigDecimals(v*1000), 64) + " µs"
	}
}

func sigDecimals(v float64) int {
	switch {
	case v >= 100:
		return 0
	case v >= 10:
		return 1
	}
	return 2
}
