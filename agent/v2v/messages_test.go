package v2v

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

// read runs readMessages over in and returns the messages, the log lines
// and the error.
func read(in io.Reader) ([]Message, []string, error) {
	var msgs []Message
	var lines []string
	err := readMessages(in, func(m Message) { msgs = append(msgs, m) }, func(l string) { lines = append(lines, l) })
	return msgs, lines, err
}

func msg(text, typ string) string {
	return `{ "message": "` + text + `", "timestamp": "2026-01-01T00:00:00.0+00:00", "type": "` + typ + `" }` + "\n"
}

func TestReadMessagesHostileOutput(t *testing.T) {
	long := strings.Repeat("A", 2<<20)
	for _, tc := range []struct {
		name     string
		in       string
		want     []string // the messages read, in order
		wantLogs int
		wantErr  string // a part of the error; "" for none
	}{
		{"well formed", msg("Opening the source", "message") + "[   0.0] Opening the source\n" + msg("no QXL driver", "warning"),
			[]string{"Opening the source", "no QXL driver"}, 1, ""},
		{"malformed JSON among good lines", msg("one", "message") + `{"type": "message", "message": "unterminated` + "\n" + msg("two", "message"),
			[]string{"one", "two"}, 0, "line 2: malformed JSON"},
		{"a line of 2 MiB is skipped, the next one read", msg("one", "message") + "{" + long + "\n" + msg("two", "message"),
			[]string{"one", "two"}, 0, "line 2: longer than 1048576 bytes, skipped"},
		{"a long text line is skipped too", long + "\n" + msg("two", "message"),
			[]string{"two"}, 0, "line 1: longer than"},
		{"cut off at the end", msg("one", "message") + `{"type": "mess`,
			[]string{"one"}, 0, "line 2: cut off (no newline at the end)"},
		{"a whole last line without its newline", msg("one", "message") + strings.TrimSuffix(msg("two", "message"), "\n"),
			[]string{"one", "two"}, 0, ""},
		{"JSON that is no message", `{"progress": 12}` + "\n" + `{"type": 3}` + "\n", nil, 0, "line 1: not a message"},
		{"NUL bytes and invalid UTF-8", "{\x00\xff\n" + "\xff\xfe text\n" + msg("ok", "message"), []string{"ok"}, 1, "line 1: malformed JSON"},
		{"empty", "", nil, 0, ""},
		{"only newlines", "\n\n\n", nil, 3, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs, lines, err := read(strings.NewReader(tc.in))
			var got []string
			for _, m := range msgs {
				got = append(got, m.Message)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("messages %q, want %q", got, tc.want)
			}
			if len(lines) != tc.wantLogs {
				t.Errorf("%d log lines, want %d", len(lines), tc.wantLogs)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one with %q", err, tc.wantErr)
			}
			if err != nil && len(err.Error()) > 2000 {
				t.Errorf("the error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestReadMessagesBoundsWhatItKeeps(t *testing.T) {
	var b strings.Builder
	for i := range maxMessages + 50 {
		text := "x"
		if i%1000 == 0 {
			text = strings.Repeat("é", 10<<10) // two bytes each: cut on a character
		}
		b.WriteString(msg(text, "warning"))
	}
	msgs, _, err := read(strings.NewReader(b.String()))
	if len(msgs) != maxMessages {
		t.Errorf("%d messages kept, want %d", len(msgs), maxMessages)
	}
	for _, m := range msgs {
		if len(m.Message) > maxMessage+3 || !utf8.ValidString(m.Message) {
			t.Fatalf("a message of %d bytes kept (valid UTF-8: %v)", len(m.Message), utf8.ValidString(m.Message))
		}
	}
	if err == nil || !strings.Contains(err.Error(), "more than 10000 messages") {
		t.Errorf("error %v", err)
	}
}

// endless is a stream of n bytes of c, never a newline, made as it is
// read.
type endless struct {
	n int64
	c byte
}

func (e *endless) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), e.n)
	for i := range p[:k] {
		p[i] = e.c
	}
	e.n -= k
	return int(k), nil
}

func TestReadMessagesHugeLineInBoundedMemory(t *testing.T) {
	in := io.MultiReader(&endless{n: 64 << 20, c: '{'}, strings.NewReader("\n"+msg("after", "message")))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	msgs, _, err := read(in)
	runtime.ReadMemStats(&after)
	if len(msgs) != 1 || msgs[0].Message != "after" {
		t.Errorf("messages %+v: the one after the huge line is lost", msgs)
	}
	if err == nil || !strings.Contains(err.Error(), "line 1: longer than") {
		t.Errorf("error %v", err)
	}
	// 64 MiB went through; what was allocated is the reader's buffer and
	// one line's limit (grown by append: about twice it).
	if got := after.TotalAlloc - before.TotalAlloc; got > 16*maxLine {
		t.Errorf("%d MiB allocated to read a 64 MiB line", got>>20)
	}
}

// FuzzReadMessages: whatever virt-v2v (or a guest through its messages)
// prints, reading it ends, never panics, keeps its bounds, and reads
// every well-formed message line.
func FuzzReadMessages(f *testing.F) {
	f.Add([]byte(msg("Opening the source", "message") + "[   0.0] Opening the source\n"))
	f.Add([]byte(`{"type": "error", "message": "x"` + "\n{\n{}\n"))
	f.Add([]byte("{\"type\":\"warning\",\"message\":\"\\u0000\\ud800\"}"))
	f.Add([]byte("\r\n{\"type\":\"message\",\"message\":1}\n" + strings.Repeat("{", 70000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, lines, err := read(bytes.NewReader(data))
		for _, m := range msgs {
			if m.Type == "" || len(m.Message) > maxMessage+3 || len(m.Type) > 19 || len(m.Timestamp) > 67 {
				t.Fatalf("message kept out of bounds: %d/%d/%d bytes", len(m.Type), len(m.Message), len(m.Timestamp))
			}
			if !utf8.ValidString(m.Message) {
				t.Fatalf("message %q is not UTF-8", m.Message)
			}
		}
		for _, l := range lines {
			if len(l) > maxLine {
				t.Fatalf("log line of %d bytes", len(l))
			}
		}
		if len(msgs) > maxMessages {
			t.Fatalf("%d messages", len(msgs))
		}
		if err != nil && len(err.Error()) > 2000 {
			t.Fatalf("error of %d bytes", len(err.Error()))
		}
		// Every line is one of: text (logged), a message, or a problem
		// named in the error.
		n := bytes.Count(data, []byte("\n"))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			n++
		}
		if len(lines)+len(msgs) < n && err == nil {
			t.Fatalf("%d lines in, %d logged and %d messages, and no error", n, len(lines), len(msgs))
		}
	})
}
