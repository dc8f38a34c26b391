package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "empty gives defaults", yaml: "", check: func(t *testing.T, c Config) {
			if c.MaxConcurrentJobs != 3 || c.ManifestWorkflowDir != "/var/lib/hyper2kvm/manifest-workflow" || c.Job.MemoryMax != "4G" {
				t.Errorf("defaults not applied: %+v", c)
			}
		}},
		{name: "original keys", yaml: "manifest_workflow_dir: /srv/q\noutput_dir: /srv/out\nmax_concurrent_jobs: 5\nverbose: true\n", check: func(t *testing.T, c Config) {
			if c.ManifestWorkflowDir != "/srv/q" || c.OutputDir != "/srv/out" || c.MaxConcurrentJobs != 5 || !c.Verbose {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "durations", yaml: "idle_timeout: 90s\nstable_time: 2\n", check: func(t *testing.T, c Config) {
			if c.IdleTimeout.D() != 90*time.Second || c.StableTime.D() != 2*time.Second {
				t.Errorf("got %v %v", c.IdleTimeout.D(), c.StableTime.D())
			}
		}},
		{name: "job defaults", yaml: "job:\n  memory_max: 512M\n  cpu_quota: 50%\n  tasks_max: 64\n  io_weight: 10\n  runtime_max_sec: 60\n  backend: guestfs\n  priority: 7\n", check: func(t *testing.T, c Config) {
			want := Job{MemoryMax: "512M", CPUQuota: "50%", TasksMax: 64, IOWeight: 10, RuntimeMaxSec: 60, Backend: "guestfs", Priority: 7}
			if c.Job != want {
				t.Errorf("got %+v", c.Job)
			}
		}},
		{name: "default pipeline replaced, not merged", yaml: "default_pipeline:\n  fix:\n    enabled: false\n", check: func(t *testing.T, c Config) {
			if len(c.DefaultPipeline) != 1 {
				t.Errorf("pipeline = %v", c.DefaultPipeline)
			}
		}},
		{name: "unknown key", yaml: "max_concurent_jobs: 3\n", wantErr: "max_concurent_jobs"},
		{name: "relative dir", yaml: "output_dir: out\n", wantErr: "output_dir"},
		{name: "zero jobs", yaml: "max_concurrent_jobs: 0\n", wantErr: "max_concurrent_jobs"},
		{name: "bad memory", yaml: "job:\n  memory_max: lots\n", wantErr: "job.memory_max"},
		{name: "user caps default", yaml: "", check: func(t *testing.T, c Config) {
			want := UserMax{MemoryMax: "8G", CPUQuota: "400%", TasksMax: 1024, RuntimeMaxSec: 86400}
			if c.Limits.UserMax != want {
				t.Errorf("got %+v", c.Limits.UserMax)
			}
		}},
		{name: "user caps set", yaml: "limits:\n  user_max:\n    memory_max: 2G\n    tasks_max: 0\n", check: func(t *testing.T, c Config) {
			want := UserMax{MemoryMax: "2G", CPUQuota: "400%", TasksMax: 0, RuntimeMaxSec: 86400}
			if c.Limits.UserMax != want {
				t.Errorf("got %+v", c.Limits.UserMax)
			}
		}},
		{name: "bad user memory cap", yaml: "limits:\n  user_max:\n    memory_max: lots\n", wantErr: "limits.user_max.memory_max"},
		{name: "bad user cpu cap", yaml: "limits:\n  user_max:\n    cpu_quota: \"4\"\n", wantErr: "limits.user_max.cpu_quota"},
		{name: "negative user tasks cap", yaml: "limits:\n  user_max:\n    tasks_max: -1\n", wantErr: "limits.user_max.tasks_max"},
		{name: "target", yaml: "target:\n  networks:\n    - source: VM Network\n      bridge: br0\n  default_network:\n    network: default\n  storage:\n    pool: images\n  libvirt:\n    uri: qemu:///system\n    start: true\n", check: func(t *testing.T, c Config) {
			d, ok := c.Target.Lookup("VM Network")
			if !ok || d.Bridge != "br0" || c.Target.DefaultNetwork.Network != "default" || c.Target.Storage.Pool != "images" || !c.Target.Libvirt.Defines() || !c.Target.Libvirt.Start || c.LibvirtForUsers {
				t.Errorf("got %+v", c.Target)
			}
		}},
		{name: "target unmapped bridge and network", yaml: "target:\n  networks:\n    - source: A\n      bridge: br0\n      network: x\n", wantErr: "target.networks[0]: give either bridge"},
		{name: "target remote uri", yaml: "target:\n  libvirt:\n    uri: qemu+tcp://h/system\n", wantErr: "target.libvirt.uri"},
		{name: "target unknown key", yaml: "target:\n  network: {}\n", wantErr: "network"},
		{name: "bad cpu", yaml: "job:\n  cpu_quota: \"200\"\n", wantErr: "job.cpu_quota"},
		{name: "bad backend", yaml: "job:\n  backend: vmware\n", wantErr: "job.backend"},
		{name: "virt-v2v and virtio-win", yaml: "job:\n  backend: virt-v2v\nfix:\n  virtio_win: /usr/share/virtio-win/virtio-win.iso\n", check: func(t *testing.T, c Config) {
			if c.Job.Backend != "virt-v2v" || c.Fix.VirtioWin != "/usr/share/virtio-win/virtio-win.iso" {
				t.Errorf("got %+v %+v", c.Job, c.Fix)
			}
		}},
		{name: "relative virtio-win", yaml: "fix:\n  virtio_win: virtio-win.iso\n", wantErr: "fix.virtio_win"},
		{name: "bad duration", yaml: "idle_timeout: soon\n", wantErr: "duration"},
		{name: "keep_finished default", yaml: "", check: func(t *testing.T, c Config) {
			if c.KeepFinished.D() != 30*24*time.Hour {
				t.Errorf("keep_finished %v, want 720h", c.KeepFinished.D())
			}
		}},
		{name: "keep_finished", yaml: "keep_finished: 168h\n", check: func(t *testing.T, c Config) {
			if c.KeepFinished.D() != 7*24*time.Hour {
				t.Errorf("keep_finished %v, want 168h", c.KeepFinished.D())
			}
		}},
		{name: "keep_finished 0 keeps all", yaml: "keep_finished: 0\n", check: func(t *testing.T, c Config) {
			if c.KeepFinished != 0 {
				t.Errorf("keep_finished %v, want 0", c.KeepFinished.D())
			}
		}},
		{name: "negative keep_finished", yaml: "keep_finished: -1h\n", wantErr: "keep_finished"},
		{name: "manifest size over the parser's cap", yaml: "max_manifest_size: 4194304\n", wantErr: "max_manifest_size: must be at most 1048576 bytes"},
		{name: "max_virtual_size default", yaml: "", check: func(t *testing.T, c Config) {
			if c.MaxVirtualSizeBytes() != 16<<40 {
				t.Errorf("max virtual size %d, want 16 TiB", c.MaxVirtualSizeBytes())
			}
		}},
		{name: "max_virtual_size", yaml: "limits:\n  max_virtual_size: 2T\n", check: func(t *testing.T, c Config) {
			if c.MaxVirtualSizeBytes() != 2<<40 {
				t.Errorf("max virtual size %d, want 2 TiB", c.MaxVirtualSizeBytes())
			}
		}},
		{name: "empty limits section keeps the default", yaml: "limits:\n", check: func(t *testing.T, c Config) {
			if c.MaxVirtualSizeBytes() != 16<<40 {
				t.Errorf("max virtual size %d, want 16 TiB", c.MaxVirtualSizeBytes())
			}
		}},
		{name: "disk_parallelism", yaml: "limits:\n  disk_parallelism: 3\n", check: func(t *testing.T, c Config) {
			if c.Limits.DiskParallelism != 3 {
				t.Errorf("disk parallelism %d, want 3", c.Limits.DiskParallelism)
			}
		}},
		{name: "negative disk_parallelism", yaml: "limits:\n  disk_parallelism: -1\n", wantErr: "limits.disk_parallelism"},
		{name: "bad max_virtual_size", yaml: "limits:\n  max_virtual_size: huge\n", wantErr: "limits.max_virtual_size"},
		{name: "unlimited max_virtual_size refused", yaml: "limits:\n  max_virtual_size: infinity\n", wantErr: "limits.max_virtual_size"},
		{name: "load in default pipeline", yaml: "default_pipeline:\n  load: {source_type: raw}\n", wantErr: "default_pipeline.load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadMissingFileGivesDefaults(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "agent.yaml"))
	if err != nil || c.MaxConcurrentJobs != 3 {
		t.Fatalf("Load = %+v, %v", c, err)
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(p, []byte("max_concurrent_jobs: -1\n"), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want it to name %s", err, p)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"": 0, "infinity": 0, "1024": 1024, "4K": 4096, "512M": 512 << 20, "4G": 4 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"x", "-1", "0", "4GB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestUnknownKeySuggests(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"max_concurent_jobs: 2\n", `line 1: unknown key "max_concurent_jobs" (did you mean "max_concurrent_jobs"?)`},
		{"verbose: true\nidle_timeot: 5m\n", `line 2: unknown key "idle_timeot" (did you mean "idle_timeout"?)`},
		{"job:\n  memory_mx: 4G\n", `line 2: unknown key "memory_mx" (did you mean "memory_max"?)`},
		{"colour: blue\n", `line 1: unknown key "colour"`},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: got %v, want %s", c.yaml, err, c.want)
		}
	}
	if _, err := Parse([]byte("colour: blue\n")); err != nil && strings.Contains(err.Error(), "did you mean") {
		t.Errorf("a key far from every known one gets a suggestion: %v", err)
	}
}

func TestHostLabels(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		want    Labels
		wantErr string
	}{
		{"host:\n  labels:\n    datastore: ds01\n    site: paris\n", Labels{"datastore": "ds01", "site": "paris"}, ""},
		{"host:\n  labels:\n    - datastore=ds01\n    - site=paris\n", Labels{"datastore": "ds01", "site": "paris"}, ""},
		{"host:\n  labels:\n    - datastore\n", nil, `line 3: host.labels: want key=value like datastore=ds01, not "datastore"`},
		{"host:\n  labels:\n    - a=1\n    - a=2\n", nil, `line 4: host.labels: "a" given twice`},
		{"host:\n  labels:\n    data store: ds01\n", nil, `line 3: host.labels: label key "data store"`},
		{"host:\n  labels:\n    datastore: \"ds 01\"\n", nil, `line 3: host.labels: label datastore: value "ds 01"`},
		{"host:\n  labels: ds01\n", nil, "line 2: host.labels: want a map"},
	} {
		c, err := Parse([]byte(tc.yaml))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if !reflect.DeepEqual(c.Host.Labels, tc.want) {
			t.Errorf("%q: labels %v, want %v", tc.yaml, c.Host.Labels, tc.want)
		}
	}
}

func TestJobRetryDefault(t *testing.T) {
	c, err := Parse([]byte("job:\n  retry:\n    max_attempts: 3\n    initial: 10s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Job.Retry.Manifest(); r == nil || r.MaxAttempts != 3 || r.Initial != "10s" || r.Delay(2) != 20*time.Second {
		t.Errorf("job.retry = %+v", r)
	}
	if _, err := Parse([]byte("job:\n  retry:\n    max_attempts: 30\n    backoff: linear\n")); err == nil ||
		!strings.Contains(err.Error(), "job.retry.max_attempts: must be between 1 and 20") || !strings.Contains(err.Error(), `job.retry.backoff: "linear"`) {
		t.Errorf("bad job.retry: %v", err)
	}
	if c, _ := Parse(nil); c.Job.Retry != nil {
		t.Errorf("default job.retry = %+v, want none", c.Job.Retry)
	}
}
