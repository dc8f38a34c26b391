package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// unknownField matches yaml.v3's words for a key KnownFields refused.
var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)

// explain rewrites a decode error so that each unknown key is named with
// its line and, where a known key of the same section is a few edits
// away, the key that was probably meant: `max_concurent_jobs` is a typo an
// admin should see at once, not a default the agent silently keeps.
func explain(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("cannot parse config: %w", err)
	}
	var errs []error
	for _, msg := range te.Errors {
		m := unknownField.FindStringSubmatch(msg)
		if m == nil {
			errs = append(errs, errors.New(msg))
			continue
		}
		line, key, typ := m[1], m[2], m[3]
		e := fmt.Sprintf("line %s: unknown key %q", line, key)
		if s := closest(key, keysOf(typ)); s != "" {
			e += fmt.Sprintf(" (did you mean %q?)", s)
		}
		errs = append(errs, errors.New(e))
	}
	return errors.Join(errs...)
}

// keysOf lists the YAML keys of the config struct yaml.v3 names typ
// ("config.Config", "config.Job", ...).
func keysOf(typ string) []string {
	var keys []string
	var walk func(t reflect.Type)
	seen := map[reflect.Type]bool{}
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		if t.String() == typ {
			for i := 0; i < t.NumField(); i++ {
				if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" && k != "-" {
					keys = append(keys, k)
				}
			}
		}
		for i := 0; i < t.NumField(); i++ {
			walk(t.Field(i).Type)
		}
	}
	walk(reflect.TypeOf(Config{}))
	return keys
}

// closest is the key nearest to s by edit distance, if near enough to be
// a typo (at most a third of its length, and at most 3 edits).
func closest(s string, keys []string) string {
	best, bestD := "", 1<<30
	for _, k := range keys {
		if d := distance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	if limit := min(3, max(1, len(s)/3)); bestD > limit {
		return ""
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
