package sender

// Test harness.
//
// protoactor's remote.Start writes grpc's global logger
// (grpclog.SetLoggerV2) while every running gRPC goroutine of the process
// reads it unsynchronized, so a second remote started in one process is a
// data race under -race. The tests therefore start at most one remote per
// process: the test process has one shared "home" node (homeNode), and the
// peers are child processes (startPeer), which also makes killing a peer a
// real process death. TestMain dispatches the children by environment.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	pb "github.com/ketch-raft/ketch/messages"
)

const childEnv = "KETCH_SENDER_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "peer":
		peerMain()
	case "unguarded":
		unguardedMain(os.Getenv("KETCH_UNGUARDED_CASE"))
	case "recover":
		recoverMain()
	case "baseline":
		baselineMain()
	case "hostname":
		hostnameMain()
	default:
		fmt.Println("unknown child", os.Getenv(childEnv))
		os.Exit(2)
	}
}

// fsmName is the actor name the peers give their receiving actor.
const fsmName = "fsm"

func targetPID(_ uint64, addr string) *actor.PID { return actor.NewPID(addr, fsmName) }

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger logs to stderr with KETCH_TEST_LOG=1, else into a buffer.
func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	var w io.Writer = buf
	if os.Getenv("KETCH_TEST_LOG") != "" {
		w = io.MultiWriter(buf, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// newSystem returns an actor system that logs protoactor's warnings only.
func newSystem() (*actor.ActorSystem, *slog.Logger, *syncBuffer) {
	log, buf := testLogger()
	return actor.NewActorSystem(actor.WithLoggerFactory(QuietLogger(log, slog.LevelWarn))), log, buf
}

// The home node: the test process's only remote.
var home struct {
	once     sync.Once
	system   *actor.ActorSystem
	addr     string
	log      *slog.Logger
	logs     *syncBuffer
	err      error
	onReject atomic.Pointer[func(Rejection)] // set by TestHostilePeer
	names    atomic.Int64
}

// hostileMaxBytes is the home node's guard size cap, small so that
// TestHostilePeer can exceed it cheaply.
const hostileMaxBytes = 64 << 10

func homeNode(t *testing.T) *actor.ActorSystem {
	t.Helper()
	home.once.Do(func() {
		home.system, home.log, home.logs = newSystem()
		_, home.err = StartRemote(home.system, "127.0.0.1", 0, WithGuard(GuardConfig{
			Logger:          home.log,
			MaxMessageBytes: hostileMaxBytes,
			OnReject: func(r Rejection) {
				if f := home.onReject.Load(); f != nil {
					(*f)(r)
				}
			},
		}))
		home.addr = home.system.Address()
	})
	if home.err != nil {
		t.Fatal(home.err)
	}
	return home.system
}

// uniqueName returns a fresh actor name on the home node.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, home.names.Add(1))
}

// spawnSender spawns a sender on the home node, stopped at the end of t.
func spawnSender(t *testing.T, cfg Config) (*Sender, *actor.PID) {
	t.Helper()
	system := homeNode(t)
	if cfg.Target == nil {
		cfg.Target = targetPID
	}
	if cfg.Logger == nil {
		cfg.Logger = home.log
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := system.Root.SpawnNamed(s.Props(), uniqueName("sender"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { system.Root.Stop(pid) })
	return s, pid
}

// freePort returns a port nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func addrOf(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// collector stands in for a peer's fsm actor: it records what arrives.
type collector struct {
	mu      sync.Mutex
	batches int
	msgs    []*pb.RaftMessage
	other   []any
	onBatch func(*pb.RaftBatch) // called under mu
}

func (c *collector) Receive(ctx actor.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m := ctx.Message().(type) {
	case *pb.RaftBatch:
		c.batches++
		c.msgs = append(c.msgs, m.Messages...)
		if c.onBatch != nil {
			c.onBatch(m)
		}
	case actor.SystemMessage, actor.AutoReceiveMessage:
	default:
		c.other = append(c.other, m)
	}
}

func (c *collector) hasTerm(term uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if m.Term == term {
			return true
		}
	}
	return false
}

func (c *collector) others() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]any(nil), c.other...)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// msgTo returns a small RaftMessage for peer to, tagged by term.
func msgTo(to, term uint64) *pb.RaftMessage {
	return &pb.RaftMessage{ClusterId: "test", From: 1, To: to, Term: term,
		Body: &pb.RaftMessage_AppendEntries{AppendEntries: &pb.AppendEntries{LeaderCommit: term}}}
}

// peerProc is a peer node running in a child process: an actor system
// with a guarded remote and a collector named fsmName that reports every
// RaftBatch on stdout.
type peerProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer
	addr   string
	ready  time.Time // when the child reported its remote listening

	mu      sync.Mutex
	batches int
	terms   []uint64
	first   time.Time // arrival of the first batch
	others  []string
	exited  chan struct{}
}

// startPeer starts a peer process listening on port (0: any). With
// sendTo set, the peer sends a RaftBatch of term 4242 to the actor
// sendTo ("host:port/name") once it is up.
func startPeer(t *testing.T, port int, sendTo string) *peerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=peer", "KETCH_PEER_PORT="+strconv.Itoa(port), "KETCH_PEER_SEND_TO="+sendTo)
	p := &peerProc{t: t, cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyc := make(chan string, 1)
	go p.read(stdout, readyc)
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.kill)
	select {
	case line := <-readyc:
		if !strings.HasPrefix(line, "READY ") {
			t.Fatalf("peer on port %d: %s\n%s", port, line, p.stderr.String())
		}
		p.addr = strings.TrimPrefix(line, "READY ")
	case <-time.After(20 * time.Second):
		t.Fatalf("peer on port %d did not start:\n%s", port, p.stderr.String())
	}
	return p
}

func (p *peerProc) read(stdout io.Reader, readyc chan<- string) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		switch {
		case strings.HasPrefix(line, "BATCH "):
			var terms []uint64
			for _, f := range strings.Split(strings.TrimPrefix(line, "BATCH "), ",") {
				n, _ := strconv.ParseUint(f, 10, 64)
				terms = append(terms, n)
			}
			p.mu.Lock()
			if p.batches == 0 {
				p.first = now
			}
			p.batches++
			p.terms = append(p.terms, terms...)
			p.mu.Unlock()
		case strings.HasPrefix(line, "OTHER "):
			p.mu.Lock()
			p.others = append(p.others, line)
			p.mu.Unlock()
		default: // READY or ERROR
			p.ready = now
			readyc <- line
		}
	}
}

// counts returns the batches and messages received so far.
func (p *peerProc) counts() (batches, msgs int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.batches, len(p.terms)
}

func (p *peerProc) received() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint64(nil), p.terms...)
}

func (p *peerProc) firstBatch() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first
}

func (p *peerProc) hasTerm(term uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range p.terms {
		if x == term {
			return true
		}
	}
	return false
}

// kill ends the peer process with SIGKILL, as a crash would, and reports a
// data race the child found.
func (p *peerProc) kill() {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
	if strings.Contains(p.stderr.String(), "DATA RACE") {
		p.t.Errorf("peer %s had a data race:\n%s", p.addr, p.stderr.String())
	}
}

// peerMain is the child process of startPeer.
func peerMain() {
	port, _ := strconv.Atoi(os.Getenv("KETCH_PEER_PORT"))
	system, log, _ := newSystem()
	col := &collector{onBatch: func(b *pb.RaftBatch) {
		terms := make([]string, len(b.Messages))
		for i, m := range b.Messages {
			terms[i] = strconv.FormatUint(m.Term, 10)
		}
		fmt.Println("BATCH " + strings.Join(terms, ","))
	}}
	if _, err := system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return col }), fsmName); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	if _, err := StartRemote(system, "127.0.0.1", port, WithGuard(GuardConfig{Logger: log})); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("READY " + system.Address())
	if to := os.Getenv("KETCH_PEER_SEND_TO"); to != "" {
		addr, name, _ := strings.Cut(to, "/")
		system.Root.Send(actor.NewPID(addr, name), &pb.RaftBatch{Messages: []*pb.RaftMessage{msgTo(2, 4242)}})
	}
	go func() {
		for range time.Tick(50 * time.Millisecond) {
			for _, o := range col.others() {
				fmt.Printf("OTHER %T\n", o)
			}
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes it or dies
	os.Exit(0)
}

// recoverMain is the child of TestStartRemoteRecoversListenPanic: it calls
// remote.Start (which writes grpc's global logger) on a taken port.
func recoverMain() {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	port := taken.Addr().(*net.TCPAddr).Port
	system, _, _ := newSystem()
	r := remote.NewRemote(system, remote.Configure("127.0.0.1", port))
	err = startRecovered(r)
	runtime.KeepAlive(taken) // or a finalizer may close it first
	if err == nil {
		fmt.Println("RESULT remote.Start did not fail")
	} else {
		err = listenError(addrOf(port), err)
		fmt.Printf("RESULT %v (ErrAddrInUse: %v)\n", err, errors.Is(err, ErrAddrInUse))
	}
	os.Exit(0)
}
