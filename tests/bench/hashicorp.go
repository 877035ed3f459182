package main

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// hashicorpCluster is three hashicorp/raft nodes in this process: bbolt
// (raft-boltdb/v2, fsync on) behind raft's usual 512-entry LogCache, a
// TCP transport on loopback, a file snapshot store, and an in-memory KV
// FSM. The config is raft.DefaultConfig() with only LocalID and a quiet
// Logger set; timeouts, batching (MaxAppendEntries 64) and snapshot
// thresholds are the defaults.
type hashicorpCluster struct {
	nodes  []*hcNode
	leader *raft.Raft
}

type hcNode struct {
	raft  *raft.Raft
	trans *raft.NetworkTransport
	store *raftboltdb.BoltStore
}

func startHashicorp(dir string, log *slog.Logger) (cluster, error) {
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	level := hclog.Error
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	var servers []raft.Server
	for i, a := range addrs {
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint(i + 1)), Address: raft.ServerAddress(a)})
	}
	h := &hashicorpCluster{}
	for i, addr := range addrs {
		id := fmt.Sprint(i + 1)
		nd := filepath.Join(dir, id)
		if err := os.MkdirAll(nd, 0o755); err != nil {
			h.Close()
			return nil, err
		}
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(id)
		conf.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft-" + id, Level: level, Output: os.Stderr})

		store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(nd, "raft.db")})
		if err != nil {
			h.Close()
			return nil, err
		}
		logs, err := raft.NewLogCache(512, store)
		if err != nil {
			_ = store.Close()
			h.Close()
			return nil, err
		}
		snaps, err := raft.NewFileSnapshotStore(nd, 1, io.Discard)
		if err != nil {
			_ = store.Close()
			h.Close()
			return nil, err
		}
		trans, err := raft.NewTCPTransport(addr, nil, 3, 10*time.Second, io.Discard)
		if err != nil {
			_ = store.Close()
			h.Close()
			return nil, err
		}
		if err := raft.BootstrapCluster(conf, logs, store, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			_ = trans.Close()
			_ = store.Close()
			h.Close()
			return nil, err
		}
		r, err := raft.NewRaft(conf, newKVFSM(), logs, store, snaps, trans)
		if err != nil {
			_ = trans.Close()
			_ = store.Close()
			h.Close()
			return nil, err
		}
		h.nodes = append(h.nodes, &hcNode{raft: r, trans: trans, store: store})
	}
	deadline := time.Now().Add(15 * time.Second)
	for h.leader == nil {
		if time.Now().After(deadline) {
			h.Close()
			return nil, errors.New("hashicorp: no leader within 15s")
		}
		for _, n := range h.nodes {
			if n.raft.State() == raft.Leader {
				h.leader = n.raft
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return h, warm(h)
}

// Put applies key+value on the leader; the future's Error returns once the
// entry is committed and applied to the leader's FSM.
func (h *hashicorpCluster) Put(ctx context.Context, key string, value []byte) error {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	cmd := make([]byte, 0, len(key)+len(value))
	cmd = append(append(cmd, key...), value...)
	f := h.leader.Apply(cmd, timeout)
	if err := f.Error(); err != nil {
		return err
	}
	if err, ok := f.Response().(error); ok {
		return err
	}
	return nil
}

func (h *hashicorpCluster) Close() {
	for _, n := range h.nodes {
		_ = n.raft.Shutdown().Error()
		// Close the pooled outgoing connections too, or the peers'
		// handlers stay blocked reading them after their Close.
		n.trans.CloseStreams()
		_ = n.trans.Close()
		_ = n.store.Close()
	}
	h.nodes = nil
}

// kvFSM is an in-memory key-value state machine: a command is a 16-byte
// key followed by the value.
type kvFSM struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newKVFSM() *kvFSM { return &kvFSM{m: map[string][]byte{}} }

func (f *kvFSM) Apply(l *raft.Log) any {
	if len(l.Data) < keyBytes {
		return fmt.Errorf("command of %d bytes is shorter than a key", len(l.Data))
	}
	f.mu.Lock()
	f.m[string(l.Data[:keyBytes])] = bytes.Clone(l.Data[keyBytes:])
	f.mu.Unlock()
	return nil
}

func (f *kvFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return kvSnapshot(maps.Clone(f.m)), nil
}

func (f *kvFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	m := map[string][]byte{}
	if err := gob.NewDecoder(rc).Decode(&m); err != nil {
		return err
	}
	f.mu.Lock()
	f.m = m
	f.mu.Unlock()
	return nil
}

type kvSnapshot map[string][]byte

func (s kvSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := gob.NewEncoder(sink).Encode(map[string][]byte(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s kvSnapshot) Release() {}
