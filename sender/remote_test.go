package sender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestStartRemoteErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name string
		host string
		port int
		want error
	}{
		{"port taken", "127.0.0.1", takenPort, ErrAddrInUse},
		{"host not resolvable", "no-such-host.invalid", 0, ErrRemoteStart},
		{"host not local", "192.0.2.1", 0, ErrRemoteStart}, // TEST-NET-1
		{"port out of range", "127.0.0.1", 70000, ErrRemoteStart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			system, _, _ := newSystem()
			_, err := StartRemote(system, tt.host, tt.port)
			if !errors.Is(err, tt.want) {
				t.Fatalf("StartRemote(%s, %d) = %v, want %v", tt.host, tt.port, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			t.Logf("%v", err)
		})
	}
}

// The race between StartRemote's probe and remote.Start's own listen is
// closed by recovering remote.Start's panic; this drives that path
// directly, past the probe, in a child process (remote.Start writes grpc's
// global logger: see helpers_test.go).
func TestStartRemoteRecoversListenPanic(t *testing.T) {
	runChild(t, "recover", "(ErrAddrInUse: true)", "RESULT")
}

// runChild runs this test binary as the child of the given mode and wants
// its output to contain want; it logs the output's line starting with
// show.
func runChild(t *testing.T, mode, want, show string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), want) {
		t.Fatalf("child %s: %v\n%s", mode, err, out)
	}
	t.Log(firstLine(string(out), show))
}

// A node listening on a host name (localhost here; a container's service
// name in deploy/compose.yaml) is known by that name: the actor system's
// address is the name as given, not the address it resolved to, so peers
// that were told the name reach it past the wire guard's target check.
func TestStartRemoteKeepsTheHostName(t *testing.T) {
	runChild(t, "hostname", "ADDRESS localhost:", "ADDRESS")
}

// hostnameMain is the child of TestStartRemoteKeepsTheHostName.
func hostnameMain() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	system, _, _ := newSystem()
	if _, err := StartRemote(system, "localhost", port); err != nil {
		fmt.Println("start:", err)
		os.Exit(1)
	}
	fmt.Println("ADDRESS", system.Address())
	os.Exit(0)
}

func TestStartRemotePortZeroAndTwice(t *testing.T) {
	system := homeNode(t)
	host, port, err := system.GetHostPort()
	if err != nil || host != "127.0.0.1" || port == 0 {
		t.Fatalf("address after port 0: %q (%v)", system.Address(), err)
	}
	if _, err := StartRemote(system, "127.0.0.1", 0); !errors.Is(err, ErrRemoteStart) {
		t.Fatalf("second StartRemote on one system = %v, want ErrRemoteStart", err)
	}
}

func TestQuietLogger(t *testing.T) {
	buf := &syncBuffer{}
	base := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	system := actor.NewActorSystem(actor.WithLoggerFactory(QuietLogger(base, slog.LevelWarn)))
	system.Logger().Info("chatty")
	system.Logger().Warn("worth it")
	out := buf.String()
	if strings.Contains(out, "chatty") || !strings.Contains(out, "worth it") || !strings.Contains(out, "lib=protoactor") {
		t.Fatalf("QuietLogger output:\n%s", out)
	}
}

// hostileCase is one thing a hostile peer sends to a node's remote.
type hostileCase struct {
	name string
	// announce: send a ConnectRequest claiming hostileAnnounced first.
	announce bool
	// batch builds the batch for the actor to and a relay address (another
	// node's). Nil for the unary case.
	batch func(to *actor.PID, relay string) *remote.MessageBatch
	// closes: the stream must be closed (by the guard or by protoactor).
	closes bool
	// rejected: the guard must report a rejection.
	rejected bool
	// unguardedFails: without the guard the process crashes or the node is
	// harmed (its actor stopped, a message relayed or delivered as
	// something else).
	unguardedFails bool
}

const hostileAnnounced = "127.0.0.1:1"

func marshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// oneEnvelope is a batch of one message of type name to the actor to.
func oneEnvelope(to *actor.PID, name string, data []byte) *remote.MessageBatch {
	return &remote.MessageBatch{
		TypeNames: []string{name},
		Targets:   []*actor.PID{to},
		Envelopes: []*remote.MessageEnvelope{{TypeId: 0, Target: 0, MessageData: data}},
	}
}

func goodBatchData(term uint64) []byte {
	return marshal(&pb.RaftBatch{Messages: []*pb.RaftMessage{msgTo(2, term)}})
}

func hostileCases() []hostileCase {
	return []hostileCase{
		{name: "unregistered type", rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch { return oneEnvelope(to, "evil.v1.Nope", []byte{1}) }},
		{name: "type index out of range", closes: true, rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				b := oneEnvelope(to, raftBatchName, goodBatchData(1))
				b.Envelopes[0].TypeId = 3
				return b
			}},
		{name: "negative type index", closes: true, rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				b := oneEnvelope(to, raftBatchName, goodBatchData(1))
				b.Envelopes[0].TypeId = -1
				return b
			}},
		{name: "bad serializer id", closes: true, rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				b := oneEnvelope(to, raftBatchName, goodBatchData(1))
				b.Envelopes[0].SerializerId = 7
				return b
			}},
		{name: "json serializer", rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				b := oneEnvelope(to, raftBatchName, []byte(`{}`))
				b.Envelopes[0].SerializerId = 1
				return b
			}},
		{name: "target index out of range", closes: true, rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				b := oneEnvelope(to, raftBatchName, goodBatchData(1))
				b.Envelopes[0].Target = 1
				return b
			}},
		{name: "sender index out of range", closes: true, rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				b := oneEnvelope(to, raftBatchName, goodBatchData(1))
				b.Envelopes[0].Sender = 2
				return b
			}},
		{name: "actor.Stop to the fsm (registered, not ketch)", rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				return oneEnvelope(to, string(proto.MessageName(&actor.Stop{})), marshal(&actor.Stop{}))
			}},
		{name: "Terminated without a PID", announce: true, rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				return oneEnvelope(to, terminatedName, marshal(&actor.Terminated{}))
			}},
		{name: "Terminated naming a foreign address", announce: true, rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, relay string) *remote.MessageBatch {
				return oneEnvelope(to, terminatedName, marshal(&actor.Terminated{Who: actor.NewPID(relay, "x")}))
			}},
		{name: "Watch by a PID not of the peer", announce: true, rejected: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				return oneEnvelope(to, watchName, marshal(&actor.Watch{Watcher: actor.NewPID("192.0.2.1:9", "x")}))
			}},
		{name: "target on another node (relay)", rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, relay string) *remote.MessageBatch {
				return oneEnvelope(actor.NewPID(relay, to.Id), raftBatchName, goodBatchData(666))
			}},
		{name: "oversized message", rejected: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				return oneEnvelope(to, raftBatchName, make([]byte, hostileMaxBytes+1))
			}},
		{name: "garbage bytes for a valid type", closes: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				return oneEnvelope(to, raftBatchName, []byte{0xff, 0xff, 0xff, 0xff})
			}},
		{name: "mixed batch: good kept, bad dropped", rejected: true, unguardedFails: true,
			batch: func(to *actor.PID, _ string) *remote.MessageBatch {
				b := oneEnvelope(to, raftBatchName, goodBatchData(777))
				b.TypeNames = append(b.TypeNames, "evil.v1.Nope")
				b.Envelopes = append(b.Envelopes, &remote.MessageEnvelope{TypeId: 1, MessageData: []byte{1}})
				return b
			}},
		{name: "unary ListProcesses", rejected: true, closes: true, unguardedFails: true},
	}
}

// sendHostile plays c against the actor to and returns how the stream
// ended (nil if it stayed open until wait passed; the unary call's error).
func sendHostile(ctx context.Context, to *actor.PID, relay string, c hostileCase, wait time.Duration) (end error, err error) {
	conn, err := grpc.Dial(to.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := remote.NewRemotingClient(conn)
	if c.batch == nil {
		_, err := client.ListProcesses(ctx, &remote.ListProcessesRequest{})
		return err, nil
	}
	stream, err := client.Receive(ctx)
	if err != nil {
		return nil, err
	}
	if c.announce {
		if err := stream.Send(&remote.RemoteMessage{MessageType: &remote.RemoteMessage_ConnectRequest{
			ConnectRequest: &remote.ConnectRequest{ConnectionType: &remote.ConnectRequest_ServerConnection{
				ServerConnection: &remote.ServerConnection{SystemId: "hostile", Address: hostileAnnounced}}}}}); err != nil {
			return nil, err
		}
		if _, err := stream.Recv(); err != nil {
			return nil, fmt.Errorf("no connect response: %w", err)
		}
	}
	if err := stream.Send(&remote.RemoteMessage{MessageType: &remote.RemoteMessage_MessageBatch{MessageBatch: c.batch(to, relay)}}); err != nil {
		return nil, err
	}
	ended := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		ended <- err
	}()
	select {
	case err := <-ended:
		return err, nil
	case <-time.After(wait):
		return nil, nil
	}
}

// relayTrap listens where a relayed message would go and counts the
// connections it gets.
type relayTrap struct {
	l     net.Listener
	dials atomic.Int64
}

func newRelayTrap() (*relayTrap, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relayTrap{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.dials.Add(1)
			_ = c.Close()
		}
	}()
	return r, nil
}

// TestHostilePeer attacks the guarded home node with a raw gRPC client
// (protoactor's generated Remoting client), then checks the node is intact:
// the attacked actor alive, nothing relayed or delivered that should not
// be, and a RaftBatch from a real peer (another process) delivered.
func TestHostilePeer(t *testing.T) {
	system := homeNode(t)
	var mu sync.Mutex
	var rejections []Rejection
	hook := func(r Rejection) {
		mu.Lock()
		rejections = append(rejections, r)
		mu.Unlock()
	}
	home.onReject.Store(&hook)
	t.Cleanup(func() { home.onReject.Store(nil) })
	nrej := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(rejections)
	}

	col := &collector{}
	name := uniqueName("hostile-target")
	pid, err := system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return col }), name)
	if err != nil {
		t.Fatal(err)
	}
	to := actor.NewPID(home.addr, pid.Id)
	trap, err := newRelayTrap()
	if err != nil {
		t.Fatal(err)
	}
	defer trap.l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, c := range hostileCases() {
		t.Run(c.name, func(t *testing.T) {
			before := nrej()
			wait := 300 * time.Millisecond
			if c.closes {
				wait = 5 * time.Second
			}
			end, err := sendHostile(ctx, to, trap.l.Addr().String(), c, wait)
			if err != nil {
				t.Fatalf("hostile client: %v", err)
			}
			if c.closes != (end != nil) {
				t.Errorf("stream closed = %v (%v), want %v", end != nil, end, c.closes)
			}
			if c.batch == nil && status.Code(end) != codes.Unimplemented {
				t.Errorf("unary call ended with %v, want Unimplemented", end)
			}
			if c.rejected {
				waitFor(t, 5*time.Second, "the guard's rejection", func() bool { return nrej() > before })
				mu.Lock()
				r := rejections[len(rejections)-1]
				mu.Unlock()
				t.Logf("rejected: %s (dropped %d, stream closed %v)", r.Reason, r.Dropped, r.Closed)
			} else if nrej() != before {
				t.Errorf("unexpected rejection")
			}
		})
	}

	// A real peer, in another process, gets through afterwards.
	startPeer(t, 0, to.Address+"/"+to.Id)
	waitFor(t, 20*time.Second, "the legitimate RaftBatch", func() bool { return col.hasTerm(4242) })
	if !col.hasTerm(777) {
		t.Error("the good half of the mixed batch was not delivered")
	}
	if col.hasTerm(666) || trap.dials.Load() > 0 {
		t.Errorf("a message for another node was delivered or relayed (%d dials)", trap.dials.Load())
	}
	if o := col.others(); len(o) > 0 {
		t.Errorf("the actor received non-ketch messages: %v", o)
	}
	if _, ok := system.ProcessRegistry.GetLocal(pid.Id); !ok {
		t.Error("the attacked actor is gone")
	}
	out := home.logs.String()
	i := strings.Index(out, "wire guard rejected")
	if i < 0 || !strings.Contains(out, "peer=127.0.0.1:") {
		t.Fatalf("no guard log line naming the peer:\n%s", out)
	}
	t.Logf("guard log line: %s", strings.SplitN(out[strings.LastIndex(out[:i], "\n")+1:], "\n", 2)[0])
}

// TestUnguardedRemoteIsVulnerable shows the guard is needed: each hostile
// case marked unguardedFails is played, in a child process, against a plain
// protoactor remote; the child must crash or report harm.
func TestUnguardedRemoteIsVulnerable(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process per case")
	}
	for _, c := range hostileCases() {
		if !c.unguardedFails {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), childEnv+"=unguarded", "KETCH_UNGUARDED_CASE="+c.name)
			out, _ := cmd.CombinedOutput()
			line := firstLine(string(out), "panic:", "HARMED:", "SURVIVED", "ERROR")
			if !strings.HasPrefix(line, "panic:") && !strings.HasPrefix(line, "HARMED:") {
				t.Fatalf("unguarded remote: %s\n%s", line, out)
			}
			t.Logf("unguarded: %s", line)
		})
	}
}

func firstLine(out string, prefixes ...string) string {
	for _, l := range strings.Split(out, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				return l
			}
		}
	}
	return "(no line starting with " + strings.Join(prefixes, " or ") + ")"
}

// unguardedMain runs one hostile case against an unguarded protoactor
// remote and prints SURVIVED or HARMED: ... (or crashes).
func unguardedMain(name string) {
	var c hostileCase
	for _, hc := range hostileCases() {
		if hc.name == name {
			c = hc
		}
	}
	if c.name == "" {
		fmt.Println("ERROR unknown case", name)
		os.Exit(2)
	}
	system := actor.NewActorSystem(actor.WithLoggerFactory(QuietLogger(slog.New(slog.DiscardHandler), slog.LevelError)))
	col := &collector{}
	if _, err := system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return col }), fsmName); err != nil {
		panic(err)
	}
	remote.NewRemote(system, remote.Configure("127.0.0.1", 0)).Start()
	trap, err := newRelayTrap()
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sendHostile(ctx, actor.NewPID(system.Address(), fsmName), trap.l.Addr().String(), c, time.Second); err != nil {
		fmt.Println("ERROR hostile client failed:", err)
		os.Exit(2)
	}
	// Poll for the harm (a relay or a crash takes a moment); survive only
	// if none shows within two seconds.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		switch _, alive := system.ProcessRegistry.GetLocal(fsmName); {
		case !alive:
			fmt.Println("HARMED: the fsm actor was stopped")
		case len(col.others()) > 0:
			fmt.Printf("HARMED: the fsm received a %T\n", col.others()[0])
		case trap.dials.Load() > 0:
			fmt.Println("HARMED: the node dialled an address named by the hostile message")
		default:
			continue
		}
		os.Exit(0)
	}
	fmt.Println("SURVIVED")
	os.Exit(0)
}

// With Routes, each type is admitted only for the actors meant to receive
// it: a ClientRequest sent straight to the fsm actor, or a RaftBatch to the
// gateway, is dropped at the wire; protoactor's own messages still reach
// any actor (under their PID checks).
func TestGuardRoutes(t *testing.T) {
	name := func(m proto.Message) string { return string(proto.MessageName(m)) }
	g, err := newWireGuard(actor.NewActorSystem(), GuardConfig{
		Routes: map[string][]string{
			"raft/1/fsm":     {name(&pb.RaftBatch{})},
			"raft/1/gateway": {name(&pb.ClientRequest{}), name(&pb.StatusRequest{})},
			"raft/1/store":   nil,
		},
		OtherTargets: []string{name(&pb.ClientResponse{})},
	})
	if err != nil {
		t.Fatal(err)
	}
	const local = "127.0.0.1:7001"
	for _, c := range []struct {
		to   string
		msg  proto.Message
		want bool
	}{
		{"raft/1/fsm", &pb.RaftBatch{}, true},
		{"raft/1/fsm", &pb.ClientRequest{}, false},
		{"raft/1/fsm", &pb.TransferRequest{}, false},
		{"raft/1/gateway", &pb.ClientRequest{}, true},
		{"raft/1/gateway", &pb.RaftBatch{}, false},
		{"raft/1/store", &pb.RaftBatch{}, false},
		{"raft/1", &pb.ClientRequest{}, false},
		{"$7", &pb.ClientResponse{}, true},
		{"$7", &pb.RaftBatch{}, false},
		{"raft/1/store", &actor.DeadLetterResponse{}, true},
	} {
		b := oneEnvelope(actor.NewPID(local, c.to), name(c.msg), marshal(c.msg))
		why := g.refuse(b, b.Envelopes[0], local, "")
		if (why == "") != c.want {
			t.Errorf("%s to %s: refused %q, want admitted=%v", name(c.msg), c.to, why, c.want)
		}
	}
	if _, err := newWireGuard(actor.NewActorSystem(), GuardConfig{Routes: map[string][]string{"x": {"evil.v1.Nope"}}}); err == nil {
		t.Error("a route naming a type outside the allowlist was accepted")
	}
}
