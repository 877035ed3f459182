package process

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// webCluster is a cluster whose nodes serve --http on free ports.
type webCluster struct {
	*cluster
	http map[uint64]string // node id -> host:port of its HTTP endpoint
}

// newWebCluster starts n nodes with --http (and --chaos if chaos).
func newWebCluster(t testing.TB, n int, chaos bool) *webCluster {
	t.Helper()
	addrs := freeAddrs(t, n)
	w := &webCluster{http: map[uint64]string{}}
	for i, a := range addrs {
		w.http[uint64(i+1)] = a
	}
	w.cluster = newClusterEdit(t, n, chaos, func(args []string) []string {
		id, _ := strconv.ParseUint(args[2], 10, 64) // "node --id N ..."
		return append(args, "--http", w.http[id])
	})
	return w
}

// url is node id's HTTP endpoint with path.
func (w *webCluster) url(id uint64, path string) string { return "http://" + w.http[id] + path }

var httpClient = &http.Client{Timeout: 2 * time.Second}

// scrape reads node id's /metrics into name{labels} -> value.
func scrape(url string) (map[string]float64, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// TestMetricsSeeTheLeaderDie is issue 14's check on /metrics: kill the
// leader of a live cluster, and on each survivor ketch_has_leader goes 0
// and then 1 again and ketch_leader_changes_total rises, within 2 s.
func TestMetricsSeeTheLeaderDie(t *testing.T) {
	w := newWebCluster(t, 3, false)
	sts := w.waitLeader(10 * time.Second)
	leader := leaders(sts)[0].ID
	var survivors []uint64
	for _, id := range w.ids {
		if id != leader {
			survivors = append(survivors, id)
		}
	}
	before := map[uint64]float64{}
	for _, id := range w.ids {
		m, err := scrape(w.url(id, "/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"ketch_has_leader", "ketch_is_leader", "ketch_term", "ketch_commit_index",
			"ketch_applied_index", "ketch_leader_changes_total", "go_goroutines", "process_resident_memory_bytes",
			`ketch_child_restarts_total{child="fsm"}`, `ketch_messages_rejected_total{source="wire"}`} {
			if _, ok := m[name]; !ok {
				t.Fatalf("node %d's /metrics has no %s", id, name)
			}
		}
		if m["ketch_has_leader"] != 1 {
			t.Fatalf("node %d: ketch_has_leader = %v before the kill", id, m["ketch_has_leader"])
		}
		if want := map[bool]float64{true: 1}[id == leader]; m["ketch_is_leader"] != want {
			t.Fatalf("node %d: ketch_is_leader = %v, want %v", id, m["ketch_is_leader"], want)
		}
		before[id] = m["ketch_leader_changes_total"]
	}
	// Writes, so the commit latency histogram and the traffic have samples.
	for i := range 20 {
		mustCLI(t, 0, "put", "--cluster", w.addrs(), fmt.Sprintf("k%d", i), "v")
	}
	m, err := scrape(w.url(leader, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	if m["ketch_commit_latency_seconds_count"] < 20 || m["ketch_proposals_committed_total"] < 20 {
		t.Fatalf("the leader counted %v commits and %v committed proposals after 20 writes",
			m["ketch_commit_latency_seconds_count"], m["ketch_proposals_committed_total"])
	}
	if m["ketch_journal_fsync_duration_seconds_count"] == 0 {
		t.Fatal("the leader observed no journal fsync")
	}
	for _, p := range survivors {
		if m[fmt.Sprintf(`ketch_messages_sent_total{peer="%d"}`, p)] == 0 || m[fmt.Sprintf(`ketch_peer_match_index{peer="%d"}`, p)] == 0 {
			t.Fatalf("the leader's (node %d's) metrics show no traffic to or match of node %d: sent %v, match %v", leader, p,
				m[fmt.Sprintf(`ketch_messages_sent_total{peer="%d"}`, p)], m[fmt.Sprintf(`ketch_peer_match_index{peer="%d"}`, p)])
		}
	}

	// Each survivor is scraped in a loop of its own, as fast as it
	// answers (about a millisecond): the winner of the election is without
	// a leader only while it campaigns (two round trips and an fsync).
	type seen struct {
		zero, back  time.Duration // since the kill: first has_leader 0, first 1 after it
		rose        time.Duration // first leader_changes_total above the count before
		scrapes     int
		sawZero, up bool
		risen       bool
	}
	got := map[uint64]*seen{}
	var wg sync.WaitGroup
	killed := time.Now()
	w.kill(leader)
	for _, id := range survivors {
		s := &seen{}
		got[id] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(killed) < 2*time.Second && !(s.up && s.risen) {
				m, err := scrape(w.url(id, "/metrics"))
				if err != nil {
					continue
				}
				s.scrapes++
				at := time.Since(killed)
				switch {
				case m["ketch_has_leader"] == 0 && !s.sawZero:
					s.sawZero, s.zero = true, at
				case m["ketch_has_leader"] == 1 && s.sawZero && !s.up:
					s.up, s.back = true, at
				}
				if m["ketch_leader_changes_total"] > before[id] && !s.risen {
					s.risen, s.rose = true, at
				}
			}
		}()
	}
	wg.Wait()
	for _, id := range survivors {
		s := got[id]
		if !s.sawZero || !s.up || !s.risen {
			t.Errorf("node %d within 2s of the kill (%d scrapes): has_leader went to 0: %v, back to 1: %v; leader_changes_total rose: %v", id, s.scrapes, s.sawZero, s.up, s.risen)
			continue
		}
		t.Logf("node %d: has_leader 0 at +%v, 1 again at +%v, leader_changes_total rose at +%v (%d scrapes)", id,
			s.zero.Round(time.Millisecond), s.back.Round(time.Millisecond), s.rose.Round(time.Millisecond), s.scrapes)
	}
}

// TestHTTPEndpoint checks /status (the status --json object), the view's
// JSON and page, server-sent events, and that crash requests need --chaos.
func TestHTTPEndpoint(t *testing.T) {
	w := newWebCluster(t, 3, false)
	w.waitLeader(10 * time.Second)
	get := func(url string) (int, string) { t.Helper(); return httpGet(t, url) }
	code, body := get(w.url(2, "/status"))
	var st map[string]any
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("/status: %d %v: %s", code, err, body)
	}
	for _, k := range []string{"id", "role", "term", "leader", "last_index", "commit", "applied", "children", "address", "members", "configuration_index"} {
		if _, ok := st[k]; !ok {
			t.Fatalf("/status lacks %q: %s", k, body)
		}
	}
	if st["id"].(float64) != 2 {
		t.Fatalf("/status of node 2 says id %v", st["id"])
	}
	// The view of the whole cluster, from one node's endpoint.
	poll(t, 5*time.Second, 50*time.Millisecond, "node 3's view shows all three nodes reachable and one leader", func() (bool, string) {
		_, body := get(w.url(3, "/view.json"))
		var f struct {
			Nodes []struct {
				ID        uint64 `json:"id"`
				Role      string `json:"role"`
				Reachable bool   `json:"reachable"`
				Children  []struct {
					Name string `json:"name"`
				} `json:"children"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(body), &f); err != nil {
			return false, err.Error()
		}
		lead := 0
		for _, n := range f.Nodes {
			if !n.Reachable || len(n.Children) != 5 {
				return false, body
			}
			if n.Role == "leader" {
				lead++
			}
		}
		return len(f.Nodes) == 3 && lead == 1, body
	})
	code, body = get(w.url(1, "/"))
	if code != 200 || !strings.Contains(body, "<html") {
		t.Fatalf("/: %d %.200s", code, body)
	}
	// Server-sent events: frames keep coming, a few per second.
	resp, err := http.Get(w.url(1, "/events"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	frames, began := 0, time.Now()
	for frames < 3 && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: {") {
			frames++
		}
	}
	resp.Body.Close()
	if frames < 3 || time.Since(began) > 2*time.Second {
		t.Fatalf("/events sent %d frames in %v", frames, time.Since(began))
	}
	// Without --chaos, no crash.
	r, err := httpClient.Post(w.url(1, "/crash?node=2&child=fsm"), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("POST /crash without --chaos: %s", r.Status)
	}
}

// TestMetricsPassPromtool runs Prometheus's own linter, `promtool check
// metrics` (Debian's prometheus package), over a live node's /metrics after
// writes and a snapshot. It skips without promtool unless
// KETCH_REQUIRE_PROMTOOL is set (CI installs it and sets it).
func TestMetricsPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("KETCH_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool not found, and KETCH_REQUIRE_PROMTOOL is set (apt-get install prometheus)")
		}
		t.Skip("promtool not found (apt-get install prometheus)")
	}
	w := newWebCluster(t, 3, false)
	w.waitLeader(10 * time.Second)
	for i := range 10 {
		mustCLI(t, 0, "put", "--cluster", w.addrs(), fmt.Sprintf("k%d", i), "v")
	}
	mustCLI(t, 0, "snapshot", "--cluster", w.addrs())
	for _, id := range w.ids {
		resp, err := httpClient.Get(w.url(id, "/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(string(body))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool check metrics on node %d's /metrics: %v\n%s", id, err, out)
		}
		t.Logf("node %d: promtool check metrics passes (%d bytes, %d lines)", id, len(body), strings.Count(string(body), "\n"))
	}
}
