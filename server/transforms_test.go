package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

// crmTransform is the README's example: normalise a CRM contact for a
// database row. Record 1337 of the batch test has no email and fails on its
// own.
const crmTransform = `
def main(contact):
    email = contact["email"].strip().lower()
    first, _, last = contact["name"].strip().partition(" ")
    return {
        "email": email,
        "first_name": first.title(),
        "last_name": last.title() or None,
        "domain": email.split("@", 1)[1],
        "lifetime_value": round(sum(o["amount"] for o in contact.get("orders", [])), 2),
    }
`

func crmRecords(n, missingEmailAt int) []map[string]any {
	recs := make([]map[string]any, n)
	for i := range recs {
		recs[i] = map[string]any{
			"email":  fmt.Sprintf("  User%d@Example.COM ", i),
			"name":   fmt.Sprintf("ada lovelace%d", i),
			"orders": []map[string]any{{"amount": 10.25}, {"amount": float64(i)}},
		}
	}
	if missingEmailAt >= 0 {
		delete(recs[missingEmailAt], "email")
	}
	return recs
}

func (s *server) batch(script string, inputs any) response {
	s.t.Helper()
	b, _ := json.Marshal(map[string]any{"script": script, "inputs": inputs})
	return s.post("/execute/batch", "application/json", string(b))
}

func TestABatchOfTwoThousandRecordsIsTransformedInOrderWithOneFailingRecordReportedAlone(t *testing.T) {
	s := sharedServer(t)
	r := s.batch(crmTransform, crmRecords(2000, 1337))
	if r.Status != 200 {
		t.Fatalf("status %d: %.500s", r.Status, r.Raw)
	}
	results := r.Body["results"].([]any)
	if len(results) != 2000 {
		t.Fatalf("%d results for 2000 records", len(results))
	}
	for i, it := range results {
		item := it.(map[string]any)
		if i == 1337 {
			e, _ := item["error"].(map[string]any)
			if e["type"] != "runtime_error" || !strings.Contains(fmt.Sprint(e["message"]), "KeyError") || e["line"] != float64(3) {
				t.Fatalf("record 1337: %v", item)
			}
			continue
		}
		res, _ := item["result"].(map[string]any)
		want := fmt.Sprintf("user%d@example.com", i)
		if res["email"] != want || res["last_name"] != fmt.Sprintf("Lovelace%d", i) || res["lifetime_value"] != 10.25+float64(i) {
			t.Fatalf("record %d: %v", i, item)
		}
	}
}

func TestBatchRecordsKeepTheirOwnStdoutAndScriptLevelFailuresFailTheWholeBatch(t *testing.T) {
	s := sharedServer(t)
	r := s.batch("def main(x):\n    print('record', x)\n    return x * 2\n", []int{1, 2, 3})
	if r.Status != 200 {
		t.Fatalf("%s", r.Raw)
	}
	for i, it := range r.Body["results"].([]any) {
		item := it.(map[string]any)
		if item["result"] != float64(2*(i+1)) || item["stdout"] != fmt.Sprintf("record %d\n", i+1) {
			t.Fatalf("item %d: %v", i, item)
		}
	}
	for _, c := range []struct{ script, typ string }{
		{"def main(x:\n    return x\n", "syntax_error"},
		{"def handler(x):\n    return x\n", "missing_main"},
		{"def main(x):\n    while True:\n        pass\n", "timeout"},
	} {
		r := s.batch(c.script, []int{1, 2})
		if r.Status != 422 || errType(r) != c.typ {
			t.Fatalf("%q: status %d %s", c.script, r.Status, r.Raw)
		}
	}
	r = s.batch("def main(x):\n    return {x}\n", []int{1})
	item := r.Body["results"].([]any)[0].(map[string]any)
	if r.Status != 200 || item["error"].(map[string]any)["type"] != "result_not_json" {
		t.Fatalf("non-JSON record result: %s", r.Raw)
	}
}

// BenchmarkCRMTransform compares records per second through single
// /execute requests (4 at a time) and through /execute/batch (2000 records a
// request): go test -run '^$' -bench CRMTransform ./server/
func BenchmarkCRMTransform(b *testing.B) {
	s := startServer(b, nil, "--timeout", "10s", "--max-result", "4MiB", "--max-stdout", "4MiB")
	s.waitReady()
	one, _ := json.Marshal(map[string]any{"script": crmTransform, "input": crmRecords(1, -1)[0]})
	b.Run("Mode=single", func(b *testing.B) {
		sem := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for b.Loop() {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				resp, err := http.Post(s.url+"/execute", "application/json", strings.NewReader(string(one)))
				if err != nil {
					b.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("Mode=batch/Records=2000", func(b *testing.B) {
		const records = 2000
		recs := crmRecords(records, -1)
		for b.Loop() {
			if r := s.batch(crmTransform, recs); r.Status != 200 {
				b.Fatalf("%.300s", r.Raw)
			}
		}
		b.ReportMetric(float64(b.N*records)/b.Elapsed().Seconds(), "records/s")
	})
}

func TestPreloadedNumpyFromTheConfiguredPythonPathWorksInTheJail(t *testing.T) {
	const dist = "/usr/lib/python3/dist-packages"
	if _, err := os.Stat(dist + "/numpy/__init__.py"); err != nil {
		t.Fatalf("Debian's python3-numpy is missing (make test installs it): %v", err)
	}
	s := startServer(t, map[string]string{"EXECUTOR_PYTHON_PATH": dist, "EXECUTOR_PRELOAD": "numpy"},
		"--uid-base", testenv.UIDBaseArg(t), "--cgroup-parent", testenv.CgroupParent(t, "numpy"), "--warm-workers", "2", "--max-workers", "4")
	s.waitReady()
	script := "import numpy as np\ndef main(rows):\n    a = np.array(rows, dtype=float)\n    return {'mean': a.mean(axis=0).tolist(), 'threads': __import__('os').environ.get('OPENBLAS_NUM_THREADS')}\n"
	r := s.execute(script, `"input":[[1,2],[3,4],[5,6]]`)
	if r.Status != 200 {
		t.Fatalf("%s", r.Raw)
	}
	jsonEq(t, r.Body["result"], `{"mean":[3,4],"threads":"1"}`)

	// The preloaded import costs the script nothing: its run is as short as
	// a plain script's (reported, not asserted).
	var ds []float64
	for i := 0; i < 10; i++ {
		r := s.execute(script, `"input":[[1,2]]`)
		ds = append(ds, r.Body["duration_ms"].(float64))
		time.Sleep(100 * time.Millisecond) // below spawn capacity
	}
	sort.Float64s(ds)
	t.Logf("numpy script with preload: in-jail p50 %.2f ms", ds[len(ds)/2])
}

// A preload that cannot import can never work: the server refuses to start
// (exit 2, naming the module) instead of retrying forever with the sandbox
// reported unavailable.
func TestAPreloadModuleThatFailsToImportStopsTheStartWithExitTwoNamingIt(t *testing.T) {
	code, stderr := runMain(t, map[string]string{"EXECUTOR_PRELOAD": "no_such_module_xyz"}, "--nsjail-path", testenv.Nsjail(t))
	if code != 2 || !strings.Contains(stderr, "cannot import no_such_module_xyz") || !strings.Contains(stderr, "EXECUTOR_PRELOAD") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}
