package test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hyper2kvm/hyper2kvm/test/box"
)

// Issue 18, "readable output" and "valid must mean it will be accepted":
// four images all named blank.vmdk, dropped one after another, become
// four jobs a user can tell apart; hyperctl submit takes an image as the
// drop folder does and says so; a text file named .vmdk is refused at once,
// by submit and by the drop folder (before, the drop folder waited for it
// stable_timeout, 10 minutes, as for an image still being written).
func TestFirstDayImages(t *testing.T) {
	t.Parallel()
	b := relStart(t, box.Options{}, false, "import_dirs: [/srv/img]")
	ctx := relCtx(t, 4*time.Minute)
	b.MustExec(t, "mkdir", "-p", "/srv/img")
	b.MustExec(t, "qemu-img", "create", "-q", "-f", "vmdk", "/srv/img/blank.vmdk", "64M")
	b.WriteFile(t, "/srv/img/notes.vmdk", []byte("notes for the migration, not a disk\n"), 0o644)
	b.MustExec(t, "chmod", "-R", "a+rX", "/srv/img")

	// Each drop settles before the next, so its claimed file's name is
	// free again: the job names must still differ.
	settled := []string{"blank.vmdk", "blank-2.vmdk", "blank-3.vmdk", "blank-4.vmdk"}
	for _, s := range settled {
		b.MustExec(t, "sh", "-c", "q="+relQueue+"/to_be_processed && cp /srv/img/blank.vmdk $q/.blank.vmdk.part && mv $q/.blank.vmdk.part $q/blank.vmdk")
		if dir, rep := b.waitSettled(ctx, s); dir != "processed" {
			t.Fatalf("drop settled as %s in %s: %v", s, dir, rep)
		}
	}

	jobNames := func() []string {
		var list struct {
			Jobs []struct {
				ID, Name, Status string
			} `json:"jobs"`
		}
		js := b.MustExec(t, "hyperctl", "-o", "json", "jobs", "--all")
		if err := json.Unmarshal([]byte(js), &list); err != nil {
			t.Fatalf("%v: %s", err, js)
		}
		var names []string
		for _, j := range list.Jobs {
			if j.Status != "completed" {
				t.Errorf("job %s (%s) is %s", j.ID, j.Name, j.Status)
			}
			names = append(names, j.Name)
		}
		slices.Sort(names)
		return names
	}
	if names, want := jobNames(), []string{"blank", "blank-2", "blank-3", "blank-4"}; !slices.Equal(names, want) {
		t.Errorf("the four drops' jobs are named %v, want %v", names, want)
	}

	// hyperctl submit IMAGE: what the drop folder does, and it says so.
	out, stderr, err := b.Exec(ctx, "hyperctl", "submit", "--wait", "/srv/img/blank.vmdk")
	if err != nil || !strings.Contains(stderr, "is a vmdk disk image, not a manifest: submitting it as the drop folder would") {
		t.Errorf("hyperctl submit blank.vmdk: %v\n%s%s", err, out, stderr)
	}
	if _, _, err := b.Exec(ctx, "test", "-f", "/srv/img/blank.vmdk"); err != nil {
		t.Error("the submitted image is gone from where it was")
	}

	if names, want := jobNames(), []string{"blank", "blank-2", "blank-3", "blank-4", "blank-5"}; !slices.Equal(names, want) {
		t.Errorf("jobs are named %v, want %v", names, want)
	}
	// A name names one job: hyperctl show accepts it.
	if out, stderr, err := b.Exec(ctx, "hyperctl", "show", "blank-3"); err != nil || !strings.Contains(out, "blank-3") {
		t.Errorf("hyperctl show blank-3: %v\n%s%s", err, out, stderr)
	}

	// The images the agent lists for the builder: the disk, not the notes.
	out, stderr, err = b.Exec(ctx, "busctl", "--system", "--json=short", "call", "io.hyper2kvm.Agent1", "/io/hyper2kvm/Agent1",
		"io.hyper2kvm.Agent1.Manager", "ListImages")
	if err != nil || !strings.Contains(out, `["/srv/img/blank.vmdk","vmdk",`) || strings.Contains(out, "notes.vmdk") || !strings.Contains(out, `\"source_path\":\"/srv/img/blank.vmdk\"`) {
		t.Errorf("ListImages: %v\n%s%s", err, out, stderr)
	}

	// A text file named .vmdk: refused by submit without asking the agent...
	out, stderr, err = b.Exec(ctx, "hyperctl", "submit", "/srv/img/notes.vmdk")
	if err == nil || !strings.Contains(stderr, `/srv/img/notes.vmdk is a text file (it starts with "notes for the migration, not a disk"), not a disk image`) {
		t.Errorf("hyperctl submit notes.vmdk: %v\n%s%s", err, out, stderr)
	}
	// ...and by the drop folder at once, with the reason in its report.
	b.MustExec(t, "sh", "-c", "q="+relQueue+"/to_be_processed && cp /srv/img/notes.vmdk $q/.notes.vmdk.part && mv $q/.notes.vmdk.part $q/notes.vmdk")
	dir, rep := b.waitSettled(relCtx(t, 2*time.Minute), "notes.vmdk")
	if msg := fmt.Sprint(rep["error"]); dir != "failed" || !strings.Contains(msg, "not a disk image: its content is text") {
		t.Errorf("dropped notes.vmdk settled in %s: %v", dir, rep)
	}
}
