package jailproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrUIDRangeTaken is wrapped by New's error when another supervisor on this
// host (in this process or another) holds part of the uid range. Two servers
// mapping the same host uids could signal, ptrace and read each other's jails.
var ErrUIDRangeTaken = errors.New("jailproc: uid range taken")

// uidChunk is how many uids one lock file claims. A range claims every chunk
// it touches (chunks are aligned to multiples of uidChunk), so a range of a
// few hundred uids takes a few files, and two ranges that share a chunk
// conflict even when they do not overlap.
const uidChunk = 64

// UIDRangeTakenError says which part of the range another supervisor holds.
type UIDRangeTakenError struct {
	Range UIDRange
	// Chunk is the first uid of the taken chunk (uidChunk uids).
	Chunk int
	// Holder is what the holder wrote into the lock file ("pid 123 uids
	// 200000-200047"), "" if unknown.
	Holder string
	Dir    string
}

func (e *UIDRangeTakenError) Error() string {
	holder := "another server"
	if e.Holder != "" {
		holder += " (" + e.Holder + ")"
	}
	return fmt.Sprintf("jailproc: host uids %d-%d are already in use: %s holds uids %d-%d (lock %s); give each server on this host its own uid range (--uid-base, at least %d apart)",
		e.Range.Base, e.Range.Base+e.Range.Size-1, holder, e.Chunk, e.Chunk+uidChunk-1, filepath.Join(e.Dir, lockName(e.Chunk)), e.Range.Size+uidChunk)
}

func (e *UIDRangeTakenError) Is(target error) bool { return target == ErrUIDRangeTaken }

// uidClaim is a uid range claimed host-wide: an flock on one file per chunk,
// held until release. The kernel drops the locks when the process dies, so a
// crashed server never leaves its range claimed.
type uidClaim struct{ files []*os.File }

func lockName(chunk int) string { return strconv.Itoa(chunk) + ".lock" }

// claimUIDs claims every chunk of r in dir.
func claimUIDs(dir string, r UIDRange) (_ *uidClaim, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("jailproc: uid lock folder: %w", err)
	}
	c := &uidClaim{}
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	me := fmt.Sprintf("pid %d uids %d-%d", os.Getpid(), r.Base, r.Base+r.Size-1)
	for chunk := r.Base / uidChunk * uidChunk; chunk < r.Base+r.Size; chunk += uidChunk {
		f, err := os.OpenFile(filepath.Join(dir, lockName(chunk)), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("jailproc: uid lock: %w", err)
		}
		// An flock belongs to the open file description: a second open of
		// the same file, even in this process, conflicts with it.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			holder, _ := os.ReadFile(f.Name())
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, &UIDRangeTakenError{Range: r, Chunk: chunk, Holder: strings.TrimSpace(string(holder)), Dir: dir}
			}
			return nil, fmt.Errorf("jailproc: uid lock %s: %w", f.Name(), err)
		}
		c.files = append(c.files, f)
		// Who holds it, for the error of the next one who tries.
		if err := f.Truncate(0); err == nil {
			f.WriteAt([]byte(me+"\n"), 0)
		}
	}
	return c, nil
}

// release drops the locks. The files stay: removing a lock file would let a
// third server lock a new file of the same name while a second one still
// holds the old one.
func (c *uidClaim) release() {
	for _, f := range c.files {
		f.Close()
	}
	c.files = nil
}
