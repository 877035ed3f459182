package logstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/ketch-raft/ketch/messages"
)

// ---------------------------------------------------------------- helpers

const waitFor = 10 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newSystem(t testing.TB) *actor.ActorSystem {
	t.Helper()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quietLogger() }))
	t.Cleanup(sys.Shutdown)
	return sys
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// testStore wraps a Store, counts what the actor does with it and lets a
// test fail or block its calls.
type testStore struct {
	Store
	mu         sync.Mutex
	batches    []int // number of updates in each Write call
	closes     int
	beforeWrit func([]Update) error // nil: pass through
	loadErr    error
}

func (s *testStore) Write(updates []Update) error {
	s.mu.Lock()
	hook := s.beforeWrit
	s.mu.Unlock()
	if hook != nil {
		if err := hook(updates); err != nil {
			return err
		}
	}
	if err := s.Store.Write(updates); err != nil {
		return err
	}
	s.mu.Lock()
	s.batches = append(s.batches, len(updates))
	s.mu.Unlock()
	return nil
}

func (s *testStore) Load() (State, error) {
	s.mu.Lock()
	err := s.loadErr
	s.mu.Unlock()
	if err != nil {
		return State{}, fmt.Errorf("injected: %w", err)
	}
	return s.Store.Load()
}

func (s *testStore) Close() error {
	s.mu.Lock()
	s.closes++
	s.mu.Unlock()
	return s.Store.Close()
}

func (s *testStore) writeCalls() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.batches...)
}

// disk is what survives store-actor restarts in a test: one Store that
// every incarnation opens (through a fresh testStore), and the count of
// opens.
type disk struct {
	under Store // shared by every incarnation
	hook  func([]Update) error
	opens atomic.Int32
	mu    sync.Mutex
	all   []*testStore
}

func (d *disk) open() (Store, error) {
	d.opens.Add(1)
	ts := &testStore{Store: nopCloser{d.under}, beforeWrit: d.hook}
	d.mu.Lock()
	d.all = append(d.all, ts)
	d.mu.Unlock()
	return ts, nil
}

// current is the store of the latest incarnation.
func (d *disk) current() *testStore {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.all[len(d.all)-1]
}

func (d *disk) closes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, s := range d.all {
		s.mu.Lock()
		n += s.closes
		s.mu.Unlock()
	}
	return n
}

// nopCloser keeps a bolt store open across incarnations that share it.
type nopCloser struct{ Store }

func (nopCloser) Close() error { return nil }

// gate blocks the Write that carries a hard state with term gateTerm until
// released, so a test can queue messages behind a batch being written.
type gate struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

const gateTerm = 999

func newGate() *gate { return &gate{entered: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) hook(updates []Update) error {
	for _, u := range updates {
		if u.HardState.GetTerm() == gateTerm {
			g.once.Do(func() { close(g.entered) })
			<-g.release
		}
	}
	return nil
}

func (g *gate) wait(t testing.TB) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(waitFor):
		t.Fatal("the gated write never reached the store")
	}
}

// probe is an actor that stands for an fsm: it sends requests with itself
// as the sender and collects the answers.
type probe struct {
	sys   *actor.ActorSystem
	store *actor.PID
	pid   *actor.PID
	ch    chan any
}

func newProbe(t testing.TB, sys *actor.ActorSystem, store *actor.PID) *probe {
	p := &probe{sys: sys, store: store, ch: make(chan any, 1<<16)}
	p.pid = sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *Durable, *Fenced, *Loaded:
			p.ch <- m
		}
	}))
	return p
}

func (p *probe) write(epoch, seq uint64, h *pb.HardState, es ...*pb.Entry) {
	p.sys.Root.RequestWithCustomSender(p.store, &WriteRequest{Epoch: epoch, Seq: seq, HardState: h, Entries: es}, p.pid)
}

func (p *probe) load() { p.sys.Root.RequestWithCustomSender(p.store, &LoadRequest{}, p.pid) }

func (p *probe) next(t testing.TB) any {
	t.Helper()
	select {
	case m := <-p.ch:
		return m
	case <-time.After(waitFor):
		t.Fatal("timed out waiting for the store actor's answer")
		return nil
	}
}

// durableUpTo collects Durable answers until one for (epoch, seq) and
// checks they come in increasing order.
func (p *probe) durableUpTo(t testing.TB, epoch, seq uint64) []*Durable {
	t.Helper()
	var got []*Durable
	for {
		m := p.next(t)
		d, ok := m.(*Durable)
		if !ok {
			t.Fatalf("got %T %+v, want Durable up to epoch %d seq %d", m, m, epoch, seq)
		}
		if d.Epoch != epoch || (len(got) > 0 && d.Seq <= got[len(got)-1].Seq) || d.Seq > seq {
			t.Fatalf("got Durable %+v after %d others, want increasing seqs of epoch %d up to %d", d, len(got), epoch, seq)
		}
		got = append(got, d)
		if d.Seq == seq {
			return got
		}
	}
}

func (p *probe) loaded(t testing.TB) State {
	t.Helper()
	p.load()
	m := p.next(t)
	l, ok := m.(*Loaded)
	if !ok {
		t.Fatalf("got %T %+v, want Loaded", m, m)
	}
	if l.Err != nil {
		t.Fatalf("Loaded.Err = %v", l.Err)
	}
	return l.State
}

func expect[T any](t testing.TB, p *probe) T {
	t.Helper()
	m := p.next(t)
	v, ok := m.(T)
	if !ok {
		var zero T
		t.Fatalf("got %T %+v, want %T", m, m, zero)
	}
	return v
}

func spawnStore(t testing.TB, sys *actor.ActorSystem, open func() (Store, error), cfg Config) *actor.PID {
	t.Helper()
	cfg.Logger = quietLogger()
	pid := sys.Root.Spawn(PropsWithConfig(open, cfg))
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	return pid
}

// ---------------------------------------------------------------- tests

func TestActorWritesAreAnsweredInOrder(t *testing.T) {
	for _, kind := range []string{"memory", "bolt"} {
		t.Run(kind, func(t *testing.T) {
			sys := newSystem(t)
			open := func() (Store, error) { return NewMemory(), nil }
			if kind == "bolt" {
				path := filepath.Join(t.TempDir(), "ketch.db")
				open = func() (Store, error) { return OpenBolt(path, BoltOptions{}) }
			}
			p := newProbe(t, sys, spawnStore(t, sys, open, Config{}))
			// Rounds of growing size, each waited for, so that both single
			// writes and batches are answered.
			const n = 300
			answers := 0
			for i, round := uint64(1), uint64(1); i <= n; round++ {
				end := min(i+round*round-1, n)
				for ; i <= end; i++ {
					var h *pb.HardState
					if i%100 == 1 {
						h = hs(i/100+1, 1)
					}
					p.write(1, i, h, ent(i, i/100+1))
				}
				answers += len(p.durableUpTo(t, 1, end))
			}
			t.Logf("%s: %d writes answered by %d Durables", kind, n, answers)
			st := p.loaded(t)
			if st.LastIndex() != n || st.HardState.GetTerm() != 3 {
				t.Fatalf("loaded last index %d, term %d; want %d, 3", st.LastIndex(), st.HardState.GetTerm(), n)
			}
		})
	}
}

// TestActorGroupCommit holds the store in a Write while writes from three
// fsms queue up, and checks that all the queued writes then go to the store
// in one Write call answered by one Durable per (sender, epoch).
func TestActorGroupCommit(t *testing.T) {
	sys := newSystem(t)
	g := newGate()
	d := &disk{under: NewMemory(), hook: g.hook}
	store := spawnStore(t, sys, d.open, Config{})
	p1, p2, p3 := newProbe(t, sys, store), newProbe(t, sys, store), newProbe(t, sys, store)

	p1.write(1, 1, hs(gateTerm, 0), ent(1, 1))
	g.wait(t)
	const n = 500
	for i := uint64(2); i <= n; i++ {
		p1.write(1, i, nil, ent(i, 1))
		if i <= 101 {
			p2.write(7, i-1, hs(gateTerm+1, 2))
			p3.write(9, i-1, hs(gateTerm+1, 3))
		}
	}
	close(g.release)

	if got := p1.durableUpTo(t, 1, n); len(got) != 2 || got[0].Seq != 1 {
		t.Errorf("fsm 1 got %d Durables (first seq %d), want two: seq 1 then seq %d", len(got), got[0].Seq, n)
	}
	p2.durableUpTo(t, 7, 100)
	p3.durableUpTo(t, 9, 100)
	for _, p := range []*probe{p1, p2, p3} {
		// Loaded comes after any further Durable: nothing more came.
		if st := p.loaded(t); st.LastIndex() != n {
			t.Fatalf("loaded last index %d, want %d", st.LastIndex(), n)
		}
	}
	calls := d.current().writeCalls()
	t.Logf("1 blocked write, then %d queued writes (%d of them from other fsms): Write calls of %v updates", (n-1)+200, 200, calls)
	if want := []int{1, (n - 1) + 200}; fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("Write calls of %v updates, want %v", calls, want)
	}
}

// The cap splits a long queue into several transactions.
func TestActorGroupCommitCap(t *testing.T) {
	sys := newSystem(t)
	g := newGate()
	d := &disk{under: NewMemory(), hook: g.hook}
	p := newProbe(t, sys, spawnStore(t, sys, d.open, Config{MaxBatchUpdates: 100}))

	p.write(1, 1, hs(gateTerm, 0), ent(1, 1))
	g.wait(t)
	for i := uint64(2); i <= 500; i++ {
		p.write(1, i, nil, ent(i, 1))
	}
	close(g.release)
	p.durableUpTo(t, 1, 500)
	if calls, want := d.current().writeCalls(), []int{1, 100, 100, 100, 100, 99}; fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("Write calls of %v updates, want %v", calls, want)
	}
}

// TestActorGroupCommitFreeRunning lets writes race a real bbolt store with
// fsync, as an fsm under load would, and reports the batching it gets.
func TestActorGroupCommitFreeRunning(t *testing.T) {
	sys := newSystem(t)
	path := filepath.Join(t.TempDir(), "ketch.db")
	bs, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	d := &disk{under: bs}
	store := spawnStore(t, sys, d.open, Config{})
	p := newProbe(t, sys, store)
	others := []*probe{newProbe(t, sys, store), newProbe(t, sys, store), newProbe(t, sys, store)}

	const n = 3000
	var wg sync.WaitGroup
	for k, o := range others {
		wg.Go(func() {
			for i := uint64(1); i <= n/10; i++ {
				o.write(uint64(k+2), i, hs(i, 0))
			}
		})
	}
	start := time.Now()
	for i := uint64(1); i <= n; i++ {
		p.write(1, i, nil, ent(i, 1))
	}
	wg.Wait()
	p.durableUpTo(t, 1, n)
	for k, o := range others {
		o.durableUpTo(t, uint64(k+2), n/10)
	}
	elapsed := time.Since(start)
	calls := d.current().writeCalls()
	total := n + len(others)*n/10
	t.Logf("%d writes from 4 senders, sent at once: %d Write calls (fsyncs), %.1f writes per fsync, %v", total, len(calls), float64(total)/float64(len(calls)), elapsed.Round(time.Millisecond))
	if len(calls) > total/4 {
		t.Errorf("%d writes took %d fsyncs; group commit should need far fewer", total, len(calls))
	}
}

// A LoadRequest queued in the middle of a batch sees the writes before it
// and not those after it.
func TestActorLoadFlushesWritesQueuedBeforeIt(t *testing.T) {
	sys := newSystem(t)
	g := newGate()
	d := &disk{under: NewMemory(), hook: g.hook}
	p := newProbe(t, sys, spawnStore(t, sys, d.open, Config{}))

	p.write(1, 1, hs(gateTerm, 0), ent(1, 1))
	g.wait(t)
	for i := uint64(2); i <= 10; i++ {
		p.write(1, i, nil, ent(i, 1))
	}
	p.load()
	for i := uint64(11); i <= 20; i++ {
		p.write(1, i, nil, ent(i, 1))
	}
	close(g.release)

	p.durableUpTo(t, 1, 10) // before Loaded: the load flushed first
	if st := expect[*Loaded](t, p).State; st.LastIndex() != 10 {
		t.Errorf("Loaded saw last index %d, want 10", st.LastIndex())
	}
	p.durableUpTo(t, 1, 20)
}

// A Write that fails crashes the actor; the supervisor restarts it, it
// reopens the store, the epoch that lost a write is fenced and a new epoch
// works.
func TestActorWriteFailureCrashesAndRestarts(t *testing.T) {
	sys := newSystem(t)
	injected := errors.New("injected fsync failure")
	d := &disk{under: NewMemory(), hook: func(us []Update) error {
		for _, u := range us {
			if u.HardState.GetTerm() == 666 {
				return injected
			}
		}
		return nil
	}}
	p := newProbe(t, sys, spawnStore(t, sys, d.open, Config{}))

	p.write(1, 1, hs(1, 1), ent(1, 1))
	p.durableUpTo(t, 1, 1)
	p.write(1, 2, hs(666, 1), ent(2, 1))
	eventually(t, "the store actor to restart", func() bool { return d.opens.Load() == 2 && d.closes() == 1 })

	p.write(1, 3, nil, ent(2, 1))
	if f := expect[*Fenced](t, p); f.Epoch != 1 || f.Seq != 3 {
		t.Errorf("got Fenced %+v, want epoch 1 seq 3", f)
	}
	p.write(2, 1, hs(2, 1), ent(2, 2))
	p.durableUpTo(t, 2, 1)
	st := p.loaded(t)
	if st.LastIndex() != 2 || st.Entries[1].Term != 2 || st.HardState.GetTerm() != 2 {
		t.Errorf("after restart loaded %+v, want the failed write absent and epoch 2's present", st)
	}
}

// Crash crashes the actor; a restart reopens the bolt file (the old
// incarnation released its lock) and, since no accepted write was lost, the
// epoch carries on.
func TestActorCrashRestartsFromTheFile(t *testing.T) {
	sys := newSystem(t)
	path := filepath.Join(t.TempDir(), "ketch.db")
	var opens atomic.Int32
	open := func() (Store, error) {
		opens.Add(1)
		return OpenBolt(path, BoltOptions{LockTimeout: 100 * time.Millisecond})
	}
	store := spawnStore(t, sys, open, Config{})
	p := newProbe(t, sys, store)

	p.write(1, 1, hs(1, 1), ent(1, 1))
	p.durableUpTo(t, 1, 1)
	sys.Root.Send(store, &Crash{Reason: "test"})
	eventually(t, "the store actor to restart", func() bool { return opens.Load() == 2 })
	p.write(1, 2, nil, ent(2, 1))
	p.durableUpTo(t, 1, 2)
	if st := p.loaded(t); st.LastIndex() != 2 {
		t.Errorf("loaded last index %d, want 2", st.LastIndex())
	}
}

// A crash loses the writes batched but not yet written, and fences their
// epochs: a later write of such an epoch is refused with Fenced rather than
// acknowledged (which would imply the lost one durable). Other epochs are
// unaffected.
func TestActorCrashFencesEpochsThatLostWrites(t *testing.T) {
	sys := newSystem(t)
	g := newGate()
	d := &disk{under: NewMemory(), hook: g.hook}
	store := spawnStore(t, sys, d.open, Config{})
	p, q := newProbe(t, sys, store), newProbe(t, sys, store)

	p.write(1, 1, hs(gateTerm, 0), ent(1, 1))
	g.wait(t)
	p.write(1, 2, nil, ent(2, 1)) // batched, then lost in the crash
	sys.Root.Send(store, &Crash{Reason: "test"})
	p.write(1, 3, nil, ent(3, 1)) // must not be acknowledged
	q.write(5, 1, hs(5, 5))       // another fsm: unaffected
	close(g.release)

	p.durableUpTo(t, 1, 1)
	if f := expect[*Fenced](t, p); f.Epoch != 1 || f.Seq != 3 {
		t.Errorf("got Fenced %+v, want epoch 1 seq 3", f)
	}
	q.durableUpTo(t, 5, 1)
	if st := p.loaded(t); st.LastIndex() != 1 || st.HardState.GetTerm() != 5 {
		t.Errorf("loaded last index %d, term %d; want 1, 5", st.LastIndex(), st.HardState.GetTerm())
	}
}

// A corrupt log is reported to the requester and crashes the actor.
func TestActorLoadErrorCrashes(t *testing.T) {
	sys := newSystem(t)
	d := &disk{under: NewMemory()}
	p := newProbe(t, sys, spawnStore(t, sys, d.open, Config{}))
	p.write(1, 1, nil, ent(1, 1))
	p.durableUpTo(t, 1, 1)
	d.current().mu.Lock()
	d.current().loadErr = ErrCorrupt
	d.current().mu.Unlock()

	p.load()
	if l := expect[*Loaded](t, p); !errors.Is(l.Err, ErrCorrupt) || l.State.Entries != nil {
		t.Errorf("got Loaded %+v, want an ErrCorrupt error and no state", l)
	}
	eventually(t, "the store actor to restart", func() bool { return d.opens.Load() == 2 })
}

// The same props spawned twice make two independent actors: each has its
// own mailbox, so one being busy does not hold back the other's batches.
func TestActorPropsSpawnedTwice(t *testing.T) {
	sys := newSystem(t)
	g := newGate()
	props := PropsWithConfig(func() (Store, error) {
		return &testStore{Store: NewMemory(), beforeWrit: g.hook}, nil
	}, Config{Logger: quietLogger()})
	a, b := sys.Root.Spawn(props), sys.Root.Spawn(props)
	defer func() { _ = sys.Root.StopFuture(a).Wait(); _ = sys.Root.StopFuture(b).Wait() }()
	pa, pb := newProbe(t, sys, a), newProbe(t, sys, b)

	pa.write(1, 1, hs(gateTerm, 0), ent(1, 1))
	g.wait(t)
	for i := uint64(2); i <= 10; i++ {
		pa.write(1, i, nil, ent(i, 1))
	}
	pb.write(1, 1, nil, ent(1, 1))
	pb.durableUpTo(t, 1, 1) // while a is blocked with a full mailbox
	close(g.release)
	pa.durableUpTo(t, 1, 10)
}

func TestActorStopClosesTheStore(t *testing.T) {
	sys := newSystem(t)
	d := &disk{under: NewMemory()}
	pid := sys.Root.Spawn(PropsWithConfig(d.open, Config{Logger: quietLogger()}))
	p := newProbe(t, sys, pid)
	p.write(1, 1, nil, ent(1, 1))
	p.durableUpTo(t, 1, 1)
	if err := sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	if d.closes() != 1 {
		t.Errorf("store closed %d times after stop, want 1", d.closes())
	}
}

func TestConfigValidate(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Logger == nil || c.MaxBatchUpdates != DefaultMaxBatchUpdates || c.MaxBatchBytes != DefaultMaxBatchBytes {
		t.Errorf("defaults not filled in: %+v", c)
	}
	for _, bad := range []Config{{MaxBatchUpdates: -1}, {MaxBatchBytes: -1}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}
