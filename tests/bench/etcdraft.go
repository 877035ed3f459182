package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// The etcdraft system is go.etcd.io/raft/v3 driven the way etcd's server
// drives it (server/etcdserver/raft.go's raftNode.start and server.go's
// applyAll), with etcd's WAL, but with this harness's transport and an
// in-memory map instead of rafthttp and etcd's bbolt backend.
const (
	// etcd ticks once per heartbeat (HeartbeatTick 1, --heartbeat-interval)
	// and counts its election timeout in ticks: ketch's 50 ms and 300 ms.
	etcdTick         = 50 * time.Millisecond
	etcdElectionTick = 6
	// etcd's defaults (server/etcdserver/raft.go, server.go).
	etcdMaxSizePerMsg       = 1 << 20
	etcdMaxInflightMsgs     = 4096 / 8
	etcdSnapshotCount       = 10_000
	etcdSnapshotCatchUp     = 5_000
	etcdSendBuffer          = 4096 // rafthttp's streamBufSize
	etcdMaxFrame            = 64 << 20
	etcdRequestIDBytes      = 8
	etcdDialRetry           = 20 * time.Millisecond
	etcdDialTimeout         = time.Second
	etcdWriterBufferedBytes = 64 << 10
)

var errEtcdStopped = errors.New("etcdraft: node stopped")

type etcdCluster struct {
	nodes  []*etcdNode
	leader *etcdNode
	nextID atomic.Uint64 // request ids, as etcd's idutil.Generator
}

// etcdNode is one member: a raft.Node over a MemoryStorage, its WAL, its
// transport, and an apply goroutine with its KV.
type etcdNode struct {
	id      uint64
	node    raft.Node
	storage *raft.MemoryStorage
	wal     *wal.WAL
	tr      *etcdTransport
	applyc  chan etcdApply
	stop    chan struct{}
	wg      sync.WaitGroup
	leader  atomic.Bool

	mu      sync.Mutex
	waiters map[uint64]chan struct{} // request id -> done, on the proposer

	// Owned by the apply goroutine.
	kv        map[string][]byte
	confState raftpb.ConfState
	applied   uint64
	snapIndex uint64
}

// etcdApply is one Ready's committed entries for the apply goroutine;
// notifyc says that the Ready's entries are in the WAL and MemoryStorage.
type etcdApply struct {
	entries []raftpb.Entry
	notifyc chan struct{}
}

func startEtcdRaft(dir string, log *slog.Logger) (cluster, error) {
	lns := make([]net.Listener, 3)
	addrs := map[uint64]string{}
	for i := range lns {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lns[:i] {
				_ = l.Close()
			}
			return nil, err
		}
		lns[i] = l
		addrs[uint64(i+1)] = l.Addr().String()
	}
	peers := []raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}
	c := &etcdCluster{}
	rlog := &etcdLogger{log: log}
	for i, ln := range lns {
		id := uint64(i + 1)
		w, err := wal.Create(zap.NewNop(), filepath.Join(dir, fmt.Sprint(id), "wal"), nil)
		if err != nil {
			for _, l := range lns[i:] {
				_ = l.Close()
			}
			c.Close()
			return nil, fmt.Errorf("etcdraft: wal %d: %w", id, err)
		}
		n := &etcdNode{
			id: id, storage: raft.NewMemoryStorage(), wal: w,
			applyc: make(chan etcdApply, 1024), stop: make(chan struct{}),
			waiters: map[uint64]chan struct{}{}, kv: map[string][]byte{},
		}
		n.node = raft.StartNode(&raft.Config{
			ID: id, ElectionTick: etcdElectionTick, HeartbeatTick: 1,
			Storage: n.storage, MaxSizePerMsg: etcdMaxSizePerMsg, MaxInflightMsgs: etcdMaxInflightMsgs,
			CheckQuorum: true, PreVote: true, Logger: rlog,
		}, peers)
		n.tr = newEtcdTransport(id, ln, addrs, n.node, n.stop)
		n.wg.Add(2)
		go n.run()
		go n.applyLoop()
		c.nodes = append(c.nodes, n)
	}
	deadline := time.Now().Add(15 * time.Second)
	for c.leader == nil {
		if time.Now().After(deadline) {
			c.Close()
			return nil, errors.New("etcdraft: no leader within 15s")
		}
		for _, n := range c.nodes {
			if n.leader.Load() {
				c.leader = n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, warm(c)
}

// Put proposes id+key+value on the leader and waits until the leader has
// applied it, as etcd's server does with its wait.Wait keyed by request id.
func (c *etcdCluster) Put(ctx context.Context, key string, value []byte) error {
	n := c.leader
	id := c.nextID.Add(1)
	data := make([]byte, etcdRequestIDBytes, etcdRequestIDBytes+len(key)+len(value))
	binary.BigEndian.PutUint64(data, id)
	data = append(append(data, key...), value...)
	done := make(chan struct{}, 1)
	n.mu.Lock()
	n.waiters[id] = done
	n.mu.Unlock()
	forget := func() {
		n.mu.Lock()
		delete(n.waiters, id)
		n.mu.Unlock()
	}
	if err := n.node.Propose(ctx, data); err != nil {
		forget()
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		forget()
		return ctx.Err()
	case <-n.stop:
		return errEtcdStopped
	}
}

func (c *etcdCluster) Close() {
	for _, n := range c.nodes {
		close(n.stop)
		n.node.Stop()
	}
	for _, n := range c.nodes {
		n.tr.close()
		n.wg.Wait()
		_ = n.wal.Close()
	}
	c.nodes = nil
}

// run is the Ready loop in the order of etcd's raftNode.start: hand the
// committed entries to the apply goroutine; on the leader, send before
// its own write (Raft thesis §10.2.1: the leader writes its log in
// parallel with replicating it); save the HardState and entries to the WAL
// (fsync when raft.MustSync says so); append them to the MemoryStorage; on
// a follower, send only after the save; then Advance.
func (n *etcdNode) run() {
	defer n.wg.Done()
	t := time.NewTicker(etcdTick)
	defer t.Stop()
	islead := false
	for {
		select {
		case <-t.C:
			n.node.Tick()
		case rd := <-n.node.Ready():
			if rd.SoftState != nil {
				islead = rd.RaftState == raft.StateLeader
				n.leader.Store(islead)
			}
			notifyc := make(chan struct{}, 1)
			select {
			case n.applyc <- etcdApply{entries: rd.CommittedEntries, notifyc: notifyc}:
			case <-n.stop:
				return
			}
			if islead {
				n.tr.send(rd.Messages)
			}
			if err := n.wal.Save(rd.HardState, rd.Entries); err != nil {
				panic(fmt.Sprintf("etcdraft: node %d: WAL save: %v", n.id, err))
			}
			if err := n.storage.Append(rd.Entries); err != nil {
				panic(fmt.Sprintf("etcdraft: node %d: append to MemoryStorage: %v", n.id, err))
			}
			confChanged := false
			for _, e := range rd.CommittedEntries {
				if e.Type == raftpb.EntryConfChange {
					confChanged = true
					break
				}
			}
			if !islead {
				notifyc <- struct{}{}
				// etcd: a follower waits for pending configuration changes
				// to be applied before it sends.
				if confChanged {
					select {
					case notifyc <- struct{}{}:
					case <-n.stop:
						return
					}
				}
				n.tr.send(rd.Messages)
			} else {
				notifyc <- struct{}{}
			}
			n.node.Advance()
		case <-n.stop:
			return
		}
	}
}

// applyLoop applies committed entries in order, wakes their proposers,
// and every etcdSnapshotCount entries snapshots and compacts the
// MemoryStorage as etcd's snapshotIfNeededAndCompactRaftLog does.
func (n *etcdNode) applyLoop() {
	defer n.wg.Done()
	for {
		var ap etcdApply
		select {
		case ap = <-n.applyc:
		case <-n.stop:
			return
		}
		for i := range ap.entries {
			e := &ap.entries[i]
			if e.Index <= n.applied {
				continue
			}
			switch e.Type {
			case raftpb.EntryNormal:
				if len(e.Data) > 0 {
					n.applyPut(e.Data)
				}
			case raftpb.EntryConfChange:
				var cc raftpb.ConfChange
				if err := cc.Unmarshal(e.Data); err != nil {
					panic(fmt.Sprintf("etcdraft: node %d: conf change at %d: %v", n.id, e.Index, err))
				}
				n.confState = *n.node.ApplyConfChange(cc)
			}
			n.applied = e.Index
		}
		// Wait for the Ready's own entries to be stored before a snapshot
		// of the applied index can be taken.
		select {
		case <-ap.notifyc:
		case <-n.stop:
			return
		}
		if n.applied-n.snapIndex > etcdSnapshotCount {
			n.snapshot()
		}
	}
}

func (n *etcdNode) applyPut(data []byte) {
	if len(data) < etcdRequestIDBytes+keyBytes {
		return // not ours
	}
	id := binary.BigEndian.Uint64(data)
	kv := data[etcdRequestIDBytes:]
	n.kv[string(kv[:keyBytes])] = bytes.Clone(kv[keyBytes:])
	n.mu.Lock()
	done, ok := n.waiters[id]
	delete(n.waiters, id)
	n.mu.Unlock()
	if ok {
		done <- struct{}{}
	}
}

// snapshot records a snapshot of the applied index in the MemoryStorage
// and the WAL and compacts the MemoryStorage to etcdSnapshotCatchUp
// entries behind it. The snapshot carries no state: etcd's KV lives in its
// bbolt backend, not in the raft snapshot, and this map is not durable.
func (n *etcdNode) snapshot() {
	snap, err := n.storage.CreateSnapshot(n.applied, &n.confState, nil)
	if err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return
		}
		panic(fmt.Sprintf("etcdraft: node %d: snapshot at %d: %v", n.id, n.applied, err))
	}
	cs := snap.Metadata.ConfState
	if err := n.wal.SaveSnapshot(walpb.Snapshot{Index: snap.Metadata.Index, Term: snap.Metadata.Term, ConfState: &cs}); err != nil {
		panic(fmt.Sprintf("etcdraft: node %d: WAL snapshot: %v", n.id, err))
	}
	n.snapIndex = n.applied
	if n.applied > etcdSnapshotCatchUp {
		if err := n.storage.Compact(n.applied - etcdSnapshotCatchUp); err != nil && !errors.Is(err, raft.ErrCompacted) {
			panic(fmt.Sprintf("etcdraft: node %d: compact: %v", n.id, err))
		}
	}
}

// etcdTransport carries raftpb.Messages between the nodes over loopback
// TCP: one outgoing connection per peer, fed by a buffered queue (a full
// queue drops the message and reports the peer unreachable, as rafthttp
// does), frames of a 4-byte big-endian length and the marshalled message.
type etcdTransport struct {
	ln    net.Listener
	node  raft.Node
	stop  <-chan struct{}
	peers map[uint64]chan raftpb.Message
	wg    sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newEtcdTransport(self uint64, ln net.Listener, addrs map[uint64]string, node raft.Node, stop <-chan struct{}) *etcdTransport {
	t := &etcdTransport{ln: ln, node: node, stop: stop, peers: map[uint64]chan raftpb.Message{}, conns: map[net.Conn]struct{}{}}
	for id, a := range addrs {
		if id == self {
			continue
		}
		q := make(chan raftpb.Message, etcdSendBuffer)
		t.peers[id] = q
		t.wg.Go(func() { t.writer(a, q) })
	}
	t.wg.Go(t.accept)
	return t
}

func (t *etcdTransport) send(msgs []raftpb.Message) {
	for _, m := range msgs {
		q, ok := t.peers[m.To]
		if !ok {
			continue
		}
		select {
		case q <- m:
		default:
			t.node.ReportUnreachable(m.To)
			if m.Type == raftpb.MsgSnap {
				t.node.ReportSnapshot(m.To, raft.SnapshotFailure)
			}
		}
	}
}

// track remembers c so close can interrupt it; false once stopping.
func (t *etcdTransport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *etcdTransport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	_ = c.Close()
}

func (t *etcdTransport) close() {
	_ = t.ln.Close()
	t.mu.Lock()
	for c := range t.conns {
		_ = c.Close()
	}
	t.conns = nil
	t.mu.Unlock()
	t.wg.Wait()
}

// writer keeps a connection to addr and writes q's messages to it,
// flushing whenever q is empty; it redials after an error until stop.
func (t *etcdTransport) writer(addr string, q <-chan raftpb.Message) {
	d := net.Dialer{Timeout: etcdDialTimeout}
	var buf []byte
	for {
		select {
		case <-t.stop:
			return
		default:
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			select {
			case <-t.stop:
				return
			case <-time.After(etcdDialRetry):
				continue
			}
		}
		if !t.track(c) {
			_ = c.Close()
			return
		}
		bw := bufio.NewWriterSize(c, etcdWriterBufferedBytes)
		for err == nil {
			var m raftpb.Message
			select {
			case m = <-q:
			case <-t.stop:
				t.untrack(c)
				return
			}
			buf, err = appendFrame(buf[:0], &m)
			if err == nil {
				_, err = bw.Write(buf)
			}
			if err == nil && len(q) == 0 {
				err = bw.Flush()
			}
			if err != nil {
				t.node.ReportUnreachable(m.To)
			}
		}
		t.untrack(c)
	}
}

func appendFrame(buf []byte, m *raftpb.Message) ([]byte, error) {
	size := m.Size()
	if size > etcdMaxFrame {
		return buf, fmt.Errorf("etcdraft: message of %d bytes", size)
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(size))
	start := len(buf)
	buf = append(buf, make([]byte, size)...)
	_, err := m.MarshalTo(buf[start:])
	return buf, err
}

func (t *etcdTransport) accept() {
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return // closed
		}
		if !t.track(c) {
			_ = c.Close()
			return
		}
		t.wg.Go(func() { t.reader(c) })
	}
}

// reader steps every message read from c into the node. A frame longer
// than etcdMaxFrame or one that does not decode ends the connection.
func (t *etcdTransport) reader(c net.Conn) {
	defer t.untrack(c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-t.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	br := bufio.NewReaderSize(c, etcdWriterBufferedBytes)
	var hdr [4]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if size > etcdMaxFrame {
			return
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		var m raftpb.Message
		if err := m.Unmarshal(buf); err != nil { // copies the bytes it keeps
			return
		}
		if err := t.node.Step(ctx, m); err != nil {
			return
		}
	}
}

// etcdLogger is raft's Logger on the harness's slog logger.
type etcdLogger struct{ log *slog.Logger }

func (l *etcdLogger) out(level slog.Level, msg func() string) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, msg())
	}
}

func (l *etcdLogger) Debug(v ...any) {
	l.out(slog.LevelDebug, func() string { return fmt.Sprint(v...) })
}
func (l *etcdLogger) Debugf(f string, v ...any) {
	l.out(slog.LevelDebug, func() string { return fmt.Sprintf(f, v...) })
}
func (l *etcdLogger) Info(v ...any) { l.out(slog.LevelInfo, func() string { return fmt.Sprint(v...) }) }
func (l *etcdLogger) Infof(f string, v ...any) {
	l.out(slog.LevelInfo, func() string { return fmt.Sprintf(f, v...) })
}
func (l *etcdLogger) Warning(v ...any) {
	l.out(slog.LevelWarn, func() string { return fmt.Sprint(v...) })
}
func (l *etcdLogger) Warningf(f string, v ...any) {
	l.out(slog.LevelWarn, func() string { return fmt.Sprintf(f, v...) })
}
func (l *etcdLogger) Error(v ...any) {
	l.out(slog.LevelError, func() string { return fmt.Sprint(v...) })
}
func (l *etcdLogger) Errorf(f string, v ...any) {
	l.out(slog.LevelError, func() string { return fmt.Sprintf(f, v...) })
}
func (l *etcdLogger) Fatal(v ...any)            { panic(fmt.Sprint(v...)) }
func (l *etcdLogger) Fatalf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
func (l *etcdLogger) Panic(v ...any)            { panic(fmt.Sprint(v...)) }
func (l *etcdLogger) Panicf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
