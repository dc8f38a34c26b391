package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHookHTTP(t *testing.T) {
	var got struct{ method, body, header string }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.method, got.body, got.header = r.Method, string(b), r.Header.Get("X-Job")
		if strings.HasSuffix(r.URL.Path, "/down") {
			http.Error(w, "receiver down", http.StatusBadGateway)
			return
		}
		w.Write([]byte("thanks"))
	}))
	defer srv.Close()
	tests := []struct {
		name, path, method, wantOut, wantErr, wantBody string
	}{
		{"post", "/ok", "POST", "HTTP 200 OK\nthanks", "", `{"job_id":"j1"}`},
		{"get has no body", "/ok", "GET", "HTTP 200 OK", "", ""},
		{"5xx fails", "/down", "PUT", "HTTP 502 Bad Gateway\nreceiver down", "502", `{"job_id":"j1"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := hookHTTP(context.Background(), strings.NewReader(`{"job_id":"j1"}`), &out, srv.URL+tc.path, tc.method, []string{"X-Job: j1"})
			if (tc.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(out.String(), tc.wantOut) || got.method != tc.method || got.body != tc.wantBody || got.header != "j1" {
				t.Errorf("out %q, server saw %+v", out.String(), got)
			}
		})
	}
}
