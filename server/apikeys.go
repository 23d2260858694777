package server

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// keyNamePattern is what a key name may be: it becomes a metric label value
// and a log field, so it is short and plain.
var keyNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// readNamedKeys reads --named-api-keys-file: one "NAME:KEY" per line, the
// name before the first colon (names cannot hold one, keys may), blank
// lines and lines starting with # ignored. It is a file of its own, not a
// syntax of --api-keys-file, because a key in that file may already hold a
// colon: no line of it can be read as a name without changing a key.
func readNamedKeys(path string) (names, keys []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read it: %v", errors.Unwrap(err))
	}
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, key, ok := strings.Cut(line, ":")
		name, key = strings.TrimSpace(name), strings.TrimSpace(key)
		switch {
		case !ok || key == "":
			return nil, nil, fmt.Errorf("line %d is not NAME:KEY", i+1)
		case !keyNamePattern.MatchString(name):
			return nil, nil, fmt.Errorf("line %d: a name is 1 to 64 letters, digits, '_', '.' or '-'", i+1)
		case seen[name]:
			return nil, nil, fmt.Errorf("line %d: the name %q is used twice", i+1, name)
		}
		seen[name] = true
		names, keys = append(names, name), append(keys, key)
	}
	if len(keys) == 0 {
		return nil, nil, errors.New("it holds no key (one NAME:KEY per line; # starts a comment)")
	}
	return names, keys, nil
}

// addNamedKeys appends the keys of --named-api-keys-file to the unnamed ones
// of --api-keys and --api-keys-file.
func (c *config) addNamedKeys(bad badFunc) error {
	if c.NamedAPIKeysFile == "" {
		return nil
	}
	_, keys, err := readNamedKeys(c.NamedAPIKeysFile)
	if err != nil {
		return bad("named-api-keys-file", err.Error(), c.NamedAPIKeysFile)
	}
	c.APIKeys = append(c.APIKeys, keys...)
	return nil
}

// keyNames names every key of c.APIKeys for metrics: its name in
// --named-api-keys-file, else "" (httpapi then names it key-N by position).
// The file is read again rather than kept in the config, whose every field
// is a flag; a key it no longer holds just gets a positional name.
func (c *config) keyNames() []string {
	names := make([]string, len(c.APIKeys))
	if c.NamedAPIKeysFile == "" {
		return names
	}
	fileNames, keys, err := readNamedKeys(c.NamedAPIKeysFile)
	if err != nil {
		return names
	}
	byKey := make(map[string]string, len(keys))
	for i, k := range keys {
		byKey[k] = fileNames[i]
	}
	for i, k := range c.APIKeys {
		names[i] = byKey[k]
	}
	return names
}
