package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxSize is the largest manifest anything reads (1 MiB): a batch of
// 10,000 VMs with a short pipeline each fits. Parsing costs up to about 100
// times the input in memory, so this bound is what keeps one call to a
// root daemon from costing gigabytes; readers stop at it (see Read).
const MaxSize = 1 << 20

// MaxString is the longest text value (a path is at most PATH_MAX, 4096
// bytes, on Linux); anything longer is refused without being quoted.
const MaxString = 4096

// MaxProblems is how many problems Parse reports; past it, one last
// problem says how many more there were. A few thousand lines of
// problems help no one and a hostile manifest could make millions.
const MaxProblems = 100

// maxDepth bounds nesting; the model is five levels deep, so a deeper
// document is never a manifest and must not cost unbounded recursion.
const maxDepth = 64

// maxValues bounds the values of a document (a 10,000-VM batch has about
// 60,000), and with them the work of checking it.
const maxValues = 200000

// maxQuote is how much of a value or key a message quotes.
const maxQuote = 40

// SyntaxError reports input that is neither JSON nor YAML, or that is not
// an object at its top level. hyperctl exits 2 on it, as opposed to 1 for
// Problems.
type SyntaxError struct {
	Format string // "JSON", "YAML", or "" when the format does not matter
	Line   int    // 1-based; 0 when unknown
	Msg    string
}

func (e *SyntaxError) Error() string {
	var b strings.Builder
	b.WriteString("cannot parse manifest")
	if e.Format != "" {
		b.WriteString(" as " + e.Format)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, ": line %d", e.Line)
	}
	// The parsers' messages are short, but never let one quote the input
	// at length.
	b.WriteString(": " + truncate(e.Msg, 512))
	return b.String()
}

// object is a decoded JSON object or YAML mapping that keeps its key order
// (so problems come out in document order) and the keys given twice.
type object struct {
	keys []string
	vals map[string]any
	dups []duplicate
}

type duplicate struct {
	key         string
	first, next int // lines, 0 when unknown
}

func newObject() *object { return &object{vals: map[string]any{}} }

// add sets key; lines holds the line of each key's first occurrence, for
// reporting duplicates.
func (o *object) add(key string, val any, line int, lines map[string]int) {
	if _, ok := o.vals[key]; ok {
		o.dups = append(o.dups, duplicate{key: key, first: lines[key], next: line})
		o.vals[key] = val
		return
	}
	lines[key] = line
	o.keys = append(o.keys, key)
	o.vals[key] = val
}

// number is a numeric scalar as written, so that a number given where text
// is expected (YAML's `version: 1.0`) keeps its spelling.
type number struct {
	lit   string
	i     int64
	isInt bool
}

// decode turns data into a tree of *object, []any, string, bool, number
// and nil.
func decode(data []byte) (any, error) {
	if len(data) > MaxSize {
		return nil, &SyntaxError{Msg: tooLargeMsg}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		return nil, &SyntaxError{Line: badUTF8Line(data), Msg: "manifest is not valid UTF-8 text"}
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, &SyntaxError{Msg: "manifest is empty"}
	}
	if trimmed[0] == '{' || trimmed[0] == '[' {
		v, jerr := decodeJSON(data)
		if jerr == nil {
			return v, nil
		}
		// YAML flow style also starts with a brace; accept it, but explain
		// the failure in JSON terms since that is what it most looks like.
		if v, yerr := decodeYAML(data); yerr == nil {
			return v, nil
		}
		return nil, jerr
	}
	return decodeYAML(data)
}

func badUTF8Line(data []byte) int {
	line := 1
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if r == utf8.RuneError && size <= 1 {
			return line
		}
		if r == '\n' {
			line++
		}
		data = data[size:]
	}
	return 0
}

// lineAt returns the 1-based line of byte offset off.
func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	d := jsonDecoder{dec: dec, data: data, budget: maxValues}
	v, err := d.value(0)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = fmt.Errorf("unexpected data after the top-level value")
			if terr != nil {
				err = terr
			}
		}
	}
	if err != nil {
		return nil, d.syntaxError(err)
	}
	return v, nil
}

type jsonDecoder struct {
	dec    *json.Decoder
	data   []byte
	budget int
}

func (d *jsonDecoder) syntaxError(err error) *SyntaxError {
	var se *SyntaxError
	if errors.As(err, &se) {
		return se
	}
	line := lineAt(d.data, d.dec.InputOffset())
	var jse *json.SyntaxError
	msg := err.Error()
	switch {
	case errors.As(err, &jse):
		line = lineAt(d.data, jse.Offset)
		msg = jse.Error()
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		msg = "unexpected end of input (is a closing brace or bracket missing?)"
	}
	return &SyntaxError{Format: "JSON", Line: line, Msg: msg}
}

func (d *jsonDecoder) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, &SyntaxError{Format: "JSON", Line: lineAt(d.data, d.dec.InputOffset()), Msg: "nested too deeply"}
	}
	d.budget--
	if d.budget < 0 {
		return nil, &SyntaxError{Format: "JSON", Line: lineAt(d.data, d.dec.InputOffset()),
			Msg: fmt.Sprintf("the manifest has more than %d values; split it into several manifests", maxValues)}
	}
	tok, err := d.dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := newObject()
			lines := map[string]int{}
			for d.dec.More() {
				kt, err := d.dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key is not a string")
				}
				line := lineAt(d.data, d.dec.InputOffset())
				v, err := d.value(depth + 1)
				if err != nil {
					return nil, err
				}
				o.add(key, v, line, lines)
			}
			if _, err := d.dec.Token(); err != nil {
				return nil, err
			}
			return o, nil
		case '[':
			list := []any{}
			for d.dec.More() {
				v, err := d.value(depth + 1)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			if _, err := d.dec.Token(); err != nil {
				return nil, err
			}
			return list, nil
		}
		return nil, fmt.Errorf("unexpected %q", rune(t))
	case json.Number:
		n := number{lit: string(t)}
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			n.i, n.isInt = i, true
		}
		return n, nil
	case string, bool, nil:
		return t, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

var yamlErrLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func decodeYAML(data []byte) (any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &SyntaxError{Msg: "manifest is empty"}
		}
		return nil, yamlSyntaxError(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlSyntaxError(data, err)
		}
		return nil, &SyntaxError{Format: "YAML", Line: extra.Line, Msg: "more than one YAML document; a manifest is one document (for several VMs use a batch manifest)"}
	}
	y := yamlConverter{budget: maxValues}
	return y.value(&doc, 0)
}

func yamlSyntaxError(data []byte, err error) *SyntaxError {
	msg := err.Error()
	if m := yamlErrLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		se := &SyntaxError{Format: "YAML", Line: line, Msg: m[2]}
		lines := bytes.Split(data, []byte("\n"))
		if line >= 1 && line <= len(lines) && bytes.HasPrefix(bytes.TrimLeft(lines[line-1], " "), []byte("\t")) {
			se.Msg += " (YAML must indent with spaces, not tabs)"
		}
		return se
	}
	// yaml.v3 leaves the line out when it is the first one.
	line := 0
	if !bytes.Contains(bytes.TrimRight(data, "\n"), []byte("\n")) {
		line = 1
	}
	return &SyntaxError{Format: "YAML", Line: line, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

type yamlConverter struct {
	budget int
}

func (y *yamlConverter) fail(n *yaml.Node, msg string) error {
	return &SyntaxError{Format: "YAML", Line: n.Line, Msg: msg}
}

// aliasMsg refuses anchors and aliases outright: expanding them is how a
// small document becomes a huge one, and a manifest needs neither (a
// batch gives each VM its own pipeline; the batch's resources and priority
// are already shared).
const aliasMsg = "YAML anchors and aliases are not allowed in a manifest; write each value out in full"

func (y *yamlConverter) value(n *yaml.Node, depth int) (any, error) {
	y.budget--
	if y.budget < 0 {
		return nil, y.fail(n, fmt.Sprintf("the manifest has more than %d values; split it into several manifests", maxValues))
	}
	if depth > maxDepth {
		return nil, y.fail(n, "nested too deeply")
	}
	if n.Anchor != "" || n.Kind == yaml.AliasNode {
		return nil, y.fail(n, aliasMsg)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return y.value(n.Content[0], depth+1)
	case yaml.ScalarNode:
		return y.scalar(n), nil
	case yaml.SequenceNode:
		list := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := y.value(c, depth+1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return list, nil
	case yaml.MappingNode:
		return y.mapping(n, depth)
	}
	return nil, y.fail(n, "unsupported YAML node")
}

func (y *yamlConverter) scalar(n *yaml.Node) any {
	switch n.ShortTag() {
	case "!!null":
		return nil
	case "!!bool":
		// YAML 1.2 core schema: true/false in any case.
		return strings.EqualFold(n.Value, "true")
	case "!!int":
		num := number{lit: n.Value}
		s := strings.ReplaceAll(n.Value, "_", "")
		if strings.HasPrefix(s, "0o") || strings.HasPrefix(s, "+0o") || strings.HasPrefix(s, "-0o") {
			s = strings.Replace(s, "0o", "0", 1)
		}
		if i, err := strconv.ParseInt(s, 0, 64); err == nil {
			num.i, num.isInt = i, true
		}
		return num
	case "!!float":
		return number{lit: n.Value}
	}
	return n.Value
}

func (y *yamlConverter) mapping(n *yaml.Node, depth int) (any, error) {
	o := newObject()
	lines := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Anchor != "" || k.Kind == yaml.AliasNode {
			return nil, y.fail(k, aliasMsg)
		}
		if k.Kind != yaml.ScalarNode {
			return nil, y.fail(k, "a mapping key must be a plain name")
		}
		if k.ShortTag() == "!!merge" {
			// Without aliases a merge key could only repeat what is
			// written beside it.
			return nil, y.fail(k, "YAML merge keys (<<) are not allowed in a manifest; write each value out in full")
		}
		val, err := y.value(v, depth+1)
		if err != nil {
			return nil, err
		}
		o.add(k.Value, val, k.Line, lines)
	}
	return o, nil
}

// kindOf names the JSON kind of a decoded value for messages.
func kindOf(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case *object:
		return "an object"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("the text %q", truncate(t, maxQuote))
	case bool:
		return fmt.Sprintf("%v", t)
	case number:
		return "the number " + truncate(t.lit, maxQuote)
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
