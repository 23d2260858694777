package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/gofiber/fiber/v2"
)

// executeResponse is the 200 answer of /execute.
type executeResponse struct {
	Result     json.RawMessage `json:"result"`
	Stdout     string          `json:"stdout"`
	Stderr     string          `json:"stderr"`
	DurationMS float64         `json:"duration_ms"`
	Usage      *usageJSON      `json:"usage"`
}

// batchResponse is the 200 answer of /execute/batch.
type batchResponse struct {
	Results    []batchItem `json:"results"`
	Stderr     string      `json:"stderr"`
	DurationMS float64     `json:"duration_ms"`
	// Usage covers the whole run: module code and every record together.
	Usage *usageJSON `json:"usage"`
}

// batchItem is one record's outcome: Result or Error, never both. Result is a
// pointer so that a successful null result is still written as "result": null.
type batchItem struct {
	Result *json.RawMessage `json:"result,omitempty"`
	Error  *errorDetail     `json:"error,omitempty"`
	Stdout string           `json:"stdout"`
}

var jsonNull = json.RawMessage("null")

func (s *Server) handleExecute(c *fiber.Ctx) error {
	res, _, err := s.decodeAndRun(c, executor.ModeSingle)
	if err != nil {
		return err
	}
	value := res.Value
	if len(value) == 0 {
		value = jsonNull
	}
	return c.JSON(executeResponse{
		Result:     value,
		Stdout:     string(res.Stdout), // invalid UTF-8 becomes U+FFFD in encoding/json
		Stderr:     string(res.Stderr),
		DurationMS: ms(res.Duration),
		Usage:      usageOf(res),
	})
}

func (s *Server) handleBatch(c *fiber.Ctx) error {
	res, records, err := s.decodeAndRun(c, executor.ModeBatch)
	if err != nil {
		return err
	}
	// One item per record is the contract clients index by. The items come
	// from the worker, which the script controls (it can forge a result
	// frame): a miscount is the script's doing, answered like any other
	// interference with the result channel, never as a server failure.
	if len(res.Batch) != records {
		return &apiError{Type: TypeRuntimeError, script: true, stdout: res.Stdout, stderr: res.Stderr,
			Message: fmt.Sprintf("the script interfered with the worker's result channel: %d results for %d records", len(res.Batch), records),
			cause:   fmt.Errorf("httpapi: runner returned %d batch items for %d records", len(res.Batch), records)}
	}
	items := make([]batchItem, len(res.Batch))
	for i, b := range res.Batch {
		items[i].Stdout = b.Stdout
		if b.Error != nil {
			d := detailOf(b.Error)
			items[i].Error = &d
			continue
		}
		v := b.Result
		if len(v) == 0 {
			v = jsonNull
		}
		items[i].Result = &v
	}
	return c.JSON(batchResponse{
		Results:    items,
		Stderr:     string(res.Stderr),
		DurationMS: ms(res.Duration),
		Usage:      usageOf(res),
	})
}

// decodeAndRun is the part /execute and /execute/batch share: check the body,
// run it, and turn every failure into an *apiError. On success the Result has
// Status OK. records is the batch size (batch only).
func (s *Server) decodeAndRun(c *fiber.Ctx, mode executor.Mode) (executor.Result, int, error) {
	info := c.Locals(infoKey).(*requestInfo)
	if aerr := checkContentType(c.Get(fiber.HeaderContentType)); aerr != nil {
		return executor.Result{}, 0, aerr
	}
	// decodeRunRequest copies what it keeps: c.Body() is reused by fasthttp
	// after the handler returns.
	rr, aerr := decodeRunRequest(c.Body(), mode, s.cfg.MaxBatchRecords)
	if aerr != nil {
		return executor.Result{}, 0, aerr
	}
	info.scriptBytes = len(rr.Script)
	if s.cfg.LogScripts {
		info.script, info.input = rr.Script, string(rr.Input)
	}

	eff := s.effectiveTimeout(rr.TimeoutMS)
	req := executor.Request{Mode: mode, Script: []byte(rr.Script), Input: rr.Input, Records: rr.Records, Timeout: eff,
		MemoryLimit: s.effectiveMemoryLimit(rr.MemoryLimitMB)}

	s.rec.ExecutionStarted()
	runStart := time.Now()
	res, err := s.runFair(req, info)
	info.runTime = time.Since(runStart)
	s.rec.ExecutionFinished()

	info.ran, info.execTime = true, res.Duration
	if err == nil {
		info.usage = usageOf(res)
	}
	info.stdoutBytes, info.stderrBytes = len(res.Stdout), len(res.Stderr)
	if s.cfg.LogScripts {
		info.stdout, info.stderr = string(res.Stdout), string(res.Stderr)
	}

	var result *apiError
	switch {
	case err != nil:
		result = s.runErrorFor(err, s.runBase.Err() != nil)
	case res.Status != executor.StatusOK:
		result = s.scriptError(res, req.MemoryLimit)
	}
	outcome := "ok"
	if result != nil {
		outcome = result.Type
	}
	if outcome == TypeOverloaded {
		s.rec.Overloaded()
	}
	s.rec.ObserveExecution(outcome, res.Duration, len(res.Stdout), len(res.Stderr))
	if result != nil {
		return res, 0, result
	}
	return res, rr.Records, nil
}

// effectiveTimeout applies the client's timeout_ms, which can only lower
// the server's Timeout.
func (s *Server) effectiveTimeout(timeoutMS int64) time.Duration {
	limit := s.cfg.Timeout
	// Compare in milliseconds first: a huge timeout_ms would overflow
	// time.Duration.
	if timeoutMS > 0 && timeoutMS < limit.Milliseconds() {
		return time.Duration(timeoutMS) * time.Millisecond
	}
	return limit
}

// requireAPIKey checks "Authorization: Bearer <key>" when keys are configured.
func (s *Server) requireAPIKey(c *fiber.Ctx) error {
	if len(s.cfg.APIKeys) == 0 {
		return c.Next()
	}
	const how = "send Authorization: Bearer <your API key>"
	header := c.Get(fiber.HeaderAuthorization)
	if header == "" {
		return &apiError{Type: TypeUnauthorized, Message: "this endpoint needs an API key; " + how}
	}
	scheme, key, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return &apiError{Type: TypeUnauthorized, Message: "the Authorization header is not a bearer token; " + how}
	}
	idx := s.keyIndex(strings.TrimSpace(key))
	if idx < 0 {
		return &apiError{Type: TypeUnauthorized, Message: "the API key is not valid; check it, or ask the operator for one"}
	}
	info := c.Locals(infoKey).(*requestInfo)
	info.key, info.keyName = idx, s.cfg.APIKeyNames[idx]
	return c.Next()
}

// keyIndex returns the index of key in APIKeys, or -1. It compares against
// every key without stopping early, and compares SHA-256 digests so neither
// a key's length nor its prefix shows in the timing.
func (s *Server) keyIndex(key string) int {
	given := sha256.Sum256([]byte(key))
	idx := -1
	for i, k := range s.cfg.APIKeys {
		want := sha256.Sum256([]byte(k))
		idx = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(given[:], want[:]), i, idx)
	}
	return idx
}

func (s *Server) handleHealthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) handleReadyz(c *fiber.Ctx) error {
	err := s.runner.Ready()
	if err == nil && s.runBase.Err() != nil {
		err = errors.New("the server is shutting down")
	}
	body := fiber.Map{"status": "ready"}
	if d, ok := s.runner.(ReadyDetailer); ok {
		body["details"] = d.ReadyDetails()
	}
	if err != nil {
		info := c.Locals(infoKey).(*requestInfo)
		info.outcome = "not_ready"
		body["status"], body["reason"] = "not_ready", err.Error()
		return c.Status(fiber.StatusServiceUnavailable).JSON(body)
	}
	return c.JSON(body)
}

// ReadyDetailer is implemented by a Runner that can say, for operators, how
// the sandbox is set up (e.g. which cgroup limits are enforced). /readyz adds
// it as "details" whether ready or not.
type ReadyDetailer interface {
	ReadyDetails() map[string]string
}
