package manifest_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func parseDoc(t *testing.T, d doc) *manifest.Manifest {
	t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return m
}

// Every default the documentation promises, on a manifest that sets none.
func TestDefaults(t *testing.T) {
	m := parseDoc(t, singleDoc())
	p := m.Pipeline
	checks := []struct {
		what      string
		got, want any
	}{
		{"priority", *m.Priority, 0},
		{"resources", *m.Resources, manifest.Resources{}},
		{"inspect.enabled", *p.Inspect.Enabled, true},
		{"inspect.detect_os", *p.Inspect.DetectOS, true},
		{"fix.enabled", *p.Fix.Enabled, true},
		{"fix.backend", p.Fix.Backend, ""},
		{"fix.fstab.enabled", *p.Fix.Fstab.Enabled, true},
		{"fix.fstab.mode", p.Fix.Fstab.Mode, "stabilize-all"},
		{"fix.grub.enabled", *p.Fix.Grub.Enabled, true},
		{"fix.initramfs.enabled", *p.Fix.Initramfs.Enabled, true},
		{"fix.initramfs.regenerate", *p.Fix.Initramfs.Regenerate, true},
		{"fix.network.enabled", *p.Fix.Network.Enabled, true},
		{"fix.network.fix_level", p.Fix.Network.FixLevel, "basic"},
		{"fix.vmware_tools.enabled", *p.Fix.VMwareTools.Enabled, false},
		{"convert.output_format", p.Convert.OutputFormat, "qcow2"},
		{"convert.compress", p.Convert.Compress, false},
		{"convert.compression", p.Convert.Compression, ""},
		{"convert.output_path", p.Convert.OutputPath, "web01.qcow2"},
		{"convert.output_dir", p.Convert.OutputDir, ""},
		{"validate.enabled", *p.Validate.Enabled, true},
		{"validate.boot_test", p.Validate.BootTest, false},
		{"validate.boot_timeout", p.Validate.BootTimeout, 300},
		{"validate.boot_marker", p.Validate.BootMarker, "login:"},
		{"validate.compare", *p.Validate.Compare, false},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestDefaultsDependOnOtherFields(t *testing.T) {
	cases := []struct {
		name  string
		edits []edit
		check func(p *manifest.Pipeline) (got, want any)
	}{
		{"compression when compressing", []edit{{"pipeline.convert.compress", true}},
			func(p *manifest.Pipeline) (any, any) { return p.Convert.Compression, "zstd" }},
		{"chosen compression kept", []edit{{"pipeline.convert.compress", true}, {"pipeline.convert.compression", "zlib"}},
			func(p *manifest.Pipeline) (any, any) { return p.Convert.Compression, "zlib" }},
		{"raw file name", []edit{{"pipeline.convert.output_format", "raw"}},
			func(p *manifest.Pipeline) (any, any) { return p.Convert.OutputPath, "web01.raw" }},
		{"vdi file name", []edit{{"pipeline.convert.output_format", "vdi"}},
			func(p *manifest.Pipeline) (any, any) { return p.Convert.OutputPath, "web01.vdi" }},
		{"compare when fix is off", []edit{{"pipeline.fix.enabled", false}},
			func(p *manifest.Pipeline) (any, any) { return *p.Validate.Compare, true }},
		{"compare off kept", []edit{{"pipeline.fix.enabled", false}, {"pipeline.validate.compare", false}},
			func(p *manifest.Pipeline) (any, any) { return *p.Validate.Compare, false }},
		{"disabled section keeps its other defaults", []edit{{"pipeline.fix.network", doc{"enabled": false}}},
			func(p *manifest.Pipeline) (any, any) {
				return [2]any{*p.Fix.Network.Enabled, p.Fix.Network.FixLevel}, [2]any{false, "basic"}
			}},
		{"set values win", []edit{{"pipeline.validate", doc{"boot_timeout": 60, "boot_marker": "$ "}}},
			func(p *manifest.Pipeline) (any, any) {
				return [2]any{p.Validate.BootTimeout, p.Validate.BootMarker}, [2]any{60, "$ "}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := singleDoc()
			for _, e := range tc.edits {
				set(d, e.path, e.val)
			}
			got, want := tc.check(parseDoc(t, d).Pipeline)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

func TestNameFromSource(t *testing.T) {
	m := parseDoc(t, set(set(singleDoc(), "name", nil), "pipeline.load.source_path", "/data/vms/db-02.vmdk"))
	if m.Name != "db-02" || m.Pipeline.Convert.OutputPath != "db-02.qcow2" {
		t.Fatalf("name %q, output %q", m.Name, m.Pipeline.Convert.OutputPath)
	}
}

func TestSetDefaultsIdempotentAndNilSafe(t *testing.T) {
	m := parseDoc(t, batchDoc())
	before, _ := json.Marshal(m)
	m.SetDefaults()
	after, _ := json.Marshal(m)
	if string(before) != string(after) {
		t.Fatalf("second SetDefaults changed the manifest:\n%s\n%s", before, after)
	}
	var none *manifest.Manifest
	none.SetDefaults()
	// An empty Go-built manifest gets every section, so the engine never
	// meets a nil pointer.
	e := &manifest.Manifest{}
	e.SetDefaults()
	if e.Version != "1.0" || e.Pipeline == nil || e.Pipeline.Fix.Grub.Enabled == nil || e.Pipeline.Validate.Compare == nil {
		t.Fatalf("sections missing: %+v", e)
	}
}

func TestBatchInheritanceAndSplit(t *testing.T) {
	d := batchDoc()
	set(d, "priority", 20)
	set(d, "resources", doc{"memory_max": "2G", "cpu_quota": "100%", "io_weight": 50})
	set(d, "vms.1.priority", -5)
	set(d, "vms.1.resources", doc{"memory_max": "8G"})
	set(d, "vms.2.pipeline.convert", doc{"output_format": "raw"})
	m := parseDoc(t, d)

	parts := m.Split()
	if len(parts) != 3 {
		t.Fatalf("got %d manifests", len(parts))
	}
	want := []struct {
		name     string
		priority int
		res      manifest.Resources
		output   string
	}{
		{"web01", 20, manifest.Resources{MemoryMax: "2G", CPUQuota: "100%", IOWeight: 50}, "web01.qcow2"},
		{"db01", -5, manifest.Resources{MemoryMax: "8G", CPUQuota: "100%", IOWeight: 50}, "db01.qcow2"},
		{"app01", 20, manifest.Resources{MemoryMax: "2G", CPUQuota: "100%", IOWeight: 50}, "app01.raw"},
	}
	for i, w := range want {
		p := parts[i]
		if p.Batch || len(p.VMs) != 0 || p.Version != "1.0" || p.Name != w.name || *p.Priority != w.priority ||
			*p.Resources != w.res || p.Pipeline.Convert.OutputPath != w.output {
			t.Errorf("part %d: got %+v %+v %+v", i, p, p.Resources, p.Pipeline.Convert)
		}
		if ps := p.Validate(); ps != nil {
			t.Errorf("part %d is not a valid manifest: %v", i, ps)
		}
	}
	// The parts share nothing with the batch.
	parts[0].Pipeline.Load.SourcePath = "/changed"
	*parts[0].Priority = 99
	parts[0].Resources.MemoryMax = "1G"
	if m.VMs[0].Pipeline.Load.SourcePath == "/changed" || *m.VMs[0].Priority == 99 || m.Resources.MemoryMax == "1G" {
		t.Fatal("Split shares memory with the batch")
	}

	single := parseDoc(t, singleDoc())
	if s := single.Split(); len(s) != 1 || s[0] != single {
		t.Fatalf("single split: %v", s)
	}
}

// Split inherits even on a Go-built batch that never had SetDefaults.
func TestSplitWithoutDefaults(t *testing.T) {
	prio := 7
	m := &manifest.Manifest{Version: "1.0", Batch: true, Priority: &prio,
		Resources: &manifest.Resources{TasksMax: 10},
		VMs:       []manifest.VM{{Name: "a", Pipeline: &manifest.Pipeline{}}, {Name: "b", Resources: &manifest.Resources{TasksMax: 3}}}}
	parts := m.Split()
	if *parts[0].Priority != 7 || parts[0].Resources.TasksMax != 10 || parts[1].Resources.TasksMax != 3 || parts[1].Pipeline != nil {
		t.Fatalf("got %+v %+v", parts[0], parts[1])
	}
}

func TestOutputFor(t *testing.T) {
	d := singleDoc()
	set(d, "pipeline.load", doc{"source_type": "ova", "source_path": "/data/app.ova"})
	set(d, "pipeline.convert.disks", []any{doc{"id": "vmdisk3", "output_path": "logs.qcow2"}, doc{"id": "vmdisk4", "skip": true}})
	c := parseDoc(t, d).Pipeline.Convert
	cases := []struct {
		index int
		id    string
		want  string
		ok    bool
	}{
		{0, "vmdisk1", "web01.qcow2", true},
		{1, "vmdisk2", "web01-disk2.qcow2", true},
		{2, "vmdisk3", "logs.qcow2", true},
		{3, "vmdisk4", "", false},
		{4, "", "web01-disk5.qcow2", true},
	}
	for _, tc := range cases {
		got, ok := c.OutputFor(tc.index, tc.id)
		if got != tc.want || ok != tc.ok {
			t.Errorf("OutputFor(%d, %q) = %q, %v; want %q, %v", tc.index, tc.id, got, ok, tc.want, tc.ok)
		}
	}
}

func TestResourceUnits(t *testing.T) {
	cases := []struct {
		mem  string
		want uint64
		ok   bool
	}{
		{"512M", 512 << 20, true},
		{"4G", 4 << 30, true},
		{"1.5K", 1536, true},
		{"1000", 1000, true},
		{"50%", 4 << 30, true},
		{"infinity", ^uint64(0), true},
		{"", 0, false},
		{"4g", 0, false},
	}
	for _, tc := range cases {
		r := &manifest.Resources{MemoryMax: tc.mem}
		got, ok := r.MemoryMaxBytes(8 << 30)
		if got != tc.want || ok != tc.ok {
			t.Errorf("MemoryMaxBytes(%q) = %d, %v; want %d, %v", tc.mem, got, ok, tc.want, tc.ok)
		}
	}
	for q, want := range map[string]uint64{"50%": 500000, "200%": 2000000, "12.5%": 125000} {
		got, ok := (&manifest.Resources{CPUQuota: q}).CPUQuotaPerSecUSec()
		if got != want || !ok {
			t.Errorf("CPUQuotaPerSecUSec(%q) = %d, %v; want %d", q, got, ok, want)
		}
	}
	if _, ok := (*manifest.Resources)(nil).CPUQuotaPerSecUSec(); ok {
		t.Error("nil resources have a quota")
	}
}

func TestBoolAndQemuFormat(t *testing.T) {
	yes, no := true, false
	if manifest.Bool(nil) || !manifest.Bool(&yes) || manifest.Bool(&no) {
		t.Fatal("Bool")
	}
	want := map[string]string{"vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "raw": "raw", "qcow2": "qcow2", "ova": "ova", "ovf": "ovf", "ami": ""}
	for st, q := range want {
		if got := manifest.QemuFormat(st); got != q {
			t.Errorf("QemuFormat(%q) = %q, want %q", st, got, q)
		}
	}
	for _, st := range manifest.SourceTypes() {
		if manifest.QemuFormat(st) == "" && st != manifest.SourceVSphere {
			t.Errorf("source type %q has no qemu format", st)
		}
	}
}
