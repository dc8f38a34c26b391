// Command webhookrecv is the webhook receiver of the notify e2e test
// (test/notify_test.go): an HTTP server on loopback inside the box that
// answers 503 to the first -fail requests and 200 after, and appends each
// request (its headers and body) as one JSON line to -log.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"sync"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8766", "listen address")
	fail := flag.Int("fail", 2, "requests answered 503 before the first 200")
	logPath := flag.String("log", "/srv/wf/webhooks.jsonl", "where each request is logged")
	flag.Parse()
	var mu sync.Mutex
	n := 0
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		mu.Lock()
		defer mu.Unlock()
		n++
		status := http.StatusOK
		if n <= *fail {
			status = http.StatusServiceUnavailable
		}
		line, _ := json.Marshal(map[string]any{"n": n, "status": status, "path": r.URL.Path,
			"delivery": r.Header.Get("X-Hyper2kvm-Delivery"), "event": r.Header.Get("X-Hyper2kvm-Event"),
			"signature": r.Header.Get("X-Hyper2kvm-Signature"), "body": string(body)})
		f, err := os.OpenFile(*logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.Write(append(line, '\n'))
			f.Close()
		}
		w.WriteHeader(status)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
