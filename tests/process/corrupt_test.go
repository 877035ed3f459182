package process

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/logstore"
	"google.golang.org/protobuf/proto"
)

var flipStarts = flag.Int("flip-starts", 12, "TestDamagedDataDirIsDiagnosed: starts of a node on a damaged copy of its data dir")

// exitCorrupt is the node's exit code for a corrupt data file (cmd/ketch).
const exitCorrupt = 4

// Corruption is diagnosed, never served (issue 11). A node's data dir is
// copied while the node is stopped (cleanly, so the bbolt file alone, and
// by kill -9, so with journal files); bytes are flipped at random offsets
// of a random file of a copy; and `ketch node` is started on it as that
// node, with its peers running. Every start either runs, catches up and,
// stopped again, holds a log identical to the undamaged copy's (and so to
// the peers'), or exits 4 with one line naming the file and what to do. No
// start panics. (logstore's TestRandomFlipsAreDiagnosed does the same
// in-process, hundreds of times.)
func TestDamagedDataDirIsDiagnosed(t *testing.T) {
	c := newCluster(t, 3, false)
	c.waitLeader(15*time.Second, c.ids...)
	cl := startClient(t, "corrupt", c.addrList(), 0, filepath.Join(c.logs, "client-corrupt.log"))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for i := range 150 {
		if _, err := cl.put(fmt.Sprintf("k%03d", i), strings.Repeat(fmt.Sprintf("v%03d", i), 1+rng.IntN(40)), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	sts := c.waitLeader(10*time.Second, c.ids...)
	commit := leaders(sts)[0].Commit
	poll(t, 10*time.Second, 20*time.Millisecond, "node 3 applied everything", func() (bool, string) {
		s, _ := byID(c.status(time.Second), 3)
		return s.Applied >= commit, fmt.Sprintf("%+v", s)
	})

	// Two undamaged copies of node 3's data dir: one after a clean stop,
	// one after a kill -9 with writes in its journal.
	c.stop(3)
	cleanCopy := filepath.Join(t.TempDir(), "clean")
	copyDir(t, c.nodes[3].dir, cleanCopy)
	wantClean := loadLog(t, cleanCopy)
	c.start(3)
	c.waitLeader(10*time.Second, c.ids...)
	for i := range 30 {
		if _, err := cl.put(fmt.Sprintf("j%03d", i), strings.Repeat("journal", 1+rng.IntN(20)), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	commit = leaders(c.waitLeader(10*time.Second, c.ids...))[0].Commit
	poll(t, 10*time.Second, 20*time.Millisecond, "node 3 applied the journal's writes", func() (bool, string) {
		s, _ := byID(c.status(time.Second), 3)
		return s.Applied >= commit, fmt.Sprintf("%+v", s)
	})
	c.kill(3)
	c.reap(3)
	crashCopy := filepath.Join(t.TempDir(), "crash")
	copyDir(t, c.nodes[3].dir, crashCopy)
	if js, _ := filepath.Glob(filepath.Join(crashCopy, "*.journal.*")); len(js) == 0 {
		t.Fatal("the kill -9 left no journal file")
	}
	wantCrash := loadLog(t, crashCopy)
	if !isPrefix(wantClean, wantCrash) || len(wantCrash.Entries) <= len(wantClean.Entries) {
		t.Fatal("the crashed copy does not extend the clean one")
	}

	var served, refused int
	var ran []logstore.State // the logs of the nodes that ran
	for round := range *flipStarts {
		src, want := cleanCopy, wantClean
		if round%2 == 1 {
			src, want = crashCopy, wantCrash
		}
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("round%d", round))
		copyDir(t, src, dir)
		victim, where := flipBytes(t, dir, rng)
		what := fmt.Sprintf("round %d: %s flipped at %s", round, filepath.Base(victim), where)
		p := c.nodes[3]
		saved := p.dir
		p.dir = dir
		c.start(3)
		p.dir = saved
		code, ok := runningOrExit(p, 5*time.Second)
		switch {
		case !ok:
			// Running: it must catch up and stop cleanly with the log.
			poll(t, 15*time.Second, 50*time.Millisecond, what+": the node catches up", func() (bool, string) {
				s, _ := byID(c.status(time.Second), 3)
				return s.Applied >= commit, fmt.Sprintf("%+v", s)
			})
			if code := c.stopCode(3); code == exitCorrupt {
				// The damage showed only once the node wrote to the file
				// (a damaged freelist, say): diagnosed on the way out.
				refused++
				break
			} else if code != 0 {
				t.Fatalf("%s: exit %d after SIGTERM, want 0 or %d", what, code, exitCorrupt)
			}
			got := loadLog(t, dir)
			if !isPrefix(want, got) {
				t.Fatalf("%s: the node ran, and lost or changed entries of the undamaged log", what)
			}
			ran = append(ran, got)
			served++
		case code == exitCorrupt:
			logText, _ := os.ReadFile(p.logs[len(p.logs)-1])
			last := lastLine(string(logText))
			if !strings.HasPrefix(last, "ketch: node") || !strings.Contains(last, dir) || !strings.Contains(last, "corrupt") || !strings.Contains(last, "peers") {
				t.Fatalf("%s: exit 4, but the last line does not name the file and what to do: %q", what, last)
			}
			refused++
		default:
			t.Fatalf("%s: exit %d, want 0 or %d:\n%s", what, code, exitCorrupt, tail(p.logs[len(p.logs)-1], 20))
		}
		logText, _ := os.ReadFile(p.logs[len(p.logs)-1])
		for _, bad := range []string{"panic:", "goroutine ", "runtime error"} {
			if strings.Contains(string(logText), bad) && !strings.Contains(string(logText), "bbolt failed on damaged pages") {
				t.Fatalf("%s: the node's output holds %q:\n%s", what, bad, tail(p.logs[len(p.logs)-1], 30))
			}
		}
	}
	t.Logf("%d starts on damaged copies: %d ran with the log intact, %d refused with exit %d", *flipStarts, served, refused, exitCorrupt)

	// Every log a node ran with is the peers': stop them and compare.
	c.stop(1)
	c.stop(2)
	peer := loadLog(t, c.nodes[1].dir)
	if !sameLog(peer, loadLog(t, c.nodes[2].dir)) || !isPrefix(wantCrash, peer) {
		t.Fatal("the peers' logs differ from each other or from node 3's")
	}
	for i, got := range ran {
		if !isPrefix(got, peer) {
			t.Errorf("the log of run %d is not the peers'", i)
		}
	}
}

// isPrefix reports whether a's entries begin b's.
func isPrefix(a, b logstore.State) bool {
	if len(a.Entries) > len(b.Entries) {
		return false
	}
	return sameLog(a, logstore.State{Entries: b.Entries[:len(a.Entries)]})
}

// runningOrExit waits up to d for the node's process to exit and returns
// its exit code; ok is false when it is still running then.
func runningOrExit(p *nodeProc, d time.Duration) (code int, ok bool) {
	if d > 0 {
		select {
		case <-p.done:
		case <-time.After(d):
			return 0, false
		}
	}
	<-p.done
	var ee *exec.ExitError
	if p.waitErr == nil {
		return 0, true
	}
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode(), true
	}
	return -1, true
}

// flipBytes flips 1-4 bytes at random offsets of one random file of the
// data dir and says where.
func flipBytes(t *testing.T, dir string, rng *rand.Rand) (string, string) {
	t.Helper()
	all, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*"))
	all = append(all, snaps...)
	var files []string // those with bytes to flip
	for _, f := range all {
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		t.Fatalf("no files with data in %s", dir)
	}
	victim := files[rng.IntN(len(files))]
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	var where []string
	for range 1 + rng.IntN(4) {
		off := rng.IntN(len(data))
		data[off] ^= byte(1 + rng.IntN(255))
		where = append(where, fmt.Sprint(off))
	}
	if err := os.WriteFile(victim, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return victim, strings.Join(where, ",")
}

// copyDir copies a data dir, subdirectories (the snapshots) included.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(from, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if info, err := os.Stat(f); err == nil && info.IsDir() {
			copyDir(t, f, filepath.Join(to, filepath.Base(f))) // the snapshots
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// loadLog opens the data dir's store (on a copy, so that a journal replay
// does not change the original) and returns its state.
func loadLog(t *testing.T, dir string) logstore.State {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "load")
	copyDir(t, dir, tmp)
	s, err := logstore.OpenBolt(filepath.Join(tmp, fmt.Sprintf("ketch-%d.db", node.Group)), logstore.BoltOptions{})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	defer s.Close()
	st, err := s.Load()
	if err != nil {
		t.Fatalf("load %s: %v", dir, err)
	}
	return st
}

// sameLog reports whether two logs hold the same entries (terms may have
// moved on: a restarted node adopts the current term).
func sameLog(a, b logstore.State) bool {
	if len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		if !proto.Equal(a.Entries[i], b.Entries[i]) {
			return false
		}
	}
	return true
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
