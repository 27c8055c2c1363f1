// Command conformance drives a Nomad HTTP API (devcluster, or a real Nomad) through the official
// Go client, github.com/hashicorp/nomad/api, and checks that it answers as Nomad does.
//
// Why the official client: it decodes every response into typed structs, so a field of the wrong
// type (an integer where Nomad sends an RFC 3339 time, a string where it sends a number) fails
// the call exactly as it would fail for any Go tool written against Nomad. Each check prints one
// line ("ok" or "FAIL" and why); the exit status is 1 if any check failed.
//
// Usage: NOMAD_ADDR=http://127.0.0.1:4646 [NOMAD_TOKEN=...] go run . -python /path/to/python3
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/nomad/api"
)

type runner struct {
	c        *api.Client
	python   string
	dir      string
	prefix   string
	failures int
	passed   int
	state    map[string]string
}

// check runs one named check and prints its line; a panic in a check is a failure, not a crash.
func (r *runner) check(name string, fn func() (string, error)) {
	start := time.Now()
	var detail string
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		detail, err = fn()
	}()
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		r.failures++
		fmt.Printf("FAIL %-24s %v (%s)\n", name, err, took)
		return
	}
	r.passed++
	fmt.Printf("ok   %-24s %s (%s)\n", name, detail, took)
}

func main() {
	python := flag.String("python", "python3", "Python interpreter the raw_exec web job runs (http.server)")
	prefix := flag.String("prefix", fmt.Sprintf("conf-%d", os.Getpid()), "prefix of every job ID and variable path this run creates")
	flag.Parse()

	cfg := api.DefaultConfig() // NOMAD_ADDR, NOMAD_TOKEN, NOMAD_REGION, NOMAD_NAMESPACE, TLS env vars
	client, err := api.NewClient(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: cannot create the Nomad client for %s: %v\n", cfg.Address, err)
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "nomad-conformance-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
		os.Exit(2)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("conformance\n"), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
		os.Exit(2)
	}

	r := &runner{c: client, python: *python, dir: dir, prefix: *prefix, state: map[string]string{}}
	fmt.Printf("conformance: %s through github.com/hashicorp/nomad/api\n", cfg.Address)
	for _, c := range checks {
		r.check(c.name, func() (string, error) { return c.fn(r) })
	}
	r.cleanup()
	fmt.Printf("conformance: %d passed, %d failed\n", r.passed, r.failures)
	if r.failures > 0 {
		os.Exit(1)
	}
}

// cleanup purges what this run registered, whatever failed on the way.
func (r *runner) cleanup() {
	for _, id := range []string{r.webID(), r.gpuID(), r.failID()} {
		_, _, _ = r.c.Jobs().Deregister(id, true, nil)
	}
	_, _ = r.c.Variables().Delete(r.varPath(), nil)
	_, _ = r.c.Variables().Delete(r.lockPath(), nil)
}

func (r *runner) webID() string    { return r.prefix + "-web" }
func (r *runner) gpuID() string    { return r.prefix + "-gpu" }
func (r *runner) failID() string   { return r.prefix + "-fail" }
func (r *runner) varPath() string  { return "conformance/" + r.prefix + "/config" }
func (r *runner) lockPath() string { return "conformance/" + r.prefix + "/lock" }

// waitFor polls fn until it reports done, fails or the deadline passes (every wait has one).
func waitFor(what string, timeout time.Duration, fn func() (bool, string, error)) (string, error) {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		done, state, err := fn()
		if err != nil {
			return state, err
		}
		if done {
			return state, nil
		}
		last = state
		if time.Now().After(deadline) {
			return last, fmt.Errorf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
