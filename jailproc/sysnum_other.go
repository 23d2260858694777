//go:build !amd64

package jailproc

// sysnums is empty off amd64: cell isolation (childFilter) refuses to start.
var sysnums = map[string]uint32{}
