package partition_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/partition"
)

// disk makes a sparse file of size bytes partitioned by sfdisk with script.
func disk(t *testing.T, size int64, script string) string {
	t.Helper()
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk not installed")
	}
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", p)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return p
}

func read(t *testing.T, p string) *partition.Table {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	tab, err := partition.Read(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// blkidParts asks util-linux what it sees, the reference the parser must match.
func blkidParts(t *testing.T, p string) string {
	out, err := exec.Command("sfdisk", "--dump", p).Output()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v", err)
	}
	return string(out)
}

func TestRead(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name   string
		script string
		kind   string
		want   []partition.Partition // Number, Start, Size, TypeName, PartLabel
	}{
		{"mbr", "label: dos\nlabel-id: 0x12345678\nstart=2048, size=20480, type=83, bootable\nstart=22528, size=8192, type=82\n", "mbr",
			[]partition.Partition{
				{Number: 1, Start: mib, Size: 10 * mib, TypeName: "linux", PartUUID: "12345678-01", Bootable: true},
				{Number: 2, Start: 11 * mib, Size: 4 * mib, TypeName: "linux-swap", PartUUID: "12345678-02"},
			}},
		{"mbr-logical", "label: dos\nlabel-id: 0xdeadbeef\nstart=2048, size=8192, type=83\nstart=10240, type=5\nstart=12288, size=4096, type=83\nstart=18432, size=4096, type=82\n", "mbr",
			[]partition.Partition{
				{Number: 1, Start: mib, Size: 4 * mib, TypeName: "linux", PartUUID: "deadbeef-01"},
				{Number: 2, Start: 5 * mib, Size: 27 * mib, TypeName: "extended", PartUUID: "deadbeef-02"},
				{Number: 5, Start: 6 * mib, Size: 2 * mib, TypeName: "linux", PartUUID: "deadbeef-05"},
				{Number: 6, Start: 9 * mib, Size: 2 * mib, TypeName: "linux-swap", PartUUID: "deadbeef-06"},
			}},
		{"gpt", "label: gpt\nlabel-id: 01234567-89AB-CDEF-0123-456789ABCDEF\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios\nstart=4096, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE, name=root\n", "gpt",
			[]partition.Partition{
				{Number: 1, Start: mib, Size: mib, TypeName: "bios-boot", PartLabel: "bios"},
				{Number: 2, Start: 2 * mib, Size: 8 * mib, TypeName: "linux", PartUUID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", PartLabel: "root"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := disk(t, 32*mib, tt.script)
			tab := read(t, p)
			if tab.Kind != tt.kind {
				t.Fatalf("kind %q, want %q", tab.Kind, tt.kind)
			}
			if len(tab.Partitions) != len(tt.want) {
				t.Fatalf("got %d partitions, want %d:\n%+v\nsfdisk says:\n%s", len(tab.Partitions), len(tt.want), tab.Partitions, blkidParts(t, p))
			}
			for i, w := range tt.want {
				g := tab.Partitions[i]
				if g.Number != w.Number || g.Start != w.Start || g.Size != w.Size || g.TypeName != w.TypeName || g.PartLabel != w.PartLabel || g.Bootable != w.Bootable {
					t.Errorf("partition %d = %+v, want %+v", i, g, w)
				}
				if w.PartUUID != "" && g.PartUUID != w.PartUUID {
					t.Errorf("partition %d PARTUUID %q, want %q", i, g.PartUUID, w.PartUUID)
				}
			}
		})
	}
}

func TestReadNone(t *testing.T) {
	tab, err := partition.Read(bytes.NewReader(make([]byte, 4096)), 4096)
	if err != nil || tab.Kind != "none" {
		t.Fatalf("blank disk: %+v %v", tab, err)
	}
	if _, err := partition.Read(bytes.NewReader(nil), 0); err == nil {
		t.Fatal("empty disk: no error")
	}
}

func TestReadHostile(t *testing.T) {
	mbr := func(entries ...[16]byte) []byte {
		b := make([]byte, 64*1024)
		for i, e := range entries {
			copy(b[446+16*i:], e[:])
		}
		b[510], b[511] = 0x55, 0xAA
		return b
	}
	entry := func(typ byte, lba, n uint32) (e [16]byte) {
		e[4] = typ
		binary.LittleEndian.PutUint32(e[8:], lba)
		binary.LittleEndian.PutUint32(e[12:], n)
		return e
	}
	// An extended partition whose EBR points at itself must not loop.
	loop := mbr(entry(0x05, 1, 100))
	copy(loop[512+446:], func() []byte { e := entry(0x83, 1, 10); return e[:] }())
	copy(loop[512+462:], func() []byte { e := entry(0x05, 0x0, 10); e[8] = 0; return e[:] }())
	loop[512+510], loop[512+511] = 0x55, 0xAA
	self := mbr(entry(0x05, 1, 100))
	copy(self[512+446:], func() []byte { e := entry(0x83, 1, 10); return e[:] }())
	// next EBR at offset 0 relative to the extended start: the same EBR.
	copy(self[512+462:], func() []byte { e := entry(0x05, 0, 10); return e[:] }())
	self[512+510], self[512+511] = 0x55, 0xAA

	tests := []struct {
		name string
		b    []byte
	}{
		{"past-end", mbr(entry(0x83, 2048, 1<<30))},
		{"gpt-no-header", mbr(entry(0xEE, 1, 100))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := partition.Read(bytes.NewReader(tt.b), int64(len(tt.b))); err == nil {
				t.Fatal("no error")
			}
		})
	}
	// lba 0 of the next entry ends the chain; the self loop must end too.
	if _, err := partition.Read(bytes.NewReader(loop), int64(len(loop))); err != nil {
		t.Fatalf("chain ending: %v", err)
	}
	if _, err := partition.Read(bytes.NewReader(self), int64(len(self))); err != nil {
		t.Fatalf("self chain: %v", err)
	}
}

func TestProbe(t *testing.T) {
	const size = 320 << 20
	tests := []struct {
		name string
		mk   []string // command, the image path is appended
		typ  string
	}{
		{"ext4", []string{"mkfs.ext4", "-q", "-F", "-L", "rootfs", "-U", "3b6d8f5e-1c4a-4e9b-9f0e-2a7c5d1e8b40"}, "ext4"},
		{"ext2", []string{"mkfs.ext2", "-q", "-F", "-L", "boot", "-U", "3b6d8f5e-1c4a-4e9b-9f0e-2a7c5d1e8b41"}, "ext2"},
		{"swap", []string{"mkswap", "-L", "swp", "-U", "3b6d8f5e-1c4a-4e9b-9f0e-2a7c5d1e8b42"}, "swap"},
		{"xfs", []string{"mkfs.xfs", "-q", "-f", "-L", "data", "-m", "uuid=3b6d8f5e-1c4a-4e9b-9f0e-2a7c5d1e8b43"}, "xfs"},
		{"btrfs", []string{"mkfs.btrfs", "-q", "-f", "-L", "pool", "-U", "3b6d8f5e-1c4a-4e9b-9f0e-2a7c5d1e8b44"}, "btrfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exec.LookPath(tt.mk[0]); err != nil {
				t.Skipf("%s not installed", tt.mk[0])
			}
			p := filepath.Join(t.TempDir(), "fs.img")
			os.WriteFile(p, nil, 0o644)
			os.Truncate(p, size)
			if out, err := exec.Command(tt.mk[0], append(tt.mk[1:], p)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tt.mk[0], err, out)
			}
			want := map[string]string{}
			out, err := exec.Command("blkid", "-p", "-o", "export", p).Output()
			if err != nil {
				t.Fatalf("blkid: %v", err)
			}
			for _, l := range strings.Split(string(out), "\n") {
				if k, v, ok := strings.Cut(l, "="); ok {
					want[k] = v
				}
			}
			f, _ := os.Open(p)
			defer f.Close()
			fs, err := partition.Probe(f, 0, size)
			if err != nil {
				t.Fatal(err)
			}
			if fs.Type != tt.typ || fs.Type != want["TYPE"] || fs.UUID != want["UUID"] || fs.Label != want["LABEL"] {
				t.Fatalf("probe = %+v, blkid = %v", fs, want)
			}
		})
	}
}

func FuzzPartition(f *testing.F) {
	// Seeds: an MBR with a primary and an extended chain, and a real GPT.
	mbr := make([]byte, 8192)
	mbr[510], mbr[511] = 0x55, 0xAA
	mbr[446+4], mbr[446+8], mbr[446+12] = 0x83, 4, 4
	mbr[462+4], mbr[462+8], mbr[462+12] = 0x05, 8, 8
	mbr[8*512+510], mbr[8*512+511] = 0x55, 0xAA
	mbr[8*512+446+4], mbr[8*512+446+8], mbr[8*512+446+12] = 0x83, 1, 2
	f.Add(mbr)
	f.Add(make([]byte, 512))
	pmbr := make([]byte, 34*512)
	pmbr[510], pmbr[511] = 0x55, 0xAA
	pmbr[446+4] = 0xEE
	copy(pmbr[512:], "EFI PART")
	f.Add(pmbr)
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := partition.Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, p := range tab.Partitions {
			if p.Start < 0 || p.Size < 0 || p.Start+p.Size > int64(len(b)) {
				t.Fatalf("partition %d outside the disk: %+v", p.Number, p)
			}
			partition.Probe(bytes.NewReader(b), p.Start, p.Size)
		}
		partition.ProbeBytes(b)
	})
}

func TestProbeMD(t *testing.T) {
	const size = 1 << 20
	sb := func(version uint32) []byte {
		b := make([]byte, 64)
		binary.LittleEndian.PutUint32(b, 0xa92b4efc)
		binary.LittleEndian.PutUint32(b[4:], version)
		copy(b[16:], []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00})
		copy(b[32:], "host:0")
		return b
	}
	for _, tt := range []struct {
		name    string
		at      int64
		version uint32
		uuid    string
	}{
		{"1.1", 0, 1, "11223344-5566-7788-99aa-bbccddeeff00"},
		{"1.2", 4096, 1, "11223344-5566-7788-99aa-bbccddeeff00"},
		{"1.0", ((size >> 9) - 16) &^ 7 << 9, 1, "11223344-5566-7788-99aa-bbccddeeff00"},
		{"0.90", size - 0x10000, 0, ""},
	} {
		disk := make([]byte, size)
		// A mirror leg with the superblock at the end starts with the
		// filesystem: an ext4 signature that must not win.
		binary.LittleEndian.PutUint16(disk[1024+0x38:], 0xEF53)
		copy(disk[tt.at:], sb(tt.version))
		got, err := partition.Probe(bytes.NewReader(disk), 0, size)
		if err != nil || got.Type != "linux_raid_member" || got.UUID != tt.uuid {
			t.Errorf("md %s: %+v %v", tt.name, got, err)
		}
	}
}
