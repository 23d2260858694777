package server

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNamedAPIKeysAddToTheUnnamedOnesAndKeysMayHoldColons(t *testing.T) {
	unnamed := writeFile(t, "plain:key:with:colons\n")
	named := writeFile(t, "# tenants\n\nalpha: a-key \nbeta:b:key:with:colons\n")
	c, err := parseConfig([]string{"--api-keys", "k1", "--api-keys-file", unnamed, "--named-api-keys-file", named},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"k1", "plain:key:with:colons", "a-key", "b:key:with:colons"}; !slices.Equal(c.APIKeys, want) {
		t.Errorf("keys %q, want %q", c.APIKeys, want)
	}
	if got, want := c.keyNames(), []string{"", "", "alpha", "beta"}; !slices.Equal(got, want) {
		t.Errorf("names %q, want %q", got, want)
	}
}

func TestABadNamedAPIKeysFileIsAStartUpErrorThatNamesTheLine(t *testing.T) {
	for text, want := range map[string]string{
		"":                                     "holds no key",
		"# only a comment\n":                   "holds no key",
		"justakey\n":                           "line 1 is not NAME:KEY",
		"ok:k\nbad name:k2\n":                  "line 2: a name is 1 to 64 letters",
		"a:k1\na:k2\n":                         `line 2: the name "a" is used twice`,
		"a:\n":                                 "line 1 is not NAME:KEY",
		"n" + strings.Repeat("x", 64) + ":k\n": "a name is 1 to 64",
	} {
		_, err := parseConfig([]string{"--named-api-keys-file", writeFile(t, text)}, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--named-api-keys-file") {
			t.Errorf("file %q: error %v, want one naming the flag and %q", text, err, want)
		}
	}
}
