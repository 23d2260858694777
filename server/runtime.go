package server

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/httpapi"
)

// runtimeProbeScript asks a jailed worker what scripts run on: the
// interpreter's version and the versions of the modules every worker
// preloads (already in sys.modules there). It runs once, right after the
// sandbox self-test, so GET /runtime never adds work to a request.
const runtimeProbeScript = `import sys

def _version(name):
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        mod = sys.modules.get('.'.join(parts[:i]))
        v = getattr(mod, '__version__', None)
        if isinstance(v, str):
            return v
    try:
        from importlib import metadata
        return metadata.version(parts[0])
    except Exception:
        return None

def main(names):
    return {
        'version': '%d.%d.%d' % tuple(sys.version_info[:3]),
        'implementation': sys.implementation.name,
        'modules': [{'name': n, 'version': _version(n)} for n in names],
    }
`

// probeRuntime runs runtimeProbeScript in a worker and keeps the answer for
// GET /runtime. A failure is logged and leaves "python": null; it does not
// keep the server unready, since scripts may run all the same.
func (a *App) probeRuntime(ctx context.Context) {
	names := a.cfg.Preload
	if names == nil {
		names = []string{}
	}
	input, _ := json.Marshal(names)
	res, err := a.pool.Run(ctx, executor.Request{Mode: executor.ModeSingle, Script: []byte(runtimeProbeScript), Input: input})
	if err == nil && res.Status != executor.StatusOK {
		err = fmt.Errorf("status %s: %+v", res.Status, res.Error)
	}
	var got struct {
		Version        string           `json:"version"`
		Implementation string           `json:"implementation"`
		Modules        []httpapi.Module `json:"modules"`
	}
	if err == nil {
		err = json.Unmarshal(res.Value, &got)
	}
	if err != nil {
		a.log.Warn("runtime probe failed: GET /runtime will not name the Python version", "err", err)
		return
	}
	a.python.Store(&httpapi.PythonRuntime{
		Version:          got.Version,
		Implementation:   got.Implementation,
		Executable:       a.cfg.PythonBin,
		PreloadedModules: got.Modules,
		SysPathExtras:    append([]string{}, a.cfg.PythonPath...),
	})
	a.log.Info("runtime", "python", got.Version, "preloaded", len(got.Modules))
}

// Runtime describes the runtime for GET /runtime, from memory.
func (r *runner) Runtime() httpapi.Runtime {
	rt := httpapi.Runtime{
		Version:   buildInfo().Version,
		Isolation: r.cfg.Isolation,
		Python:    r.python.Load(),
		Limits: httpapi.Limits{
			MaxStdoutBytes: r.cfg.MaxStdout,
			MaxStderrBytes: r.cfg.MaxStderr,
			MaxResultBytes: r.cfg.MaxResult,
		},
	}
	if rt.Python != nil {
		p := *rt.Python
		p.PreloadedModules = slices.Clone(p.PreloadedModules)
		rt.Python = &p
	}
	return rt
}

var _ httpapi.RuntimeDescriber = (*runner)(nil)
