// Package loadtest drives load against the executor's HTTP API (or any HTTP
// server that speaks the same JSON error envelope) using the vegeta library,
// and summarises what came back: throughput, latency quantiles, counts per
// HTTP status and per API error type.
//
// cmd/loadtest/main.go is only a shim around Main so that every behaviour,
// including flag validation and exit codes, can be tested in-process.
package loadtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultScript is the API's hello example. It is the default so that a bare
// `loadtest` measures the service's fixed per-request cost (sandbox start,
// protocol round trip) rather than any particular workload.
const DefaultScript = "def main():\n  print('hello')\n  return {\"msg\": \"done\"}"

// DefaultURL is where a locally started executor listens.
const DefaultURL = "http://127.0.0.1:8080/execute"

// APIKeyEnv is read when -api-key is empty, so that the key need not appear
// in the process list or shell history.
const APIKeyEnv = "LOADTEST_API_KEY"

// Config is the fully validated description of one load test run.
type Config struct {
	URL         string        // final target URL (already rewritten for -batch)
	Rate        int           // requests per second; 0 = closed loop
	Concurrency int           // closed loop: workers; open loop: cap on in-flight requests (0 = no cap)
	Duration    time.Duration // measured window, after Warmup
	Warmup      time.Duration // leading period whose results are excluded from the summary
	Timeout     time.Duration // per HTTP request
	APIKey      string
	JSON        bool
	HTMLPath    string
	Progress    time.Duration // 0 = no progress lines

	// ScriptSource names where the script came from ("built-in hello" or the
	// path) so the report says what was measured.
	ScriptSource string
	Batch        bool
	// BatchSize is the number of inputs per batch request (0 when not batching).
	BatchSize int
	// Body is the exact JSON request body sent with every request; it is
	// built once because every request of a run is identical.
	Body []byte
}

// Mode reports "open" (fixed arrival rate) or "closed" (fixed concurrency).
func (c *Config) Mode() string {
	if c.Rate == 0 {
		return "closed"
	}
	return "open"
}

// FlagError is a command-line problem. Its message always starts with the
// offending flag so the user knows which one to fix.
type FlagError struct {
	Flag string
	Msg  string
}

func (e *FlagError) Error() string { return "-" + e.Flag + ": " + e.Msg }

func flagErr(name, format string, args ...any) error {
	return &FlagError{Flag: name, Msg: fmt.Sprintf(format, args...)}
}

// flagValues holds the parsed flags before they become a Config.
type flagValues struct {
	rawURL, scriptPath, inputPath, batchPath string
	cfg                                      Config
}

// ParseFlags parses and validates args (without the program name). Usage
// text for -h goes to usage; on -h it returns flag.ErrHelp.
func ParseFlags(args []string, usage io.Writer) (*Config, error) {
	fv, err := parseArgs(args, usage)
	if err != nil {
		return nil, err
	}
	cfg := &fv.cfg
	if cfg.APIKey == "" {
		cfg.APIKey = os.Getenv(APIKeyEnv)
	}
	if err := fv.validate(); err != nil {
		return nil, err
	}
	u, err := parseTargetURL(fv.rawURL)
	if err != nil {
		return nil, flagErr("url", "%v", err)
	}
	body, err := fv.requestBody(u)
	if err != nil {
		return nil, err
	}
	cfg.URL = u.String()
	if cfg.Body, err = json.Marshal(body); err != nil {
		return nil, fmt.Errorf("encoding request body: %w", err)
	}
	return cfg, nil
}

// parseArgs defines the flags and parses args.
func parseArgs(args []string, usage io.Writer) (*flagValues, error) {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	// Errors are reported by the caller, once, in our own format; only -h
	// output should go to the user verbatim.
	fs.SetOutput(io.Discard)
	fv := &flagValues{}
	c := &fv.cfg
	fs.StringVar(&fv.rawURL, "url", DefaultURL, "target URL of POST /execute (with -batch, a trailing /execute becomes /execute/batch)")
	fs.IntVar(&c.Rate, "rate", 10, "open loop: requests per second, independent of response times; 0 = closed loop (needs -concurrency)")
	fs.IntVar(&c.Concurrency, "concurrency", 0, "closed loop (-rate=0): number of workers sending back-to-back; open loop: cap on in-flight requests (0 = no cap)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "length of the measured window (after -warmup)")
	fs.DurationVar(&c.Warmup, "warmup", 0, "load sent before the measured window; its results are excluded from the summary")
	fs.StringVar(&fv.scriptPath, "script", "", "file with the Python script to send (default: built-in hello example)")
	fs.StringVar(&fv.inputPath, "input", "", "file with the JSON value sent as \"input\" (optional)")
	fs.StringVar(&fv.batchPath, "batch", "", "file with a JSON array sent as \"inputs\" to /execute/batch")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "per-request timeout (client side)")
	fs.StringVar(&c.APIKey, "api-key", "", "sent as 'Authorization: Bearer <key>' (default: $"+APIKeyEnv+")")
	fs.BoolVar(&c.JSON, "json", false, "print the summary as JSON instead of a table")
	fs.StringVar(&c.HTMLPath, "html", "", "write an interactive HTML latency plot to this file")
	fs.DurationVar(&c.Progress, "progress", 0, "print a one-line progress report to stderr at this interval (0 = off)")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(usage)
			fmt.Fprintln(usage, "Usage: loadtest [flags]\n\nSends load to the executor's POST /execute (or /execute/batch) and summarises the responses.\n\nFlags:")
			fs.PrintDefaults()
			return nil, err
		}
		// The flag package already names the flag ("invalid value ... for
		// flag -rate", "flag provided but not defined: -x").
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (all options are flags, e.g. -duration 10s)", fs.Arg(0))
	}
	return fv, nil
}

// validate checks the flags that need no file.
func (fv *flagValues) validate() error {
	cfg := &fv.cfg
	switch {
	case cfg.Rate < 0:
		return flagErr("rate", "must be >= 0 (0 means closed loop), got %d", cfg.Rate)
	case cfg.Concurrency < 0:
		return flagErr("concurrency", "must be >= 0, got %d", cfg.Concurrency)
	case cfg.Rate == 0 && cfg.Concurrency == 0:
		return flagErr("concurrency", "must be >= 1 in closed-loop mode (-rate=0)")
	case cfg.Duration <= 0:
		// An unbounded run is never what a load test wants: it would only
		// end on Ctrl-C and could hammer a shared server indefinitely.
		return flagErr("duration", "must be > 0, got %s", cfg.Duration)
	case cfg.Warmup < 0:
		return flagErr("warmup", "must be >= 0, got %s", cfg.Warmup)
	case cfg.Timeout <= 0:
		return flagErr("timeout", "must be > 0, got %s", cfg.Timeout)
	case cfg.Progress < 0:
		return flagErr("progress", "must be >= 0, got %s", cfg.Progress)
	case fv.inputPath != "" && fv.batchPath != "":
		return flagErr("input", "cannot be combined with -batch (batch inputs come from the -batch file)")
	case strings.ContainsAny(cfg.APIKey, "\r\n"):
		return flagErr("api-key", "must not contain line breaks")
	}
	return nil
}

// requestBody reads the script, input and batch files into the body every
// request sends; with -batch it points u at the batch endpoint.
func (fv *flagValues) requestBody(u *url.URL) (map[string]any, error) {
	script, err := fv.script()
	if err != nil {
		return nil, err
	}
	body := map[string]any{"script": script}
	if fv.inputPath != "" {
		raw, err := readJSONFile(fv.inputPath)
		if err != nil {
			return nil, flagErr("input", "%v", err)
		}
		body["input"] = raw
	}
	if fv.batchPath != "" {
		raw, err := fv.batch()
		if err != nil {
			return nil, err
		}
		body["inputs"] = raw
		// Users naturally keep -url pointing at the service's /execute; the
		// batch endpoint lives right under it. Any other path is taken as
		// already being the batch endpoint.
		if strings.HasSuffix(u.Path, "/execute") {
			u.Path += "/batch"
		}
	}
	return body, nil
}

// script is the -script file's source, or the built-in example.
func (fv *flagValues) script() (string, error) {
	fv.cfg.ScriptSource = "built-in hello example"
	if fv.scriptPath == "" {
		return DefaultScript, nil
	}
	b, err := os.ReadFile(fv.scriptPath)
	if err != nil {
		return "", flagErr("script", "%v", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "", flagErr("script", "file %s is empty", fv.scriptPath)
	}
	fv.cfg.ScriptSource = fv.scriptPath
	return string(b), nil
}

// batch reads the -batch file, which must hold a non-empty JSON array.
func (fv *flagValues) batch() (json.RawMessage, error) {
	raw, err := readJSONFile(fv.batchPath)
	if err != nil {
		return nil, flagErr("batch", "%v", err)
	}
	var inputs []json.RawMessage
	if err := json.Unmarshal(raw, &inputs); err != nil {
		return nil, flagErr("batch", "%s must hold a JSON array of inputs", fv.batchPath)
	}
	if len(inputs) == 0 {
		return nil, flagErr("batch", "%s holds an empty array", fv.batchPath)
	}
	fv.cfg.Batch, fv.cfg.BatchSize = true, len(inputs)
	return raw, nil
}

func parseTargetURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q must be an http:// or https:// URL", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", raw)
	}
	return u, nil
}

// readJSONFile returns the file's content as compact JSON after checking it
// is exactly one JSON value: a typo in the input file should fail here, not
// as thousands of 400s from the server.
func readJSONFile(path string) (json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", path, err)
	}
	return buf.Bytes(), nil
}
