// Package hivetest writes small Windows registry hives (regf) for tests:
// the fixtures of agent/hive, agent/inspect and the e2e tests are built by
// code, never committed as binary files. Test-only: never linked into a
// binary (test/layout_test.go). The hives it writes open in hivex
// (hivexsh, hivexregedit --merge), which the tests use to check it.
package hivetest

import (
	"encoding/binary"
	"strings"
	"unicode/utf16"

	"github.com/hyper2kvm/hyper2kvm/agent/hive"
)

// Key is a key to write, with its values and subkeys.
type Key struct {
	Name    string
	Values  []Value
	Subkeys []*Key
}

// Value is a value to write.
type Value struct {
	Name string
	Type uint32
	Data []byte
}

// SZ is a REG_SZ value.
func SZ(name, s string) Value { return Value{Name: name, Type: hive.SZ, Data: utf16z(s)} }

// ExpandSZ is a REG_EXPAND_SZ value.
func ExpandSZ(name, s string) Value { return Value{Name: name, Type: hive.ExpandSZ, Data: utf16z(s)} }

// DWord is a REG_DWORD value.
func DWord(name string, n uint32) Value {
	return Value{Name: name, Type: hive.DWord, Data: binary.LittleEndian.AppendUint32(nil, n)}
}

// MultiSZ is a REG_MULTI_SZ value.
func MultiSZ(name string, ss ...string) Value {
	var b []byte
	for _, s := range ss {
		b = append(b, utf16z(s)...)
	}
	return Value{Name: name, Type: hive.MultiSZ, Data: append(b, 0, 0)}
}

func utf16z(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return append(b, 0, 0)
}

// Path returns the key at a backslash-separated path below k, creating
// the keys on the way.
func (k *Key) Path(p string) *Key {
	cur := k
	for _, part := range strings.Split(strings.Trim(p, `\`), `\`) {
		if part == "" {
			continue
		}
		var next *Key
		for _, s := range cur.Subkeys {
			if strings.EqualFold(s.Name, part) {
				next = s
			}
		}
		if next == nil {
			next = &Key{Name: part}
			cur.Subkeys = append(cur.Subkeys, next)
		}
		cur = next
	}
	return cur
}

// Set adds values to the key at path p below k (created if needed).
func (k *Key) Set(p string, vals ...Value) *Key {
	t := k.Path(p)
	t.Values = append(t.Values, vals...)
	return t
}

type writer struct {
	b  []byte // hbin bytes, offset 0 is the hbin header
	sk uint32
}

// alloc appends an allocated cell of n data bytes and returns its offset.
func (w *writer) alloc(n int) uint32 {
	size := (4 + n + 7) &^ 7
	off := uint32(len(w.b))
	c := make([]byte, size)
	binary.LittleEndian.PutUint32(c, uint32(-int32(size)))
	w.b = append(w.b, c...)
	return off
}

func (w *writer) data(off uint32) []byte { return w.b[off+4:] }

// Build writes the hive whose root key is root.
func Build(root *Key) []byte {
	w := &writer{b: make([]byte, 32)}
	copy(w.b, "hbin")
	// One security descriptor every key shares: hivex needs a parent's
	// sk to add a child (hivexregedit --merge).
	sd := []byte{1, 0, 0x04, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	w.sk = w.alloc(20 + len(sd))
	d := w.data(w.sk)
	copy(d, "sk")
	binary.LittleEndian.PutUint32(d[4:], w.sk)
	binary.LittleEndian.PutUint32(d[8:], w.sk)
	binary.LittleEndian.PutUint32(d[16:], uint32(len(sd)))
	copy(d[20:], sd)
	nkeys := 0
	rootOff := w.key(root, noParent, true, &nkeys)
	binary.LittleEndian.PutUint32(w.data(w.sk)[12:], uint32(nkeys))
	// The bin is a whole number of pages; the rest is one free cell.
	if rest := (len(w.b)+4095)&^4095 - len(w.b); rest > 0 {
		c := make([]byte, rest)
		binary.LittleEndian.PutUint32(c, uint32(rest))
		w.b = append(w.b, c...)
	}
	le := binary.LittleEndian
	le.PutUint32(w.b[8:], uint32(len(w.b)))
	base := make([]byte, 4096)
	copy(base, "regf")
	le.PutUint32(base[4:], 1) // sequence numbers, equal: clean
	le.PutUint32(base[8:], 1)
	le.PutUint32(base[0x14:], 1) // version 1.3
	le.PutUint32(base[0x18:], 3)
	le.PutUint32(base[0x20:], 1) // file format: direct memory load
	le.PutUint32(base[0x24:], rootOff)
	le.PutUint32(base[0x28:], uint32(len(w.b)))
	le.PutUint32(base[0x2C:], 1)
	var sum uint32
	for i := 0; i < 0x1FC; i += 4 {
		sum ^= le.Uint32(base[i:])
	}
	le.PutUint32(base[0x1FC:], sum)
	return append(base, w.b...)
}

const noParent = 0xFFFFFFFF

func latin1(s string) ([]byte, bool) {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return nil, false
		}
		b = append(b, byte(r))
	}
	return b, true
}

func nameBytes(s string) (b []byte, compressed bool) {
	if b, ok := latin1(s); ok {
		return b, true
	}
	u := utf16z(s)
	return u[:len(u)-2], false
}

// lhHash is the hash an lh list stores for a name (hivex's and Windows').
func lhHash(name string) uint32 {
	var h uint32
	for _, r := range strings.ToUpper(name) {
		h = h*37 + uint32(r)
	}
	return h
}

func (w *writer) key(k *Key, parent uint32, root bool, n *int) uint32 {
	*n++
	le := binary.LittleEndian
	name, comp := nameBytes(k.Name)
	off := w.alloc(76 + len(name))
	flags := uint16(0)
	if comp {
		flags |= 0x20
	}
	if root {
		flags |= 0x04 | 0x08
	}
	var kids []uint32
	for _, s := range k.Subkeys {
		kids = append(kids, w.key(s, off, false, n))
	}
	list := uint32(noParent)
	if len(kids) > 0 {
		list = w.alloc(4 + 8*len(kids))
		d := w.data(list)
		copy(d, "lh")
		le.PutUint16(d[2:], uint16(len(kids)))
		for i, c := range kids {
			le.PutUint32(d[4+8*i:], c)
			le.PutUint32(d[8+8*i:], lhHash(k.Subkeys[i].Name))
		}
	}
	vlist := uint32(noParent)
	if len(k.Values) > 0 {
		var vks []uint32
		for _, v := range k.Values {
			vks = append(vks, w.value(v))
		}
		vlist = w.alloc(4 * len(vks))
		for i, v := range vks {
			le.PutUint32(w.data(vlist)[4*i:], v)
		}
	}
	d := w.data(off)
	copy(d, "nk")
	le.PutUint16(d[2:], flags)
	le.PutUint32(d[16:], parent)
	le.PutUint32(d[20:], uint32(len(kids)))
	le.PutUint32(d[28:], list)
	le.PutUint32(d[32:], noParent)
	le.PutUint32(d[36:], uint32(len(k.Values)))
	le.PutUint32(d[40:], vlist)
	le.PutUint32(d[44:], w.sk)
	le.PutUint32(d[48:], noParent)
	le.PutUint16(d[72:], uint16(len(name)))
	copy(d[76:], name)
	return off
}

func (w *writer) value(v Value) uint32 {
	le := binary.LittleEndian
	name, comp := nameBytes(v.Name)
	var dataOff, size uint32
	if len(v.Data) <= 4 {
		size = uint32(len(v.Data)) | 0x80000000
		var inline [4]byte
		copy(inline[:], v.Data)
		dataOff = le.Uint32(inline[:])
	} else {
		size = uint32(len(v.Data))
		dataOff = w.alloc(len(v.Data))
		copy(w.data(dataOff), v.Data)
	}
	off := w.alloc(20 + len(name))
	d := w.data(off)
	copy(d, "vk")
	le.PutUint16(d[2:], uint16(len(name)))
	le.PutUint32(d[4:], size)
	le.PutUint32(d[8:], dataOff)
	le.PutUint32(d[12:], v.Type)
	if comp && len(name) > 0 {
		le.PutUint16(d[16:], 1)
	}
	copy(d[20:], name)
	return off
}
