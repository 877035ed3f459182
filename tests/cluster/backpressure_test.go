package cluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
)

var floodProposals = flag.Int("flood", 100_000, "TestLeaderWithoutFollowersStaysBounded: proposals sent to the cut-off leader")

// Backpressure (issue 11): a leader whose followers are unreachable (and
// who keeps leading: check-quorum off) takes 100,000 proposals of 4 KiB,
// 400 MB in all. It appends only up to MaxUncommittedBytes and keeps at
// most MaxPendingRequests waiting; every other proposal is answered BUSY
// at once, so its heap stays bounded. When the followers come back the
// waiting proposals are answered too, committed or (if the followers elect
// a leader of their own first, which Raft allows: the entries were never
// committed) with UNKNOWN: every client gets an answer. A Go client whose
// deadline outlasts the outage gets its write through after BUSY answers;
// one whose deadline does not gets ErrBusy.
func TestLeaderWithoutFollowersStaysBounded(t *testing.T) {
	const maxUncommitted = 8 << 20
	c := New(t, 3, false, func(cfg *node.Config) {
		cfg.DisableCheckQuorum = true
		cfg.MaxUncommittedBytes = maxUncommitted
	})
	leader, err := c.Leader(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := cl.Put(ctx, "warm", []byte("up")); err != nil {
		t.Fatal(err)
	}
	var followers []uint64
	for id := range c.Nodes {
		if id != leader {
			followers = append(followers, id)
		}
	}
	for _, id := range followers {
		c.Stop(id)
	}

	// A flood from another actor system, answers counted by a reply actor.
	sys := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(slog.New(slog.DiscardHandler), slog.LevelError)))
	if _, err := sender.StartRemote(sys, "127.0.0.1", 0); err != nil {
		t.Fatal(err)
	}
	defer sys.Shutdown()
	var ok, busy, unknown, other atomic.Int64
	var mu sync.Mutex
	answered := map[uint64]bool{}
	reply := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		r, is := ctx.Message().(*pb.ClientResponse)
		if !is {
			return
		}
		mu.Lock()
		dup := answered[r.ClientId]
		answered[r.ClientId] = true
		mu.Unlock()
		if dup {
			other.Add(1)
			return
		}
		switch r.Status {
		case pb.ClientStatus_CLIENT_STATUS_OK:
			ok.Add(1)
		case pb.ClientStatus_CLIENT_STATUS_BUSY:
			busy.Add(1)
		case pb.ClientStatus_CLIENT_STATUS_UNKNOWN:
			unknown.Add(1)
		default:
			other.Add(1)
		}
	}))
	gw := actor.NewPID(c.Addrs[leader], node.GatewayID)
	value := make([]byte, 4<<10)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap, peakHeap := ms.HeapAlloc, ms.HeapAlloc
	sample := func() {
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapAlloc)
	}
	n := *floodProposals
	for i := range n {
		req := &pb.ClientRequest{ClusterId: node.DefaultClusterID, ClientId: uint64(1_000_000 + i), Sequence: 1,
			Command: &pb.KVCommand{Op: &pb.KVCommand_Put{Put: &pb.Put{Key: fmt.Sprintf("f%d", i%1000), Value: value}}}}
		sys.Root.RequestWithCustomSender(gw, req, reply)
		if i%2000 == 0 {
			sample()
			// Keep the flood from outrunning the leader by more than a
			// few batches: what is measured is the leader, not a queue
			// of unsent requests in this process.
			for int64(i)-(ok.Load()+busy.Load()+other.Load()) > 20_000 {
				sample()
				time.Sleep(time.Millisecond) // polling tick
			}
		}
	}
	poll(t, 60*time.Second, "the answers to everything not appended", func() bool {
		sample()
		st := c.Nodes[leader].Status()
		return busy.Load() > 0 && int64(n)-busy.Load()-other.Load() <= int64(st.LastIndex)
	})
	st := c.Nodes[leader].Status()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("flood of %d proposals of %d bytes (%d MB) at a leader without followers: %d answered BUSY at once, %d appended (last index %d, commit %d); heap %d MB before, %d MB peak, %d MB after a GC",
		n, len(value), n*len(value)>>20, busy.Load(), int64(n)-busy.Load(), st.LastIndex, st.Commit, baseHeap>>20, peakHeap>>20, ms.HeapAlloc>>20)
	appended := uint64(int64(n) - busy.Load() - other.Load())
	if limit := uint64(maxUncommitted/len(value)) + 1; appended > limit {
		t.Errorf("%d proposals appended, but MaxUncommittedBytes allows about %d", appended, limit)
	}
	// The uncommitted entries are held by the log, the journal's pending
	// checkpoint and the messages queued for the dead followers, and the
	// flood itself passes through: measured about 90 MB. Without the fsm's
	// bound (16,384 waiting writes only) it peaked at 301 MB; the flood is
	// 400 MB.
	if peakHeap-baseHeap > 150<<20 {
		t.Errorf("the heap grew by %d MB: backpressure did not bound it", (peakHeap-baseHeap)>>20)
	}
	if other.Load() != 0 {
		t.Errorf("%d answers neither OK nor BUSY (or duplicates)", other.Load())
	}

	// The Go client: a short deadline ends in ErrBusy, a long one succeeds
	// once the followers are back.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	err = cl.Put(short, "short", make([]byte, len(value)+64)) // no room left for it
	cancelShort()
	if !errors.Is(err, client.ErrBusy) {
		t.Errorf("a Put with a 1s deadline at a full leader: %v, want ErrBusy", err)
	}
	long := make(chan error, 1)
	refused := c.Nodes[leader].Status().BusyRefusals
	go func() { long <- cl.Put(ctx, "long", make([]byte, len(value)+64)) }()
	// The followers return once it has met BUSY.
	poll(t, 10*time.Second, "the long Put answered BUSY", func() bool { return c.Nodes[leader].Status().BusyRefusals > refused })
	for _, id := range followers {
		c.Start(id)
	}
	if err := <-long; err != nil {
		t.Errorf("a Put whose deadline outlasts the outage: %v", err)
	}
	poll(t, 60*time.Second, "an answer to every proposal", func() bool {
		return ok.Load()+busy.Load()+unknown.Load()+other.Load() == int64(n)
	})
	t.Logf("after the followers came back: %d OK, %d BUSY, %d UNKNOWN (appended, not committed by a later leader), %d other", ok.Load(), busy.Load(), unknown.Load(), other.Load())
	if other.Load() != 0 {
		t.Errorf("%d answers neither OK, BUSY nor UNKNOWN (or duplicates)", other.Load())
	}
}

// poll waits until cond holds, failing the test after timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond) // polling tick
	}
}
