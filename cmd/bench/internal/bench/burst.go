package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// helloBody is the request loadtest sends by default: the API's hello example.
var helloBody = []byte(`{"script":"def main():\n  print('hello')\n  return {\"msg\": \"done\"}\n"}`)

// BurstResult is W simultaneous requests on a warm pool.
type BurstResult struct {
	Requests        int            `json:"requests"`
	StatusCodes     map[string]int `json:"status_codes"`
	RetryAfter429   int            `json:"retry_after_429"`
	TransportErrors int            `json:"transport_errors"`
	LatenciesMs     []float64      `json:"latencies_ms"` // sorted
	P50, P99, Max   float64        `json:"-"`
}

// burst opens n keep-alive connections first (GET /healthz), then sends n
// POST /execute at the same instant, one per connection.
func burst(ctx context.Context, base string, n int) BurstResult {
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := client.Get(base + "/healthz"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()

	r := BurstResult{Requests: n, StatusCodes: map[string]int{}}
	var mu sync.Mutex
	gate := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/execute", bytes.NewReader(helloBody))
			req.Header.Set("Content-Type", "application/json")
			<-gate
			t0 := time.Now()
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			ms := float64(time.Since(t0).Microseconds()) / 1000
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.TransportErrors++
				return
			}
			r.StatusCodes[strconv.Itoa(resp.StatusCode)]++
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" {
				r.RetryAfter429++
			}
			r.LatenciesMs = append(r.LatenciesMs, ms)
		}()
	}
	time.Sleep(20 * time.Millisecond) // every goroutine parked at the gate
	close(gate)
	wg.Wait()
	sort.Float64s(r.LatenciesMs)
	r.P50, r.P99 = quantile(r.LatenciesMs, 0.50), quantile(r.LatenciesMs, 0.99)
	if len(r.LatenciesMs) > 0 {
		r.Max = r.LatenciesMs[len(r.LatenciesMs)-1]
	}
	return r
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// MarshalJSON adds the quantiles to the raw output.
func (r BurstResult) MarshalJSON() ([]byte, error) {
	type plain BurstResult
	return json.Marshal(struct {
		plain
		P50 float64 `json:"p50_ms"`
		P99 float64 `json:"p99_ms"`
		Max float64 `json:"max_ms"`
	}{plain(r), r.P50, r.P99, r.Max})
}
