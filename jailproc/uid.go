package jailproc

import (
	"errors"
	"sync"
)

// ErrNoFreeUID is returned by Start when every uid of the configured range
// belongs to a live jail. The pool's maximum size must not exceed the range.
var ErrNoFreeUID = errors.New("jailproc: no free host uid for a new jail")

// uidRange hands out host uids so that no two live jails share one: a jail
// cannot signal, ptrace or read files of another, and RLIMIT_NPROC (counted
// per real uid) becomes a per-jail limit.
type uidRange struct {
	mu   sync.Mutex
	free []int
}

func newUIDRange(base, size int) *uidRange {
	r := &uidRange{free: make([]int, 0, size)}
	// Handed out from the low end first; released uids go to the back so a
	// uid is reused as late as possible.
	for uid := base; uid < base+size; uid++ {
		r.free = append(r.free, uid)
	}
	return r
}

func (r *uidRange) take() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.free) == 0 {
		return 0, ErrNoFreeUID
	}
	uid := r.free[0]
	r.free = r.free[1:]
	return uid, nil
}

func (r *uidRange) put(uid int) {
	r.mu.Lock()
	r.free = append(r.free, uid)
	r.mu.Unlock()
}
