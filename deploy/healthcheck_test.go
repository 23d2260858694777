package deploy_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
)

// healthcheckCmd is the exec form of the Dockerfile's HEALTHCHECK CMD.
func healthcheckCmd(t *testing.T) []string {
	t.Helper()
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])\s*$`).FindSubmatch(df)
	if m == nil {
		t.Fatal("no exec-form HEALTHCHECK CMD in the Dockerfile")
	}
	var argv []string
	if err := json.Unmarshal(m[1], &argv); err != nil {
		t.Fatalf("HEALTHCHECK CMD is not a JSON array: %v", err)
	}
	return argv
}

func runHealthcheck(t *testing.T, argv []string, port int) int {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PORT=" + strconv.Itoa(port)}
	err := cmd.Run()
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("healthcheck did not run: %v", err)
	return -1
}

// The image's HEALTHCHECK runs with the image's own python3; here the
// machine's, which is the same Debian interpreter.
func TestTheDockerHealthcheckPassesOnlyWhenHealthzAnswers200(t *testing.T) {
	argv := healthcheckCmd(t)
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	if code := runHealthcheck(t, argv, port); code != 0 {
		t.Fatalf("healthy server: exit %d, want 0", code)
	}
	status.Store(http.StatusServiceUnavailable)
	if code := runHealthcheck(t, argv, port); code == 0 {
		t.Fatal("a /healthz answering 503 passed the health check")
	}
	srv.Close()
	if code := runHealthcheck(t, argv, port); code == 0 {
		t.Fatal("nothing listening passed the health check")
	}
}
