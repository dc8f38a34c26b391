package sources

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodTP = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, file, in string
		want           []string // substrings of the errors, in order; none: valid
	}{
		{name: "valid", file: "vc1.yaml", in: "type: vsphere\nurl: https://vc.example.com/sdk\nusername: svc\nthumbprint: " + strings.ToLower(goodTP) + "\n"},
		{name: "insecure written", file: "vc1.yaml", in: "type: vsphere\nurl: https://vc/sdk\nusername: svc\ninsecure: true\n"},
		{name: "no thumbprint", file: "vc1.yaml", in: "type: vsphere\nurl: https://vc/sdk\nusername: svc\n",
			want: []string{"vc1.yaml: thumbprint: is required"}},
		{name: "short thumbprint", file: "vc1.yaml", in: "type: vsphere\nurl: https://vc/sdk\nusername: svc\nthumbprint: AB:CD\n",
			want: []string{"thumbprint: must be the SHA-256 fingerprint"}},
		{name: "password in the file", file: "vc1.yaml", in: "type: vsphere\nurl: https://vc/sdk\nusername: svc\nthumbprint: " + goodTP + "\npassword: hunter2\n",
			want: []string{"vc1.yaml: password: a password is never kept in a source file", "hyper2kvmd source set-password vc1"}},
		{name: "http url", file: "vc1.yaml", in: "type: vsphere\nurl: http://vc/sdk\nusername: svc\nthumbprint: " + goodTP + "\n",
			want: []string{"url: \"http://vc/sdk\" is not an https:// URL"}},
		{name: "missing everything", file: "vc1.yaml", in: "",
			want: []string{"type: is required", "url: is required", "username: is required", "thumbprint: is required"}},
		{name: "unknown type", file: "vc1.yaml", in: "type: hyperv\nurl: https://vc/sdk\nusername: svc\ninsecure: true\n",
			want: []string{`type: "hyperv" is not supported`}},
		{name: "unknown key", file: "vc1.yaml", in: "type: vsphere\nurl: https://vc/sdk\nusername: svc\ninsecure: true\ndatacentre: DC0\n",
			want: []string{"field datacentre is not a source key", "allowed keys"}},
		{name: "bad name", file: "VC 1.yaml", in: "type: vsphere\nurl: https://vc/sdk\nusername: svc\ninsecure: true\n",
			want: []string{"is not a valid source name"}},
		{name: "limit out of range", file: "vc1.yaml", in: "type: vsphere\nurl: https://vc/sdk\nusername: svc\ninsecure: true\nmax_parallel_exports: 99\n",
			want: []string{"max_parallel_exports: 99 is out of range"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, errs := Parse("/etc/hyper2kvm/sources.d/"+tc.file, []byte(tc.in))
			if len(tc.want) == 0 {
				if len(errs) > 0 {
					t.Fatalf("errors: %v", errs)
				}
				if s.Name != "vc1" || s.MaxParallelExports != DefaultMaxParallelExports {
					t.Errorf("got %+v", s)
				}
				if s.Thumbprint != "" && s.Thumbprint != goodTP {
					t.Errorf("thumbprint %q, want %q", s.Thumbprint, goodTP)
				}
				return
			}
			all := errors.Join(errs...)
			if all == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(all.Error(), w) {
					t.Errorf("errors %q lack %q", all, w)
				}
			}
			if strings.Contains(all.Error(), "hunter2") {
				t.Errorf("an error quotes the password: %q", all)
			}
		})
	}
}

func TestNormalizeThumbprint(t *testing.T) {
	in := "SHA256 Fingerprint=" + strings.ReplaceAll(strings.ToLower(goodTP), ":", "")
	if got := NormalizeThumbprint(in); got != goodTP {
		t.Errorf("got %q", got)
	}
}

func TestLoadAndGet(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good.yaml", "type: vsphere\nurl: https://vc/sdk\nusername: svc\nthumbprint: "+goodTP+"\n")
	write("bad.yaml", "type: vsphere\n")
	write("README", "not a source")
	r, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Names(); len(got) != 1 || got[0] != "good" {
		t.Errorf("names %v", got)
	}
	if len(r.Errors) == 0 || !strings.Contains(errors.Join(r.Errors...).Error(), "bad.yaml: url: is required") {
		t.Errorf("errors %v", r.Errors)
	}
	if _, err := Get(dir, "missing"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "missing.yaml does not exist") {
		t.Errorf("Get(missing) = %v", err)
	}
	if _, err := Get(dir, "../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(../etc/passwd) = %v", err)
	}
	if s, err := Get(dir, "good"); err != nil || s.Host() != "vc" {
		t.Errorf("Get(good) = %+v, %v", s, err)
	}
}
