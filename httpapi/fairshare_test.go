package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/httpapi"
	"github.com/secure-script-executor/executor/pool"
)

// gatedRunner holds every run until the test lets it go, and records the
// scripts in the order their runs began. With acquired it says, as the pool
// does, when a run has its worker; without, a run holds its turn to the end.
type gatedRunner struct {
	mu       sync.Mutex
	order    []string
	began    chan string
	let      chan struct{}
	acquired bool
}

func (g *gatedRunner) Run(ctx context.Context, req executor.Request) (executor.Result, error) {
	if g.acquired {
		pool.NotifyAcquired(ctx)
	}
	g.mu.Lock()
	g.order = append(g.order, string(req.Script))
	g.mu.Unlock()
	g.began <- string(req.Script)
	select {
	case <-g.let:
	case <-ctx.Done():
		return executor.Result{}, ctx.Err()
	}
	return executor.Result{Status: executor.StatusOK, Value: []byte("1")}, nil
}

func (g *gatedRunner) Ready() error { return nil }

// keyRecorder counts per-key calls.
type keyRecorder struct {
	mu       sync.Mutex
	requests map[string]int // "key outcome"
	inFlight map[string]int
}

func (k *keyRecorder) ObserveKeyRequest(key, outcome string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.requests[key+" "+outcome]++
}

func (k *keyRecorder) KeyInFlight(key string, delta int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.inFlight[key] += delta
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAKeyFloodingTheServiceWaitsItsTurnWhileAnotherKeyIsServedAtTheNextFreeSlot(t *testing.T) {
	runner := &gatedRunner{began: make(chan string, 16), let: make(chan struct{})}
	keys := &keyRecorder{requests: map[string]int{}, inFlight: map[string]int{}}
	s := httpapi.New(httpapi.Config{APIKeys: []string{"key-a", "key-b"}, APIKeyNames: []string{"alice", ""},
		FairShareSlots: 2, FairShareWait: 10 * time.Second, KeyRecorder: keys}, runner)
	url, _ := serve(t, s)
	t.Cleanup(func() { s.Shutdown(context.Background()) })

	send := func(key, script string, status chan<- int) {
		req, _ := http.NewRequest(http.MethodPost, url+"/execute", strings.NewReader(fmt.Sprintf(`{"script":%q}`, script)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			status <- -1
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}
	statuses := make(chan int, 8)
	for i := range 6 {
		go send("key-a", fmt.Sprintf("a%d", i), statuses)
	}
	<-runner.began
	<-runner.began
	waitFor(t, "four of A's requests to queue", func() bool { return s.FairQueued() == 4 })
	go send("key-b", "b", statuses)
	waitFor(t, "B's request to queue", func() bool { return s.FairQueued() == 5 })

	// Two freed slots: one goes to A (its turn came first), one to B, not
	// both to A's backlog.
	var next []string
	for range 2 {
		runner.let <- struct{}{}
		next = append(next, <-runner.began)
	}
	if next[0] != "b" && next[1] != "b" {
		t.Fatalf("the two runs after B queued were %v: B waited behind A's backlog", next)
	}
	for range 5 { // the two running and A's three still queued
		runner.let <- struct{}{}
	}
	for range 7 {
		if st := <-statuses; st != 200 {
			t.Errorf("a request answered %d", st)
		}
	}
	keys.mu.Lock()
	defer keys.mu.Unlock()
	if keys.requests["alice ok"] != 6 || keys.requests["key-2 ok"] != 1 || keys.inFlight["alice"] != 0 || keys.inFlight["key-2"] != 0 {
		t.Errorf("per-key metrics: requests %v, in flight %v", keys.requests, keys.inFlight)
	}
}

func TestARequestThatGetsNoSlotWithinTheWaitIsAnsweredOverloaded(t *testing.T) {
	runner := &gatedRunner{began: make(chan string, 4), let: make(chan struct{})}
	s := httpapi.New(httpapi.Config{APIKeys: []string{"k"}, FairShareSlots: 1, FairShareWait: 50 * time.Millisecond}, runner)
	url, _ := serve(t, s)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url+"/execute", strings.NewReader(`{"script":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer k")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			first <- resp.StatusCode
		}
	}()
	<-runner.began
	r := post(t, s, "/execute", `{"script":"y"}`, "Authorization", "Bearer k")
	wantError(t, r, http.StatusTooManyRequests, httpapi.TypeOverloaded)
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	runner.let <- struct{}{}
	if st := <-first; st != 200 {
		t.Errorf("the run holding the slot answered %d", st)
	}
	if q := s.FairQueued(); q != 0 {
		t.Errorf("%d waiters left in the queue", q)
	}
}

func TestWithoutAPIKeysThereIsNoFairShareGate(t *testing.T) {
	s := httpapi.New(httpapi.Config{FairShareSlots: 4}, okRunner("1"))
	if q := s.FairQueued(); q != -1 {
		t.Errorf("gate present without keys")
	}
}

func TestATurnEndsWhenTheRequestHasAWorkerSoRunsAreNotBoundedByTheSlots(t *testing.T) {
	runner := &gatedRunner{began: make(chan string, 4), let: make(chan struct{}), acquired: true}
	s := httpapi.New(httpapi.Config{APIKeys: []string{"k"}, FairShareSlots: 1, FairShareWait: 5 * time.Second}, runner)
	url, _ := serve(t, s)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	statuses := make(chan int, 3)
	for i := range 3 {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, url+"/execute", strings.NewReader(fmt.Sprintf(`{"script":"r%d"}`, i)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer k")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				statuses <- -1
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	// All three run at once through one slot: each gave its turn back when
	// it had its worker.
	for range 3 {
		<-runner.began
	}
	for range 3 {
		runner.let <- struct{}{}
	}
	for range 3 {
		if st := <-statuses; st != 200 {
			t.Errorf("answered %d", st)
		}
	}
}
