package server

// Hostile results and hostile HTTP framing: values that are not strict JSON
// (forged on fd 3 or built from lying str subclasses), and requests that a
// proxy in front and this server could frame differently (request
// smuggling).

import (
	"fmt"
	"strings"
	"testing"
)

// forgeFrame is a script that writes payload as its own result frame on fd 3
// before main returns, then returns 'real'.
func forgeFrame(payload string) string {
	return fmt.Sprintf("import os\ndef main(*a):\n    body = %q.encode()\n    os.write(3, b'SSE-RES %%d\\n' %% len(body) + body)\n    return 'real'\n", payload)
}

func (h *hostile) testResults(t *testing.T) {
	big := strings.Repeat("7", 4301)
	h.runCases(t, []hcase{
		// The server re-checks what the worker sends as strict JSON: a forged
		// frame cannot hand clients what the worker would refuse to write.
		{name: "forged_duplicate_keys_inf_and_huge_int", script: forgeFrame(`{"ok":true,"result":{"a":1,"a":2,"inf":1e999,"big":123}}`),
			status: 422, typ: "runtime_error", msg: "result channel"},
		{name: "forged_duplicate_keys", script: forgeFrame(`{"ok":true,"result":{"a":1,"\u0061":2}}`),
			status: 422, typ: "runtime_error", msg: "result channel"},
		{name: "forged_float_overflow", script: forgeFrame(`{"ok":true,"result":[1e999]}`),
			status: 422, typ: "runtime_error", msg: "result channel"},
		{name: "forged_huge_integer", script: forgeFrame(`{"ok":true,"result":` + big + `}`),
			status: 422, typ: "runtime_error", msg: "result channel"},
		// Without forging: a str subclass whose hash and == lie makes two
		// dict keys that are the same JSON string.
		{name: "str_subclass_keys_collide", script: "class K(str):\n    def __hash__(self):\n        return 42\n    def __eq__(self, o):\n        return False\ndef main():\n    return {'a': 1, K('a'): 2}\n",
			status: 422, typ: "result_not_json", msg: "result['a'] is a duplicate key"},
		{name: "surrogate_pair_key_collides_with_its_character", script: "def main():\n    return {'x': {'\\U0001F600': 1, '\\ud83d\\ude00': 2}}\n",
			status: 422, typ: "result_not_json", msg: "duplicate key"},
		// The script lifts Python's own int limit; JSON readers keep theirs.
		{name: "int_digit_limit_lifted", script: "import sys\ndef main():\n    sys.set_int_max_str_digits(0)\n    return {'n': 10**5000}\n",
			status: 422, typ: "result_not_json", msg: "more than 4300 digits"},
	})
	batch := func(t *testing.T, script, inputs string) response {
		return h.post(t, "/execute/batch", "application/json", fmt.Sprintf(`{"script":%q,"inputs":%s}`, script, inputs))
	}
	t.Run("batch_item_keys_collide", func(t *testing.T) {
		r := batch(t, "class K(str):\n    __hash__ = lambda self: 7\n    __eq__ = lambda self, o: False\ndef main(i):\n    return {'k': i, K('k'): i} if i else {'k': i}\n", "[0,1]")
		h.expect(t, r, 200, "")
		items, _ := r.Body["results"].([]any)
		if len(items) != 2 {
			t.Fatalf("results: %s", r.Raw)
		}
		jsonEq(t, items[0], `{"result": {"k": 0}, "stdout": ""}`)
		e, _ := items[1].(map[string]any)["error"].(map[string]any)
		if e["type"] != "result_not_json" || !strings.Contains(fmt.Sprint(e["message"]), "result['k'] is a duplicate key") {
			t.Fatalf("item 1: %s", r.Raw)
		}
		h.hello(t)
	})
	t.Run("forged_batch_item_not_strict", func(t *testing.T) {
		r := batch(t, forgeFrame(`{"ok":true,"results":[{"result":{"a":1,"a":2},"stdout":""}]}`), "[1]")
		h.expect(t, r, 422, "runtime_error")
		h.hello(t)
	})
	// A forged frame with fewer items than records: the script's
	// runtime_error, never a 500.
	t.Run("forged_batch_with_too_few_items", func(t *testing.T) {
		r := batch(t, forgeFrame(`{"ok":true,"results":[]}`), "[1,2]")
		h.expect(t, r, 422, "runtime_error")
		if !strings.Contains(errMessage(r), "result channel") {
			t.Errorf("message %q", errMessage(r))
		}
		h.hello(t)
	})
}
