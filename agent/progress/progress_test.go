package progress

import "testing"

func TestRoundTrip(t *testing.T) {
	for _, u := range []Update{
		{Stage: "convert", Percent: 42, Done: 10, Total: 20, Text: "web01.qcow2"},
		{Stage: "fix", Percent: -1, Text: "regenerating initramfs"},
		{Stage: "load", Percent: 0},
		{Stage: "validate", Percent: 100, Text: "a: b"},
	} {
		got, ok := Parse(Format(u))
		if !ok || got != u {
			t.Errorf("Parse(Format(%+v)) = %+v, %v", u, got, ok)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "ready", "convert 101%", "convert x%", "convert 5% a/b", "a b c d"} {
		if _, ok := Parse(s); ok {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}
