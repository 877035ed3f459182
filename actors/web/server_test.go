// The endpoint on a live node: a node's remote in this process, after an
// earlier test's, races inside gRPC's global logger (remote.Start calls
// grpclog.SetLoggerV2), so these run without -race only (.ci/test runs
// this package again without it).

//go:build !race

package web

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/node"
)

// startNode starts a one-node cluster with metrics and the viewer's route.
func startNode(t *testing.T, chaos bool) *node.Node {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	n, err := node.Start(node.Config{ID: 1, Listen: addr, Peers: map[uint64]string{}, DataDir: t.TempDir(), Chaos: chaos,
		ElectionTimeout: 100 * time.Millisecond, HeartbeatInterval: 20 * time.Millisecond,
		Metrics: true, ExtraRoutes: Routes(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop(); <-n.Done() })
	return n
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServer runs the endpoint on a live one-node cluster.
func TestServer(t *testing.T) {
	n := startNode(t, true)
	s, err := Start(Config{Listen: "127.0.0.1:0", Node: n, Chaos: true, Interval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Start(Config{Listen: s.Addr(), Node: n}); err == nil || !strings.Contains(err.Error(), s.Addr()) {
		t.Fatalf("a second server on a taken address: %v", err)
	}
	base := "http://" + s.Addr()
	deadline := time.Now().Add(5 * time.Second)
	var f Frame
	for {
		_, body := get(t, base+"/view.json")
		if err := json.Unmarshal([]byte(body), &f); err != nil {
			t.Fatal(err)
		}
		if len(f.Nodes) == 1 && f.Nodes[0].Role == "leader" && len(f.Nodes[0].Recent) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader with a log in the view: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f.Self != 1 || !f.Chaos || f.Nodes[0].Recent[0].Type != "noop" || len(f.Nodes[0].Children) != len(node.Children) {
		t.Fatalf("frame %+v", f)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "ketch_is_leader 1") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics %d: %.300s", code, body)
	}
	code, body = get(t, base+"/status")
	var st StatusJSON
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.ID != 1 || st.Role != "leader" {
		t.Fatalf("/status %d %v: %s", code, err, body)
	}
	// Input is checked.
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/crash?node=1&child=gateway", 400},
		{"POST", "/crash?node=1&child=../../etc", 400},
		{"POST", "/crash?node=9&child=fsm", 400},
		{"GET", "/crash?node=1&child=fsm", 405},
		{"POST", "/metrics", 405},
		{"GET", "/nothing-here", 404},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
	}
	// A crash from the page restarts the child, and the frames show it.
	resp, err := http.Post(base+"/crash?node=1&child=state", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /crash: %s", resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/events", nil)
	ev, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Body.Close()
	sc := bufio.NewScanner(ev.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var f Frame
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatal(err)
		}
		for _, c := range f.Nodes[0].Children {
			if c.Name == "state" && c.Restarts > 0 && c.Crashes == 1 && strings.Contains(c.LastCrash, "crash requested") {
				for _, e := range f.Events {
					if e.Kind == "crash" {
						return
					}
				}
			}
		}
	}
	t.Fatalf("no frame showed the state actor's restart and a crash event: %v", sc.Err())
}

// TestCrashNeedsChaos: without Config.Chaos the endpoint crashes nothing.
func TestCrashNeedsChaos(t *testing.T) {
	n := startNode(t, true)
	s, err := Start(Config{Listen: "127.0.0.1:0", Node: n, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Post("http://"+s.Addr()+"/crash?node=1&child=fsm", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST /crash without chaos: %s", resp.Status)
	}
	if n.Status().Children["fsm"].Restarts != 0 {
		t.Fatal("the fsm restarted")
	}
}
