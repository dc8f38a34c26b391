package lvm

import (
	"fmt"
	"strconv"
	"strings"
)

// section is a parsed block of LVM's configuration syntax: name = value
// lines and name { ... } blocks, in order.
type section struct {
	vals map[string]any // int64, string or []any
	subs []named
}

type named struct {
	name string
	sec  *section
}

func (s *section) sub(name string) *section {
	for _, n := range s.subs {
		if n.name == name {
			return n.sec
		}
	}
	return nil
}

func (s *section) int(k string) int64 {
	v, _ := s.vals[k].(int64)
	return v
}

func (s *section) str(k string) string {
	v, _ := s.vals[k].(string)
	return v
}

// Limits on the text: the metadata is guest data.
const (
	maxDepth  = 16
	maxTokens = 1 << 20
)

type lexer struct {
	s   string
	pos int
	n   int
}

// next returns the next token: punctuation, a quoted string (with its
// quotes), or a bare word; "" at the end.
func (l *lexer) next() (string, error) {
	for l.pos < len(l.s) {
		c := l.s[l.pos]
		switch {
		case c == '#':
			for l.pos < len(l.s) && l.s[l.pos] != '\n' {
				l.pos++
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			l.pos++
		default:
			l.n++
			if l.n > maxTokens {
				return "", fmt.Errorf("LVM metadata: more than %d tokens", maxTokens)
			}
			if strings.IndexByte("={}[],", c) >= 0 {
				l.pos++
				return string(c), nil
			}
			if c == '"' {
				i := l.pos + 1
				for ; i < len(l.s) && l.s[i] != '"'; i++ {
					if l.s[i] == '\\' {
						i++
					}
				}
				if i >= len(l.s) {
					return "", fmt.Errorf("LVM metadata: unterminated string at byte %d", l.pos)
				}
				t := l.s[l.pos : i+1]
				l.pos = i + 1
				return t, nil
			}
			i := l.pos
			for i < len(l.s) && strings.IndexByte(" \t\r\n#={}[],\"", l.s[i]) < 0 {
				i++
			}
			t := l.s[l.pos:i]
			l.pos = i
			return t, nil
		}
	}
	return "", nil
}

func (l *lexer) peek() (string, error) {
	p, n := l.pos, l.n
	t, err := l.next()
	l.pos, l.n = p, n
	return t, err
}

func parseSection(l *lexer, depth int, top bool) (*section, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("LVM metadata: nested deeper than %d", maxDepth)
	}
	s := &section{vals: map[string]any{}}
	for {
		t, err := l.next()
		if err != nil {
			return nil, err
		}
		switch {
		case t == "" && top:
			return s, nil
		case t == "}" && !top:
			return s, nil
		case t == "" || strings.IndexByte("={}[],", t[0]) >= 0 || t[0] == '"':
			return nil, fmt.Errorf("LVM metadata: unexpected %q at byte %d", t, l.pos)
		}
		op, err := l.next()
		if err != nil {
			return nil, err
		}
		switch op {
		case "{":
			sub, err := parseSection(l, depth+1, false)
			if err != nil {
				return nil, err
			}
			s.subs = append(s.subs, named{t, sub})
		case "=":
			v, err := parseValue(l)
			if err != nil {
				return nil, err
			}
			s.vals[t] = v
		default:
			return nil, fmt.Errorf("LVM metadata: %q after %q at byte %d (want = or {)", op, t, l.pos)
		}
	}
}

func parseValue(l *lexer) (any, error) {
	t, err := l.next()
	if err != nil {
		return nil, err
	}
	if t == "[" {
		var arr []any
		for {
			p, err := l.peek()
			if err != nil {
				return nil, err
			}
			if p == "]" {
				l.next()
				return arr, nil
			}
			v, err := parseValue(l)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
			if p, _ = l.peek(); p == "," {
				l.next()
			}
		}
	}
	return scalar(t)
}

func scalar(t string) (any, error) {
	if t == "" || strings.IndexByte("={}[],", t[0]) >= 0 {
		return nil, fmt.Errorf("LVM metadata: unexpected %q where a value belongs", t)
	}
	if t[0] == '"' {
		return strings.ReplaceAll(strings.ReplaceAll(t[1:len(t)-1], `\"`, `"`), `\\`, `\`), nil
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		return n, nil
	}
	if f, err := strconv.ParseFloat(t, 64); err == nil {
		return int64(f), nil
	}
	return t, nil
}

// Parse reads a VG's metadata text: the one top-level block (the VG's name
// { ... }) holding the extent size, PVs and LVs.
func Parse(text string) (*VG, error) {
	if len(text) > MaxMetadata {
		return nil, fmt.Errorf("LVM metadata: %d bytes, more than %d", len(text), MaxMetadata)
	}
	top, err := parseSection(&lexer{s: text}, 0, true)
	if err != nil {
		return nil, err
	}
	if len(top.subs) != 1 {
		return nil, fmt.Errorf("LVM metadata: %d volume groups in one text, want 1", len(top.subs))
	}
	name, s := top.subs[0].name, top.subs[0].sec
	vg := &VG{Name: name, ID: s.str("id"), Seqno: s.int("seqno"), PVs: map[string]VGPV{}}
	es := s.int("extent_size")
	if es <= 0 || es > 1<<32 {
		return nil, fmt.Errorf("LVM metadata of VG %s: extent_size %d out of range", name, es)
	}
	vg.ExtentSize = es * SectorSize
	if pvs := s.sub("physical_volumes"); pvs != nil {
		for _, n := range pvs.subs {
			ps, pc := n.sec.int("pe_start"), n.sec.int("pe_count")
			if ps < 0 || ps > 1<<40 || pc < 0 || pc > 1<<40 {
				return nil, fmt.Errorf("LVM metadata of VG %s: PV %s: pe_start/pe_count out of range", name, n.name)
			}
			vg.PVs[n.name] = VGPV{ID: n.sec.str("id"), PEStart: ps * SectorSize, PECount: pc}
		}
	}
	if lvs := s.sub("logical_volumes"); lvs != nil {
		for _, n := range lvs.subs {
			lv := LV{Name: n.name}
			if st, ok := n.sec.vals["status"].([]any); ok {
				for _, f := range st {
					lv.Visible = lv.Visible || f == "VISIBLE"
				}
			}
			for _, sn := range n.sec.subs {
				if !strings.HasPrefix(sn.name, "segment") {
					continue
				}
				seg := Segment{StartExtent: sn.sec.int("start_extent"), ExtentCount: sn.sec.int("extent_count"), Type: sn.sec.str("type")}
				if seg.StartExtent < 0 || seg.ExtentCount < 0 || seg.StartExtent > 1<<40 || seg.ExtentCount > 1<<40 {
					return nil, fmt.Errorf("LVM metadata of VG %s: LV %s: extents out of range", name, lv.Name)
				}
				if arr, ok := sn.sec.vals["stripes"].([]any); ok {
					for i := 0; i+1 < len(arr); i += 2 {
						pv, _ := arr[i].(string)
						pe, _ := arr[i+1].(int64)
						seg.Stripes = append(seg.Stripes, Stripe{PV: pv, Extent: pe})
					}
				}
				lv.Segments = append(lv.Segments, seg)
			}
			vg.LVs = append(vg.LVs, lv)
		}
	}
	return vg, nil
}
