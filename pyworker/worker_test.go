package pyworker_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/secure-script-executor/executor/pyworker"
)

func TestAMalformedFrameForgedOnFd3BeforeReturningIsAProtocolViolation(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte(
		"import os\ndef main():\n    os.write(3, b'SSE-RES 2\\n{}')\n    return 'real'\n")})
	if !errors.Is(o.Err, pyworker.ErrProtocol) {
		t.Fatalf("err = %v, result %+v; want a protocol violation", o.Err, o.Result)
	}
}

// A well-formed forged frame is indistinguishable from the worker's own, so
// the codec accepts it: it can only make a claim about this run of this
// script, which the script could have made by returning that value. The
// server must therefore never trust a result beyond "what the script said".
func TestAWellFormedFrameForgedOnFd3YieldsOnlyTheScriptsOwnClaim(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte(
		"import os\ndef main():\n    os.write(3, b'SSE-RES 29\\n{\"ok\":true,\"result\":\"forged\"}')\n    return 'real'\n")})
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	if !o.Result.OK || string(o.Result.Value) != `"forged"` {
		t.Fatalf("result %+v; want the forged claim", o.Result)
	}
}

func TestAForgedFrameOfTheOtherModeIsCaughtByCheckMode(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte(
		"import os\ndef main():\n    os.write(3, b'SSE-RES 24\\n{\"ok\":true,\"results\":[]}')\n    return 1\n")})
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	if err := o.Result.CheckMode(false); !errors.Is(err, pyworker.ErrProtocol) {
		t.Fatalf("CheckMode(single) = %v for a batch-shaped result", err)
	}
}

func TestAScriptThatClosesFd3EndsTheRunWithoutAResultAndANonZeroExit(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte("import os\nos.close(3)\ndef main():\n    return 1\n")})
	if !errors.Is(o.Err, io.EOF) {
		t.Fatalf("err = %v; want EOF (no result)", o.Err)
	}
	if o.ExitCode == 0 {
		t.Fatal("worker exited 0 without delivering a result")
	}
}

func TestAScriptThatExitsTheProcessItselfLeavesNoResult(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte("import os\ndef main():\n    print('bye', flush=True)\n    os._exit(7)\n")})
	if !errors.Is(o.Err, io.EOF) || o.ExitCode != 7 || string(o.Stdout) != "bye\n" {
		t.Fatalf("err %v, exit %d, stdout %q", o.Err, o.ExitCode, o.Stdout)
	}
}

func TestAResultAtExactlyTheLimitPassesAndOneByteMoreIsOutputLimit(t *testing.T) {
	t.Parallel()
	// Payload {"ok":true,"result":"xxx..."}: 21 bytes of envelope, 2 quotes.
	const limit = 100
	for n, wantOK := range map[int]bool{limit - 23: true, limit - 22: false} {
		o := runScript(t, pyworker.Request{
			Script:         []byte("def main(n):\n    return 'x' * n\n"),
			Input:          []byte(strconv.Itoa(n)),
			MaxResultBytes: limit,
		})
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if o.Result.OK != wantOK || (!wantOK && o.Result.Error.Type != "output_limit") {
			t.Errorf("string of %d: %+v %+v", n, o.Result, o.Result.Error)
		}
	}
}

func TestPreloadedModulesAndExtraPathsAreAvailableToTheScript(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "helpermod.py"), []byte("VALUE = 41\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := startWorker(t, []string{"helpermod", "json"}, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	o := w.run(t, pyworker.Request{
		Script:         []byte("import sys, helpermod\ndef main():\n    return [helpermod.VALUE + 1, 'json' in sys.modules]\n"),
		MaxResultBytes: 1000,
	})
	if o.Err != nil || string(o.Result.Value) != "[42,true]" {
		t.Fatalf("err %v, value %s, stderr %q", o.Err, o.Result.Value, o.Stderr)
	}
}

func TestAFailingPreloadIsReportedAsAStartErrorNamingTheModule(t *testing.T) {
	t.Parallel()
	_, err := startWorker(t, []string{"json", "no_such_module_xyz"}, nil)
	var se *pyworker.StartError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v; want *StartError", err)
	}
	want := "no_such_module_xyz: ModuleNotFoundError: No module named 'no_such_module_xyz'"
	if se.Message != want {
		t.Fatalf("message %q; want %q", se.Message, want)
	}
}

func TestAPreloadModuleThatRaisesAtImportTimeIsAStartError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "badmod.py"), []byte("raise SystemExit('no\\nway')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := startWorker(t, []string{"badmod"}, []string{dir})
	var se *pyworker.StartError
	if !errors.As(err, &se) || se.Message != "badmod: SystemExit: no way" {
		t.Fatalf("err = %v", err)
	}
}

func TestTheScriptRunsAsAFreshMainModuleWithoutTheWorkersNames(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte(`import sys, builtins
def main():
    g = globals()
    return {
        "name": __name__,
        "is_main": sys.modules["__main__"].__dict__ is g,
        "builtins": g["__builtins__"] is builtins,
        "names": sorted(k for k in g if not k.startswith("__")),
        "argv": sys.argv,
    }
`)})
	want := `{"name":"__main__","is_main":true,"builtins":true,"names":["builtins","main","sys"],"argv":["<script>"]}`
	if o.Err != nil || string(o.Result.Value) != want {
		t.Fatalf("err %v\n got %s\nwant %s", o.Err, o.Result.Value, want)
	}
}

func TestBatchRecordsSeeTheirOwnStdoutAndSysStdoutIsRestoredBetweenRecords(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{
		Batch: true,
		Script: []byte(`import sys
real = sys.stdout
def main(r):
    sys.stdout.write("w%d;" % r)
    if r == 1:
        sys.stdout = None  # must not leak into record 2
    return sys.stdout is not real
`),
		Input: []byte("[1, 2]"),
	})
	if o.Err != nil || len(o.Result.Batch) != 2 {
		t.Fatalf("err %v, result %+v", o.Err, o.Result)
	}
	for i, it := range o.Result.Batch {
		if it.Error != nil || it.Stdout != "w"+strconv.Itoa(i+1)+";" || string(it.Result) != "true" {
			t.Errorf("item %d: %+v %+v", i, it, it.Error)
		}
	}
}

func TestInputThatIsNotStrictJSONIsARuntimeError(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte("def main(x):\n    return x\n"), Input: []byte("NaN")})
	if o.Err != nil || o.Result.OK || o.Result.Error.Type != "runtime_error" ||
		!strings.HasPrefix(o.Result.Error.Message, "the input is not valid JSON") {
		t.Fatalf("err %v, result %+v %+v", o.Err, o.Result, o.Result.Error)
	}
}

func TestAnErrorPayloadShedsItsTracebackRatherThanBreakTheCap(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{
		Script:         []byte("def f(n):\n    if n: return f(n - 1)\n    raise ValueError('deep')\ndef main():\n    f(50)\n"),
		MaxResultBytes: 300,
	})
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	if e := o.Result.Error; e == nil || e.Type != "runtime_error" || e.Traceback != "" || e.Message != "ValueError: deep" || e.Line != 3 {
		t.Fatalf("error %+v", e)
	}
}

func TestABatchPayloadExactlyAtTheLimitPassesAndOneByteMoreFails(t *testing.T) {
	t.Parallel()
	// {"ok":true,"results":[ITEM,ITEM]} with ITEM {"result":"x..x","stdout":""}:
	// 24 bytes of envelope, 1 comma, 25 bytes per item plus its string.
	const limit = 200
	for extra, wantOK := range map[int]bool{0: true, 1: false} {
		o := runScript(t, pyworker.Request{
			Batch:          true,
			Script:         []byte("def main(n):\n    return 'x' * n\n"),
			Input:          []byte("[62," + strconv.Itoa(63+extra) + "]"),
			MaxResultBytes: limit,
		})
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if o.Result.OK != wantOK || (!wantOK && o.Result.Error.Type != "output_limit") {
			t.Errorf("extra %d: %+v %+v", extra, o.Result, o.Result.Error)
		}
		if wantOK && len(wire(o.Result)) != limit {
			t.Errorf("payload is %d bytes, want exactly %d", len(wire(o.Result)), limit)
		}
	}
}

// A failure of the worker's own code (here provoked by a script that breaks
// the worker's error builders) is a runtime_error saying the worker failed,
// not a memory_limit: nothing ran out of memory.
func TestAFailureOfTheWorkerItselfIsARuntimeErrorNotAMemoryLimit(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte(
		"import sys\ndef main():\n    g = sys._getframe(1).f_globals\n    g['_err'] = g['_exc_err'] = None\n    raise ValueError('x')\n")})
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	if o.Result.OK || o.Result.Error == nil || o.Result.Error.Type != "runtime_error" || o.Result.Error.Message != "the worker failed" {
		t.Fatalf("result %+v; want runtime_error \"the worker failed\"", o.Result)
	}
}

func TestARealMemoryErrorIsStillAMemoryLimit(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte("def main():\n    raise MemoryError\n")})
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	if o.Result.OK || o.Result.Error == nil || o.Result.Error.Type != "memory_limit" {
		t.Fatalf("result %+v; want memory_limit", o.Result)
	}
}

// The worker is not a security boundary: the script runs in its process and
// can reach its globals, so it can forge its own result. That is why the
// server trusts a result only as "what this script said" (see
// docs/SECURITY.md); the boundary is the jail and the server's checks.
func TestAScriptCanReplaceTheWorkersEncoderSoTheWorkerIsNoBoundary(t *testing.T) {
	t.Parallel()
	o := runScript(t, pyworker.Request{Script: []byte(
		"import sys\ndef main():\n    sys._getframe(1).f_globals['_encode'] = lambda v, limit: '\"forged\"'\n    return 'real'\n")})
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	if !o.Result.OK || string(o.Result.Value) != `"forged"` {
		t.Fatalf("result %+v; this test documents that a script can forge its result", o.Result)
	}
}
