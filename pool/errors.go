package pool

import "errors"

// ErrOverloaded is returned by Run when no worker could be checked out before
// Config.AcquireTimeout (or the caller's deadline) passed.
var ErrOverloaded = errors.New("pool: no worker available before the acquire deadline")

// ErrSandboxUnavailable is returned (wrapped, with the last spawn error) by Run
// while workers cannot be spawned at all, e.g. nsjail is missing or namespaces
// are refused. Nothing runs until a spawn succeeds again.
var ErrSandboxUnavailable = errors.New("pool: sandbox unavailable")

// ErrClosed is returned by Run after Close has been called.
var ErrClosed = errors.New("pool: closed")
