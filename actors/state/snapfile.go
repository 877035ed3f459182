package state

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ketch-raft/ketch/fsm"
	"github.com/ketch-raft/ketch/logstore"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// A snapshot file, in the node's snapshot directory:
//
//	magic    8 bytes  "KSNAP001"
//	hdrLen   uint32   little-endian
//	header   hdrLen bytes: a pb.SnapshotHeader (last included index and
//	                  term, cluster id, members)
//	body     the client sessions, then the state machine's own bytes
//	                  (statemachine.Snapshot.Persist), to the trailer
//	trailer  16 bytes: the body's length (uint64), a CRC-32C of every byte
//	                  before it and of the length (uint32), "KEND"
//
// The CRC is the file's checksum (fsm.Staging.FileCRC): it names the file
// in a transfer, and a file whose bytes do not match it is not a snapshot.
// Files are written to a temporary name, fsynced, renamed to
// snap-<index>-<term>.ksnap (16 hex digits each) and the directory fsynced,
// so a crash leaves the old snapshot or the new one, never a mix. A
// snapshot being received is staged, byte for byte as the leader's file,
// to staging-<index>-<term>-<size>-<crc>.part, and renamed the same way
// once it is whole and its checksum holds.
const (
	snapMagic       = "KSNAP001"
	snapEndMagic    = "KEND"
	snapTrailer     = 16
	snapPrefixBytes = len(snapMagic) + 4
	// maxSnapHeader bounds a header's claimed length when reading.
	maxSnapHeader = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptSnapshot marks a snapshot file that fails its checks. A node
// never restores from one; when it is the only one its log relies on, the
// node stops (exit 4: it wraps logstore.ErrCorrupt) and must be restored
// from its peers.
var ErrCorruptSnapshot = fmt.Errorf("%w: a snapshot file is corrupt", logstore.ErrCorrupt)

// snapFile is a complete snapshot file on disk.
type snapFile struct {
	path   string
	meta   fsm.SnapshotMeta
	size   uint64
	crc    uint32
	header *pb.SnapshotHeader
	// body is where the body starts and how long it is.
	bodyOff, bodyLen int64
}

func snapName(m fsm.SnapshotMeta) string {
	return fmt.Sprintf("snap-%016x-%016x.ksnap", m.Index, m.Term)
}

func stagingName(st fsm.Staging) string {
	return fmt.Sprintf("staging-%016x-%016x-%016x-%08x.part", st.Meta.Index, st.Meta.Term, st.Size, st.FileCRC)
}

// parseStagingName reads a staged file's snapshot from its name.
func parseStagingName(name string) (fsm.Staging, bool) {
	f := strings.Split(strings.TrimSuffix(strings.TrimPrefix(name, "staging-"), ".part"), "-")
	if len(f) != 4 || !strings.HasPrefix(name, "staging-") || !strings.HasSuffix(name, ".part") {
		return fsm.Staging{}, false
	}
	var v [4]uint64
	for i, s := range f {
		n, err := strconv.ParseUint(s, 16, 64)
		if err != nil {
			return fsm.Staging{}, false
		}
		v[i] = n
	}
	if v[0] == 0 || v[1] == 0 || v[3] > 0xffffffff {
		return fsm.Staging{}, false
	}
	return fsm.Staging{Meta: fsm.SnapshotMeta{Index: v[0], Term: v[1]}, Size: v[2], FileCRC: uint32(v[3])}, true
}

func corruptSnap(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s; remove it only if the node's log does not rely on it, otherwise restore this node from its peers",
		ErrCorruptSnapshot, path, fmt.Sprintf(format, args...))
}

// countingWriter counts what passes through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// syncEvery is how much of a snapshot file is written between fsyncs.
// Syncing once at the end would leave the whole file (hundreds of MB for a
// large state) dirty in the page cache and flush it in one go, and the
// log's own fdatasyncs, which commits wait for, would queue behind that
// flush on the same disk: a commit p99 many times the usual while a large
// snapshot is written. Syncing as it goes keeps what is dirty, and so each
// of those waits, small.
const syncEvery = 4 << 20

// pacedFile syncs f after every syncEvery bytes written to it.
type pacedFile struct {
	f        *os.File
	noSync   bool
	unsynced int
}

func (p *pacedFile) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	p.unsynced += n
	if err == nil && !p.noSync && p.unsynced >= syncEvery {
		p.unsynced = 0
		err = p.f.Sync()
	}
	return n, err
}

// A snapshot is background work, and Go has no thread priorities: a
// writer that runs flat out takes a core from the actors that commit
// writes (on a 2-core machine running three nodes, all three writing a
// snapshot of a million keys left the actors 4% of the CPU, and commit p99
// went up tenfold). So the state machine's Persist writes into a throttle
// that, after every throttleBytes, sleeps as long as the work since the
// last pause took, up to maxThrottlePause (the writer runs about half the
// time, more when its work between pauses is longer than that), and at most
// one snapshot is written at a time per process (snapshotSlot): several
// nodes embedded in one process take turns, as they would on machines of
// their own. A snapshot takes about twice as long; the writes around it
// hardly notice.
const (
	throttleBytes    = 256 << 10
	maxThrottlePause = 20 * time.Millisecond
)

var snapshotSlot = make(chan struct{}, 1)

type throttle struct {
	w     io.Writer
	n     int
	since time.Time
}

func (t *throttle) Write(b []byte) (int, error) {
	if t.since.IsZero() {
		t.since = time.Now()
	}
	n, err := t.w.Write(b)
	t.n += n
	if t.n >= throttleBytes {
		t.n = 0
		time.Sleep(min(time.Since(t.since), maxThrottlePause))
		t.since = time.Now()
	}
	return n, err
}

// writeSnapFile writes a snapshot file for hdr into dir, body writing its
// body, and makes it durable under its final name.
func writeSnapFile(dir string, hdr *pb.SnapshotHeader, noSync bool, body func(io.Writer) error) (*snapFile, error) {
	meta := fsm.SnapshotMeta{Index: hdr.LastIncludedIndex, Term: hdr.LastIncludedTerm}
	tmp := filepath.Join(dir, ".tmp-"+snapName(meta))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*snapFile, error) {
		_ = f.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	hb, err := proto.Marshal(hdr)
	if err != nil {
		return fail(err)
	}
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(&pacedFile{f: f, noSync: noSync}, 1<<20)
	out := io.MultiWriter(bw, crc)
	prefix := binary.LittleEndian.AppendUint32([]byte(snapMagic), uint32(len(hb)))
	if _, err := out.Write(append(prefix, hb...)); err != nil {
		return fail(err)
	}
	cw := &countingWriter{w: out}
	if err := body(&throttle{w: cw}); err != nil {
		return fail(fmt.Errorf("the state machine's snapshot: %w", err))
	}
	if _, err := out.Write(binary.LittleEndian.AppendUint64(nil, uint64(cw.n))); err != nil {
		return fail(err)
	}
	sum := crc.Sum32()
	if _, err := bw.Write(append(binary.LittleEndian.AppendUint32(nil, sum), snapEndMagic...)); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	if !noSync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return nil, err
	}
	final := filepath.Join(dir, snapName(meta))
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return nil, err
	}
	if !noSync {
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	size := uint64(snapPrefixBytes+len(hb)) + uint64(cw.n) + snapTrailer
	return &snapFile{path: final, meta: meta, size: size, crc: sum, header: hdr,
		bodyOff: int64(snapPrefixBytes + len(hb)), bodyLen: cw.n}, nil
}

// openSnapFile reads a snapshot file's frame (magic, header, trailer)
// without checking its checksum (restore and verifySnapFile do).
func openSnapFile(path string) (*snapFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < int64(snapPrefixBytes+snapTrailer) {
		return nil, corruptSnap(path, "only %d bytes", size)
	}
	var pre [snapPrefixBytes]byte
	if _, err := f.ReadAt(pre[:], 0); err != nil {
		return nil, err
	}
	if string(pre[:len(snapMagic)]) != snapMagic {
		return nil, corruptSnap(path, "not a ketch snapshot (magic %q)", pre[:len(snapMagic)])
	}
	hlen := int64(binary.LittleEndian.Uint32(pre[len(snapMagic):]))
	if hlen > maxSnapHeader || int64(snapPrefixBytes)+hlen+snapTrailer > size {
		return nil, corruptSnap(path, "a header of %d bytes in a file of %d", hlen, size)
	}
	var tr [snapTrailer]byte
	if _, err := f.ReadAt(tr[:], size-snapTrailer); err != nil {
		return nil, err
	}
	if string(tr[12:]) != snapEndMagic {
		return nil, corruptSnap(path, "the trailer is missing (the file is cut short)")
	}
	bodyLen := int64(binary.LittleEndian.Uint64(tr[:8]))
	if int64(snapPrefixBytes)+hlen+bodyLen+snapTrailer != size || bodyLen < 0 {
		return nil, corruptSnap(path, "a body of %d bytes does not fit a file of %d", bodyLen, size)
	}
	hb := make([]byte, hlen)
	if _, err := f.ReadAt(hb, int64(snapPrefixBytes)); err != nil {
		return nil, err
	}
	hdr := &pb.SnapshotHeader{}
	if err := proto.Unmarshal(hb, hdr); err != nil || hdr.LastIncludedIndex == 0 || hdr.LastIncludedTerm == 0 {
		return nil, corruptSnap(path, "the header does not decode")
	}
	return &snapFile{path: path, meta: fsm.SnapshotMeta{Index: hdr.LastIncludedIndex, Term: hdr.LastIncludedTerm},
		size: uint64(size), crc: binary.LittleEndian.Uint32(tr[8:12]), header: hdr,
		bodyOff: int64(snapPrefixBytes) + hlen, bodyLen: bodyLen}, nil
}

// verifySnapFile opens a snapshot file and checks its checksum over every
// byte.
func verifySnapFile(path string) (*snapFile, error) {
	sf, err := openSnapFile(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	crc := crc32.New(castagnoli)
	if _, err := io.Copy(crc, io.NewSectionReader(f, 0, int64(sf.size)-8)); err != nil {
		return nil, err
	}
	if crc.Sum32() != sf.crc {
		return nil, corruptSnap(path, "its checksum does not match its bytes")
	}
	return sf, nil
}

// restore reads the body through into, which must read the sessions and
// the state machine from it, and checks the file's checksum over every
// byte, read or not. into's result is to be used only when restore
// returns nil.
func (sf *snapFile) restore(into func(io.Reader) error) error {
	f, err := os.Open(sf.path)
	if err != nil {
		return err
	}
	defer f.Close()
	crc := crc32.New(castagnoli)
	all := io.TeeReader(io.NewSectionReader(f, 0, int64(sf.size)-8), crc)
	if _, err := io.CopyN(io.Discard, all, sf.bodyOff); err != nil {
		return corruptSnap(sf.path, "cut short in its header: %v", err)
	}
	body := &io.LimitedReader{R: all, N: sf.bodyLen}
	rerr := into(body)
	// Whatever into left unread still counts for the checksum.
	if _, err := io.Copy(io.Discard, body); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, all); err != nil {
		return err
	}
	if crc.Sum32() != sf.crc {
		return corruptSnap(sf.path, "its checksum does not match its bytes")
	}
	if rerr != nil {
		return corruptSnap(sf.path, "the state machine cannot restore it: %v", rerr)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// config is the configuration the snapshot's header records (thesis §4.1)
// with the index of its entry; a header written before configurations were
// recorded has only the members, all voters.
func (sf *snapFile) config() fsm.ConfigState {
	if c := sf.header.Configuration; c != nil {
		return fsm.ConfigState{Config: c, Index: sf.header.ConfigurationIndex}
	}
	c := &pb.Configuration{}
	for _, m := range sf.header.Members {
		c.Members = append(c.Members, &pb.Member{Id: m.Id, Address: m.Address, Role: pb.MemberRole_MEMBER_ROLE_VOTER})
	}
	return fsm.ConfigState{Config: c}
}
