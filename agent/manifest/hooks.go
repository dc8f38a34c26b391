package manifest

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Hooks are run at the stage boundaries of a job, each list in order:
// scripts in a sandboxed transient unit of their own as the submitter,
// HTTP requests from a unit with network access (docs/WORKFLOW.md).
type Hooks struct {
	PreLoad      []Hook `json:"pre_load,omitempty"`
	PostInspect  []Hook `json:"post_inspect,omitempty"`
	PreFix       []Hook `json:"pre_fix,omitempty"`
	PostFix      []Hook `json:"post_fix,omitempty"`
	PostConvert  []Hook `json:"post_convert,omitempty"`
	PostValidate []Hook `json:"post_validate,omitempty"`
}

// At returns the hooks of a boundary ("pre_load", ...), nil for none.
func (h *Hooks) At(point string) []Hook {
	if h == nil {
		return nil
	}
	switch point {
	case "pre_load":
		return h.PreLoad
	case "post_inspect":
		return h.PostInspect
	case "pre_fix":
		return h.PreFix
	case "post_fix":
		return h.PostFix
	case "post_convert":
		return h.PostConvert
	case "post_validate":
		return h.PostValidate
	}
	return nil
}

// HookPoints are the boundaries, in the order a job passes them.
func HookPoints() []string {
	return []string{"pre_load", "post_inspect", "pre_fix", "post_fix", "post_convert", "post_validate"}
}

// HookTypes are the allowed hook types.
func HookTypes() []string { return []string{"script", "http"} }

// HookMethods are the allowed methods of an http hook.
func HookMethods() []string { return []string{"POST", "PUT", "GET"} }

// Hook is one script or HTTP request. Text fields may hold {{ job_id }},
// {{ vm_name }}, {{ source_path }}, {{ output_dir }} and {{ point }}.
type Hook struct {
	Type string `json:"type"` // script | http
	// script
	Path string   `json:"path,omitempty"` // absolute; outside HookDir only in an admin's job
	Args []string `json:"args,omitempty"`
	Env  []string `json:"env,omitempty"` // NAME=VALUE
	// http
	URL     string   `json:"url,omitempty"`
	Method  string   `json:"method,omitempty"`  // POST (default) | PUT | GET
	Headers []string `json:"headers,omitempty"` // "Name: value"
	// both
	Timeout         int  `json:"timeout,omitempty"` // seconds, default 300
	ContinueOnError bool `json:"continue_on_error,omitempty"`
}

// HookDir is where the scripts of jobs that are not an admin's must be.
const HookDir = "/etc/hyper2kvm/hooks"

// Limits of a hook.
const (
	DefaultHookTimeout = 300
	MaxHookTimeout     = 86400
	MaxHooks           = 16 // per boundary
)

// HookVars are the names {{ ... }} may hold in a hook's text.
func HookVars() []string {
	return []string{"job_id", "vm_name", "source_path", "output_dir", "point"}
}

var (
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	headerRE    = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+:`)
	hookVarRE   = regexp.MustCompile(`\{\{\s*([^{}]*?)\s*\}\}`)
	reservedEnv = []string{"PATH", "LD_PRELOAD", "LD_LIBRARY_PATH"}
)

func (v *validator) hooks(path string, h *Hooks) {
	for _, point := range HookPoints() {
		list := h.At(point)
		pp := path + "." + point
		if len(list) > MaxHooks {
			v.add(pp, fmt.Sprintf("has %d hooks, at most %d are allowed", len(list), MaxHooks))
			continue
		}
		for i, hk := range list {
			v.hook(fmt.Sprintf("%s[%d]", pp, i), hk)
		}
	}
}

func (v *validator) hook(p string, h Hook) {
	switch h.Type {
	case "":
		v.add(p+".type", "is required: script or http")
		return
	case "script":
		if h.URL != "" || h.Method != "" || len(h.Headers) > 0 {
			v.add(p, "a script hook takes path, args, env, timeout and continue_on_error; url, method and headers are for type http")
		}
		if h.Path == "" {
			v.add(p+".path", "is required for a script hook (e.g. "+HookDir+"/notify.sh)")
		} else {
			v.absPath(p+".path", h.Path)
		}
		for i, e := range h.Env {
			name, _, ok := strings.Cut(e, "=")
			switch {
			case !ok || !envNameRE.MatchString(name):
				v.add(fmt.Sprintf("%s.env[%d]", p, i), "must be NAME=VALUE with NAME letters, digits and '_'")
			case slices.Contains(reservedEnv, name) || strings.HasPrefix(name, "HYPER2KVM_"):
				v.add(fmt.Sprintf("%s.env[%d]", p, i), fmt.Sprintf("%s cannot be set by a hook", name))
			}
		}
	case "http":
		if h.Path != "" || len(h.Args) > 0 || len(h.Env) > 0 {
			v.add(p, "an http hook takes url, method, headers, timeout and continue_on_error; path, args and env are for type script")
		}
		if h.URL == "" {
			v.add(p+".url", "is required for an http hook")
		} else if u, err := url.Parse(hookVarRE.ReplaceAllString(h.URL, "x")); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(p+".url", "must be an http:// or https:// URL with a host")
		}
		if h.Method != "" {
			v.enum(p+".method", h.Method, HookMethods())
		}
		for i, hd := range h.Headers {
			if !headerRE.MatchString(hd) || strings.ContainsAny(hd, "\r\n") {
				v.add(fmt.Sprintf("%s.headers[%d]", p, i), `must be "Name: value" on one line`)
			}
		}
	default:
		v.enum(p+".type", h.Type, HookTypes())
		return
	}
	if h.Timeout < 0 || h.Timeout > MaxHookTimeout {
		v.add(p+".timeout", fmt.Sprintf("must be between 1 and %d seconds (0 or absent: %d), not %d", MaxHookTimeout, DefaultHookTimeout, h.Timeout))
	}
	texts := append([]string{h.Path, h.URL}, h.Args...)
	texts = append(append(texts, h.Env...), h.Headers...)
	for _, t := range texts {
		for _, m := range hookVarRE.FindAllStringSubmatch(t, -1) {
			if !slices.Contains(HookVars(), m[1]) {
				v.add(p, fmt.Sprintf("{{ %s }} is not a hook variable; allowed: %s", truncate(m[1], maxQuote), strings.Join(HookVars(), ", ")))
			}
		}
	}
}

// Expand replaces the {{ name }} variables of a hook's text with vars.
func Expand(text string, vars map[string]string) string {
	return hookVarRE.ReplaceAllStringFunc(text, func(m string) string {
		name := hookVarRE.FindStringSubmatch(m)[1]
		if val, ok := vars[name]; ok {
			return val
		}
		return m
	})
}
