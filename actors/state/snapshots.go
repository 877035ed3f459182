package state

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/protocol"
	"github.com/ketch-raft/ketch/actors/statemachine"
	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
)

// The state actor's snapshots (Raft §7): it owns the snapshot directory.
//
//   - Taking one: after Config.SnapshotEntries applied entries (or
//     Config.SnapshotBytes of commands), or when asked (SnapshotNow), the
//     session table and the state machine are frozen between two applies
//     and written by a goroutine of their own while applies go on
//     (writeSnapFile); when the file is durable the views are released,
//     older snapshots removed, and the fsm told (protocol.SnapshotTaken),
//     which compacts the log behind it.
//   - Serving one: the fsm of a leader reads chunks of the latest snapshot
//     for a follower (ReadChunk); the file is kept open for that follower
//     (pinned) until EndTransfer, so a newer snapshot replacing it does
//     not pull it away mid-transfer.
//   - Receiving one: chunks are appended to the staged file and fsynced
//     before they are answered (StageChunk); the last one is checked
//     against the file's size and checksum and renamed into place; the
//     fsm then decides (Figure 13) and asks for the restore
//     (InstallSnapshot).
//   - Starting: the latest snapshot is restored, leftovers of interrupted
//     writes removed, and a staged file kept for the transfer to resume.

// snapshotWritten reports the end of a snapshot writer goroutine.
type snapshotWritten struct {
	inc  uint64
	file *snapFile
	err  error
	took time.Duration
}

// pin is a snapshot file kept open for one follower's transfer.
type pin struct {
	file *snapFile
	f    *os.File
}

// staged is the snapshot being received.
type staged struct {
	st   fsm.Staging
	path string
	f    *os.File
}

// startSnapshots loads the snapshot directory at a (re)start: removes
// leftovers of interrupted writes and every snapshot but the latest,
// restores the latest, and reopens a staged file.
func (a *stateActor) startSnapshots() error {
	dir := a.cfg.Dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state: cannot create the snapshot directory: %w", err)
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("state: cannot read the snapshot directory: %w", err)
	}
	var snaps []*snapFile
	for _, d := range names {
		name, path := d.Name(), filepath.Join(dir, d.Name())
		switch {
		case strings.HasPrefix(name, ".tmp-"):
			_ = os.Remove(path) // a write a crash interrupted
		case strings.HasPrefix(name, "snap-") && strings.HasSuffix(name, ".ksnap"):
			sf, err := openSnapFile(path)
			if err != nil {
				return err
			}
			snaps = append(snaps, sf)
		case strings.HasPrefix(name, "staging-"):
			st, ok := parseStagingName(name)
			info, ierr := d.Info()
			if !ok || ierr != nil || a.staged != nil {
				_ = os.Remove(path)
				continue
			}
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return fmt.Errorf("state: cannot reopen the staged snapshot %s: %w", path, err)
			}
			st.Offset = uint64(info.Size())
			a.staged = &staged{st: st, path: path, f: f}
		}
	}
	if len(snaps) == 0 {
		return nil
	}
	slices.SortFunc(snaps, func(x, y *snapFile) int {
		return cmp.Or(cmp.Compare(x.meta.Index, y.meta.Index), cmp.Compare(x.meta.Term, y.meta.Term))
	})
	latest := snaps[len(snaps)-1]
	for _, sf := range snaps[:len(snaps)-1] {
		_ = os.Remove(sf.path) // replaced by latest before a crash could remove it
	}
	sm, sess, err := a.readSnapshot(latest)
	if err != nil {
		return err
	}
	a.sm, a.sessions, a.latest = sm, sess, latest
	a.applied, a.appliedTerm = latest.meta.Index, latest.meta.Term
	c := latest.config()
	a.conf, a.confIndex = c.Config, c.Index
	a.log.Info("restored the latest snapshot", "index", latest.meta.Index, "term", latest.meta.Term, "bytes", latest.size)
	a.noteSnapshot()
	return nil
}

// readSnapshot restores a fresh state machine and session table from sf.
func (a *stateActor) readSnapshot(sf *snapFile) (statemachine.StateMachine, *sessions, error) {
	sm := a.cfg.New()
	var sess *sessions
	err := sf.restore(func(r io.Reader) error {
		br := bufio.NewReaderSize(r, 1<<20)
		var err error
		if sess, err = readSessions(br, a.cfg.MaxSessions); err != nil {
			return err
		}
		return sm.Restore(br)
	})
	if err != nil {
		return nil, nil, err
	}
	return sm, sess, nil
}

// maybeSnapshot starts a snapshot once one is due, or was asked for while
// another was being written.
func (a *stateActor) maybeSnapshot(ctx actor.Context) {
	if a.cfg.Dir == "" || a.writing || a.applied == 0 || !a.knowsConfig() {
		return
	}
	if a.snapAsked || a.snapshotDue() {
		a.startSnapshot(ctx)
	}
}

// snapshotDue is the snapshot policy (Raft §7; thesis §5.1.1): a snapshot
// is due once SnapshotEntries entries or SnapshotBytes bytes of log (each
// entry's data and its overhead) were applied since the latest, and those
// bytes add up to at least SnapshotGrowth times the latest snapshot's
// size. The second rule is the thesis's expansion factor: it keeps the bytes spent writing
// snapshots at most 1/SnapshotGrowth of the bytes the log takes in however
// large the state grows (a 10 MB state snapshotted every 8,192 small
// writes would otherwise write 10 MB for every 1.5 MB of log), while the
// log since the latest snapshot, and so a restart's replay, stays within
// max(SnapshotBytes, SnapshotGrowth × the state) plus one batch.
func (a *stateActor) snapshotDue() bool {
	since := a.applied - a.snapIndex()
	byCount := a.cfg.SnapshotEntries > 0 && since >= uint64(a.cfg.SnapshotEntries)
	bySize := a.cfg.SnapshotBytes > 0 && a.bytesSince >= a.cfg.SnapshotBytes
	if since == 0 || !byCount && !bySize {
		return false
	}
	return a.cfg.SnapshotGrowth <= 0 || a.latest == nil ||
		float64(a.bytesSince) >= a.cfg.SnapshotGrowth*float64(a.latest.size)
}

// knowsConfig reports whether the state knows the configuration at its
// applied index, which every snapshot's header records. A server that
// joined (no bootstrap members) does not until it applies a configuration
// entry or installs a snapshot: before that, its header would record an
// empty configuration where the founding members' record the bootstrap
// one.
func (a *stateActor) knowsConfig() bool {
	return a.confIndex > 0 || len(a.conf.Members) > 0
}

func (a *stateActor) snapIndex() uint64 {
	if a.latest == nil {
		return 0
	}
	return a.latest.meta.Index
}

// startSnapshot freezes the state at the applied index and writes it on a
// goroutine of its own.
func (a *stateActor) startSnapshot(ctx actor.Context) {
	if a.writing || a.applied == 0 {
		return
	}
	a.flush(ctx) // nothing may be half applied
	if l := a.latest; l != nil && a.applied <= l.meta.Index {
		// Nothing was applied since the latest snapshot (one asked for
		// while it was written): it is the snapshot. A second file of the
		// same index would be written under its name, and then removed
		// as overtaken, taking the latest with it.
		for _, to := range slices.Concat(a.snapWaiters, a.snapNext) {
			a.sendAny(ctx, to, &pb.SnapshotResponse{Ok: true, Index: l.meta.Index, Term: l.meta.Term, Bytes: l.size})
		}
		a.snapWaiters, a.snapNext, a.snapAsked = nil, nil, false
		return
	}
	smSnap, err := a.sm.Snapshot()
	if err != nil {
		a.log.Error("the state machine cannot take a snapshot; trying again later", "err", err)
		a.bytesSince = 0
		for _, to := range slices.Concat(a.snapWaiters, a.snapNext) {
			a.sendAny(ctx, to, &pb.SnapshotResponse{Error: "the state machine cannot take a snapshot: " + err.Error()})
		}
		a.snapWaiters, a.snapNext, a.snapAsked = nil, nil, false
		return
	}
	a.snapWaiters, a.snapNext = append(a.snapWaiters, a.snapNext...), nil
	frozen := a.sessions.m
	sessView := frozen.Freeze()
	a.writing, a.bytesTaken, a.bytesSince, a.snapAsked = true, a.bytesSince, 0, false
	a.release = func() {
		smSnap.Release()
		frozen.Thaw()
	}
	hdr := &pb.SnapshotHeader{ClusterId: a.cfg.ClusterID, LastIncludedIndex: a.applied, LastIncludedTerm: a.appliedTerm,
		Members: a.conf.Members, Configuration: a.conf, ConfigurationIndex: a.confIndex}
	self, system, inc, dir, noSync := ctx.Self(), ctx.ActorSystem(), a.inc, a.cfg.Dir, a.cfg.UnsafeNoSync
	began := time.Now()
	go func() {
		snapshotSlot <- struct{}{} // one writer per process at a time
		defer func() { <-snapshotSlot }()
		sf, err := writeSnapFile(dir, hdr, noSync, func(w io.Writer) error {
			if err := writeSessions(w, sessView); err != nil {
				return err
			}
			return smSnap.Persist(w)
		})
		system.Root.Send(self, &snapshotWritten{inc: inc, file: sf, err: err, took: time.Since(began)})
	}()
}

// snapshotWritten ends a snapshot: the views are released, and a durable
// file becomes the latest (older ones go) and is reported to the fsm.
func (a *stateActor) snapshotWritten(ctx actor.Context, m *snapshotWritten) {
	if m.inc != a.inc {
		return // a writer of an earlier incarnation: its file stays for the next start
	}
	a.writing = false
	if a.release != nil {
		a.release()
		a.release = nil
	}
	waiting := a.snapWaiters
	a.snapWaiters = nil
	if m.err != nil {
		// The log since the latest snapshot is what was counted before
		// this one started, and after: the next is due as soon as the
		// policy says so, not a whole interval later.
		a.bytesSince += a.bytesTaken
		a.log.Error("writing a snapshot failed; the log is not compacted, trying again later", "err", m.err)
		for _, to := range waiting {
			a.sendAny(ctx, to, &pb.SnapshotResponse{Error: "writing the snapshot failed: " + m.err.Error()})
		}
		return
	}
	if m.file.meta.Index <= a.snapIndex() {
		// An installed snapshot overtook it. (One of the same index and
		// term has the same name: this file replaced it on disk, so it is
		// the latest now, never to be removed.)
		if m.file.path == a.latest.path {
			a.latest = m.file
		} else {
			_ = os.Remove(m.file.path)
		}
	} else {
		a.replaceLatest(m.file)
		a.cfg.Metrics.SnapshotTaken(m.file.size)
		a.log.Info("snapshot taken", "index", m.file.meta.Index, "term", m.file.meta.Term, "bytes", m.file.size, "took", m.took.Round(time.Millisecond))
		if a.cfg.FSM != nil {
			ctx.Send(a.cfg.FSM, &protocol.SnapshotTaken{Meta: m.file.meta, Bytes: m.file.size})
		}
	}
	l := a.latest
	for _, to := range waiting {
		a.sendAny(ctx, to, &pb.SnapshotResponse{Ok: true, Index: l.meta.Index, Term: l.meta.Term, Bytes: l.size})
	}
	a.maybeSnapshot(ctx) // asked for while writing, or applied that much since
}

// replaceLatest makes sf the latest snapshot and removes the others
// (pinned ones stay readable through their open files).
func (a *stateActor) replaceLatest(sf *snapFile) {
	if old := a.latest; old != nil && old.path != sf.path {
		_ = os.Remove(old.path)
	}
	a.latest = sf
	a.noteSnapshot()
}

func (a *stateActor) noteSnapshot() {
	if a.cfg.OnSnapshot != nil && a.latest != nil {
		a.cfg.OnSnapshot(a.latest.meta.Index, a.latest.size)
	}
}

// snapshotNow answers once a snapshot through the applied index is durable.
func (a *stateActor) snapshotNow(ctx actor.Context, m *protocol.SnapshotNow) {
	switch {
	case a.cfg.Dir == "":
		a.sendAny(ctx, m.ReplyTo, &pb.SnapshotResponse{Error: "this node keeps no snapshots"})
	case a.applied == 0:
		a.sendAny(ctx, m.ReplyTo, &pb.SnapshotResponse{Error: "nothing is applied yet"})
	case !a.knowsConfig():
		a.sendAny(ctx, m.ReplyTo, &pb.SnapshotResponse{Error: "this server joined the cluster and has not applied a configuration yet; it snapshots once it has"})
	case a.latest != nil && a.latest.meta.Index == a.applied && !a.writing:
		l := a.latest
		a.sendAny(ctx, m.ReplyTo, &pb.SnapshotResponse{Ok: true, Index: l.meta.Index, Term: l.meta.Term, Bytes: l.size})
	case !a.writing:
		a.snapWaiters = append(a.snapWaiters, m.ReplyTo)
		a.startSnapshot(ctx)
	default:
		// The one being written is of an earlier index: this asker waits
		// for another, right after it.
		a.snapNext = append(a.snapNext, m.ReplyTo)
		a.snapAsked = true
	}
}

// ------------------------------------------------------------ serving

// readChunk reads a chunk of a snapshot for a follower's transfer.
func (a *stateActor) readChunk(ctx actor.Context, m *protocol.ReadChunk) {
	resp := &protocol.ChunkRead{Epoch: m.Epoch, ChunkRead: fsm.ChunkRead{Peer: m.Peer, Meta: m.Meta, Offset: m.Offset}}
	defer a.sendAny(ctx, ctx.Sender(), resp)
	p := a.pins[m.Peer]
	if p == nil || p.file.meta != m.Meta {
		a.unpin(m.Peer)
		if a.latest == nil || a.latest.meta != m.Meta {
			resp.Err = fmt.Errorf("snapshot %v is gone (the latest is through %d)", m.Meta, a.snapIndex())
			return
		}
		f, err := os.Open(a.latest.path)
		if err != nil {
			resp.Err = err
			return
		}
		p = &pin{file: a.latest, f: f}
		a.pins[m.Peer] = p
	}
	if m.Offset >= p.file.size || m.MaxBytes < 1 {
		resp.Err = fmt.Errorf("a chunk at %d of a snapshot of %d bytes", m.Offset, p.file.size)
		return
	}
	buf := make([]byte, min(uint64(m.MaxBytes), p.file.size-m.Offset))
	if _, err := p.f.ReadAt(buf, int64(m.Offset)); err != nil {
		resp.Err = fmt.Errorf("reading snapshot %s: %w", p.file.path, err)
		return
	}
	resp.Data, resp.Size, resp.FileCRC = buf, p.file.size, p.file.crc
	a.cfg.Metrics.SnapshotChunkSent(len(buf))
	if m.Offset+uint64(len(buf)) == p.file.size {
		a.cfg.Metrics.SnapshotSent() // its last chunk
	}
}

func (a *stateActor) unpin(peer uint64) {
	if p := a.pins[peer]; p != nil {
		_ = p.f.Close()
		delete(a.pins, peer)
	}
}

// ---------------------------------------------------------- receiving

// stageChunk appends a chunk to the staged file and makes it durable;
// the last one completes the file, which is checked and renamed into place.
func (a *stateActor) stageChunk(ctx actor.Context, m *protocol.StageChunk) {
	c := m.StageChunk
	resp := &protocol.ChunkStaged{Epoch: m.Epoch, ChunkStaged: fsm.ChunkStaged{Meta: c.Meta, FileCRC: c.FileCRC}}
	defer a.sendAny(ctx, ctx.Sender(), resp)
	want := fsm.Staging{Meta: c.Meta, Size: c.Size, FileCRC: c.FileCRC}
	if c.Offset == 0 {
		a.dropStaged()
		path := filepath.Join(a.cfg.Dir, stagingName(want))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			resp.Err = err
			return
		}
		a.staged = &staged{st: want, path: path, f: f}
		if !a.cfg.UnsafeNoSync {
			if err := syncDir(a.cfg.Dir); err != nil {
				resp.Err = err
				a.dropStaged()
				return
			}
		}
	}
	s := a.staged
	if s == nil || s.st.Meta != want.Meta || s.st.Size != want.Size || s.st.FileCRC != want.FileCRC || s.st.Offset != c.Offset {
		resp.Err = fmt.Errorf("a chunk at %d of snapshot %v, but the staged file does not end there", c.Offset, c.Meta)
		return
	}
	if c.Offset+uint64(len(c.Data)) > c.Size {
		resp.Err = fmt.Errorf("a chunk past the snapshot's %d bytes", c.Size)
		a.dropStaged()
		return
	}
	if _, err := s.f.Write(c.Data); err != nil {
		resp.Err = err
		a.dropStaged()
		return
	}
	if !a.cfg.UnsafeNoSync {
		if err := s.f.Sync(); err != nil {
			// fsync failure: what is on disk is unknown. Crash and let the
			// restart find out.
			panic(fmt.Sprintf("state: fsync of the staged snapshot %s failed: %v", s.path, err))
		}
	}
	s.st.Offset += uint64(len(c.Data))
	a.cfg.Metrics.SnapshotChunkReceived(len(c.Data))
	resp.Offset = s.st.Offset
	if !c.Done {
		return
	}
	if err := a.completeStaged(); err != nil {
		a.log.Warn("a received snapshot failed its check; it is requested again", "err", err)
		resp.Err = err
		return
	}
	a.cfg.Metrics.SnapshotReceived()
	resp.Done = true
}

// completeStaged checks the whole staged file and makes it the latest
// snapshot.
func (a *stateActor) completeStaged() error {
	s := a.staged
	defer func() { a.staged = nil }()
	if err := s.f.Close(); err != nil {
		_ = os.Remove(s.path)
		return err
	}
	fail := func(err error) error {
		_ = os.Remove(s.path)
		return err
	}
	sf, err := verifySnapFile(s.path)
	switch {
	case err != nil:
		return fail(err)
	case sf.size != s.st.Size || sf.crc != s.st.FileCRC || sf.meta != s.st.Meta:
		return fail(fmt.Errorf("the received snapshot is %v of %d bytes with checksum %08x; the leader offered %v of %d with %08x",
			sf.meta, sf.size, sf.crc, s.st.Meta, s.st.Size, s.st.FileCRC))
	case sf.header.ClusterId != a.cfg.ClusterID:
		return fail(fmt.Errorf("the received snapshot is of cluster %q", sf.header.ClusterId))
	}
	final := filepath.Join(a.cfg.Dir, snapName(sf.meta))
	if err := os.Rename(s.path, final); err != nil {
		return fail(err)
	}
	if !a.cfg.UnsafeNoSync {
		if err := syncDir(a.cfg.Dir); err != nil {
			return err
		}
	}
	sf.path = final
	a.replaceLatest(sf)
	a.log.Info("received a snapshot", "index", sf.meta.Index, "term", sf.meta.Term, "bytes", sf.size)
	return nil
}

func (a *stateActor) dropStaged() {
	if s := a.staged; s != nil {
		_ = s.f.Close()
		_ = os.Remove(s.path)
		a.staged = nil
	}
}

// install restores the state from the latest snapshot, which the fsm
// decided to install (Figure 13 rule 8).
func (a *stateActor) install(ctx actor.Context, m *protocol.InstallSnapshot) {
	if a.latest == nil || a.latest.meta != m.Meta {
		panic(fmt.Sprintf("invariant: installing snapshot %v, but the latest on disk is through %d", m.Meta, a.snapIndex()))
	}
	if m.Meta.Index <= a.applied {
		panic(fmt.Sprintf("invariant: installing a snapshot through %d over a state that applied %d", m.Meta.Index, a.applied))
	}
	a.flush(ctx)
	sm, sess, err := a.readSnapshot(a.latest)
	if err != nil {
		a.corrupt(err)
	}
	a.sm, a.sessions = sm, sess
	a.applied, a.appliedTerm, a.bytesSince = m.Meta.Index, m.Meta.Term, 0
	c := a.latest.config()
	a.conf, a.confIndex = c.Config, c.Index
	a.publish()
	a.sendAny(ctx, ctx.Sender(), &protocol.AppliedInfo{Epoch: m.Epoch, Index: a.applied})
}

// corrupt stops the node on a snapshot that cannot be trusted.
func (a *stateActor) corrupt(err error) {
	if a.cfg.OnCorrupt != nil && errors.Is(err, ErrCorruptSnapshot) {
		a.cfg.OnCorrupt(err)
	}
	panic(fmt.Sprintf("state: %v", err))
}

func (a *stateActor) stagingInfo() fsm.Staging {
	if a.staged == nil {
		return fsm.Staging{}
	}
	return a.staged.st
}

func (a *stateActor) snapMeta() fsm.SnapshotMeta {
	if a.latest == nil {
		return fsm.SnapshotMeta{}
	}
	return a.latest.meta
}

func (a *stateActor) sendAny(ctx actor.Context, to *actor.PID, msg any) {
	if to != nil {
		ctx.Send(to, msg)
	}
}

// closeFiles closes what a stopping incarnation holds open.
func (a *stateActor) closeFiles() {
	for peer := range a.pins {
		a.unpin(peer)
	}
	if s := a.staged; s != nil {
		_ = s.f.Close()
		a.staged = nil
	}
}
