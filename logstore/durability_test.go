package logstore

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/ketch-raft/ketch/messages"
)

// The durability proof: a writer process is killed with SIGKILL in the
// middle of a stream of writes, and every write it reported durable before
// dying must be in the file, with the right content. The test binary plays
// both roles: TestDurabilityKill9 re-executes itself to run
// TestDurabilityWriterChild, which does nothing unless durabilityChildEnv
// names the file to write.
//
// SIGKILL proves that the store never acknowledges a write before bbolt's
// commit returned (the child has no chance to flush anything on its way
// out); it cannot prove the fsync reached the platter, since the page cache
// survives a process kill. Power-loss testing needs a VM or a fault-injecting
// block device (tests/ may add one).

var durabilityRounds = flag.Int("durability-rounds", 3, "kill -9 rounds of TestDurabilityKill9")

const durabilityChildEnv = "KETCH_LOGSTORE_DURABILITY_FILE"

// What the writer writes is derived from the index, so the parent can check
// every entry without a record of what was sent.
func durabilityTerm(index uint64) uint64 { return 1 + index/500 }

func durabilityEntry(index uint64) *pb.Entry {
	return &pb.Entry{Index: index, Term: durabilityTerm(index), Type: pb.EntryType_ENTRY_TYPE_NORMAL,
		Data: fmt.Appendf(nil, "entry %d of the kill -9 test, padded to look like a command.........", index)}
}

func TestDurabilityKill9(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	rounds := *durabilityRounds
	if testing.Short() {
		rounds = 1
	}
	// One file for all rounds: each child first loads what the previous
	// one left (reopening a file whose writer was killed), then continues.
	path := filepath.Join(t.TempDir(), "ketch.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for round := 1; round <= rounds; round++ {
		killAfter := time.Duration(20+rng.IntN(400)) * time.Millisecond
		seq, reported, lines := runKilledWriter(t, path, killAfter)

		s, err := OpenBolt(path, BoltOptions{})
		if err != nil {
			t.Fatalf("round %d: reopening after kill -9: %v", round, err)
		}
		st, err := s.Load()
		s.Close()
		if err != nil {
			t.Fatalf("round %d: load after kill -9: %v", round, err)
		}
		if st.LastIndex() < reported {
			t.Fatalf("round %d: the writer reported index %d durable (seq %d) but the file ends at %d", round, reported, seq, st.LastIndex())
		}
		for i, e := range st.Entries {
			if want := durabilityEntry(uint64(i + 1)); e.Index != want.Index || e.Term != want.Term || !bytes.Equal(e.Data, want.Data) {
				t.Fatalf("round %d: entry %d is %v, want %v", round, i+1, e, want)
			}
		}
		if got, want := st.HardState.GetTerm(), durabilityTerm(reported); got < want {
			t.Fatalf("round %d: hard state term %d, but a write with term %d was reported durable", round, got, want)
		}
		t.Logf("round %d: killed after %v: %d durable reports, last seq %d index %d; the file holds 1..%d, all intact",
			round, killAfter, lines, seq, reported, st.LastIndex())
	}
}

// runKilledWriter starts the writer child on path, kills it with SIGKILL
// killAfter its first durable report, and returns the last report (seq and
// last index) and the number of reports.
func runKilledWriter(t *testing.T, path string, killAfter time.Duration) (seq, index uint64, reports int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDurabilityWriterChild$")
	cmd.Env = append(os.Environ(), durabilityChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()

	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	parse := func(line string) {
		var s, i uint64
		if _, err := fmt.Sscanf(line, "durable %d %d", &s, &i); err != nil {
			return // not a report (the test framework's own output)
		}
		if s <= seq || i < index {
			t.Errorf("report %q after seq %d index %d: reports must increase", line, seq, index)
		}
		seq, index = s, i
		reports++
	}

	// Wait for the first report, let the writer run, kill it mid-stream.
	var timer <-chan time.Time
	deadline := time.After(waitFor)
	for timer == nil || !killed {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the writer exited before it was killed; stderr:\n%s", stderr.String())
			}
			parse(line)
			if timer == nil && reports > 0 {
				timer = time.After(killAfter)
			}
		case <-timer:
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		case <-deadline:
			t.Fatalf("no durable report from the writer; stderr:\n%s", stderr.String())
		}
	}
	// Reports already in the pipe were made before the kill: they count.
	for line := range lines {
		parse(line)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("writer ended with %v, want killed; stderr:\n%s", err, stderr.String())
	}
	return seq, index, reports
}

// TestDurabilityWriterChild is the writer of TestDurabilityKill9; run on
// its own it skips.
func TestDurabilityWriterChild(t *testing.T) {
	path := os.Getenv(durabilityChildEnv)
	if path == "" {
		t.Skip("the writer process of TestDurabilityKill9")
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	store := sys.Root.Spawn(PropsWithConfig(func() (Store, error) {
		return OpenBolt(path, BoltOptions{})
	}, Config{Logger: logger}))
	w := &durabilityWriter{store: store, out: os.Stdout, inflight: map[uint64]uint64{},
		rng: rand.New(rand.NewPCG(uint64(os.Getpid()), 2)), fail: make(chan string, 1)}
	sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return w }))
	select {
	case msg := <-w.fail:
		t.Fatal(msg)
	case <-time.After(time.Minute): // the parent kills us long before
	}
}

// durabilityWriter plays an fsm under load: it keeps a window of
// WriteRequests in flight, each appending a few entries (and now and then
// rewriting the last two, to exercise truncation), and prints
// "durable <seq> <lastIndex>" when — and only when — a Durable arrives.
type durabilityWriter struct {
	store    *actor.PID
	out      io.Writer
	rng      *rand.Rand
	fail     chan string
	seq      uint64            // last seq sent
	last     uint64            // last index sent
	inflight map[uint64]uint64 // seq -> last index after it
}

const durabilityWindow = 32

func (w *durabilityWriter) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.Request(w.store, &LoadRequest{})
	case *Loaded:
		if m.Err != nil {
			w.fail <- fmt.Sprintf("load: %v", m.Err)
			return
		}
		w.last = m.State.LastIndex()
		for range durabilityWindow {
			w.send(ctx)
		}
	case *Durable:
		last, ok := w.inflight[m.Seq]
		if !ok {
			w.fail <- fmt.Sprintf("Durable for seq %d, which is not in flight", m.Seq)
			return
		}
		fmt.Fprintf(w.out, "durable %d %d\n", m.Seq, last)
		for s := range w.inflight {
			if s <= m.Seq {
				delete(w.inflight, s)
			}
		}
		for len(w.inflight) < durabilityWindow {
			w.send(ctx)
		}
	case *Fenced:
		w.fail <- fmt.Sprintf("fenced: %+v", m)
	}
}

func (w *durabilityWriter) send(ctx actor.Context) {
	first := w.last + 1
	if w.last >= 2 && w.rng.IntN(10) == 0 {
		first = w.last - 1 // rewrite the last two entries (same content)
	}
	end := w.last + 1 + uint64(w.rng.IntN(8))
	var es []*pb.Entry
	for i := first; i <= end; i++ {
		es = append(es, durabilityEntry(i))
	}
	w.seq++
	w.last = end
	w.inflight[w.seq] = end
	ctx.Request(w.store, &WriteRequest{Epoch: 1, Seq: w.seq, Entries: es,
		HardState: &pb.HardState{Term: durabilityTerm(end), Vote: 1}})
}
