package process

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

var (
	browser          = flag.Bool("browser", false, "run the headless-Chromium test of the live view (needs chromium)")
	screenshots      = flag.String("screenshots", "", "write TestLiveViewInBrowser's full-page PNG screenshots into this directory (default: a temporary one)")
	readmeScreenshot = flag.Bool("readme-screenshot", false, "also write TestLiveViewInBrowser's first screenshot to tests/process/testdata/live-view.png, the README's picture")
)

// pageState is what TestLiveViewInBrowser reads of the live view's DOM,
// through the page's stable hooks only (see actors/web/ui/app.js).
type pageState struct {
	Frames int        `json:"frames"` // document.body.dataset.frames
	Nodes  []pageNode `json:"nodes"`
	// Arrows are the message-rate arrows drawn, "from>to".
	Arrows []string `json:"arrows"`
}

type pageNode struct {
	ID        uint64         `json:"id"`        // data-node-id
	Role      string         `json:"role"`      // data-role
	Reachable bool           `json:"reachable"` // data-reachable
	Restarts  map[string]int `json:"restarts"`  // [data-child] -> data-restarts
	Crash     []string       `json:"crash"`     // the [data-crash] buttons
}

// readPageJS returns the page's pageState.
const readPageJS = `(() => ({
  frames: Number(document.body.dataset.frames || 0),
  nodes: [...document.querySelectorAll('[data-node-id]')].map((e) => ({
    id: Number(e.dataset.nodeId),
    role: e.dataset.role,
    reachable: e.dataset.reachable === 'true',
    restarts: Object.fromEntries([...e.querySelectorAll('[data-child]')].map((c) => [c.dataset.child, Number(c.dataset.restarts)])),
    crash: [...e.querySelectorAll('[data-crash]')].map((b) => b.dataset.crash),
  })),
  arrows: [...document.querySelectorAll('#wires [data-from]')].map((p) => p.dataset.from + '>' + p.dataset.to),
}))()`

func (p pageState) String() string {
	b, _ := json.Marshal(p)
	return string(b)
}

// leaders are the reachable nodes the page shows as leader.
func (p pageState) leaders() []uint64 {
	var l []uint64
	for _, n := range p.Nodes {
		if n.Role == "leader" && n.Reachable {
			l = append(l, n.ID)
		}
	}
	return l
}

func (p pageState) node(id uint64) (pageNode, bool) {
	for _, n := range p.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return pageNode{}, false
}

// TestLiveViewInBrowser opens the live view (actors/web/ui) of a 3-node
// cluster run with --http --chaos in headless Chromium and checks that it
// follows the cluster: (a) it shows exactly one leader; (b) after `ketch
// crash` of a follower's fsm, that follower's fsm restart count rises in
// the page within 2 s of the command returning; (c) after kill -9 of the
// leader, the page shows a new, different leader within 3 s, and the old
// one greyed. It saves a full-page screenshot of every step (-screenshots
// DIR) and, with -readme-screenshot, the first one as the README's picture.
// The page watched is a follower's, so its own server survives step (c).
func TestLiveViewInBrowser(t *testing.T) {
	if !*browser {
		t.Skip("needs headless Chromium: go test ./tests/process -run TestLiveViewInBrowser -browser [-screenshots DIR] [-readme-screenshot]")
	}
	dir := *screenshots
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	w := newWebCluster(t, 3, true)
	leader := leaders(w.waitLeader(10 * time.Second))[0].ID
	var followers []uint64
	for _, id := range w.ids {
		if id != leader {
			followers = append(followers, id)
		}
	}
	// Watch node 1's page unless node 1 leads (it dies in step c); crash
	// the other follower's fsm.
	watch, victim := followers[0], followers[1]
	// A few writes, so the logs on the page have entries.
	for i := range 8 {
		mustCLI(t, 0, "put", "--cluster", w.addrs(), fmt.Sprintf("k%d", i), fmt.Sprintf("value %d", i))
	}

	ctx := startBrowser(t)
	var mu sync.Mutex
	var jsErrors []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok && e.ExceptionDetails != nil {
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			mu.Lock()
			jsErrors = append(jsErrors, fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, msg))
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(jsErrors) > 0 {
			t.Errorf("the page threw %d exception(s):\n%s", len(jsErrors), strings.Join(jsErrors, "\n"))
		}
	})
	url := w.url(watch, "/")
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Logf("watching node %d's page %s; leader %d, crash victim %d", watch, url, leader, victim)

	read := func() (pageState, error) {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return chromedp.Run(c, chromedp.Evaluate[pageState](readPageJS))
	}
	shot := func(name string) string {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		png, err := chromedp.Run(c, chromedp.FullScreenshot(100)) // quality 100: PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", path)
		return path
	}
	t.Cleanup(func() {
		if t.Failed() {
			shot("failed.png")
		}
	})
	// wait polls the page until cond holds (bounded by timeout) and
	// returns how long it took.
	wait := func(timeout time.Duration, what string, cond func(p pageState) bool) (time.Duration, pageState) {
		t.Helper()
		var last pageState
		took := poll(t, timeout, 20*time.Millisecond, what, func() (bool, string) {
			p, err := read()
			if err != nil {
				return false, err.Error()
			}
			last = p
			return cond(p), p.String()
		})
		return took, last
	}

	// (a) One leader, the one the CLI sees; every node reachable with its
	// five children and, the server running --chaos, four crash buttons;
	// the leader's messages drawn to each follower; frames keep coming.
	_, first := wait(5*time.Second, "(a) the page shows exactly one leader, node "+fmt.Sprint(leader), func(p pageState) bool {
		if len(p.Nodes) != 3 || p.Frames == 0 {
			return false
		}
		for _, n := range p.Nodes {
			if !n.Reachable || len(n.Restarts) != 5 || !slices.Equal(n.Crash, []string{"store", "state", "fsm", "sender"}) {
				return false
			}
		}
		all := 0
		for _, n := range p.Nodes {
			if n.Role == "leader" {
				all++
			}
		}
		for _, f := range followers {
			if !slices.Contains(p.Arrows, fmt.Sprintf("%d>%d", leader, f)) {
				return false
			}
		}
		return all == 1 && slices.Equal(p.leaders(), []uint64{leader})
	})
	wait(2*time.Second, "(a) frames keep arriving", func(p pageState) bool { return p.Frames > first.Frames })
	path := shot("1-leader.png")
	if *readmeScreenshot {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "live-view.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("wrote testdata/live-view.png")
	}

	// (b) `ketch crash` of a follower's fsm, as a user would: the page
	// shows its restart count rise.
	v, _ := first.node(victim)
	before := v.Restarts["fsm"]
	mustCLI(t, 0, "crash", "--cluster", w.addrs(), "--node", fmt.Sprint(victim), "--actor", "fsm")
	delay, after := wait(2*time.Second, fmt.Sprintf("(b) node %d's fsm restarts above %d in the page", victim, before), func(p pageState) bool {
		n, ok := p.node(victim)
		return ok && n.Restarts["fsm"] > before
	})
	n, _ := after.node(victim)
	t.Logf("(b) node %d's fsm restarts %d -> %d in the page %v after `ketch crash` returned (its children now: %v)",
		victim, before, n.Restarts["fsm"], delay.Round(time.Millisecond), n.Restarts)
	shot("2-fsm-crashed.png")

	// (c) kill -9 the leader: the page shows a new leader, and the old
	// one greyed (unreachable).
	w.kill(leader)
	delay, after = wait(3*time.Second, fmt.Sprintf("(c) a leader other than node %d in the page", leader), func(p pageState) bool {
		return slices.ContainsFunc(p.leaders(), func(id uint64) bool { return id != leader })
	})
	i := slices.IndexFunc(after.leaders(), func(id uint64) bool { return id != leader })
	t.Logf("(c) the page shows node %d leading %v after kill -9 of leader %d (reachable leaders on the page: %v; the dead one stays reachable until its answer is three rounds old)",
		after.leaders()[i], delay.Round(time.Millisecond), leader, after.leaders())
	wait(3*time.Second, fmt.Sprintf("(c) node %d greyed in the page", leader), func(p pageState) bool {
		n, ok := p.node(leader)
		return ok && !n.Reachable
	})
	shot("3-new-leader.png")
}

// startBrowser starts headless Chromium (the system's chromium if found)
// for the test and returns its chromedp context, closed at the test's end.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1500, 1000))
	if path, err := exec.LookPath("chromium"); err == nil {
		opts = append(opts, chromedp.ExecPath(path))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser; it must not carry a timeout (the
	// timeout would stop the browser), so bound it from outside.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start headless Chromium (install Debian's chromium package): %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("headless Chromium did not start within 30s")
	}
	return ctx
}
