package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newHookHTTPCmd is the HTTP request of an http hook, run by the worker
// in a transient unit of its own (agent/hooks): the job unit has no
// network.
func newHookHTTPCmd() *cobra.Command {
	var url, method string
	var headers []string
	var timeout int
	cmd := &cobra.Command{
		Use:    "hook-http --url URL [--method M] [--header 'N: v'...]",
		Short:  "Send an http hook's request (in the hook's unit; not meant to be run by hand)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Duration(timeout)*time.Second)
			defer cancel()
			return hookHTTP(ctx, os.Stdin, os.Stdout, url, method, headers)
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "the URL")
	cmd.Flags().StringVar(&method, "method", "POST", "POST, PUT or GET")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "a header, 'Name: value'")
	cmd.Flags().IntVar(&timeout, "timeout", 300, "seconds")
	return cmd
}

// hookHTTP sends the request with the JSON body read from body (not for
// GET) and prints the status; a status outside 2xx is an error.
func hookHTTP(ctx context.Context, body io.Reader, out io.Writer, url, method string, headers []string) error {
	data, err := io.ReadAll(io.LimitReader(body, 1<<20))
	if err != nil {
		return fmt.Errorf("cannot read the request body: %w", err)
	}
	var rd io.Reader
	if method != http.MethodGet {
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return fmt.Errorf("cannot make the request: %w", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "hyper2kvm-hook")
	for _, h := range headers {
		n, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("header %q: want 'Name: value'", h)
		}
		req.Header.Add(strings.TrimSpace(n), strings.TrimSpace(v))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cannot send %s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	fmt.Fprintf(out, "HTTP %s\n", resp.Status)
	if len(answer) > 0 {
		fmt.Fprintf(out, "%s\n", bytes.TrimSpace(answer))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errors.New(method + " " + url + ": " + resp.Status)
	}
	return nil
}
