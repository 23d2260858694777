package jailproc

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/internal/testenv"
)

// BenchmarkWarmRunUsage measures what reading a run's usage from its cgroup
// adds to a warm run: b.N sequential hello runs per variant, in one process,
// timing Run only (the spawn is not part of a warm run), and reports p50 and
// p90 of each. Run it with -benchtime=200x.
func BenchmarkWarmRunUsage(b *testing.B) {
	s, err := New(Config{NsjailPath: testenv.Nsjail(b), CgroupParent: testenv.CgroupParent(b, "usage-bench")}, UIDRange{Base: testenv.UIDBase(b), Size: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	req := executor.Request{Mode: executor.ModeSingle, Script: []byte("def main():\n    print('hello')\n    return {'msg': 'done'}\n")}
	// The two variants alternate in pairs of random order, so that the
	// machine's load (shared with other test suites) and any effect of the
	// run before weigh on both alike.
	lat := map[bool][]time.Duration{}
	defer func() { measureUsage = true }()
	first := false
	for i := range 2 * b.N {
		if i%2 == 0 {
			first = rand.IntN(2) == 1
		}
		on := first == (i%2 == 0)
		measureUsage = on
		p, err := s.Start(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		res, err := p.Run(context.Background(), req)
		lat[on] = append(lat[on], time.Since(t0))
		if err != nil || res.Status != executor.StatusOK || res.Usage.CPUMeasured != on {
			b.Fatalf("%v %s %+v", err, res.Status, res.Usage)
		}
		p.Kill()
	}
	for on, name := range map[bool]string{false: "off", true: "on"} {
		l := lat[on]
		slices.Sort(l)
		b.ReportMetric(float64(l[len(l)/2].Microseconds())/1000, "p50-ms-usage-"+name)
		b.ReportMetric(float64(l[len(l)*9/10].Microseconds())/1000, "p90-ms-usage-"+name)
	}
}

// BenchmarkWorkerGroupUsage is the cost of the reads alone (two cgroup files
// on either version).
func BenchmarkWorkerGroupUsage(b *testing.B) {
	s, err := prepareCgroups(Config{Cgroups: CgroupsRequired, CgroupRoot: testenv.CgroupRoot, CgroupParent: testenv.CgroupParent(b, "usage-read")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.removeParents()
	g, err := s.newGroup(groupLimits{memory: 64 << 20, procs: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer g.remove()
	for range b.N {
		if u := g.usage(); !u.memPeakOK {
			b.Fatal("peak memory not measured")
		}
	}
}
