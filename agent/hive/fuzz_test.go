package hive_test

import (
	"encoding/binary"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/hive"
	"github.com/hyper2kvm/hyper2kvm/agent/hive/hivetest"
)

// FuzzHive: any bytes open or fail with an error, and walking whatever
// opened (every key and value, numbers and strings) never panics. Seeds are
// hives written by hivetest, so the fuzzer starts from valid structure.
func FuzzHive(f *testing.F) {
	f.Add(hivetest.Build(software()))
	f.Add(hivetest.Build(&hivetest.Key{Name: "ROOT"}))
	sys := &hivetest.Key{Name: "SYSTEM"}
	sys.Set(`Select`, hivetest.DWord("Current", 1))
	sys.Set(`ControlSet001\Services\viostor`, hivetest.DWord("Start", 0), hivetest.ExpandSZ("ImagePath", `system32\drivers\viostor.sys`))
	f.Add(hivetest.Build(sys))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = hive.Open(b)
		// Mutations nearly always break the base block's checksum; fix it
		// so the fuzzer reaches the cells behind it.
		if len(b) >= 0x200 {
			var sum uint32
			for i := 0; i < 0x1FC; i += 4 {
				sum ^= binary.LittleEndian.Uint32(b[i:])
			}
			binary.LittleEndian.PutUint32(b[0x1FC:], sum)
		}
		h, err := hive.Open(b)
		if err != nil {
			return
		}
		// A hive's keys may form a cycle (a subkey list naming an
		// ancestor): the walk is bounded, as any caller's must be.
		budget := 200
		var walk func(k hive.Key, depth int)
		walk = func(k hive.Key, depth int) {
			if depth > 16 || budget <= 0 {
				return
			}
			budget--
			vs, _ := k.Values()
			for _, v := range vs {
				_, _ = v.String()
				_, _ = v.Strings()
				_, _ = v.Uint()
			}
			subs, _ := k.Subkeys()
			for _, s := range subs {
				walk(s, depth+1)
			}
		}
		walk(h.Root(), 0)
		_, _ = h.Lookup(`ControlSet001\Services\viostor`)
	})
}
