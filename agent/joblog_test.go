package agent

import (
	"slices"
	"testing"
)

func TestSplitCursor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		out    string
		lines  []string
		cursor string
	}{
		{"empty", "", []string{}, ""},
		{"entries and cursor", "a\nb\n-- cursor: s=1;i=2\n", []string{"a", "b"}, "s=1;i=2"},
		{"only cursor", "-- cursor: s=9\n", []string{}, "s=9"},
		{"no cursor", "a\n", []string{"a"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, cursor := splitCursor([]byte(tc.out))
			if !slices.Equal(lines, tc.lines) || cursor != tc.cursor {
				t.Errorf("splitCursor(%q) = %q, %q; want %q, %q", tc.out, lines, cursor, tc.lines, tc.cursor)
			}
		})
	}
}

func TestJobLogArgs(t *testing.T) {
	args, err := jobLogArgs("abc", 0, "s=1", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--output=json", "--lines=5000", "--after-cursor=s=1", "--show-cursor", "HYPER2KVM_JOB_ID=abc"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if _, err := jobLogArgs("abc", 10, "", "xml"); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := jobLogArgs("abc", 10, "s=1\n--since", "short"); err == nil {
		t.Error("a cursor with a newline accepted")
	}
}
