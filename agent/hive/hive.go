// Package hive reads Windows registry hive files (the "regf" format of
// Windows/System32/config/SOFTWARE, SYSTEM, ...), the way hivex does, for
// INSPECT of Windows guests. Read only.
//
// A hive comes from the guest and is hostile input: every offset, length
// and count is checked against the hive's bytes before use, subkey lists
// nest at most two levels (ri → lf/lh/li, as Windows writes them), a
// lookup visits a bounded number of cells, and nothing panics. The format
// is described in hivex's lib/hivex-internal.h and the "Windows registry
// file format specification" (msuhanov/regf); only what reading needs is
// implemented: base block, hbins, nk, vk, lf/lh/li/ri, value lists and
// big data (db).
package hive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
)

// Limits on what a hive may make the reader do.
const (
	// MaxSize is the largest hive accepted. Real SOFTWARE hives are tens
	// to a few hundred MiB; INSPECT reads whole files up to this size.
	MaxSize = 512 << 20
	// MaxSubkeys and MaxValues bound one key's lists.
	MaxSubkeys = 1 << 16
	MaxValues  = 1 << 16
	// MaxDepth bounds a path's components in Lookup.
	MaxDepth = 64
	// MaxValueData bounds one value's data.
	MaxValueData = 16 << 20
)

// Value types (winnt.h REG_*).
const (
	None     uint32 = 0
	SZ       uint32 = 1
	ExpandSZ uint32 = 2
	Binary   uint32 = 3
	DWord    uint32 = 4
	DWordBE  uint32 = 5
	Link     uint32 = 6
	MultiSZ  uint32 = 7
	QWord    uint32 = 11
)

const (
	baseSize = 4096 // the base block; cell offsets count from its end
	noCell   = 0xFFFFFFFF
	// keyCompName: the key's name is Latin-1, not UTF-16LE.
	keyCompName = 0x20
	// valueCompName: the value's name is Latin-1.
	valueCompName = 0x1
)

// ErrNotFound is returned (wrapped) for a key or value that is not there.
var ErrNotFound = errors.New("not found")

// Hive is a parsed hive file.
type Hive struct {
	b    []byte // the hive bins: cell offsets index this
	root uint32
}

// Open checks the base block and returns the hive. b is kept, not copied.
func Open(b []byte) (*Hive, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("hive: %d bytes, more than the %d accepted", len(b), MaxSize)
	}
	if len(b) < baseSize+32 || string(b[:4]) != "regf" {
		return nil, errors.New("hive: not a registry hive (no regf signature)")
	}
	le := binary.LittleEndian
	// The checksum is XOR of the first 127 dwords. A hive Windows did not
	// flush cleanly can still be read, but a bad sum on a file of ours is
	// more likely damage than a dirty hive: refuse it.
	var sum uint32
	for i := 0; i < 0x1FC; i += 4 {
		sum ^= le.Uint32(b[i:])
	}
	if sum == 0xFFFFFFFF {
		sum = 0xFFFFFFFE
	} else if sum == 0 {
		sum = 1
	}
	if sum != le.Uint32(b[0x1FC:]) {
		return nil, errors.New("hive: base block checksum mismatch")
	}
	if maj := le.Uint32(b[0x14:]); maj != 1 {
		return nil, fmt.Errorf("hive: major version %d, only 1 is known", maj)
	}
	size := uint64(le.Uint32(b[0x28:]))
	data := b[baseSize:]
	if size < uint64(len(data)) {
		data = data[:size]
	}
	if len(data) < 32 || string(data[:4]) != "hbin" {
		return nil, errors.New("hive: no hive bin after the base block")
	}
	h := &Hive{b: data, root: le.Uint32(b[0x24:])}
	if _, err := h.nk(h.root); err != nil {
		return nil, fmt.Errorf("hive: root key: %w", err)
	}
	return h, nil
}

// cell returns the data of the allocated cell at off (without its size field).
func (h *Hive) cell(off uint32) ([]byte, error) {
	o := uint64(off)
	if off == noCell || o+4 > uint64(len(h.b)) || o < 32 {
		return nil, fmt.Errorf("cell offset %#x outside the hive", off)
	}
	sz := int32(binary.LittleEndian.Uint32(h.b[o:]))
	if sz >= 0 {
		return nil, fmt.Errorf("cell %#x is free", off)
	}
	n := uint64(-int64(sz))
	if n < 8 || o+n > uint64(len(h.b)) {
		return nil, fmt.Errorf("cell %#x: size %d outside the hive", off, n)
	}
	return h.b[o+4 : o+n], nil
}

// Key is a key of the hive.
type Key struct {
	h    *Hive
	off  uint32
	Name string
}

// nk parses the key node at off.
func (h *Hive) nk(off uint32) (Key, error) {
	c, err := h.cell(off)
	if err != nil {
		return Key{}, err
	}
	if len(c) < 76 || string(c[:2]) != "nk" {
		return Key{}, fmt.Errorf("cell %#x is not a key", off)
	}
	le := binary.LittleEndian
	n := int(le.Uint16(c[72:]))
	if 76+n > len(c) {
		return Key{}, fmt.Errorf("key %#x: name of %d bytes past its cell", off, n)
	}
	return Key{h: h, off: off, Name: decodeName(c[76:76+n], le.Uint16(c[2:])&keyCompName != 0)}, nil
}

func decodeName(b []byte, latin1 bool) string {
	if latin1 {
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r)
	}
	return utf16String(b)
}

// utf16String decodes UTF-16LE up to the first NUL.
func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// Root is the hive's root key.
func (h *Hive) Root() Key {
	k, _ := h.nk(h.root) // checked by Open
	return k
}

// Subkeys lists the key's subkeys in the hive's order.
func (k Key) Subkeys() ([]Key, error) {
	c, err := k.h.cell(k.off)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	count := le.Uint32(c[20:])
	if count == 0 {
		return nil, nil
	}
	if count > MaxSubkeys {
		return nil, fmt.Errorf("key %q: %d subkeys, more than %d", k.Name, count, MaxSubkeys)
	}
	offs, err := k.h.subkeyOffsets(le.Uint32(c[28:]), 0, int(count))
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", k.Name, err)
	}
	out := make([]Key, 0, len(offs))
	for _, o := range offs {
		sk, err := k.h.nk(o)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Name, err)
		}
		out = append(out, sk)
	}
	return out, nil
}

// subkeyOffsets reads a subkey list (lf, lh, li, or ri of those), at most
// limit entries in all.
func (h *Hive) subkeyOffsets(off uint32, depth, limit int) ([]uint32, error) {
	c, err := h.cell(off)
	if err != nil {
		return nil, err
	}
	if len(c) < 4 {
		return nil, fmt.Errorf("subkey list %#x too short", off)
	}
	le := binary.LittleEndian
	n := int(le.Uint16(c[2:]))
	sig := string(c[:2])
	step := 8
	if sig == "li" || sig == "ri" {
		step = 4
	}
	switch sig {
	case "lf", "lh", "li":
	case "ri":
		if depth > 0 {
			return nil, fmt.Errorf("subkey list %#x: an ri list inside an ri list", off)
		}
	default:
		return nil, fmt.Errorf("cell %#x is not a subkey list", off)
	}
	if 4+n*step > len(c) {
		return nil, fmt.Errorf("subkey list %#x: %d entries past its cell", off, n)
	}
	var out []uint32
	for i := 0; i < n; i++ {
		o := le.Uint32(c[4+i*step:])
		if sig != "ri" {
			if len(out) >= limit {
				return nil, fmt.Errorf("subkey list %#x: more entries than the key's count %d", off, limit)
			}
			out = append(out, o)
			continue
		}
		sub, err := h.subkeyOffsets(o, depth+1, limit-len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

// Subkey finds a subkey by name, case-insensitively as Windows does.
func (k Key) Subkey(name string) (Key, error) {
	subs, err := k.Subkeys()
	if err != nil {
		return Key{}, err
	}
	for _, s := range subs {
		if strings.EqualFold(s.Name, name) {
			return s, nil
		}
	}
	return Key{}, fmt.Errorf("key %q: subkey %q: %w", k.Name, name, ErrNotFound)
}

// Lookup follows a backslash-separated path from the root
// (`ControlSet001\Services\viostor`).
func (h *Hive) Lookup(path string) (Key, error) {
	k := h.Root()
	parts := strings.Split(strings.Trim(path, `\`), `\`)
	if len(parts) > MaxDepth {
		return Key{}, fmt.Errorf("path %q: more than %d components", path, MaxDepth)
	}
	for _, p := range parts {
		if p == "" {
			continue
		}
		var err error
		if k, err = k.Subkey(p); err != nil {
			return Key{}, err
		}
	}
	return k, nil
}

// Value is one value of a key.
type Value struct {
	Name string // "" for the key's default value
	Type uint32
	Data []byte
}

// Values lists the key's values.
func (k Key) Values() ([]Value, error) {
	c, err := k.h.cell(k.off)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	count := le.Uint32(c[36:])
	if count == 0 {
		return nil, nil
	}
	if count > MaxValues {
		return nil, fmt.Errorf("key %q: %d values, more than %d", k.Name, count, MaxValues)
	}
	list, err := k.h.cell(le.Uint32(c[40:]))
	if err != nil {
		return nil, fmt.Errorf("key %q: value list: %w", k.Name, err)
	}
	if uint64(count)*4 > uint64(len(list)) {
		return nil, fmt.Errorf("key %q: %d values past the value list's cell", k.Name, count)
	}
	out := make([]Value, 0, count)
	for i := uint32(0); i < count; i++ {
		v, err := k.h.vk(le.Uint32(list[4*i:]))
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Name, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Value finds a value by name, case-insensitively.
func (k Key) Value(name string) (Value, error) {
	vs, err := k.Values()
	if err != nil {
		return Value{}, err
	}
	for _, v := range vs {
		if strings.EqualFold(v.Name, name) {
			return v, nil
		}
	}
	return Value{}, fmt.Errorf("key %q: value %q: %w", k.Name, name, ErrNotFound)
}

func (h *Hive) vk(off uint32) (Value, error) {
	c, err := h.cell(off)
	if err != nil {
		return Value{}, err
	}
	if len(c) < 20 || string(c[:2]) != "vk" {
		return Value{}, fmt.Errorf("cell %#x is not a value", off)
	}
	le := binary.LittleEndian
	nameLen := int(le.Uint16(c[2:]))
	if 20+nameLen > len(c) {
		return Value{}, fmt.Errorf("value %#x: name past its cell", off)
	}
	v := Value{Name: decodeName(c[20:20+nameLen], le.Uint16(c[16:])&valueCompName != 0), Type: le.Uint32(c[12:])}
	size := le.Uint32(c[4:])
	if size&0x80000000 != 0 {
		// Four bytes or fewer live in the data offset field itself.
		n := size &^ 0x80000000
		if n > 4 {
			return Value{}, fmt.Errorf("value %q: inline data of %d bytes", v.Name, n)
		}
		v.Data = append([]byte(nil), c[8:8+n]...)
		return v, nil
	}
	if size > MaxValueData {
		return Value{}, fmt.Errorf("value %q: %d bytes of data, more than %d", v.Name, size, MaxValueData)
	}
	d, err := h.data(le.Uint32(c[8:]), int(size))
	if err != nil {
		return Value{}, fmt.Errorf("value %q: %w", v.Name, err)
	}
	v.Data = d
	return v, nil
}

// data reads size bytes of value data at off: one cell, or a "db" big
// data record whose segments hold it (hives 1.4+, data over 16344 bytes).
func (h *Hive) data(off uint32, size int) ([]byte, error) {
	c, err := h.cell(off)
	if err != nil {
		return nil, err
	}
	if size <= len(c) {
		return append([]byte(nil), c[:size]...), nil
	}
	if len(c) < 8 || string(c[:2]) != "db" {
		return nil, fmt.Errorf("data of %d bytes past its %d-byte cell", size, len(c))
	}
	le := binary.LittleEndian
	n := int(le.Uint16(c[2:]))
	list, err := h.cell(le.Uint32(c[4:]))
	if err != nil {
		return nil, fmt.Errorf("big data segment list: %w", err)
	}
	if n*4 > len(list) {
		return nil, errors.New("big data: segments past the list's cell")
	}
	if n*16344 < size {
		return nil, fmt.Errorf("big data: %d segments cannot hold %d bytes", n, size)
	}
	var out []byte
	for i := 0; i < n && len(out) < size; i++ {
		seg, err := h.cell(le.Uint32(list[4*i:]))
		if err != nil {
			return nil, fmt.Errorf("big data segment %d: %w", i, err)
		}
		// Each segment holds at most 16344 bytes of the data.
		seg = seg[:min(len(seg), 16344, size-len(out))]
		out = append(out, seg...)
	}
	if len(out) < size {
		return nil, fmt.Errorf("big data: %d of %d bytes in its segments", len(out), size)
	}
	return out, nil
}

// String is a REG_SZ or REG_EXPAND_SZ value's text (up to its first NUL).
func (v Value) String() (string, error) {
	if v.Type != SZ && v.Type != ExpandSZ {
		return "", fmt.Errorf("value %q: type %d is not a string", v.Name, v.Type)
	}
	return utf16String(v.Data), nil
}

// Strings is a REG_MULTI_SZ value's strings (a REG_SZ gives one).
func (v Value) Strings() ([]string, error) {
	switch v.Type {
	case SZ, ExpandSZ:
		s, _ := v.String()
		return []string{s}, nil
	case MultiSZ:
	default:
		return nil, fmt.Errorf("value %q: type %d is not a string list", v.Name, v.Type)
	}
	var out []string
	var cur []uint16
	for i := 0; i+1 < len(v.Data); i += 2 {
		c := binary.LittleEndian.Uint16(v.Data[i:])
		if c != 0 {
			cur = append(cur, c)
			continue
		}
		if len(cur) == 0 {
			break
		}
		out = append(out, string(utf16.Decode(cur)))
		cur = cur[:0]
	}
	if len(cur) > 0 {
		out = append(out, string(utf16.Decode(cur)))
	}
	return out, nil
}

// Uint is a REG_DWORD, REG_DWORD_BIG_ENDIAN or REG_QWORD value.
func (v Value) Uint() (uint64, error) {
	switch {
	case v.Type == DWord && len(v.Data) >= 4:
		return uint64(binary.LittleEndian.Uint32(v.Data)), nil
	case v.Type == DWordBE && len(v.Data) >= 4:
		return uint64(binary.BigEndian.Uint32(v.Data)), nil
	case v.Type == QWord && len(v.Data) >= 8:
		return binary.LittleEndian.Uint64(v.Data), nil
	}
	return 0, fmt.Errorf("value %q: type %d with %d bytes is not a number", v.Name, v.Type, len(v.Data))
}
