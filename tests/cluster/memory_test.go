package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/node"
)

// A dead follower must not make the leader's memory grow with the log: the
// leader keeps LogCacheEntries applied entries in memory whatever its
// followers have, and when the follower comes back it is caught up from
// the leader's disk (fsm.Fetch through the store actor) over the wire.
func TestDeadFollowerDoesNotGrowTheLeadersLog(t *testing.T) {
	const cache = 100
	c := New(t, 3, false, func(cfg *node.Config) { cfg.LogCacheEntries = cache })
	leader, err := c.Leader(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dead := leader%3 + 1
	c.Stop(dead)

	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const writers, perWriter = 16, 150
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	maxInMemory := uint64(0)
	var mu sync.Mutex
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if err := cl.Put(ctx, fmt.Sprintf("k%d", (w*perWriter+i)%64), []byte("v")); err != nil {
					errs <- err
					return
				}
				if i%10 == 0 {
					if n := c.Nodes[leader]; n != nil {
						mu.Lock()
						maxInMemory = max(maxInMemory, n.Status().LogInMemory)
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write with one follower down: %v", err)
	}
	st := c.Nodes[leader].Status()
	t.Logf("leader %d: log ends at %d, at most %d entries in memory during the writes, %d at the end (cache %d)", leader, st.LastIndex, maxInMemory, st.LogInMemory, cache)
	if st.LastIndex < writers*perWriter {
		t.Fatalf("log ends at %d after %d writes", st.LastIndex, writers*perWriter)
	}
	// The cache, half as much again (compaction is in steps), and the
	// writes in flight (not yet applied) at one time.
	if bound := uint64(cache + cache/2 + 2*writers); maxInMemory > bound || st.LogInMemory > bound {
		t.Errorf("leader held up to %d entries in memory (%d at the end), want at most %d: a dead follower makes it keep the log", maxInMemory, st.LogInMemory, bound)
	}

	// The dead follower comes back and catches up from the leader's disk.
	c.Start(dead)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := c.WaitApplied(wctx, st.Commit); err != nil {
		t.Fatalf("node %d did not catch up to %d: it is at %d (%v)", dead, st.Commit, c.Nodes[dead].Status().Applied, err)
	}
	// Its own cache shrinks once its state machine reports what it applied.
	deadline := time.Now().Add(5 * time.Second)
	for got := c.Nodes[dead].Status().LogInMemory; got > uint64(cache+cache/2+2*writers); got = c.Nodes[dead].Status().LogInMemory {
		if time.Now().After(deadline) {
			t.Fatalf("the caught-up follower still holds %d entries in memory", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
