package imgfmt_test

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/imgfmt"
	"github.com/hyper2kvm/hyper2kvm/test/fixture"
)

const flatDescriptor = `# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 2048 FLAT "web01-flat.vmdk" 0

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.virtualHWVersion = "4"
`

func TestParseVMDKDescriptor(t *testing.T) {
	for _, c := range []struct {
		name, text string
		want       string // createType, or the error text
		extents    int
		size       int64
		fail       bool
	}{
		{name: "flat", text: flatDescriptor, want: "monolithicFlat", extents: 1, size: 2048 * 512},
		{name: "split", text: "# Disk DescriptorFile\ncreateType=\"twoGbMaxExtentSparse\"\nRW 4192256 SPARSE \"a-s001.vmdk\"\nRW 4192256 SPARSE \"a-s002.vmdk\"\nRW 2048 ZERO\n", want: "twoGbMaxExtentSparse", extents: 3, size: (2*4192256 + 2048) * 512},
		{name: "name with spaces and =", text: "createType=\"monolithicFlat\"\nRW 8 FLAT \"my disk=1-flat.vmdk\" 0\n", want: "monolithicFlat", extents: 1, size: 4096},
		{name: "no createType", text: "RW 8 FLAT \"x.vmdk\" 0\n", want: "createType is missing", fail: true},
		{name: "no extents", text: "createType=\"monolithicFlat\"\n", want: "no extents", fail: true},
		{name: "bad sectors", text: "createType=\"monolithicFlat\"\nRW lots FLAT \"x\" 0\n", want: "bad sector count", fail: true},
		{name: "unquoted file", text: "createType=\"monolithicFlat\"\nRW 8 FLAT x.vmdk 0\n", want: "double quotes", fail: true},
		{name: "bad access", text: "createType=\"monolithicFlat\"\nRX 8 FLAT \"x\" 0\n", want: "unknown access", fail: true},
		{name: "snapshot delta", text: "createType=\"monolithicSparse\"\nparentCID=1234abcd\nddb.parentFileNameHint=\"base.vmdk\"\nRW 8 SPARSE \"d.vmdk\"\n", want: "snapshot delta", fail: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := imgfmt.ParseVMDKDescriptor(strings.NewReader(c.text))
			if c.fail {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("error = %v, want %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.CreateType != c.want || len(d.Extents) != c.extents || d.Size() != c.size {
				t.Errorf("got createType %q, %d extents, size %d; want %q, %d, %d", d.CreateType, len(d.Extents), d.Size(), c.want, c.extents, c.size)
			}
		})
	}
}

func TestVMDKExtentPathsStayBesideDescriptor(t *testing.T) {
	for _, f := range []string{"/etc/shadow", "../x.vmdk", "sub/x.vmdk", `..\x.vmdk`, ".."} {
		d := &imgfmt.VMDKDescriptor{CreateType: "monolithicFlat", Extents: []imgfmt.VMDKExtent{{Access: "RW", Sectors: 8, Type: "FLAT", File: f}}}
		if _, err := d.ExtentPaths("/data"); err == nil {
			t.Errorf("extent %q accepted", f)
		}
	}
	d, _ := imgfmt.ParseVMDKDescriptor(strings.NewReader(flatDescriptor))
	p, err := d.ExtentPaths("/data/vms")
	if err != nil || len(p) != 1 || p[0] != "/data/vms/web01-flat.vmdk" {
		t.Errorf("ExtentPaths = %v, %v", p, err)
	}
}

// Every VMDK layout qemu-img writes must give back its createType, whether
// the descriptor is a file or embedded in a sparse extent.
func TestReadVMDKDescriptorFromQemuImages(t *testing.T) {
	raw := fixture.LinuxDisk(t, t.TempDir(), fixture.Options{SizeMB: 16})
	for _, sub := range []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"} {
		p := fixture.Convert(t, raw, "vmdk", sub)
		d, err := imgfmt.ReadVMDKDescriptorFile(p)
		if err != nil {
			t.Errorf("%s: %v", sub, err)
			continue
		}
		if d.CreateType != sub || d.Size() != 16<<20 {
			t.Errorf("%s: createType %q size %d", sub, d.CreateType, d.Size())
		}
		paths, err := d.ExtentPaths(filepath.Dir(p))
		if err != nil {
			t.Errorf("%s: %v", sub, err)
		}
		for _, e := range paths {
			if _, err := os.Stat(e); err != nil {
				t.Errorf("%s: extent %s: %v", sub, e, err)
			}
		}
	}
}

func TestParseOVF(t *testing.T) {
	x := fixture.OVFXML(fixture.VM{Name: "web01", CPUs: 4, MemoryMB: 4096, Firmware: "efi", NICs: 2},
		[]fixture.OVFDisk{{File: "web01-disk1.vmdk", Size: 1000, Capacity: 16 << 30}, {File: "web01-disk2.vmdk", Size: 2000, Capacity: 1 << 30}})
	o, err := imgfmt.ParseOVF(strings.NewReader(x))
	if err != nil {
		t.Fatal(err)
	}
	if o.Name != "web01" || o.CPUs != 4 || o.MemoryMB != 4096 || o.Firmware != "efi" || o.OSType != "debian12_64Guest" {
		t.Errorf("got %+v", o)
	}
	if len(o.Disks) != 2 || o.Disks[0].File != "web01-disk1.vmdk" || o.Disks[0].Capacity != 16<<30 || o.Disks[1].FileSize != 2000 {
		t.Errorf("disks %+v", o.Disks)
	}
	if len(o.NICs) != 2 || o.NICs[0].Model != "VmxNet3" || o.NICs[0].Network != "VM Network" {
		t.Errorf("nics %+v", o.NICs)
	}
}

// TestParseOVFNICsAndSecureBoot: every NIC keeps its network and MAC (only
// a unicast Ethernet address is taken), and VMware's Secure Boot key is read.
func TestParseOVFNICsAndSecureBoot(t *testing.T) {
	for _, c := range []struct {
		name     string
		vm       fixture.VM
		wantMACs []string
		wantNets []string
		secure   bool
	}{
		{"macs kept", fixture.VM{NICs: 2, Networks: []string{"VM Network", "Backup"}, MACs: []string{"00:50:56:AA:BB:01", "00-50-56-aa-bb-02"}, Firmware: "efi", SecureBoot: true},
			[]string{"00:50:56:aa:bb:01", "00:50:56:aa:bb:02"}, []string{"VM Network", "Backup"}, true},
		{"no macs", fixture.VM{NICs: 1}, []string{""}, []string{"VM Network"}, false},
		{"multicast and junk refused", fixture.VM{NICs: 3, MACs: []string{"01:00:5e:00:00:01", "00:00:00:00:00:00", "x;y"}},
			[]string{"", "", ""}, []string{"VM Network", "VM Network", "VM Network"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := imgfmt.ParseOVF(strings.NewReader(fixture.OVFXML(c.vm, []fixture.OVFDisk{{File: "d.vmdk", Capacity: 1}})))
			if err != nil {
				t.Fatal(err)
			}
			var macs, nets []string
			for _, n := range o.NICs {
				macs, nets = append(macs, n.MAC), append(nets, n.Network)
			}
			if !slices.Equal(macs, c.wantMACs) || !slices.Equal(nets, c.wantNets) || o.SecureBoot != c.secure {
				t.Errorf("macs %q networks %q secure boot %v; want %q %q %v", macs, nets, o.SecureBoot, c.wantMACs, c.wantNets, c.secure)
			}
		})
	}
}

func TestParseOVFErrors(t *testing.T) {
	good := fixture.OVFXML(fixture.VM{}, []fixture.OVFDisk{{File: "d.vmdk", Capacity: 1}})
	for _, c := range []struct{ name, text, want string }{
		{"not xml", "hello", "cannot parse XML"},
		{"no system", `<Envelope><References/></Envelope>`, "no VirtualSystem"},
		{"dangling fileRef", strings.Replace(good, `ovf:fileRef="file1"`, `ovf:fileRef="nope"`, 1), `fileRef "nope"`},
		{"absolute href", strings.Replace(good, `ovf:href="d.vmdk"`, `ovf:href="/etc/shadow"`, 1), "must be relative"},
		{"parent href", strings.Replace(good, `ovf:href="d.vmdk"`, `ovf:href="../../etc/shadow"`, 1), "must not leave"},
		{"remote href", strings.Replace(good, `ovf:href="d.vmdk"`, `ovf:href="http://x/d.vmdk"`, 1), "only local files"},
		{"bad capacity", strings.Replace(good, `ovf:capacity="1"`, `ovf:capacity="big"`, 1), "capacity"},
		{"bad units", strings.Replace(good, `ovf:capacityAllocationUnits="byte"`, `ovf:capacityAllocationUnits="furlongs"`, 1), "unknown units"},
		{"bad cpus", strings.Replace(good, "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>", "<rasd:VirtualQuantity>-1</rasd:VirtualQuantity>", 1), "CPU count"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := imgfmt.ParseOVF(strings.NewReader(c.text))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %v, want %q", err, c.want)
			}
		})
	}
}

// An OVA's disks are read in place: the json: spec must give qemu-img the
// same bytes as the disk that went into the archive.
func TestOVAQemuSpec(t *testing.T) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed (packaging/deps.txt: qemu-utils)")
	}
	dir := t.TempDir()
	a := fixture.LinuxDisk(t, dir, fixture.Options{Name: "a", SizeMB: 16})
	b := fixture.LinuxDisk(t, dir, fixture.Options{Name: "b", SizeMB: 24, Table: "gpt"})
	ova := fixture.OVA(t, dir, a, b)
	arc, err := imgfmt.ReadOVA(ova)
	if err != nil {
		t.Fatal(err)
	}
	if len(arc.Members) != 4 || arc.OVFName != "fixture-vm.ovf" || len(arc.OVF.Disks) != 2 {
		t.Fatalf("archive %+v", arc)
	}
	f, err := os.Open(ova)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, raw := range []string{a, b} {
		m, ok := arc.Member(arc.OVF.Disks[i].File)
		if !ok {
			t.Fatalf("disk %s not in archive", arc.OVF.Disks[i].File)
		}
		format, err := imgfmt.DetectReader(arc.Section(f, m), m.Size)
		if err != nil || format != "vmdk" {
			t.Fatalf("member %s detected as %q, %v", m.Name, format, err)
		}
		spec := imgfmt.QemuSpec(arc.Path, m)
		out, err := exec.Command(qemuImg, "compare", "-f", "vmdk", "-F", "raw", spec, raw).CombinedOutput()
		if err != nil {
			t.Errorf("disk %d: qemu-img compare %s: %v\n%s", i+1, spec, err, out)
		}
	}
}

func TestReadOVARefusesBadArchives(t *testing.T) {
	dir := t.TempDir()
	raw := fixture.LinuxDisk(t, dir, fixture.Options{SizeMB: 16})
	ova := fixture.OVA(t, dir, raw)
	data, err := os.ReadFile(ova)
	if err != nil {
		t.Fatal(err)
	}
	trunc := filepath.Join(dir, "trunc.ova")
	if err := os.WriteFile(trunc, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	noOVF := filepath.Join(dir, "noovf.ova")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "readme.txt", Mode: 0o644, Size: 2})
	tw.Write([]byte("hi"))
	tw.Close()
	if err := os.WriteFile(noOVF, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{trunc, "truncated"},
		{noOVF, "no .ovf descriptor"},
	} {
		_, err := imgfmt.ReadOVA(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadOVA(%s) = %v, want %q", filepath.Base(c.path), err, c.want)
		}
	}
}

func TestParseManifest(t *testing.T) {
	ds, err := imgfmt.ParseManifest(strings.NewReader("SHA256(vm.ovf)= " + strings.Repeat("ab", 32) + "\nSHA1(vm-disk1.vmdk)=" + strings.Repeat("CD", 20) + "\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].File != "vm.ovf" || ds[1].Algorithm != "SHA1" || ds[1].Hex != strings.Repeat("cd", 20) {
		t.Errorf("digests %+v", ds)
	}
	for _, bad := range []string{"MD5(x)= 00", "SHA256(x)= abc", "garbage"} {
		if _, err := imgfmt.ParseManifest(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
}
