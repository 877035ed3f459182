package logstore

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/ketch-raft/ketch/messages"
)

// BenchmarkGroupCommit measures what group commit buys on a real bbolt file
// with fsync, with entries of 128 data bytes:
//
//   - store/batch=N: one Store.Write of N entries per op (one transaction,
//     one fsync), the cost of a batch of a given size;
//   - actor/inflight=N: single-entry WriteRequests through the store actor
//     with N of them in flight at a time (an fsm with N Persists pending),
//     so the actor decides the batching; entries/fsync reports what it got.
//
// Run with
//
//	go test ./logstore -run '^$' -bench GroupCommit -count 6 | benchstat -
func BenchmarkGroupCommit(b *testing.B) {
	data := make([]byte, 128)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	entry := func(i uint64) *pb.Entry {
		return &pb.Entry{Index: i, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: data}
	}

	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("store/batch=%d", batch), func(b *testing.B) {
			s, err := OpenBolt(filepath.Join(b.TempDir(), "ketch.db"), BoltOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ReportAllocs()
			next := uint64(1)
			es := make([]*pb.Entry, batch)
			for b.Loop() {
				for j := range es {
					es[j] = entry(next)
					next++
				}
				if err := s.Write([]Update{{Entries: es}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(next-1)/b.Elapsed().Seconds(), "entries/s")
		})
	}

	for _, inflight := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("actor/inflight=%d", inflight), func(b *testing.B) {
			sys := newSystem(b)
			bs, err := OpenBolt(filepath.Join(b.TempDir(), "ketch.db"), BoltOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			d := &disk{under: bs}
			store := spawnStore(b, sys, d.open, Config{})
			done := make(chan struct{})
			total := uint64(b.N)
			var sent, acked uint64
			send := func(ctx actor.Context) {
				sent++
				ctx.Request(store, &WriteRequest{Epoch: 1, Seq: sent, Entries: []*pb.Entry{entry(sent)}})
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
				switch m := ctx.Message().(type) {
				case *actor.Started:
					for sent < total && sent < uint64(inflight) {
						send(ctx)
					}
				case *Durable:
					acked = m.Seq
					for sent < total && sent-acked < uint64(inflight) {
						send(ctx)
					}
					if acked == total {
						close(done)
					}
				}
			}))
			<-done
			elapsed := time.Since(start)
			b.StopTimer()
			fsyncs := len(d.current().writeCalls())
			b.ReportMetric(float64(total)/elapsed.Seconds(), "entries/s")
			b.ReportMetric(float64(total)/float64(fsyncs), "entries/fsync")
		})
	}
}

// BenchmarkCompaction measures the checkpoint of a compaction that drops
// 8,192 entries (the default snapshot interval) from the front of a
// 16,384-entry log in bbolt. A delete loop that restarts its cursor after
// each delete is quadratic here (bbolt rebalances emptied leaves only at
// commit); see deleteKeys.
//
//	go test ./logstore -run '^$' -bench Compaction -count 6 | benchstat -
func BenchmarkCompaction(b *testing.B) {
	data := make([]byte, 128)
	s, err := OpenBolt(filepath.Join(b.TempDir(), "ketch.db"), BoltOptions{UnsafeNoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	next := uint64(1)
	appendN := func(n int) {
		es := make([]*pb.Entry, n)
		for j := range es {
			es[j] = &pb.Entry{Index: next, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: data}
			next++
		}
		if err := s.Write([]Update{{Entries: es}}); err != nil {
			b.Fatal(err)
		}
	}
	appendN(8192)
	for b.Loop() {
		b.StopTimer()
		appendN(8192)
		s.mu.Lock()
		err := s.flushAll()
		s.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := s.Write([]Update{{Compact: &Compaction{Through: next - 8193, Term: 1}}}); err != nil {
			b.Fatal(err)
		}
		s.mu.Lock()
		err = s.flushAll()
		s.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
}
