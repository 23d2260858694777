package httpapi

import "github.com/secure-script-executor/executor"

// DecodeExecuteRequest exposes the /execute body decoder to the fuzz target
// in package httpapi_test without making it part of the package's API.
func DecodeExecuteRequest(body []byte) (script string, input []byte, timeoutMS int64, err error) {
	rr, aerr := decodeRunRequest(body, executor.ModeSingle, DefaultMaxBatchRecords)
	if aerr != nil {
		return "", nil, 0, aerr
	}
	return rr.Script, rr.Input, rr.TimeoutMS, nil
}
