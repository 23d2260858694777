package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/secure-script-executor/executor/jailproc"
)

// checkFiles finds, at start, the configuration errors that would otherwise
// only show as a sandbox that never works (and an alert for an outage): a
// seccomp policy that cannot be read, an nsjail or interpreter that is not an
// executable file, a --python-path entry that is not a folder, a preload
// module the jail's interpreter cannot import. A sandbox that breaks later
// is not a configuration error: the server stays up, not ready, and retries.
func checkFiles(c config) error {
	for _, check := range []func(config) error{checkNsjail, checkPython, checkPythonPath, checkSeccompPolicy, checkPreload} {
		if err := check(c); err != nil {
			return err
		}
	}
	return nil
}

// badFile is the error for setting name, whose value is v.
func badFile(name, v, why string) error {
	return fmt.Errorf("invalid --%s (%s) %s: %s", name, envName(name), v, why)
}

// checkNsjail accepts a path that does not exist yet (the server retries
// until it does) but not one that exists and cannot be nsjail.
func checkNsjail(c config) error {
	err := executable(c.NsjailPath)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return badFile("nsjail-path", c.NsjailPath, err.Error()+"; point it at the nsjail binary (scripts/setup.sh installs one)")
}

func checkPython(c config) error {
	if err := executable(c.PythonBin); err != nil {
		return badFile("python-bin", c.PythonBin, err.Error()+"; point it at the Python interpreter to run in the jail")
	}
	return nil
}

func checkPythonPath(c config) error {
	for _, p := range c.PythonPath {
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			return badFile("python-path", strings.Join(c.PythonPath, ":"), fmt.Sprintf("%s is not a folder; list existing folders, separated by colons", p))
		}
	}
	return nil
}

func checkSeccompPolicy(c config) error {
	if c.SeccompPolicy == "" || c.SeccompPolicy == jailproc.SeccompNone {
		return nil
	}
	if !filepath.IsAbs(c.SeccompPolicy) {
		return badFile("seccomp-policy", c.SeccompPolicy, "want an absolute path")
	}
	f, err := os.Open(c.SeccompPolicy)
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil && st.IsDir() {
			err = errors.New("is a folder")
		}
		f.Close()
	}
	if err != nil {
		return badFile("seccomp-policy", c.SeccompPolicy, fmt.Sprintf("cannot read it (%v); give a readable kafel policy file, or unset it for the built-in policy", unwrapPath(err)))
	}
	return nil
}

// preloadTimeout bounds the import check of every preload module together.
const preloadTimeout = 30 * time.Second

// checkPreload imports every --preload module with the jail's interpreter,
// its flags and --python-path, as a worker will (outside the jail, which
// mounts the same interpreter and folders).
func checkPreload(c config) error {
	if len(c.Preload) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), preloadTimeout)
	defer cancel()
	for _, mod := range c.Preload {
		cmd := exec.CommandContext(ctx, c.PythonBin, "-I", "-S", "-B", "-c",
			"import sys; sys.path.extend(sys.argv[2].split(':') if sys.argv[2] else []); __import__(sys.argv[1])",
			mod, strings.Join(c.PythonPath, ":"))
		cmd.Env = []string{}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return badFile("preload", strings.Join(c.Preload, ","), fmt.Sprintf("%s cannot import %s (%s); fix the module name, install it, or add its folder to --python-path",
				c.PythonBin, mod, lastLine(stderr.String(), err)))
		}
	}
	return nil
}

// executable reports why path is not an executable regular file (symlinks
// followed), or nil.
func executable(path string) error {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("%w", unwrapPath(err))
	case st.IsDir():
		return errors.New("it is a folder, not a program")
	case st.Mode()&0o111 == 0:
		return errors.New("it is not executable")
	}
	return nil
}

// unwrapPath drops the *fs.PathError wrapper, whose text repeats the path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// lastLine is the last line of a Python traceback (ExcType: message), or
// err when there is none.
func lastLine(stderr string, err error) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return err.Error()
}
