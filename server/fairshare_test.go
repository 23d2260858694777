package server

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// keyedPost posts a script to /execute with key and returns the status and
// the time the answer took (status -1: no answer). It does not touch t, so
// load goroutines can call it.
func keyedPost(url, key string) (int, time.Duration) {
	req, _ := http.NewRequest(http.MethodPost, url+"/execute", strings.NewReader(`{"script":"def main():\n    return 1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1, 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func p50(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// Key B's requests must all succeed while key A floods the service at
// concurrency 64; B's latency is measured and logged, not asserted.
func TestAKeyFloodingAtConcurrency64DoesNotStarveAnotherKeysSequentialRequests(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("# tenants\nflooder:key-a\nsteady:key:b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A long acquire timeout: on a loaded 2-core machine one spawn can take
	// seconds, and this test is about B's turn, not about the pool's limit.
	s := startServer(t, nil, "--named-api-keys-file", keys, "--acquire-timeout", "6s")
	s.waitReady()

	sequential := func() (durations []time.Duration, statuses []int) {
		for range 20 {
			st, d := keyedPost(s.url, "key:b")
			statuses, durations = append(statuses, st), append(durations, d)
		}
		return durations, statuses
	}
	alone, _ := sequential()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var aStatus sync.Map
	var aSent atomic.Int64
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				st, _ := keyedPost(s.url, "key-a")
				aSent.Add(1)
				n, _ := aStatus.LoadOrStore(st, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}()
	}
	// Let A's flood fill every slot and queue before B starts.
	deadline := time.Now().Add(10 * time.Second)
	for aSent.Load() < 64 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	loaded, statuses := sequential()
	close(stop)
	wg.Wait()

	for i, st := range statuses {
		if st != 200 {
			t.Errorf("B's request %d answered %d while A flooded", i, st)
		}
	}
	counts := map[int]int64{}
	aStatus.Range(func(k, v any) bool { counts[k.(int)] = v.(*atomic.Int64).Load(); return true })
	t.Logf("B alone: p50 %v max %v; B while A floods at c=64: p50 %v max %v (%.1fx); A's answers by status: %v",
		p50(alone), slices.Max(alone), p50(loaded), slices.Max(loaded), float64(p50(loaded))/float64(p50(alone)), counts)

	body := scrape(t, s)
	if v, ok := sampleValue(body, `executor_api_key_requests_total{key="steady",outcome="ok"}`); !ok || v != 40 {
		t.Errorf(`executor_api_key_requests_total{key="steady",outcome="ok"} = %v (present %v), want 40`, v, ok)
	}
	if strings.Contains(body, "key-a") || strings.Contains(body, "key:b") {
		t.Error("/metrics shows an API key")
	}
}
