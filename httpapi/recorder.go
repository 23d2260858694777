package httpapi

import "time"

// Recorder receives the server's metrics. *metrics.Metrics implements it; the
// interface lives here so this package compiles and tests without Prometheus.
//
// Label values are bounded: route is a route template or "unmatched", method
// one of the standard HTTP methods or "other", and outcome "ok" or an error
// type from the API (see docs/API.md).
type Recorder interface {
	// ObserveHTTP is called once for every request, after the response is
	// written.
	ObserveHTTP(route string, method string, status int, d time.Duration)
	// ObserveExecution is called once for every /execute or /execute/batch
	// request that reached the runner, with the run's own duration (zero
	// when the runner failed before running anything), and once, with a
	// zero duration and no output, for every such request refused before
	// the runner as invalid_request, unauthorized, request_too_large or
	// unsupported_media_type.
	ObserveExecution(outcome string, d time.Duration, stdoutBytes, stderrBytes int)
	// ExecutionStarted and ExecutionFinished bracket every Runner.Run call.
	ExecutionStarted()
	ExecutionFinished()
	// Overloaded is called when the runner answered pool.ErrOverloaded.
	Overloaded()
}

// nopRecorder is the default Recorder.
type nopRecorder struct{}

var _ Recorder = nopRecorder{}

func (nopRecorder) ObserveHTTP(string, string, int, time.Duration)   {}
func (nopRecorder) ObserveExecution(string, time.Duration, int, int) {}
func (nopRecorder) ExecutionStarted()                                {}
func (nopRecorder) ExecutionFinished()                               {}
func (nopRecorder) Overloaded()                                      {}
