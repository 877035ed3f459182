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
	"path/filepath"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/logger"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Dragonboat counts its timers in RTTs of dbRTT (its tick): a heartbeat
// every 5 and an election timeout of 30, ketch's 50 ms and 300 ms (fsm's
// defaults). Dragonboat, like ketch, draws the election timeout from
// [E, 2E). A 10 ms tick rather than a 50 ms one (heartbeat = 1 RTT, as
// the etcdraft system ticks) keeps its tick-counted request timeouts
// close to the clients' contexts; at N = 1 the two were within noise.
const (
	dbShard        = 1
	dbRTT          = 10 // ms
	dbHeartbeatRTT = 5
	dbElectionRTT  = 30
	// dbSnapshotEntries and dbCompactionOverhead are etcd's defaults
	// (a snapshot every 10,000 entries, 5,000 kept behind it), so the log
	// and the heap stay bounded as ketch's do; dragonboat's own default is
	// no snapshots and a log that only grows.
	dbSnapshotEntries    = 10_000
	dbCompactionOverhead = 5_000
)

// dbLoggerOnce sets dragonboat's logger factory, which it allows once per
// process; every later cluster logs through the first one's logger.
var dbLoggerOnce sync.Once

// dragonboatCluster is three dragonboat v4 NodeHosts in this process, each
// with its own directory, the default LogDB (pebble, writes with Sync, so
// fsync is on) and the default TCP transport on loopback, holding one
// 3-replica shard whose state machine is an in-memory map.
type dragonboatCluster struct {
	hosts   []*dragonboat.NodeHost
	leader  *dragonboat.NodeHost
	session *client.Session
}

func startDragonboat(dir string, log *slog.Logger) (cluster, error) {
	dbLoggerOnce.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger { return &dbLogger{log: log.With("pkg", pkg)} })
	})
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	members := map[uint64]dragonboat.Target{}
	for i, a := range addrs {
		members[uint64(i+1)] = a
	}
	d := &dragonboatCluster{}
	for i, addr := range addrs {
		nh, err := dragonboat.NewNodeHost(config.NodeHostConfig{
			NodeHostDir:    filepath.Join(dir, fmt.Sprint(i+1)),
			RTTMillisecond: dbRTT,
			RaftAddress:    addr,
		})
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("dragonboat: node host %d: %w", i+1, err)
		}
		d.hosts = append(d.hosts, nh)
	}
	// Every host listens before any replica campaigns.
	for i, nh := range d.hosts {
		rc := config.Config{
			ReplicaID: uint64(i + 1), ShardID: dbShard,
			ElectionRTT: dbElectionRTT, HeartbeatRTT: dbHeartbeatRTT,
			CheckQuorum: true, PreVote: true, // as ketch and etcd
			SnapshotEntries: dbSnapshotEntries, CompactionOverhead: dbCompactionOverhead,
		}
		if err := nh.StartReplica(members, false, newDBKV, rc); err != nil {
			d.Close()
			return nil, fmt.Errorf("dragonboat: replica %d: %w", i+1, err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for d.leader == nil {
		if time.Now().After(deadline) {
			d.Close()
			return nil, errors.New("dragonboat: no leader within 15s")
		}
		for _, nh := range d.hosts {
			id, _, ok, err := nh.GetLeaderID(dbShard)
			if err == nil && ok && id >= 1 && id <= uint64(len(d.hosts)) {
				d.leader = d.hosts[id-1]
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A no-op session: no dedup on the replicas, as none of the other
	// systems has it on this path; it is safe for concurrent use.
	d.session = d.leader.GetNoOPSession(dbShard)
	return d, warm(d)
}

// Put proposes key+value on the leader; SyncPropose returns once the entry
// is committed and applied to the leader's state machine (NotifyCommit is
// off).
func (d *dragonboatCluster) Put(ctx context.Context, key string, value []byte) error {
	cmd := make([]byte, 0, len(key)+len(value))
	cmd = append(append(cmd, key...), value...)
	_, err := d.leader.SyncPropose(ctx, d.session, cmd)
	return err
}

func (d *dragonboatCluster) Close() {
	for _, nh := range d.hosts {
		nh.Close()
	}
	d.hosts = nil
}

// dbKV is dragonboat's in-memory state machine: a command is a 16-byte key
// followed by the value. Dragonboat never calls Update concurrently with
// itself or with SaveSnapshot on a regular (IStateMachine) state machine.
type dbKV struct {
	m map[string][]byte
}

func newDBKV(uint64, uint64) sm.IStateMachine { return &dbKV{m: map[string][]byte{}} }

func (s *dbKV) Update(e sm.Entry) (sm.Result, error) {
	if len(e.Cmd) < keyBytes {
		return sm.Result{}, fmt.Errorf("command of %d bytes is shorter than a key", len(e.Cmd))
	}
	s.m[string(e.Cmd[:keyBytes])] = bytes.Clone(e.Cmd[keyBytes:])
	return sm.Result{Value: 1}, nil
}

func (s *dbKV) Lookup(q any) (any, error) {
	k, ok := q.(string)
	if !ok {
		return nil, fmt.Errorf("lookup of a %T, want a string key", q)
	}
	return s.m[k], nil
}

// SaveSnapshot writes the map as (uvarint length, bytes) pairs.
func (s *dbKV) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	bw := bufio.NewWriter(w)
	var n [binary.MaxVarintLen64]byte
	put := func(b []byte) {
		_, _ = bw.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		_, _ = bw.Write(b)
	}
	for k, v := range s.m {
		put([]byte(k))
		put(v)
	}
	return bw.Flush()
}

func (s *dbKV) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	br := bufio.NewReader(r)
	get := func() ([]byte, error) {
		l, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		if l > 1<<20 {
			return nil, fmt.Errorf("snapshot field of %d bytes", l)
		}
		b := make([]byte, l)
		_, err = io.ReadFull(br, b)
		return b, err
	}
	m := map[string][]byte{}
	for {
		k, err := get()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		v, err := get()
		if err != nil {
			return err
		}
		m[string(k)] = v
	}
	s.m = m
	return nil
}

func (s *dbKV) Close() error { return nil }

// dbLogger sends dragonboat's logs to the harness's slog logger, at the
// harness's level (errors only by default).
type dbLogger struct{ log *slog.Logger }

func (l *dbLogger) SetLevel(logger.LogLevel) {}

func (l *dbLogger) logf(level slog.Level, format string, args []any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (l *dbLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args) }
func (l *dbLogger) Infof(format string, args ...any)  { l.logf(slog.LevelInfo, format, args) }
func (l *dbLogger) Warningf(format string, args ...any) {
	l.logf(slog.LevelWarn, format, args)
}
func (l *dbLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args) }
func (l *dbLogger) Panicf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
