package process

import (
	"bufio"
	"fmt"
	"io"
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
	cmd := exec.Command(ketchBin(t), "demo")
	cmd.Env = cliEnv()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("the demo did not exit within 15 s of the end of its input")
		}
	})
	var mu sync.Mutex
	var out strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	// waitFor polls the demo's output for a line matching re.
	waitFor := func(what string, re *regexp.Regexp) []string {
		t.Helper()
		var m []string
		poll(t, 10*time.Second, 20*time.Millisecond, what, func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			m = re.FindStringSubmatch(out.String())
			return m != nil, out.String()
		})
		return m
	}
	say := func(line string) {
		t.Helper()
		if _, err := fmt.Fprintln(stdin, line); err != nil {
			t.Fatal(err)
		}
	}
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
