package hive_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/hive"
	"github.com/hyper2kvm/hyper2kvm/agent/hive/hivetest"
)

// software is a SOFTWARE-shaped hive: what INSPECT reads from one.
func software() *hivetest.Key {
	root := &hivetest.Key{Name: "ROOT"}
	root.Set(`Microsoft\Windows NT\CurrentVersion`,
		hivetest.SZ("ProductName", "Windows Server 2022 Standard"),
		hivetest.SZ("EditionID", "ServerStandard"),
		hivetest.SZ("CurrentBuild", "20348"),
		hivetest.DWord("CurrentMajorVersionNumber", 10),
		hivetest.ExpandSZ("SystemRoot", `C:\Windows`),
		hivetest.MultiSZ("Multi", "a", "bé", "c"),
		hivetest.SZ("", "default value"),
		hivetest.Value{Name: "Big", Type: hive.Binary, Data: bytes.Repeat([]byte{7}, 20000)},
	)
	root.Set(`VMware, Inc.\VMware Tools`, hivetest.SZ("InstallPath", `C:\Program Files\VMware\VMware Tools\`))
	root.Path(`Ünïcödé ключ`).Set("", hivetest.SZ("Wert", "ja"))
	return root
}

func TestReadWritten(t *testing.T) {
	h, err := hive.Open(hivetest.Build(software()))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, value, want string
	}{
		{`Microsoft\Windows NT\CurrentVersion`, "ProductName", "Windows Server 2022 Standard"},
		{`microsoft\WINDOWS NT\currentversion`, "productname", "Windows Server 2022 Standard"},
		{`\Microsoft\Windows NT\CurrentVersion\`, "SystemRoot", `C:\Windows`},
		{`Microsoft\Windows NT\CurrentVersion`, "", "default value"},
		{`VMware, Inc.\VMware Tools`, "InstallPath", `C:\Program Files\VMware\VMware Tools\`},
		{`Ünïcödé ключ`, "Wert", "ja"},
	}
	for _, tt := range tests {
		k, err := h.Lookup(tt.path)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tt.path, err)
			continue
		}
		v, err := k.Value(tt.value)
		if err != nil {
			t.Errorf("%q %q: %v", tt.path, tt.value, err)
			continue
		}
		if s, err := v.String(); err != nil || s != tt.want {
			t.Errorf("%q %q = %q, %v; want %q", tt.path, tt.value, s, err, tt.want)
		}
	}
	k, _ := h.Lookup(`Microsoft\Windows NT\CurrentVersion`)
	if v, _ := k.Value("CurrentMajorVersionNumber"); true {
		if n, err := v.Uint(); err != nil || n != 10 {
			t.Errorf("dword = %d, %v", n, err)
		}
	}
	if v, _ := k.Value("Multi"); true {
		if ss, err := v.Strings(); err != nil || !slices.Equal(ss, []string{"a", "bé", "c"}) {
			t.Errorf("multi = %q, %v", ss, err)
		}
	}
	if v, err := k.Value("Big"); err != nil || len(v.Data) != 20000 {
		t.Errorf("big value: %d bytes, %v", len(v.Data), err)
	}
	if _, err := h.Lookup(`Microsoft\Nope`); !errors.Is(err, hive.ErrNotFound) {
		t.Errorf("missing key: %v, want ErrNotFound", err)
	}
	if _, err := k.Value("nope"); !errors.Is(err, hive.ErrNotFound) {
		t.Errorf("missing value: %v, want ErrNotFound", err)
	}
	if v, _ := k.Value("ProductName"); true {
		if _, err := v.Uint(); err == nil {
			t.Error("a string read as a number")
		}
	}
}

// corrupt returns a valid hive changed by f (the base block's checksum
// recomputed unless f breaks it on purpose).
func corrupt(f func(b []byte), resum bool) []byte {
	b := hivetest.Build(software())
	f(b)
	if resum {
		var sum uint32
		for i := 0; i < 0x1FC; i += 4 {
			sum ^= binary.LittleEndian.Uint32(b[i:])
		}
		binary.LittleEndian.PutUint32(b[0x1FC:], sum)
	}
	return b
}

func TestHostileHives(t *testing.T) {
	le := binary.LittleEndian
	rootOff := func(b []byte) int { return 4096 + int(le.Uint32(b[0x24:])) }
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "no regf"},
		{"short", []byte("regf"), "no regf"},
		{"bad checksum", corrupt(func(b []byte) { b[0x30] ^= 1 }, false), "checksum"},
		{"version 2", corrupt(func(b []byte) { le.PutUint32(b[0x14:], 2) }, true), "major version"},
		{"no hbin", corrupt(func(b []byte) { copy(b[4096:], "xxxx") }, true), "no hive bin"},
		{"root past the end", corrupt(func(b []byte) { le.PutUint32(b[0x24:], 0x7FFFFFF0) }, true), "outside the hive"},
		{"root in the header", corrupt(func(b []byte) { le.PutUint32(b[0x24:], 4) }, true), "outside the hive"},
		{"root cell free", corrupt(func(b []byte) {
			o := rootOff(b)
			le.PutUint32(b[o:], uint32(-int32(le.Uint32(b[o:]))))
		}, true), "free"},
		{"root cell huge", corrupt(func(b []byte) { le.PutUint32(b[rootOff(b):], 0x80000008) }, true), "outside the hive"},
		{"root name past cell", corrupt(func(b []byte) { le.PutUint16(b[rootOff(b)+4+72:], 60000) }, true), "past its cell"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := hive.Open(tt.b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestHostileLists: damage below the root fails the lookup with an error,
// never a panic or a loop.
func TestHostileLists(t *testing.T) {
	le := binary.LittleEndian
	b := hivetest.Build(software())
	root := 4096 + int(le.Uint32(b[0x24:])) + 4
	list := 4096 + int(le.Uint32(b[root+28:])) + 4
	tests := []struct {
		name string
		f    func(b []byte)
		want string
	}{
		{"subkey count huge", func(b []byte) { le.PutUint32(b[root+20:], 1<<20) }, "more than"},
		{"list entries past cell", func(b []byte) { le.PutUint16(b[list+2:], 5000) }, "past its cell"},
		{"unknown list", func(b []byte) { copy(b[list:], "zz") }, "not a subkey list"},
		{"ri pointing at itself", func(b []byte) {
			copy(b[list:], "ri")
			le.PutUint32(b[list+4:], le.Uint32(b[root+28:]))
		}, "ri list inside an ri list"},
		{"entry points at a value list", func(b []byte) { le.PutUint32(b[list+4:], 0) }, "outside the hive"},
		{"list more than count", func(b []byte) { le.PutUint32(b[root+20:], 1) }, "more entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := bytes.Clone(b)
			tt.f(c)
			h, err := hive.Open(c)
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.Lookup(`Microsoft\Windows NT`)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Lookup: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestHivex checks this package and the test writer against hivex, the
// reference: hivexsh reads what hivetest writes, and hivexregedit --merge
// edits it into a hive this package reads back.
func TestHivex(t *testing.T) {
	for _, tool := range []string{"hivexsh", "hivexregedit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian: libhivex-bin)", tool)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "SOFTWARE")
	if err := os.WriteFile(p, hivetest.Build(software()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("hivexsh", p)
	cmd.Stdin = strings.NewReader("cd \\Microsoft\\Windows NT\\CurrentVersion\nlsval ProductName\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Windows Server 2022 Standard") {
		t.Fatalf("hivexsh on our hive: %v\n%s", err, out)
	}
	reg := `Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion]
"ProductName"="Windows 11 Pro"
"CurrentBuildNumber"="22631"
"InstallDate"=dword:0000002a

[HKEY_LOCAL_MACHINE\SOFTWARE\Added]

[HKEY_LOCAL_MACHINE\SOFTWARE\Added\Deep]

[HKEY_LOCAL_MACHINE\SOFTWARE\Added\Deep\Key]
"List"=hex(7):61,00,00,00,62,00,00,00,00,00
`
	rp := filepath.Join(dir, "x.reg")
	os.WriteFile(rp, []byte(reg), 0o600)
	if out, err := exec.Command("hivexregedit", "--merge", "--prefix", `HKEY_LOCAL_MACHINE\SOFTWARE`, p, rp).CombinedOutput(); err != nil {
		t.Fatalf("hivexregedit --merge: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(p)
	h, err := hive.Open(b)
	if err != nil {
		t.Fatalf("the hive hivex wrote: %v", err)
	}
	k, err := h.Lookup(`Microsoft\Windows NT\CurrentVersion`)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"ProductName": "Windows 11 Pro", "CurrentBuildNumber": "22631", "EditionID": "ServerStandard"} {
		v, err := k.Value(name)
		if s, _ := v.String(); err != nil || s != want {
			t.Errorf("%s = %q, %v; want %q", name, s, err, want)
		}
	}
	if v, err := k.Value("InstallDate"); err != nil {
		t.Error(err)
	} else if n, _ := v.Uint(); n != 42 {
		t.Errorf("InstallDate = %d", n)
	}
	k, err = h.Lookup(`Added\Deep\Key`)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := k.Value("List")
	if ss, err := v.Strings(); err != nil || !slices.Equal(ss, []string{"a", "b"}) {
		t.Errorf("List = %q, %v", ss, err)
	}
}

// BenchmarkLookupWide: a lookup through a key with 20000 subkeys (a
// SOFTWARE hive's Classes has tens of thousands), as INSPECT's lookups do.
func BenchmarkLookupWide(b *testing.B) {
	root := &hivetest.Key{Name: "ROOT"}
	wide := root.Path("Wide")
	for i := range 20000 {
		wide.Subkeys = append(wide.Subkeys, &hivetest.Key{Name: fmt.Sprintf("k%05d", i)})
	}
	wide.Subkeys[19999].Values = []hivetest.Value{hivetest.DWord("v", 1)}
	data := hivetest.Build(root)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h, err := hive.Open(data)
		if err != nil {
			b.Fatal(err)
		}
		k, err := h.Lookup(`Wide\k19999`)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.Value("v"); err != nil {
			b.Fatal(err)
		}
	}
}
