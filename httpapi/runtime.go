package httpapi

import (
	"github.com/gofiber/fiber/v2"
)

// Runtime is the answer of GET /runtime: what a script runs on and what a
// request may ask for, like Piston's runtimes list. It is read at start-up
// and served as is; nothing in it is measured per request.
type Runtime struct {
	// Version is the server's version ("dev" for a build without one).
	Version string `json:"version"`
	// Isolation is how each run is isolated: "cell" (a single-use child
	// forked by a zygote in a long-lived nsjail, the default) or "jail" (a
	// fresh nsjail per run).
	Isolation string `json:"isolation"`
	// Python is nil until the server has asked a worker (right after the
	// sandbox self-test, before the server reports ready).
	Python *PythonRuntime `json:"python"`
	Limits Limits         `json:"limits"`
}

// PythonRuntime is the interpreter scripts run on, as a jailed worker sees it.
type PythonRuntime struct {
	Version        string `json:"version"`
	Implementation string `json:"implementation"`
	Executable     string `json:"executable"`
	// PreloadedModules are imported by every worker before it is ready, so
	// a script's import of them costs nothing.
	PreloadedModules []Module `json:"preloaded_modules"`
	// SysPathExtras are the folders appended to sys.path (read-only mounts).
	SysPathExtras []string `json:"sys_path_extras"`
}

// Module is one preloaded module; Version is nil when the module does not
// say (no __version__ and no installed distribution metadata).
type Module struct {
	Name    string  `json:"name"`
	Version *string `json:"version"`
}

// Limits are the most a request may ask for, and the server's other caps.
type Limits struct {
	MaxTimeoutMS    int64 `json:"max_timeout_ms"`
	MaxMemoryMB     int64 `json:"max_memory_mb,omitempty"`
	MinMemoryMB     int64 `json:"min_memory_mb"`
	MaxStdoutBytes  int64 `json:"max_stdout_bytes,omitempty"`
	MaxStderrBytes  int64 `json:"max_stderr_bytes,omitempty"`
	MaxResultBytes  int64 `json:"max_result_bytes,omitempty"`
	MaxBatchRecords int   `json:"max_batch_records"`
	MaxBodyBytes    int   `json:"max_body_bytes"`
	MaxInputDepth   int   `json:"max_input_depth"`
}

// RuntimeDescriber is implemented by a Runner that knows the interpreter
// and the sandbox's caps. GET /runtime asks it on every call, so it must
// answer from memory.
type RuntimeDescriber interface {
	Runtime() Runtime
}

// runtime is the /runtime answer: the runner's description with the limits
// this package enforces itself written over, so they cannot disagree.
func (s *Server) runtime() Runtime {
	var rt Runtime
	if d, ok := s.runner.(RuntimeDescriber); ok {
		rt = d.Runtime()
	}
	if rt.Version == "" {
		rt.Version = "dev"
	}
	if rt.Isolation == "" {
		// The pool of single-use jails is the only isolation a Runner that
		// does not describe itself has.
		rt.Isolation = "jail"
	}
	rt.Limits.MaxTimeoutMS = s.cfg.Timeout.Milliseconds()
	if s.cfg.MemoryLimit > 0 {
		rt.Limits.MaxMemoryMB = s.cfg.MemoryLimit / mib
	}
	rt.Limits.MinMemoryMB = MinMemoryLimitMB
	rt.Limits.MaxBatchRecords = s.cfg.MaxBatchRecords
	rt.Limits.MaxBodyBytes = s.cfg.MaxBodyBytes
	rt.Limits.MaxInputDepth = MaxInputDepth
	return rt
}

func (s *Server) handleRuntime(c *fiber.Ctx) error {
	return c.JSON(s.runtime())
}
