package pool

import "context"

type acquiredKey struct{}

// WithAcquired returns a context that makes Run call f once it has checked
// out a worker, before the run starts. A caller that queues requests before
// Run (httpapi's fair share between API keys) learns from it when a request
// has stopped waiting for a worker, so it can let the next one in.
func WithAcquired(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, acquiredKey{}, f)
}

// NotifyAcquired calls the function set by WithAcquired, if any. Run calls
// it; another runner (a fake in tests, another isolation mode) calls it when
// it has what it waited for.
func NotifyAcquired(ctx context.Context) {
	if f, ok := ctx.Value(acquiredKey{}).(func()); ok {
		f()
	}
}
