package process

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestREADMEShellBlocks runs the README's shell blocks as a reader would
// (issue 16, item 7): the three-node cluster of the quick start, the client
// commands beside it and the membership walk-through, then the mutual-TLS
// cluster. The only changes are where they would collide with other tests:
// the README's fixed ports (127.0.0.1:7001, ...) become free ones, and
// /tmp/kN a temporary directory. Every `./ketch` line must exit 0 (or the
// "exit N" its comment states); a `get` whose comment is one word must print
// that word; `./ketch node` lines run in the background, as in their own
// terminals. cmd/ketch's TestREADMECommandsParse checks every other ketch
// line the README shows, without running it.
func TestREADMEShellBlocks(t *testing.T) {
	t.Parallel()
	blocks := readmeBlocks(t)
	pick := func(first string) []string {
		t.Helper()
		for _, b := range blocks {
			if len(b) > 0 && strings.HasPrefix(b[0], first) {
				return b
			}
		}
		t.Fatalf("README: no shell block starts with %q", first)
		return nil
	}
	var clients, members []string
	for _, b := range blocks {
		if len(b) > 1 && strings.HasPrefix(b[0], "export KETCH_CLUSTER=") {
			if strings.Contains(strings.Join(b, "\n"), "member add") {
				members = b
			} else if clients == nil {
				clients = b
			}
		}
	}
	if clients == nil || members == nil {
		t.Fatal("README: the client and membership blocks (starting 'export KETCH_CLUSTER=') are missing")
	}
	t.Run("quick start and membership", func(t *testing.T) {
		t.Parallel()
		s := newReadmeShell(t)
		s.runBlock(pick("go build -o ketch ./cmd/ketch"))
		s.runBlock(clients)
		s.runBlock(members)
	})
	t.Run("mutual TLS", func(t *testing.T) {
		t.Parallel()
		s := newReadmeShell(t)
		s.runBlock(pick("./ketch certs init"))
	})
}

// readmeBlocks returns the README's ```sh blocks, line by line.
func readmeBlocks(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]string
	var cur []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case !in && l == "```sh":
			in, cur = true, nil
		case in && l == "```":
			in = false
			blocks = append(blocks, cur)
		case in:
			cur = append(cur, l)
		}
	}
	return blocks
}

// readmeShell runs README lines in a directory of their own with the
// ketch binary at ./ketch.
type readmeShell struct {
	t       *testing.T
	dir     string
	env     []string
	prelude []string          // shell functions the README defines (tls() {...})
	addrs   map[string]string // README address -> free address
	nodes   []string          // addresses of the nodes started
}

func newReadmeShell(t *testing.T) *readmeShell {
	dir := t.TempDir()
	if err := os.Symlink(ketchBin(t), filepath.Join(dir, "ketch")); err != nil {
		t.Fatal(err)
	}
	return &readmeShell{t: t, dir: dir, addrs: map[string]string{}}
}

var (
	readmeAddr = regexp.MustCompile(`127\.0\.0\.1:[78]\d{3}`)
	readmeData = regexp.MustCompile(`/tmp/(k\d+)`)
	exitWant   = regexp.MustCompile(`^exit (\d+)`)
)

// local rewrites the README's fixed ports and /tmp dirs.
func (s *readmeShell) local(line string) string {
	line = readmeAddr.ReplaceAllStringFunc(line, func(a string) string {
		if s.addrs[a] == "" {
			s.addrs[a] = freeAddrs(s.t, 1)[0]
		}
		return s.addrs[a]
	})
	return readmeData.ReplaceAllString(line, filepath.Join(s.dir, "$1"))
}

func (s *readmeShell) runBlock(lines []string) {
	s.t.Helper()
	for _, raw := range lines {
		cmd, comment, _ := strings.Cut(raw, " #")
		cmd, comment = strings.TrimSpace(cmd), strings.TrimSpace(comment)
		if strings.HasPrefix(cmd, "#") || cmd == "" {
			continue
		}
		cmd = s.local(cmd)
		switch {
		case cmd == "go build -o ketch ./cmd/ketch":
			// ./ketch is the binary the tests built.
		case strings.HasPrefix(cmd, "export "):
			s.env = append(s.env, strings.Fields(strings.TrimPrefix(cmd, "export "))...)
		case strings.Contains(cmd, "() {"):
			s.prelude = append(s.prelude, cmd)
		case strings.HasPrefix(cmd, "./ketch node "):
			s.startNode(strings.TrimSuffix(cmd, " &"))
		case strings.HasPrefix(cmd, "./ketch "):
			s.waitNodes()
			s.runLine(cmd, comment)
		default:
			s.t.Fatalf("README line %q: the test does not know how to run it", raw)
		}
	}
}

// shell is bash running line in the shell's directory and environment.
func (s *readmeShell) shell(ctx context.Context, line string) *exec.Cmd {
	script := strings.Join(append(append([]string{}, s.prelude...), line), "\n")
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = s.dir
	cmd.Env = cliEnv(s.env...)
	return cmd
}

func (s *readmeShell) startNode(line string) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("node-%d.log", len(s.nodes)+1)))
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := s.shell(ctx, "exec "+line)
	cmd.Stdout, cmd.Stderr = log, log
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		_ = log.Close()
		if s.t.Failed() {
			s.t.Logf("%s:\n%s", log.Name(), tail(log.Name(), 20))
		}
	})
	listen := regexp.MustCompile(`--listen (\S+)`).FindStringSubmatch(line)
	if listen == nil {
		s.t.Fatalf("README node line without --listen: %q", line)
	}
	s.nodes = append(s.nodes, listen[1])
}

// waitNodes waits until every node started accepts connections, as a
// reader waits for the terminals to settle before typing in the next one.
func (s *readmeShell) waitNodes() {
	s.t.Helper()
	for _, a := range s.nodes {
		poll(s.t, 15*time.Second, 20*time.Millisecond, "node at "+a+" listening", func() (bool, string) {
			c, err := net.DialTimeout("tcp", a, 100*time.Millisecond)
			if err != nil {
				return false, err.Error()
			}
			_ = c.Close()
			return true, ""
		})
	}
}

func (s *readmeShell) runLine(line, comment string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliGuard)
	defer cancel()
	cmd := s.shell(ctx, line)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("%s: %v", line, err)
	}
	want := 0
	if m := exitWant.FindStringSubmatch(comment); m != nil {
		fmt.Sscan(m[1], &want)
	}
	s.t.Logf("$ %s   (exit %d, %v)", line, code, time.Since(start).Round(time.Millisecond))
	if code != want {
		s.t.Fatalf("README line %q: exit %d, want %d\nstdout: %s\nstderr: %s", line, code, want, stdout.String(), stderr.String())
	}
	if strings.Contains(line, " get ") && comment != "" && !strings.Contains(comment, " ") && strings.TrimSpace(stdout.String()) != comment {
		s.t.Errorf("README line %q prints %q, the README says %q", line, strings.TrimSpace(stdout.String()), comment)
	}
}
