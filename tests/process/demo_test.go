package process

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDemoTeaches drives `ketch demo` at its prompt, as a user would: it
// prints the live view's URL, and announces the election, a crash and the
// restarts it causes, and the next leader after the leader is stopped,
// in its own output.
func TestDemoTeaches(t *testing.T) {
	d := startDemo(t)
	say, waitFor := d.say, d.waitFor
	url := waitFor("the live view's URL", regexp.MustCompile(`open (http://127\.0\.0\.1:\d+/) in a browser`))[1]
	leader := waitFor("the first leader announced", regexp.MustCompile(`\* node (\d) became leader of term (\d+)`))[1]
	if code, body := httpGet(t, url); code != 200 || !strings.Contains(body, "<html") {
		t.Fatalf("the demo's view %s: %d", url, code)
	}
	victim := map[string]string{"1": "2", "2": "3", "3": "1"}[leader]
	say("put a 1")
	say("crash " + victim + " fsm")
	waitFor("the crash announced", regexp.MustCompile(`\* node `+victim+`: fsm crashed \(crash requested: ketch crash\)`))
	waitFor("the restarts announced", regexp.MustCompile(`\* node `+victim+`: the supervisor restarted fsm, sender, gateway`))
	say("stop " + leader)
	waitFor("a new leader announced", regexp.MustCompile(`\* node [^`+leader+`] became leader of term \d+`))
	say("stop " + leader)
	waitFor("a second stop refused", regexp.MustCompile(`error: node `+leader+` is not running`))
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// demoProc is a running `ketch demo` whose output the test reads.
type demoProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	out    strings.Builder
	stderr strings.Builder
}

// startDemo starts `ketch demo ARGS`; at the end of the test its input is
// closed and it must exit within 15 s.
func startDemo(t *testing.T, args ...string) *demoProc {
	d := &demoProc{t: t, cmd: exec.Command(ketchBin(t), append([]string{"demo"}, args...)...)}
	d.cmd.Env = cliEnv()
	var err error
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := func(r io.Reader, into *strings.Builder) {
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			d.mu.Lock()
			into.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
		}
	}
	go read(stdout, &d.out)
	go read(stderr, &d.stderr)
	t.Cleanup(func() {
		_ = d.stdin.Close()
		done := make(chan struct{})
		go func() { _ = d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = d.cmd.Process.Kill()
			t.Error("the demo did not exit within 15 s of the end of its input")
		}
	})
	return d
}

// waitFor polls the demo's output for a match of re.
func (d *demoProc) waitFor(what string, re *regexp.Regexp) []string {
	d.t.Helper()
	var m []string
	poll(d.t, 10*time.Second, 20*time.Millisecond, what, func() (bool, string) {
		d.mu.Lock()
		defer d.mu.Unlock()
		m = re.FindStringSubmatch(d.out.String())
		s := d.out.String()
		if len(s) > 2000 {
			s = "..." + s[len(s)-2000:]
		}
		return m != nil, s
	})
	return m
}

func (d *demoProc) say(line string) {
	d.t.Helper()
	if _, err := fmt.Fprintln(d.stdin, line); err != nil {
		d.t.Fatal(err)
	}
}

// TestDemoEdges is issue 16's list of demo rough edges: an input line over
// 64 KiB is answered and one over the 1 MiB limit refused, and the demo
// goes on; a stopped node shows dashes, not zeros; log lines carry each
// attribute once; Ctrl-C stops the nodes, removes the temporary data dir
// and exits 0.
func TestDemoEdges(t *testing.T) {
	d := startDemo(t, "--log-level", "info", "--http", "")
	dir := d.waitFor("the data dir", regexp.MustCompile(`data under (\S+)`))[1]
	d.waitFor("a leader", regexp.MustCompile(`\* node \d became leader`))
	d.say("get " + strings.Repeat("k", 100<<10))
	d.waitFor("an answer to a 100 KiB line", regexp.MustCompile(`error: invalid request: .*key`))
	d.say(strings.Repeat("x", 2<<20))
	d.waitFor("a 2 MiB line refused", regexp.MustCompile(`error: the line is 2097153 bytes, over the 1048576-byte limit`))
	d.say("stop 3")
	d.waitFor("node 3 stopped", regexp.MustCompile(`node 3 stopped`))
	d.say("status")
	d.waitFor("a stopped node's row", regexp.MustCompile(`\n3 +\S+ +stopped +- +- +- +- +-\n`))
	d.mu.Lock()
	logs := d.stderr.String()
	d.mu.Unlock()
	attr := regexp.MustCompile(` ([a-z_]+)=`)
	for _, l := range strings.Split(logs, "\n") {
		seen := map[string]bool{}
		for _, m := range attr.FindAllStringSubmatch(l, -1) {
			if seen[m[1]] {
				t.Errorf("log line repeats %s=: %s", m[1], l)
			}
			seen[m[1]] = true
		}
	}
	if !strings.Contains(logs, "became leader") {
		t.Errorf("no log line at --log-level info? %q", logs)
	}
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the demo did not exit within 15 s of Ctrl-C")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Ctrl-C the temporary data dir %s is still there (%v)", dir, err)
	}
}
