package manifest_test

import (
	"strings"
	"testing"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
)

func TestHookValidation(t *testing.T) {
	base := `{"version":"1.0","name":"web01","pipeline":{"load":{"source_type":"raw","source_path":"/srv/a.img"},"hooks":%s}}`
	tests := []struct {
		name, hooks string
		want        string // "" = valid; else a problem containing it
	}{
		{"script", `{"post_convert":[{"type":"script","path":"/etc/hyper2kvm/hooks/n.sh","args":["{{ job_id }}","{{output_dir}}"],"env":["A=1"],"timeout":30}]}`, ""},
		{"http", `{"post_validate":[{"type":"http","url":"https://hooks.example/{{ vm_name }}","method":"PUT","headers":["X-Token: abc"],"continue_on_error":true}]}`, ""},
		{"no type", `{"pre_load":[{"path":"/x"}]}`, "pipeline.hooks.pre_load[0].type: is required"},
		{"bad type", `{"pre_load":[{"type":"exec","path":"/x"}]}`, "pipeline.hooks.pre_load[0].type: unknown value"},
		{"relative path", `{"pre_fix":[{"type":"script","path":"n.sh"}]}`, "pipeline.hooks.pre_fix[0].path"},
		{"script with url", `{"pre_fix":[{"type":"script","path":"/x","url":"http://a"}]}`, "are for type http"},
		{"http without url", `{"post_fix":[{"type":"http"}]}`, "pipeline.hooks.post_fix[0].url: is required"},
		{"ftp url", `{"post_fix":[{"type":"http","url":"ftp://a/b"}]}`, "http:// or https://"},
		{"bad method", `{"post_fix":[{"type":"http","url":"http://a","method":"DELETE"}]}`, "pipeline.hooks.post_fix[0].method"},
		{"bad header", `{"post_fix":[{"type":"http","url":"http://a","headers":["no colon"]}]}`, "headers[0]"},
		{"bad env", `{"post_fix":[{"type":"script","path":"/x","env":["1A=b"]}]}`, "env[0]"},
		{"reserved env", `{"post_fix":[{"type":"script","path":"/x","env":["LD_PRELOAD=/x.so"]}]}`, "LD_PRELOAD cannot be set"},
		{"unknown variable", `{"post_fix":[{"type":"script","path":"/x","args":["{{ password }}"]}]}`, "{{ password }} is not a hook variable"},
		{"timeout", `{"post_fix":[{"type":"script","path":"/x","timeout":-1}]}`, "timeout"},
		{"unknown point", `{"post_load":[{"type":"script","path":"/x"}]}`, "pipeline.hooks.post_load: unknown field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manifest.Parse([]byte(strings.Replace(base, "%s", tc.hooks, 1)))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("invalid: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"job_id": "j1", "vm_name": "web01"}
	for in, want := range map[string]string{
		"{{ job_id }}":              "j1",
		"{{job_id}}-{{ vm_name }}":  "j1-web01",
		"{{ output_dir }}":          "{{ output_dir }}",
		"no vars":                   "no vars",
		"{{ job_id }}{{ job_id }}x": "j1j1x",
	} {
		if got := manifest.Expand(in, vars); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}
