package server

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"
)

// The collector's target is the server's own unless the operator set GOGC,
// which always wins.
func TestTheCollectorTargetIsTheServersUnlessGOGCIsSet(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	applyGCPercent(log)
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("without GOGC the collector target is %d, want %d", got, gcPercent)
	}

	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150) // what the runtime applied from GOGC at start
	applyGCPercent(log)
	if got := debug.SetGCPercent(100); got != 150 {
		t.Errorf("with GOGC=150 the collector target is %d, want the operator's 150", got)
	}
}
