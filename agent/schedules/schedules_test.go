package schedules_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/schedules"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"manifest", "cron: '0 2 * * *'\nmanifest: /srv/nightly.yaml\n", ""},
		{"template", "cron: '@daily'\ntemplate: linux-default\nset:\n  load.source_path: /data/a.vmdk\n", ""},
		{"no cron", "manifest: /srv/a.yaml\n", "cron: required"},
		{"bad cron", "cron: '61 * * * *'\nmanifest: /srv/a.yaml\n", "cron: \"61 * * * *\""},
		{"six fields", "cron: '0 0 2 * * *'\nmanifest: /srv/a.yaml\n", "cron:"},
		{"neither", "cron: '@hourly'\n", "manifest or template: one is required"},
		{"both", "cron: '@hourly'\nmanifest: /a.yaml\ntemplate: x\n", "give one, not both"},
		{"relative", "cron: '@hourly'\nmanifest: a.yaml\n", "manifest: \"a.yaml\" must be an absolute path"},
		{"set without template", "cron: '@hourly'\nmanifest: /a.yaml\nset: {name: x}\n", "set: only with template"},
		{"unknown field", "cron: '@hourly'\nmanifest: /a.yaml\ncorn: x\n", "field corn not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := schedules.Parse("/etc/hyper2kvm/schedules.d/n.yaml", []byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Name != "n" {
					t.Errorf("name %q", s.Name)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "schedules.d/n.yaml") {
				t.Fatalf("error %v, want one naming the file and %q", err, tc.wantErr)
			}
		})
	}
}

func TestNextAndOwed(t *testing.T) {
	s, err := schedules.Parse("x.yaml", []byte("cron: '30 2 * * *'\nmanifest: /a.yaml\n"))
	if err != nil {
		t.Fatal(err)
	}
	at := func(v string) time.Time {
		tt, err := time.ParseInLocation("2006-01-02 15:04", v, time.Local)
		if err != nil {
			t.Fatal(err)
		}
		return tt
	}
	if got, want := s.Next(at("2026-12-07 09:00")), at("2026-12-08 02:30"); !got.Equal(want) {
		t.Errorf("next %v, want %v", got, want)
	}
	for _, tc := range []struct{ last, now, want string }{
		{"", "2026-12-07 09:00", ""},                                 // new: nothing owed
		{"2026-12-07 02:30", "2026-12-07 09:00", ""},                 // fired today already
		{"2026-12-06 02:30", "2026-12-07 09:00", "2026-12-07 02:30"}, // missed today's
		{"2026-12-01 02:30", "2026-12-07 09:00", "2026-12-07 02:30"}, // missed many: one
		{"2026-12-07 02:29", "2026-12-07 02:30", "2026-12-07 02:30"}, // due exactly now
	} {
		var last time.Time
		if tc.last != "" {
			last = at(tc.last)
		}
		got := s.Owed(last, at(tc.now))
		if tc.want == "" && !got.IsZero() || tc.want != "" && !got.Equal(at(tc.want)) {
			t.Errorf("owed(%s, %s) = %v, want %s", tc.last, tc.now, got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "good.yaml"), []byte("cron: '@hourly'\nmanifest: /a.yaml\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("cron: nope\nmanifest: /a.yaml\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	got, errs := schedules.Load(dir)
	if len(got) != 1 || got[0].Name != "good" {
		t.Fatalf("loaded %v", got)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "bad.yaml: cron:") {
		t.Fatalf("errors %v", errs)
	}
	if got, errs := schedules.Load(filepath.Join(dir, "none")); got != nil || errs != nil {
		t.Fatalf("missing dir: %v %v", got, errs)
	}
}
