package manifest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Parse reads a manifest written as JSON or YAML (the same model; YAML is
// tried unless the text starts like JSON).
//
// It returns a *SyntaxError when data is neither JSON nor YAML or its top
// level is not an object, and Problems listing every problem found when the
// manifest is invalid (wrong types, unknown fields, missing or bad values).
// On success the manifest has SetDefaults applied.
func Parse(data []byte) (*Manifest, error) {
	tree, err := decode(data)
	if err != nil {
		return nil, err
	}
	root, ok := tree.(*object)
	if !ok {
		return nil, &SyntaxError{Msg: fmt.Sprintf("a manifest must be a JSON object or YAML mapping (with version, name and pipeline), not %s", kindOf(tree))}
	}
	w := walker{}
	clean := w.value(root, reflect.TypeFor[Manifest](), "")
	raw, err := json.Marshal(clean)
	if err != nil {
		return nil, fmt.Errorf("cannot re-encode manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		// The walker only lets through values of the model's types.
		return nil, fmt.Errorf("cannot decode manifest: %w", err)
	}
	ps, more := w.problems, w.more
	if more == 0 {
		// Past the cap the typed checks would only add to the count.
		vps, vmore := m.validate()
		for _, p := range vps {
			if !w.covered(p.Path) {
				ps = append(ps, p)
			}
		}
		more += vmore
	}
	if len(ps) > 0 {
		return nil, capProblems(ps, more)
	}
	m.SetDefaults()
	return &m, nil
}

// capProblems keeps the first MaxProblems of ps and says how many more
// there were (more of them were only counted).
func capProblems(ps Problems, more int) Problems {
	if len(ps) > MaxProblems {
		more += len(ps) - MaxProblems
		ps = ps[:MaxProblems]
	}
	if more > 0 {
		ps = append(ps, Problem{Message: fmt.Sprintf("... and %d more problems", more)})
	}
	return ps
}

// walker checks a decoded tree against the Go model's shape (field names
// and JSON types), reports what does not fit, and drops it so that the
// rest still decodes and gets the typed checks of Validate.
type walker struct {
	problems Problems
	reported []string // paths already reported: typed checks under them would repeat the news
	more     int      // problems past MaxProblems, counted only
	fields   map[reflect.Type]fieldSet
}

func (w *walker) add(path, msg string) {
	if w.full() {
		w.more++
		return
	}
	w.problems = append(w.problems, Problem{Path: path, Message: msg})
	w.reported = append(w.reported, path)
}

// full tells when further problems are only counted, so that their
// messages (a suggestion searches the whole model) are not even made.
func (w *walker) full() bool { return len(w.problems) >= MaxProblems }

func (w *walker) covered(path string) bool {
	for _, r := range w.reported {
		if path == r || strings.HasPrefix(path, r+".") || strings.HasPrefix(path, r+"[") {
			return true
		}
	}
	return false
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// value returns the cleaned value (nil to drop it).
func (w *walker) value(v any, t reflect.Type, path string) any {
	if v == nil {
		return nil // null is the same as absent
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		o, ok := v.(*object)
		if !ok {
			w.add(path, "must be an object, not "+kindOf(v))
			return nil
		}
		return w.object(o, t, path)
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			w.add(path, "must be a list, not "+kindOf(v))
			return nil
		}
		out := make([]any, 0, len(list))
		for i, e := range list {
			ep := path + "[" + strconv.Itoa(i) + "]"
			if e == nil {
				w.add(ep, "must be an object, not null")
				out = append(out, map[string]any{})
				continue
			}
			c := w.value(e, t.Elem(), ep)
			if c == nil {
				c = map[string]any{}
			}
			out = append(out, c)
		}
		return out
	case reflect.String:
		var text string
		switch s := v.(type) {
		case string:
			text = s
		case number:
			// YAML users write `version: 1.0`; keep the text as written.
			text = s.lit
		default:
			w.add(path, "must be text, not "+kindOf(v))
			return nil
		}
		if len(text) > MaxString {
			w.add(path, fmt.Sprintf("is %d bytes long, more than the %d allowed (it starts %q)", len(text), MaxString, truncate(text, maxQuote)))
			return nil
		}
		return text
	case reflect.Int:
		if n, ok := v.(number); ok && n.isInt {
			return n.i
		}
		hint := ""
		if s, ok := v.(string); ok {
			if _, err := strconv.Atoi(s); err == nil {
				hint = " (write it without quotes)"
			}
		}
		w.add(path, "must be a whole number, not "+kindOf(v)+hint)
	case reflect.Bool:
		if b, ok := v.(bool); ok {
			return b
		}
		w.add(path, "must be true or false, not "+kindOf(v))
	default:
		w.add(path, fmt.Sprintf("has a type this parser does not know (%s)", t))
	}
	return nil
}

func (w *walker) object(o *object, t reflect.Type, path string) map[string]any {
	fields, ok := w.fields[t]
	if !ok {
		// Once per type: a batch has thousands of objects of a few types.
		fields = jsonFields(t)
		if w.fields == nil {
			w.fields = map[reflect.Type]fieldSet{}
		}
		w.fields[t] = fields
	}
	out := map[string]any{}
	for _, d := range o.dups {
		msg := "is given more than once"
		if d.first > 0 && d.next > 0 {
			msg = fmt.Sprintf("is given more than once (lines %d and %d)", d.first, d.next)
		}
		w.add(joinPath(path, truncate(d.key, maxQuote)), msg)
	}
	for _, key := range o.keys {
		f, ok := fields.byName[key]
		if !ok {
			if w.full() {
				w.more++
				continue
			}
			// An unknown key can be as long as the input: quote a prefix.
			w.add(joinPath(path, truncate(key, maxQuote)), unknownField(key, t, fields.names))
			continue
		}
		kp := joinPath(path, key)
		if c := w.value(o.vals[key], f.Type, kp); c != nil {
			out[key] = c
		}
	}
	return out
}

type fieldSet struct {
	names  []string // in declaration order
	byName map[string]reflect.StructField
}

// jsonFields lists the JSON names of a struct's fields.
func jsonFields(t reflect.Type) fieldSet {
	fs := fieldSet{byName: map[string]reflect.StructField{}}
	for i := range t.NumField() {
		f := t.Field(i)
		name := jsonName(f)
		if name == "" {
			continue
		}
		fs.names = append(fs.names, name)
		fs.byName[name] = f
	}
	return fs
}

func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return ""
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		name = f.Name
	}
	return name
}

// unknownField says what was probably meant: a near spelling of a field of
// this section, or the section where a field of that name belongs.
func unknownField(key string, t reflect.Type, allowed []string) string {
	if len(key) > 64 {
		// No field name is this long: nothing to suggest, and comparing
		// would cost as much as the key is long.
		return "unknown field; allowed here: " + strings.Join(allowed, ", ")
	}
	if s := suggest(key, allowed); s != "" {
		return fmt.Sprintf("unknown field; did you mean %q?", s)
	}
	if homes := fieldHomes(key, t); len(homes) > 0 {
		if len(homes) == 1 {
			return fmt.Sprintf("unknown field here; %q belongs in %s", key, homes[0])
		}
		if len(homes) > 3 {
			homes = homes[:3]
		}
		return fmt.Sprintf("unknown field here; %q belongs in a section such as %s", key, strings.Join(homes, ", "))
	}
	return "unknown field; allowed here: " + strings.Join(allowed, ", ")
}

// fieldHomes lists the places in the model (other than struct type except)
// that have a field named key, shortest first.
func fieldHomes(key string, except reflect.Type) []string {
	type item struct {
		t    reflect.Type
		path string
	}
	seen := map[reflect.Type]bool{}
	var homes []string
	queue := []item{{reflect.TypeFor[Manifest](), ""}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		if seen[it.t] {
			continue
		}
		seen[it.t] = true
		fs := jsonFields(it.t)
		if _, ok := fs.byName[key]; ok && it.t != except {
			if it.path == "" {
				homes = append(homes, "the top level")
			} else {
				homes = append(homes, it.path)
			}
		}
		for _, name := range fs.names {
			ft := fs.byName[name].Type
			suffix := ""
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				if ft.Kind() == reflect.Slice {
					suffix = "[]"
				}
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				queue = append(queue, item{ft, joinPath(it.path, name) + suffix})
			}
		}
	}
	return homes
}

// suggest returns the candidate closest to s when it is close enough to be
// a plausible typo, or "".
func suggest(s string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	if bestD < 0 {
		return ""
	}
	limit := 2
	if l := len([]rune(best)); l >= 9 {
		limit = 3
	} else if l <= 3 {
		limit = 1
	}
	if bestD <= limit {
		return best
	}
	// "output" for "output_path", "type" for "source_type".
	ls := strings.ToLower(s)
	if len(ls) >= 4 {
		for _, c := range candidates {
			if strings.Contains(c, ls) {
				return c
			}
		}
	}
	return ""
}

// editDistance is the Levenshtein distance over runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 256 || len(rb) > 256 {
		return max(len(ra), len(rb))
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
