package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/kv"
	"github.com/ketch-raft/ketch/actors/protocol"
	"github.com/ketch-raft/ketch/fsm"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// waitFor returns the first message of type T the inbox received from
// index from on, waiting up to 5 s.
func waitFor[T any](t *testing.T, b *inbox, from int) (T, int) {
	t.Helper()
	for i := from; ; i++ {
		if m, ok := b.wait(t, i).(T); ok {
			return m, i
		}
	}
}

// ask sends msg to the state actor as the fsm and returns the first answer
// of type T.
func ask[T any](t *testing.T, h *stateHarness, msg any) T {
	t.Helper()
	n := h.fsm.len()
	h.sys.Root.RequestWithCustomSender(h.state, msg, h.fsmP)
	m, _ := waitFor[T](t, h.fsm, n)
	return m
}

// Raft §7 in the state actor: after SnapshotEntries applied entries a
// snapshot is written and reported to the fsm; a restarted state actor
// restores it (sessions included) instead of starting empty.
func TestSnapshotTakenAndRestored(t *testing.T) {
	dir := t.TempDir()
	h := newStateHarnessWith(t, Config{Dir: dir, SnapshotEntries: 10})
	h.apply(1, 1, 12)
	taken, _ := waitFor[*protocol.SnapshotTaken](t, h.fsm, 0)
	if taken.Meta.Index != 12 && taken.Meta.Index != 10 || taken.Meta.Term != 1 || taken.Bytes == 0 {
		t.Fatalf("SnapshotTaken %+v", taken)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "snap-*.ksnap"))
	if len(files) != 1 {
		t.Fatalf("snapshot files %v, want one", files)
	}
	// A restart: the state comes back from the snapshot, sessions
	// included: a retry of client 1's last command in the snapshot is
	// answered with its first result, not applied again.
	h.sys.Root.Send(h.state, &Crash{Reason: "test"})
	info := h.query(2)
	if info.Index != taken.Meta.Index || info.Snapshot != taken.Meta {
		t.Fatalf("after a restart AppliedInfo %+v, want the snapshot %v", info, taken.Meta)
	}
	last := taken.Meta.Index
	retry := putEntry(t, last+1, 1, last, "k", []byte("retried"))
	n := h.client.len()
	h.sys.Root.RequestWithCustomSender(h.state, &protocol.ApplyRequest{Epoch: 2, Entries: []*pb.Entry{retry},
		Waiters: []protocol.Waiter{{Index: last + 1, ReplyTo: h.clientP, Typed: true}}}, h.fsmP)
	if r := h.client.wait(t, n).(*pb.ClientResponse); r.Index != last {
		t.Fatalf("the retry was answered at index %d, want %d (the first application)", r.Index, last)
	}
	h.sys.Root.Send(h.state, &protocol.ReadRequest{Index: last + 1, Query: getQuery(t, "k"), Typed: true, ReplyTo: h.clientP, ClientID: 9, SeqNum: 1})
	if got := h.client.wait(t, n+1).(*pb.ClientResponse); string(got.Value) == "retried" || !got.Found {
		t.Fatalf("after the retry k is %+v: applied again after the restore", got)
	}
}

// A snapshot being written does not hold applies back, and the state it
// writes is the state at the moment it was taken.
func TestSnapshotIsThePointInTimeState(t *testing.T) {
	dir := t.TempDir()
	h := newStateHarnessWith(t, Config{Dir: dir, SnapshotEntries: -1, SnapshotBytes: -1})
	h.apply(1, 1, 5)
	done := make(chan *pb.SnapshotResponse, 1)
	reply := h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(*pb.SnapshotResponse); ok {
			done <- r
		}
	}))
	h.sys.Root.Send(h.state, &protocol.SnapshotNow{ReplyTo: reply})
	h.apply(1, 6, 8) // applied while (or after) it is written
	var r *pb.SnapshotResponse
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no SnapshotResponse")
	}
	if !r.Ok || r.Index != 5 {
		t.Fatalf("SnapshotResponse %+v, want ok through 5", r)
	}

	sf, err := verifySnapFile(filepath.Join(dir, snapName(fsm.SnapshotMeta{Index: 5, Term: 1})))
	if err != nil {
		t.Fatal(err)
	}
	a := &stateActor{cfg: Config{New: kv.NewStateMachine, MaxSessions: DefaultMaxSessions}}
	sm, sess, err := a.readSnapshot(sf)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := sm.Query(getQuery(t, "k")); len(v) == 0 {
		t.Fatal("the restored state has no k")
	}
	if ss, ok := sess.get(1); !ok || ss.seq != 5 {
		t.Fatalf("the restored session of client 1 is %+v, want sequence 5", ss)
	}
}

// A snapshot asked for while another is being written is answered with
// one through the index applied when it was asked, not with the one being
// written.
func TestSnapshotAskedDuringAWriteWaitsForTheNext(t *testing.T) {
	h := newStateHarnessWith(t, Config{Dir: t.TempDir(), SnapshotEntries: -1, SnapshotBytes: -1})
	applyKeys(t, h, 1, 2000) // a snapshot that takes a moment to write
	done := make(chan *pb.SnapshotResponse, 2)
	reply := h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(*pb.SnapshotResponse); ok {
			done <- r
		}
	}))
	h.sys.Root.Send(h.state, &protocol.SnapshotNow{ReplyTo: reply})
	h.apply(1, 2001, 2003)
	h.sys.Root.Send(h.state, &protocol.SnapshotNow{ReplyTo: reply})
	for _, want := range []uint64{2000, 2003} {
		select {
		case r := <-done:
			if !r.Ok || r.Index != want {
				t.Fatalf("SnapshotResponse %+v, want ok through %d", r, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no SnapshotResponse through %d", want)
		}
	}
}

// A snapshot asked for while one through the same applied index is being
// written is answered with that one, and the file stays: a second write
// of the same index would go under the latest's name and be removed as
// overtaken, leaving the node with a compacted log and no snapshot file (a
// leader could then send no snapshot; found by tests/process
// TestReplaceEveryServer, where `ketch snapshot` met an automatic one).
func TestSnapshotAskedDuringAWriteOfTheSameIndexKeepsTheFile(t *testing.T) {
	dir := t.TempDir()
	h := newStateHarnessWith(t, Config{Dir: dir, SnapshotEntries: -1, SnapshotBytes: -1})
	applyKeys(t, h, 1, 2000) // a snapshot that takes a moment to write
	done := make(chan *pb.SnapshotResponse, 2)
	reply := h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(*pb.SnapshotResponse); ok {
			done <- r
		}
	}))
	h.sys.Root.Send(h.state, &protocol.SnapshotNow{ReplyTo: reply})
	h.sys.Root.Send(h.state, &protocol.SnapshotNow{ReplyTo: reply})
	for range 2 {
		select {
		case r := <-done:
			if !r.Ok || r.Index != 2000 {
				t.Fatalf("SnapshotResponse %+v, want ok through 2000", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no SnapshotResponse")
		}
	}
	// Both answered: a second write, if any, has ended too.
	snapshotNow(t, h)
	files, _ := filepath.Glob(filepath.Join(dir, "snap-*.ksnap"))
	if len(files) != 1 {
		t.Fatalf("snapshot files %v, want the one through 2000", files)
	}
	got := ask[*protocol.ChunkRead](t, h, &protocol.ReadChunk{Epoch: 1, ReadChunk: fsm.ReadChunk{Peer: 2, Meta: fsm.SnapshotMeta{Index: 2000, Term: 1}, MaxBytes: 1 << 10}})
	if got.Err != nil {
		t.Fatalf("reading the latest snapshot for a follower: %v", got.Err)
	}
}

// Serving and receiving: a leader's state actor reads chunks of its latest
// snapshot, pinned for the follower even once a newer one replaces it; a
// follower's stages them in order, refuses one at the wrong offset, checks
// the whole file, and installs it.
func TestSnapshotTransferBetweenStateActors(t *testing.T) {
	leaderDir, followerDir := t.TempDir(), t.TempDir()
	lead := newStateHarnessWith(t, Config{Dir: leaderDir, SnapshotEntries: -1, SnapshotBytes: -1})
	applyKeys(t, lead, 1, 40)
	lead.apply(1, 41, 41) // and k
	meta := snapshotNow(t, lead)
	// Read the whole file in chunks of 64 bytes.
	var file []byte
	var size uint64
	var crc uint32
	for off := uint64(0); size == 0 || off < size; {
		c := ask[*protocol.ChunkRead](t, lead, &protocol.ReadChunk{Epoch: 3, ReadChunk: fsm.ReadChunk{Peer: 2, Meta: meta, Offset: off, MaxBytes: 64}})
		if c.Err != nil || c.Epoch != 3 {
			t.Fatalf("ReadChunk at %d: %+v", off, c)
		}
		size, crc = c.Size, c.FileCRC
		file = append(file, c.Data...)
		off += uint64(len(c.Data))
		if off == 64 {
			// A newer snapshot replaces the one being sent: the pinned
			// file is still read.
			lead.apply(1, 42, 45)
			snapshotNow(t, lead)
		}
	}
	if len(file) != int(size) {
		t.Fatalf("read %d bytes of %d", len(file), size)
	}
	// A read of a snapshot that is not pinned and not the latest fails.
	if c := ask[*protocol.ChunkRead](t, lead, &protocol.ReadChunk{Epoch: 3, ReadChunk: fsm.ReadChunk{Peer: 3, Meta: meta, Offset: 0, MaxBytes: 64}}); c.Err == nil {
		t.Fatal("a replaced snapshot was served to another peer")
	}

	fol := newStateHarnessWith(t, Config{Dir: followerDir, SnapshotEntries: -1, SnapshotBytes: -1})
	stage := func(off uint64, n int, done bool) *protocol.ChunkStaged {
		end := min(off+uint64(n), size)
		return ask[*protocol.ChunkStaged](t, fol, &protocol.StageChunk{Epoch: 5, StageChunk: fsm.StageChunk{
			Meta: meta, Size: size, FileCRC: crc, Offset: off, Data: file[off:end], Done: done}})
	}
	if r := stage(0, 100, false); r.Err != nil || r.Offset != 100 {
		t.Fatalf("chunk 0: %+v", r)
	}
	if r := stage(150, 50, false); r.Err == nil {
		t.Fatalf("a chunk past the staged file's end was staged: %+v", r)
	}
	// A restart keeps the staged file: the transfer resumes.
	fol.sys.Root.Send(fol.state, &Crash{Reason: "test"})
	if info := fol.query(6); info.Staging.Offset != 100 || info.Staging.Meta != meta || info.Staging.FileCRC != crc {
		t.Fatalf("after a restart AppliedInfo %+v, want the staged 100 bytes", info)
	}
	r := stage(100, int(size), true)
	if r.Err != nil || !r.Done || r.Offset != size {
		t.Fatalf("the last chunk: %+v", r)
	}
	in := ask[*protocol.AppliedInfo](t, fol, &protocol.InstallSnapshot{Epoch: 7, Meta: meta})
	if in.Epoch != 7 || in.Index != meta.Index {
		t.Fatalf("install answered %+v", in)
	}
	fol.sys.Root.Send(fol.state, &protocol.ReadRequest{Index: meta.Index, Query: getQuery(t, "k"), Typed: true, ReplyTo: fol.clientP, ClientID: 9, SeqNum: 1})
	if resp := fol.client.wait(t, 0).(*pb.ClientResponse); !resp.Found || len(resp.Value) != 1 || resp.Value[0] != byte(meta.Index) {
		t.Fatalf("a read after the install: %+v", resp)
	}
}

// A staged file whose bytes do not match the checksum the leader offered is
// refused and discarded.
func TestDamagedTransferIsRefused(t *testing.T) {
	lead := newStateHarnessWith(t, Config{Dir: t.TempDir(), SnapshotEntries: -1, SnapshotBytes: -1})
	lead.apply(1, 1, 10)
	meta := snapshotNow(t, lead)
	c := ask[*protocol.ChunkRead](t, lead, &protocol.ReadChunk{Epoch: 1, ReadChunk: fsm.ReadChunk{Peer: 2, Meta: meta, Offset: 0, MaxBytes: 1 << 20}})
	data := append([]byte(nil), c.Data...)
	data[len(data)/2] ^= 1
	fdir := t.TempDir()
	fol := newStateHarnessWith(t, Config{Dir: fdir})
	r := ask[*protocol.ChunkStaged](t, fol, &protocol.StageChunk{Epoch: 1, StageChunk: fsm.StageChunk{
		Meta: meta, Size: c.Size, FileCRC: c.FileCRC, Offset: 0, Data: data, Done: true}})
	if r.Err == nil || r.Done {
		t.Fatalf("a damaged snapshot was accepted: %+v", r)
	}
	if left, _ := os.ReadDir(fdir); len(left) != 0 {
		t.Fatalf("left in the snapshot directory: %v", left)
	}
}

// A latest snapshot that fails its checksum at a start stops the node
// (OnCorrupt, an error wrapping logstore.ErrCorrupt) instead of serving a
// state it cannot trust.
func TestCorruptSnapshotStopsTheNode(t *testing.T) {
	dir := t.TempDir()
	h := newStateHarnessWith(t, Config{Dir: dir, SnapshotEntries: -1, SnapshotBytes: -1})
	h.apply(1, 1, 10)
	meta := snapshotNow(t, h)
	h.sys.Root.Stop(h.state)
	path := filepath.Join(dir, snapName(meta))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got error
	h2 := newStateHarnessWith(t, Config{Dir: dir, OnCorrupt: func(err error) { mu.Lock(); got = err; mu.Unlock() }})
	_ = h2
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		err := got
		mu.Unlock()
		if err != nil {
			if !errors.Is(err, logstore.ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("OnCorrupt got %v, want an ErrCorrupt naming %s", err, path)
			}
			return
		}
		time.Sleep(time.Millisecond) // polling tick
	}
	t.Fatal("a corrupt snapshot did not stop the node")
}

// applyKeys applies puts of keys k<i> (32-byte values) at indexes lo..hi.
func applyKeys(t *testing.T, h *stateHarness, lo, hi uint64) {
	t.Helper()
	req := &protocol.ApplyRequest{Epoch: 1}
	for i := lo; i <= hi; i++ {
		req.Entries = append(req.Entries, putEntry(t, i, 100+i, 1, fmt.Sprint("k", i), []byte(strings.Repeat("v", 32))))
	}
	ask[*protocol.AppliedInfo](t, h, req)
}

// snapshotNow asks for a snapshot and waits until it is durable.
func snapshotNow(t *testing.T, h *stateHarness) fsm.SnapshotMeta {
	t.Helper()
	done := make(chan *pb.SnapshotResponse, 1)
	reply := h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(*pb.SnapshotResponse); ok {
			done <- r
		}
	}))
	defer h.sys.Root.Stop(reply)
	h.sys.Root.Send(h.state, &protocol.SnapshotNow{ReplyTo: reply})
	select {
	case r := <-done:
		if !r.Ok {
			t.Fatalf("snapshot: %s", r.Error)
		}
		return fsm.SnapshotMeta{Index: r.Index, Term: r.Term}
	case <-time.After(5 * time.Second):
		t.Fatal("no SnapshotResponse")
	}
	return fsm.SnapshotMeta{}
}

// The snapshot policy's expansion factor (thesis §5.1.1): with a state far
// larger than SnapshotEntries small commands, the next snapshot waits until
// the commands since the latest add up to its size; with the factor off it
// comes after SnapshotEntries entries.
func TestSnapshotWaitsForTheLogToOutgrowTheState(t *testing.T) {
	for _, growth := range []float64{0, -1} { // the default (1), off
		t.Run(fmt.Sprint(growth), func(t *testing.T) {
			h := newStateHarnessWith(t, Config{Dir: t.TempDir(), SnapshotEntries: 10, SnapshotGrowth: growth})
			applyKeys(t, h, 1, 200)
			meta := snapshotNow(t, h)
			for from := 0; ; {
				m, i := waitFor[*protocol.SnapshotTaken](t, h.fsm, from)
				if m.Meta == meta {
					break
				}
				from = i + 1
			}
			taken := func() (n int, last *protocol.SnapshotTaken) {
				h.fsm.mu.Lock()
				defer h.fsm.mu.Unlock()
				for _, m := range h.fsm.msgs {
					if s, ok := m.(*protocol.SnapshotTaken); ok {
						n, last = n+1, s
					}
				}
				return n, last
			}
			n0, first := taken()
			// 40 one-byte overwrites of k: about 2.5 KB of log, a fifth
			// of the snapshot.
			h.apply(1, 201, 240)
			if growth == -1 {
				// With the factor off one follows the 40 entries.
				for from := 0; ; {
					m, i := waitFor[*protocol.SnapshotTaken](t, h.fsm, from)
					if m.Meta.Index > meta.Index {
						return
					}
					from = i + 1
				}
			}
			// The state actor handles the ApplyRequest's maybeSnapshot
			// before it answers; a snapshot it started would be reported
			// within this.
			time.Sleep(100 * time.Millisecond)
			n1, _ := taken()
			if n1 != n0 {
				t.Fatalf("a snapshot of %d bytes was followed by another after 40 small entries", first.Bytes)
			}
			for lo := uint64(241); ; lo += 50 {
				h.apply(1, lo, lo+49)
				if n, last := taken(); n > n0 {
					if last.Meta.Index < 300 {
						t.Fatalf("the next snapshot came at index %d, before the log outgrew the %d-byte state", last.Meta.Index, first.Bytes)
					}
					return
				}
				if lo > 5000 {
					t.Fatal("no snapshot after 4,800 more entries")
				}
			}
		})
	}
}

// thesis §4.1: every snapshot's header records the configuration in effect
// at its last index: the last configuration entry applied. A server that
// joined (no bootstrap members) takes no snapshot before it knows one.
func TestSnapshotRecordsTheConfiguration(t *testing.T) {
	dir := t.TempDir()
	h := newStateHarnessWith(t, Config{Dir: dir, SnapshotEntries: -1, SnapshotBytes: -1, Members: []*pb.Member{}})
	applyKeys(t, h, 1, 3)
	done := make(chan *pb.SnapshotResponse, 1)
	reply := h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(*pb.SnapshotResponse); ok {
			done <- r
		}
	}))
	h.sys.Root.Send(h.state, &protocol.SnapshotNow{ReplyTo: reply})
	if r := <-done; r.Ok || !strings.Contains(r.Error, "configuration") {
		t.Fatalf("a joined server without a configuration snapshotted: %+v", r)
	}
	conf := &pb.Configuration{Members: []*pb.Member{
		{Id: 1, Address: "a:1", Role: pb.MemberRole_MEMBER_ROLE_VOTER},
		{Id: 7, Address: "a:7", Role: pb.MemberRole_MEMBER_ROLE_LEARNER},
	}}
	data, err := proto.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	ask[*protocol.AppliedInfo](t, h, &protocol.ApplyRequest{Epoch: 1, Entries: []*pb.Entry{{Index: 4, Term: 1, Type: pb.EntryType_ENTRY_TYPE_CONFIG, Data: data}}})
	applyKeys(t, h, 5, 6)
	if meta := snapshotNow(t, h); meta.Index != 6 {
		t.Fatalf("snapshot through %d, want 6", meta.Index)
	}
	sf, err := openSnapFile(filepath.Join(dir, snapName(fsm.SnapshotMeta{Index: 6, Term: 1})))
	if err != nil {
		t.Fatal(err)
	}
	if c := sf.config(); c.Index != 4 || !proto.Equal(c.Config, conf) {
		t.Fatalf("the header records configuration %v at %d, want %v at 4", c.Config, c.Index, conf)
	}
	// A restart gives the fsm the snapshot's configuration.
	info := ask[*protocol.AppliedInfo](t, newStateHarnessWith(t, Config{Dir: dir, Members: []*pb.Member{}}), &protocol.AppliedQuery{Epoch: 9})
	if info.SnapshotConfig.Index != 4 || !proto.Equal(info.SnapshotConfig.Config, conf) {
		t.Fatalf("after a restart AppliedInfo carries %v at %d", info.SnapshotConfig.Config, info.SnapshotConfig.Index)
	}
}
