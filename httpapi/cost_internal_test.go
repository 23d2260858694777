package httpapi

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"
)

// What the additions of usage, memory_limit_mb and fair share cost a warm
// run's answer, measured in isolation (go test -bench Cost ./httpapi/).

var benchResult = executor.Result{Status: executor.StatusOK, Value: json.RawMessage(`{"msg":"done"}`),
	Stdout: []byte("hello\n"), Duration: 610 * time.Microsecond,
	Usage: executor.Usage{Wall: 610 * time.Microsecond, CPU: 580 * time.Microsecond, CPUMeasured: true,
		MemoryPeak: 10 << 20, MemoryPeakMeasured: true}}

// executeResponseBefore is the 200 answer as it was without usage.
type executeResponseBefore struct {
	Result     json.RawMessage `json:"result"`
	Stdout     string          `json:"stdout"`
	Stderr     string          `json:"stderr"`
	DurationMS float64         `json:"duration_ms"`
}

func BenchmarkCostAnswerWithoutUsage(b *testing.B) {
	for b.Loop() {
		_, _ = json.Marshal(executeResponseBefore{Result: benchResult.Value, Stdout: string(benchResult.Stdout),
			DurationMS: ms(benchResult.Duration)})
	}
}

func BenchmarkCostAnswerWithUsage(b *testing.B) {
	for b.Loop() {
		_, _ = json.Marshal(executeResponse{Result: benchResult.Value, Stdout: string(benchResult.Stdout),
			DurationMS: ms(benchResult.Duration), Usage: usageOf(benchResult)})
	}
}

func BenchmarkCostDecodeWithoutMemoryLimit(b *testing.B) {
	body := []byte(`{"script":"def main():\n  print('hello')\n  return {\"msg\": \"done\"}","timeout_ms":1000}`)
	for b.Loop() {
		_, _ = decodeRunRequest(body, executor.ModeSingle, 10)
	}
}

func BenchmarkCostDecodeWithMemoryLimit(b *testing.B) {
	body := []byte(`{"script":"def main():\n  print('hello')\n  return {\"msg\": \"done\"}","timeout_ms":1000,"memory_limit_mb":64}`)
	for b.Loop() {
		_, _ = decodeRunRequest(body, executor.ModeSingle, 10)
	}
}

func BenchmarkCostFairShareTurnUncontended(b *testing.B) {
	g := newFairGate(8)
	ctx := context.Background()
	for b.Loop() {
		if err := g.acquire(ctx, 0, time.Second); err != nil {
			b.Fatal(err)
		}
		g.release()
	}
}
