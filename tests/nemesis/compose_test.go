package nemesis

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// composeDir is deploy/, from this package's directory.
const composeDir = "../../deploy"

// composeFiles are what the test copies from deploy/ next to the binary it
// builds, so that a run never writes into the source tree.
var composeFiles = []string{"compose.yaml", "Dockerfile", ".dockerignore"}

// TestComposeCluster runs deploy/compose.yaml as the README says, under a
// project of its own (ketch-nemesis-<random>-compose, with its own image,
// network and host ports): it builds the static binary, brings the
// three nodes up with `up -d --build`, waits until they agree on a leader
// (their /status on the published --http ports), puts a key and reads it
// back through the compose file's cli service, waits until every node has
// applied it,
// and removes everything with `down -v --rmi all` at cleanup, whatever
// happened.
//
// It needs a Docker engine and a compose tool, the v2 plugin (`docker
// compose`, preferred) or docker-compose 1.29; without them it skips, or
// fails under CI=true. It skips under -short. A run killed before its
// cleanup leaves ketch-nemesis-*-compose containers, a network, volumes and
// an image; `docker compose -p PROJECT -f deploy/compose.yaml down -v --rmi
// all` (the project name is in the log) removes them.
func TestComposeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("compose: skipped under -short (it builds an image and runs three containers)")
	}
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") == "true" {
			t.Fatalf("compose: %s; CI=true requires it", msg)
		}
		t.Skipf("compose: %s", msg)
	}
	if ok, why := dockerAvailable(); !ok {
		unavailable("no Docker engine (%s); install Docker (20.10+) to run the compose test", why)
	}
	tool, version, err := composeTool()
	if err != nil {
		unavailable("%v", err)
	}
	start := time.Now()
	project := runPrefix() + "-compose"
	t.Logf("compose: %s (%s), project %s", strings.Join(tool, " "), version, project)

	dir := t.TempDir()
	for _, f := range composeFiles {
		b, err := os.ReadFile(filepath.Join(composeDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "ketch")
	buildStatic(t, bin)

	c := &composeProject{t: t, tool: tool, project: project, file: filepath.Join(dir, "compose.yaml"),
		env: map[string]string{"KETCH_IMAGE": project + ":test"}}
	var httpPorts []int
	for i := 1; i <= 3; i++ {
		p := freePort(t)
		httpPorts = append(httpPorts, p)
		c.env[fmt.Sprintf("KETCH%d_HTTP_PORT", i)] = fmt.Sprint(p)
	}
	t.Cleanup(c.down) // before up: a failed up can leave a network or containers
	passed := false
	t.Cleanup(func() {
		if !passed {
			out, err := c.run(cmdTimeout, "logs", "--no-color")
			if err != nil {
				out += err.Error()
			}
			t.Logf("compose logs:\n%s", out)
		}
	})

	upStart := time.Now()
	if _, err := c.run(3*time.Minute, "up", "-d", "--build"); err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("compose: up in %v", time.Since(upStart).Round(time.Millisecond))

	leaderStart := time.Now()
	leader, err := waitComposeLeader(httpPorts, time.Minute)
	if err != nil {
		t.Fatalf("no leader: %v", err)
	}
	t.Logf("compose: node %d leads, %v after up", leader, time.Since(leaderStart).Round(time.Millisecond))

	// The CLI inside the network, as the README shows it: the compose
	// file's cli service, which knows the nodes by their service names.
	key, value := "compose-"+project, "hello from the cli service"
	if out, err := c.run(cmdTimeout, "run", "--rm", "-T", "cli", "put", key, value); err != nil {
		t.Fatalf("cli service put: %v\n%s", err, out)
	}
	out, err := c.run(cmdTimeout, "run", "--rm", "-T", "cli", "get", key)
	if err != nil {
		t.Fatalf("cli service get: %v", err)
	}
	if got := strings.TrimSpace(out); got != value {
		t.Fatalf("cli service get %s = %q; want %q", key, got, value)
	}
	// Every node applied it (their /status on the host's loopback).
	if err := waitComposeApplied(httpPorts, time.Minute); err != nil {
		t.Fatal(err)
	}
	passed = true
	t.Logf("compose: put and read back through the cli service; %v in all (cleanup not counted)", time.Since(start).Round(time.Millisecond))
}

// composeTool finds the compose command: `docker compose` (the v2 plugin)
// if it answers, else docker-compose (v1). It returns the command and its
// version line.
func composeTool() ([]string, string, error) {
	if out, err := docker("compose", "version"); err == nil {
		return []string{"docker", "compose"}, strings.TrimSpace(out), nil
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		return nil, "", errors.New("no compose tool: neither `docker compose` (the v2 plugin) nor docker-compose answers; install one (Debian: apt-get install docker-compose)")
	}
	out, err := run("docker-compose", "version", "--short")
	if err != nil {
		return nil, "", fmt.Errorf("docker-compose does not work: %v", err)
	}
	return []string{"docker-compose"}, "docker-compose " + strings.TrimSpace(out), nil
}

// composeProject runs one compose tool on one project.
type composeProject struct {
	t       *testing.T
	tool    []string
	project string
	file    string
	env     map[string]string // compose file variables
}

// run runs the compose tool with args within timeout and returns its
// stdout; the error carries the command line and stderr.
func (c *composeProject) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args = append(append(c.tool[1:len(c.tool):len(c.tool)], "-p", c.project, "-f", c.file), args...)
	cmd := exec.CommandContext(ctx, c.tool[0], args...)
	// The user's COMPOSE_* settings (COMPOSE_PROFILES, COMPOSE_FILE, ...)
	// must not change what runs.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COMPOSE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v: %s", c.tool[0], strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// down removes the project's containers, network, volumes and image, and
// checks that none is left.
func (c *composeProject) down() {
	_, downErr := c.run(3*time.Minute, "down", "-v", "--rmi", "all", "--remove-orphans")
	label := "label=com.docker.compose.project=" + c.project
	var left []string
	for _, ls := range [][]string{
		{"ps", "-aq", "--filter", label},
		{"volume", "ls", "-q", "--filter", label},
		{"network", "ls", "-q", "--filter", label},
		{"images", "-q", c.env["KETCH_IMAGE"]},
	} {
		out, err := docker(ls...)
		if err != nil {
			c.t.Errorf("cleanup: %v", err)
			continue
		}
		if s := strings.Fields(out); len(s) > 0 {
			left = append(left, fmt.Sprintf("%s %s: %v", ls[0], ls[len(ls)-1], s))
		}
	}
	if len(left) > 0 {
		c.t.Errorf("cleanup: down left %s behind (down: %v)", strings.Join(left, "; "), downErr)
	} else if downErr != nil {
		// docker-compose 1.29 reports the shared image as missing once
		// the first service's removal took it.
		c.t.Logf("cleanup: %v (nothing left)", downErr)
	}
}

// buildStatic builds ./cmd/ketch with CGO_ENABLED=0 into dst (or copies
// -ketch-bin).
func buildStatic(t *testing.T, dst string) {
	t.Helper()
	start := time.Now()
	if *flagKetchBin != "" {
		b, err := os.ReadFile(*flagKetchBin)
		if err == nil {
			err = os.WriteFile(dst, b, 0o755)
		}
		if err != nil {
			t.Fatalf("-ketch-bin: %v", err)
		}
		return
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("cannot find the go tool: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-o", dst, "github.com/ketch-raft/ketch/cmd/ketch")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/ketch: %v\n%s", err, out)
	}
	t.Logf("compose: built the static binary in %v", time.Since(start).Round(time.Millisecond))
}

// freePort asks the OS for a free TCP port on the loopback.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// composeStatus is what the test reads of a node's /status.
type composeStatus struct {
	ID      uint64 `json:"id"`
	Role    string `json:"role"`
	Leader  uint64 `json:"leader"`
	Commit  uint64 `json:"commit"`
	Applied uint64 `json:"applied"`
}

// waitComposeApplied waits until every node has applied what the leader
// had committed when it was first asked.
func waitComposeApplied(ports []int, timeout time.Duration) error {
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var target uint64
	for {
		var views []string
		done := 0
		for _, p := range ports {
			st, err := getStatus(hc, p)
			if err != nil {
				views = append(views, fmt.Sprintf(":%d %v", p, err))
				continue
			}
			if st.Role == "leader" && target == 0 {
				target = st.Commit
			}
			if target != 0 && st.Applied >= target {
				done++
			}
			views = append(views, fmt.Sprintf("%d applied %d", st.ID, st.Applied))
		}
		if done == len(ports) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every node applied index %d within %v: %s", target, timeout, strings.Join(views, "; "))
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
}

// waitComposeLeader polls the nodes' /status (on the host ports) until
// every node names the same leader and that node says it leads, and
// returns it.
func waitComposeLeader(ports []int, timeout time.Duration) (uint64, error) {
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		var views []string
		leaders := map[uint64]bool{}
		leading := uint64(0)
		for _, p := range ports {
			st, err := getStatus(hc, p)
			if err != nil {
				views = append(views, fmt.Sprintf(":%d %v", p, err))
				leaders[0] = true
				continue
			}
			views = append(views, fmt.Sprintf("%d %s (leader %d)", st.ID, st.Role, st.Leader))
			leaders[st.Leader] = true
			if st.Role == "leader" {
				leading = st.ID
			}
		}
		last = strings.Join(views, "; ")
		if len(leaders) == 1 && leading != 0 && leaders[leading] {
			return leading, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("after %v: %s", timeout, last)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
}

func getStatus(hc *http.Client, port int) (composeStatus, error) {
	var st composeStatus
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/status", port))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("/status: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}
