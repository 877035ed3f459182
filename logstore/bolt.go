package logstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	pb "github.com/ketch-raft/ketch/messages"
)

// DefaultLockTimeout is how long OpenBolt waits for another process to
// release the data file's lock when BoltOptions.LockTimeout is zero. A node
// that died releases its lock at once (the kernel drops it with the process),
// so a short wait only bridges a restart that races its predecessor's exit.
const DefaultLockTimeout = time.Second

// DefaultShrinkBytes is BoltOptions.ShrinkBytes' default: files under
// 64 MiB are left as they are, since their free pages cost little and are
// reused by the next appends.
const DefaultShrinkBytes = 64 << 20

// BoltOptions configures OpenBolt. The zero value is the safe default.
type BoltOptions struct {
	// LockTimeout bounds the wait for the data file's lock; past it OpenBolt
	// fails with an error wrapping ErrLocked instead of hanging. Zero or
	// negative means DefaultLockTimeout.
	LockTimeout time.Duration
	// UnsafeNoSync turns fsync off. UNSAFE: Write then returns before the
	// data reaches the disk, so a power loss or kernel crash loses writes
	// the node already acknowledged — votes and log entries other nodes
	// count on — and can break Raft's safety. Only for benchmarks and
	// throwaway test clusters. Default false; nothing else turns fsync off.
	UnsafeNoSync bool
	// JournalFileBytes is the size past which the write-ahead journal
	// starts a new file and moves the full one into the bbolt file in the
	// background (see journal.go). Larger means fewer, bigger checkpoints
	// and more to replay after a crash. Zero means DefaultJournalFileBytes.
	JournalFileBytes int64
	// ShrinkBytes is the file size from which the store shrinks the bbolt
	// file when at least three quarters of it are free pages (after log
	// compaction dropped a prefix larger than what is left; see shrink).
	// Zero means DefaultShrinkBytes; negative never shrinks.
	ShrinkBytes int64
	// OnSync, if set, is called with the duration of every journal append
	// with its fdatasync (one per Write), and OnCheckpoint with that of
	// every background checkpoint into bbolt (for metrics). Both must not
	// block; OnCheckpoint runs on the checkpointer's goroutine.
	OnSync, OnCheckpoint func(time.Duration)
}

// Layout of the bbolt file. Every value but keyFormat's is sealed
// (seal.go): a CRC-32C, then the bytes.
var (
	// bucketEntries maps an 8-byte big-endian index to a proto-marshalled
	// pb.Entry; big-endian keys sort in index order, so bbolt's B+tree is
	// in log order and appends go to its right edge.
	bucketEntries = []byte("entries")
	// bucketMeta holds keyHardState (a proto-marshalled pb.HardState),
	// keyIdentity (a pb.NodeIdentity), keyJournalSeq (the last journal
	// record bbolt holds, 8 bytes big-endian) and keyFormat (one byte,
	// formatVersion, unsealed), and later the configuration and snapshot
	// metadata.
	bucketMeta   = []byte("meta")
	keyHardState = []byte("hardstate")
	// keyLogBase holds a pb.LogBase: where the log starts after
	// compaction (absent: it was never compacted).
	keyLogBase  = []byte("logbase")
	keyIdentity = []byte("identity")
	keyFormat   = []byte("format")
	// keyLegacyJournal marks a file migrated from an older ketch whose
	// journal files (of the old record format) are not replayed yet.
	keyLegacyJournal = []byte("legacyjournal")
)

// appendFillPercent is the entries bucket's page fill factor. Every insert
// lands at the right edge of the key space (after an optional suffix
// truncation), so pages that split never receive keys in their left half
// again: filling them completely, instead of bbolt's default half, keeps the
// file about half the size.
const appendFillPercent = 1.0

// BoltStore is a Store in one bbolt file with a write-ahead journal in
// front of it (journal.go): Write appends one record to the journal and
// fdatasyncs it once, and a background checkpointer moves full journal
// files into bbolt. It is safe for concurrent use, though the store actor
// is its only user.
type BoltStore struct {
	// dbMu guards the db handle, which maybeShrink replaces: readers hold
	// it shared while they use db, as does the copy a shrink makes;
	// SetIdentity (the one writer besides the checkpointer) and the swap
	// hold it exclusively. It is only ever held around bbolt calls, never
	// while waiting for the checkpointer.
	dbMu sync.RWMutex
	db   *bolt.DB
	path string
	opts BoltOptions

	mu        sync.Mutex // serializes Write, Load and Close
	closed    bool
	j         *journalWriter
	last      uint64          // last index of the log: bbolt plus the journal
	base      uint64          // the log's compacted index: bbolt plus the journal
	unflushed []journalRecord // the current journal file's records, not yet in bbolt
	ckpt      chan checkpoint
	done      chan struct{} // closed when the checkpointer has exited
	boltLast  atomic.Uint64 // last index in bbolt, after the latest checkpoint
	shrinks   atomic.Uint64 // files shrunk since OpenBolt
	// shrinkAfter: no shrink before then (one failed); shrinkErr: why.
	shrinkAfter time.Time
	shrinkErr   atomic.Pointer[error]

	errMu sync.Mutex
	bgErr error // the checkpointer's first failure; every later call fails

	recovered Recovery
}

// Recovery is what OpenBolt found in the journal.
type Recovery struct {
	// Records is how many journal records were replayed into bbolt: writes
	// acknowledged before the process stopped without a clean Close.
	Records int
	// TornBytes is the size of a torn record dropped from the journal's
	// end: a write whose fdatasync had not returned, so it was never
	// acknowledged. Zero after a clean shutdown.
	TornBytes int64
}

// Recovered reports what opening the store replayed and dropped.
func (s *BoltStore) Recovered() Recovery { return s.recovered }

// checkpoint is work for the checkpointer: move records (payloads, up to
// record lastSeq) into bbolt, then remove the journal file that held them. A
// checkpoint with ack set is answered when done; with no updates it only
// waits for the ones before it.
type checkpoint struct {
	records []journalRecord
	lastSeq uint64
	file    string
	ack     chan error
}

// maxQueuedCheckpoints bounds the full journal files waiting for the
// checkpointer; a writer faster than bbolt waits for it rather than
// holding ever more of the log in memory.
const maxQueuedCheckpoints = 2

var _ Store = (*BoltStore)(nil)

// OpenBolt opens the log in the bbolt file at path, creating the file (mode
// 0600) if it does not exist; its directory must exist. Errors are one line,
// name the file and say what to do; a file held by another process fails
// with an error wrapping ErrLocked, one that is not a readable bbolt file,
// fails a checksum or makes bbolt panic with one wrapping ErrCorrupt.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	if opts.JournalFileBytes <= 0 {
		opts.JournalFileBytes = DefaultJournalFileBytes
	}
	if opts.ShrinkBytes == 0 {
		opts.ShrinkBytes = DefaultShrinkBytes
	}
	s := &BoltStore{path: path, opts: opts}
	_, statErr := os.Stat(path)
	var err error
	if errors.Is(statErr, fs.ErrNotExist) {
		err = createBolt(path, opts, timeout, nil)
	} else {
		var legacy bool
		if legacy, err = inspectBolt(path, timeout); err == nil && legacy {
			err = migrateLegacy(path, opts, timeout)
		}
	}
	if err != nil {
		return nil, err
	}
	db, err := openBoltDB(path, timeout, false, opts.UnsafeNoSync)
	if err != nil {
		return nil, err
	}
	s.db = db
	// A copy left by a shrink that crashed before its rename is removed
	// only now that the lock is held: until then it could be the copy a
	// running node is making.
	if err := os.Remove(path + shrinkSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		_ = db.Close()
		return nil, fmt.Errorf("logstore: cannot remove the leftover %s: %w", path+shrinkSuffix, err)
	}
	// The journal is read only now that bbolt's lock is held: another
	// process using this data dir would have failed the Open above.
	if err := s.recover(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.maybeShrink(); err != nil {
		_ = s.j.close()
		_ = s.db.Close()
		return nil, err
	}
	s.ckpt = make(chan checkpoint, maxQueuedCheckpoints)
	s.done = make(chan struct{})
	go s.checkpointer()
	return s, nil
}

// openBoltDB opens the bbolt file at path, under guard.
func openBoltDB(path string, timeout time.Duration, readOnly, noSync bool) (*bolt.DB, error) {
	var db *bolt.DB
	err := guard(path, "open", func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:  timeout,
			ReadOnly: readOnly,
			// The freelist is written with every commit (commits are
			// background checkpoints, so its cost is off the write path).
			// Without it bbolt rebuilds the freelist when it opens, with a
			// consistency check that panics on damaged pages in a goroutine
			// of its own, where nothing can recover: a damaged file would
			// kill the process with a raw stack trace.
			NoFreelistSync: false,
			// Truncations free runs of pages; the map freelist stays fast
			// when the free space is fragmented, the array one does not.
			FreelistType: bolt.FreelistMapType,
			NoSync:       noSync,
		})
		return err
	})
	switch {
	case errors.Is(err, ErrCorrupt):
		return nil, err
	case err != nil:
		return nil, openError(path, err)
	}
	return db, nil
}

// createBolt makes a new data file at path: buckets, what fill puts in
// them (nothing when fill is nil), and last the format marker, written to a
// temporary file, synced and renamed into place (replacing any file there),
// so that a crash while a file is being made leaves no half-made file to be
// mistaken for a damaged one.
func createBolt(path string, opts BoltOptions, timeout time.Duration, fill func(db *bolt.DB) error) error {
	tmp := path + ".new"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("logstore: cannot remove the leftover %s: %w", tmp, err)
	}
	db, err := openBoltDB(tmp, timeout, false, opts.UnsafeNoSync)
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket(bucketMeta); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bucketEntries)
		return err
	})
	if err == nil && fill != nil {
		err = fill(db)
	}
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyFormat, []byte{formatVersion})
		})
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, ErrCorrupt) {
		_ = os.Remove(tmp)
		return err
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && !opts.UnsafeNoSync {
		// A new file's directory entry is durable only once the directory
		// is synced; without this a power loss could lose the whole file.
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("logstore: cannot create data file %s (check the disk and the directory's permissions): %w", path, err)
	}
	return nil
}

// inspectBolt checks an existing data file before it is opened for
// writing, under a shared lock: after a clean stop (no journal files) both
// of bbolt's meta pages must pass their checksum, since bbolt would quietly
// fall back to the older one and lose the last checkpoint. It reports
// whether the file was written by an older ketch, whose files have no
// freelist on disk: bbolt rebuilds the freelist when such a file is first
// opened for writing, with a check that panics on damaged pages in a
// goroutine of its own, so such a file is never opened for writing but
// copied into a new one (migrateLegacy).
func inspectBolt(path string, timeout time.Duration) (legacy bool, err error) {
	db, err := openBoltDB(path, timeout, true, false)
	if err != nil {
		return false, err
	}
	defer db.Close()
	files, err := journalFiles(path)
	if err != nil {
		return false, fmt.Errorf("logstore: cannot list the journal of %s: %w", path, err)
	}
	metas, err := readMetaPages(path)
	if err != nil {
		return false, err
	}
	for i, m := range metas {
		if !m.valid && len(files) == 0 {
			return false, corruptError(path, fmt.Sprintf("bbolt's meta page %d fails its checksum", i), nil)
		}
	}
	newest := metas[0]
	if !newest.valid || metas[1].valid && metas[1].txid > newest.txid {
		newest = metas[1]
	}
	return newest.valid && newest.freelist == noFreelist, nil
}

// migrateLegacy copies a file written by an older ketch (no freelist, no
// format marker, values not sealed) into a new file of the current format,
// reading the old one under a shared lock and under guard, and replaces it.
// Its journal files stay (their records are of the old format too); the new
// file says so (keyLegacyJournal) until they have been replayed.
func migrateLegacy(path string, opts BoltOptions, timeout time.Duration) error {
	old, err := openBoltDB(path, timeout, true, false)
	if err != nil {
		return err
	}
	defer old.Close()
	files, err := journalFiles(path)
	if err != nil {
		return fmt.Errorf("logstore: cannot list the journal of %s: %w", path, err)
	}
	return createBolt(path, opts, timeout, func(db *bolt.DB) error {
		return guard(path, "copying an older file", func() error {
			return old.View(func(otx *bolt.Tx) error {
				ometa, oents := otx.Bucket(bucketMeta), otx.Bucket(bucketEntries)
				if ometa == nil || oents == nil {
					return corruptError(path, "a bucket is missing", nil)
				}
				if ometa.Get(keyFormat) != nil {
					return corruptError(path, "a file with the format marker but no freelist", nil)
				}
				copyBucket := func(from *bolt.Bucket, to []byte, maxKey int) error {
					type kv struct{ k, v []byte }
					var batch []kv
					put := func() error {
						err := db.Update(func(tx *bolt.Tx) error {
							b := tx.Bucket(to)
							b.FillPercent = appendFillPercent
							for _, x := range batch {
								if err := b.Put(x.k, x.v); err != nil {
									return err
								}
							}
							return nil
						})
						batch = batch[:0]
						return err
					}
					var last []byte
					err := from.ForEach(func(k, v []byte) error {
						switch {
						case len(k) == 0 || len(k) > maxKey:
							return corruptError(path, fmt.Sprintf("a key of %d bytes", len(k)), nil)
						case last != nil && bytes.Compare(last, k) >= 0:
							return corruptError(path, fmt.Sprintf("keys of bucket %q are out of order", to), nil)
						case v == nil:
							return corruptError(path, fmt.Sprintf("bucket %q holds a bucket", to), nil)
						}
						if _, err := unseal(v); err == nil {
							return corruptError(path, fmt.Sprintf("the format marker is missing, but key %x holds a sealed value", k), nil)
						}
						last = slices.Clone(k)
						batch = append(batch, kv{last, seal(v)})
						if len(batch) == 10000 {
							return put()
						}
						return nil
					})
					if err != nil {
						return err
					}
					return put()
				}
				if err := copyBucket(ometa, bucketMeta, 16); err != nil {
					return err
				}
				if err := copyBucket(oents, bucketEntries, 8); err != nil {
					return err
				}
				if len(files) == 0 {
					return nil
				}
				return db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket(bucketMeta).Put(keyLegacyJournal, seal([]byte{1}))
				})
			})
		})
	})
}

// recover brings the file up to date before the store is used: it checks
// the format, starts a fresh journal file before anything is written to
// bbolt (so a crash during what follows leaves a journal, which is what
// tells a torn meta page from a damaged one next time), replays the
// journal records bbolt does not have yet (of the old format, once, after
// migrateLegacy), and removes the old journal files.
func (s *BoltStore) recover() error {
	files, err := journalFiles(s.path)
	if err != nil {
		return fmt.Errorf("logstore: cannot list the journal of %s: %w", s.path, err)
	}
	var seq uint64
	var format []byte
	var legacyJournal bool
	err = s.guard("recovery", func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			meta, ents := tx.Bucket(bucketMeta), tx.Bucket(bucketEntries)
			if meta == nil || ents == nil {
				return s.corrupt("a bucket is missing", nil)
			}
			format = slices.Clone(meta.Get(keyFormat))
			legacyJournal = meta.Get(keyLegacyJournal) != nil
			if v := meta.Get(keyJournalSeq); v != nil {
				b, err := s.unsealValue("the journal sequence number", v, false)
				if err != nil {
					return err
				}
				if len(b) != 8 {
					return s.corrupt("the journal sequence number is not 8 bytes", nil)
				}
				seq = binary.BigEndian.Uint64(b)
			}
			return nil
		})
	})
	if err != nil {
		return s.wrapTxError("recovery", err)
	}
	if len(format) != 1 || format[0] != formatVersion {
		return s.corrupt(fmt.Sprintf("the format marker is %x, want %x (a ketch newer than this one, or damage)", format, []byte{formatVersion}), nil)
	}

	// Read and check every journal file before writing anything.
	var replay []journalRecord
	lastSeq, next := seq, uint64(0)
	for i, f := range files {
		recs, torn, err := readJournal(f, i == len(files)-1, !legacyJournal)
		if errors.Is(err, errJournalDamaged) {
			return s.corrupt(err.Error(), nil)
		}
		if err != nil {
			return fmt.Errorf("logstore: cannot read journal file %s (check the disk and the file's permissions): %w", f.path, err)
		}
		s.recovered.TornBytes += torn
		for _, r := range recs {
			if next != 0 && r.seq != next {
				return s.corrupt(fmt.Sprintf("journal record %d is missing (file %s starts at %d)", next, f.path, r.seq), nil)
			}
			next = r.seq + 1
			if r.seq <= seq {
				continue // already in bbolt
			}
			if r.seq != lastSeq+1 {
				return s.corrupt(fmt.Sprintf("journal record %d is missing; bbolt holds records up to %d", lastSeq+1, seq), nil)
			}
			replay = append(replay, r)
			lastSeq = r.seq
			s.recovered.Records++
		}
	}
	// Journal files must exist while bbolt is written here (see above):
	// the old ones until the replay is in, or a new one from the start.
	if len(files) == 0 {
		if err := s.startJournal(lastSeq + 1); err != nil {
			return err
		}
	}
	fail := func(err error) error {
		if s.j != nil {
			_ = s.j.close()
		}
		return err
	}
	if len(replay) > 0 {
		if err := s.writeBolt(replay, lastSeq); err != nil {
			if errors.Is(err, ErrInvalidUpdate) {
				err = s.corrupt("the journal does not continue the log in bbolt", err)
			}
			return fail(err)
		}
	}
	for _, f := range files {
		if err := os.Remove(f.path); err != nil {
			return fail(fmt.Errorf("logstore: cannot remove replayed journal file %s: %w", f.path, err))
		}
	}
	if legacyJournal {
		// The old journal files are gone: records from now on are of the
		// current format.
		err := s.guard("recovery", func() error {
			return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyLegacyJournal) })
		})
		if err != nil {
			return fail(s.wrapTxError("recovery", err))
		}
	}
	if s.j == nil {
		if err := s.startJournal(lastSeq + 1); err != nil {
			return err
		}
	}
	err = s.guard("recovery", func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			var err error
			if s.last, err = s.lastIndex(tx.Bucket(bucketEntries)); err != nil {
				return err
			}
			base, err := s.readBase(tx.Bucket(bucketMeta))
			s.base, s.last = base.Index, max(s.last, base.Index)
			return err
		})
	})
	if err != nil {
		_ = s.j.close()
		return s.wrapTxError("recovery", err)
	}
	s.boltLast.Store(s.last)
	return nil
}

// startJournal creates the journal file whose first record is seq.
func (s *BoltStore) startJournal(seq uint64) error {
	j, err := createJournal(s.path, seq, s.opts.UnsafeNoSync)
	if err != nil {
		return fmt.Errorf("logstore: cannot create journal file next to %s (check the disk and the directory's permissions): %w", s.path, err)
	}
	s.j = j
	return nil
}

// noFreelist is the freelist page id of a file whose freelist is not
// stored (bbolt's PgidNoFreelist).
const noFreelist = ^uint64(0)

// metaPage is what readMetaPages finds in one of bbolt's meta pages.
type metaPage struct {
	valid          bool
	txid, freelist uint64
}

// readMetaPages reads both of bbolt's meta pages in the file at path (a
// page header, then magic, version, page size, flags, root, freelist,
// high water mark and txid, and an FNV-64a checksum of them; the layout of
// go.etcd.io/bbolt's internal/common, stable across versions 1.3 and 1.4).
// The page size comes from the first valid one, as in bbolt.
func readMetaPages(path string) ([2]metaPage, error) {
	var metas [2]metaPage
	f, err := os.Open(path)
	if err != nil {
		return metas, fmt.Errorf("logstore: cannot open data file %s: %w", path, err)
	}
	defer f.Close()
	const pageHeader, metaSum, magic = 16, 56, 0xED0CDAED
	read := func(off int64) (metaPage, uint32) {
		buf := make([]byte, pageHeader+metaSum+8)
		if _, err := f.ReadAt(buf, off); err != nil {
			return metaPage{}, 0
		}
		m := buf[pageHeader:]
		h := fnv.New64a()
		h.Write(m[:metaSum])
		if binary.LittleEndian.Uint32(m) != magic || h.Sum64() != binary.LittleEndian.Uint64(m[metaSum:]) {
			return metaPage{}, 0
		}
		return metaPage{valid: true, freelist: binary.LittleEndian.Uint64(m[32:]), txid: binary.LittleEndian.Uint64(m[48:])}, binary.LittleEndian.Uint32(m[8:])
	}
	var size uint32
	metas[0], size = read(0)
	if !metas[0].valid || size < 512 || size > 1<<20 || size&(size-1) != 0 {
		metas[0].valid = false
		size = uint32(os.Getpagesize())
	}
	metas[1], _ = read(int64(size))
	return metas, nil
}

// shrinkSuffix names the file shrink copies the log into before renaming
// it over the data file; one left by a crash is removed at open.
const shrinkSuffix = ".shrink"

// maybeShrink shrinks the bbolt file when it is at least ShrinkBytes and
// three quarters of it is not in use (free pages, or the space bbolt
// preallocates past its last page). bbolt reuses free pages but never
// gives them back, so a log that once held far more than it does now (a
// burst of large entries, then a snapshot that compacted them away) would
// keep its high-water size for good. The live content, a few megabytes
// after compaction, is copied into a new file, which is synced and
// renamed over the old one while it is open and locked (so no other
// process can open the data file in between), and then replaces the old
// handle. A crash before the rename leaves the old file intact (and a
// leftover that OpenBolt removes once it holds the lock), one after it the
// complete copy. It runs on the checkpointer (or in OpenBolt, before it
// starts), the only writer but SetIdentity, which takes dbMu exclusively:
// the copy is made under the shared lock, so readers go on, and only the
// swap takes it exclusively. A copy that fails (a full disk) changes
// nothing: it is tried again after shrinkRetry, and the store goes on.
func (s *BoltStore) maybeShrink() error {
	if s.opts.ShrinkBytes < 0 || time.Now().Before(s.shrinkAfter) {
		return nil
	}
	fi, err := os.Stat(s.path)
	if err != nil || fi.Size() < s.opts.ShrinkBytes {
		return nil // a failed stat is not worth failing the store for
	}
	var used int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		st := s.db.Stats()
		used = tx.Size() - int64(st.FreePageN+st.PendingPageN)*int64(s.db.Info().PageSize)
		return nil
	})
	if used*4 > fi.Size() {
		return nil
	}
	tmp := s.path + shrinkSuffix
	var dst *bolt.DB
	s.dbMu.RLock()
	err = s.guard("shrinking the file", func() error {
		_ = os.Remove(tmp)
		var err error
		if dst, err = openBoltDB(tmp, time.Second, false, s.opts.UnsafeNoSync); err != nil {
			return err
		}
		return bolt.Compact(dst, s.db, 16<<20)
	})
	s.dbMu.RUnlock()
	if err != nil {
		if dst != nil {
			_ = dst.Close()
		}
		_ = os.Remove(tmp)
		s.shrinkAfter = time.Now().Add(shrinkRetry)
		s.shrinkErr.Store(&err)
		return nil
	}
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if err := os.Rename(tmp, s.path); err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		s.shrinkAfter = time.Now().Add(shrinkRetry)
		s.shrinkErr.Store(&err)
		return nil
	}
	// From here the copy is the data file: a failure is fatal for this
	// BoltStore (the checkpointer records it), and the next OpenBolt finds
	// the copy complete.
	if !s.opts.UnsafeNoSync {
		if err := syncDir(filepath.Dir(s.path)); err != nil {
			_ = dst.Close()
			return fmt.Errorf("logstore: cannot sync the directory of %s after shrinking it: %w", s.path, err)
		}
	}
	if err := s.db.Close(); err != nil {
		_ = dst.Close()
		return fmt.Errorf("logstore: cannot close the old copy of %s after shrinking it: %w", s.path, err)
	}
	s.db = dst
	s.shrinks.Add(1)
	return nil
}

// shrinkRetry is how long a store whose shrink failed waits before it
// tries again.
const shrinkRetry = time.Minute

// ShrinkError is the latest failed shrink's error (nil if none failed):
// the store went on with the larger file.
func (s *BoltStore) ShrinkError() error {
	if e := s.shrinkErr.Load(); e != nil {
		return *e
	}
	return nil
}

// Shrinks reports how many times the file was shrunk since OpenBolt.
func (s *BoltStore) Shrinks() uint64 { return s.shrinks.Load() }

// checkpointer moves full journal files into bbolt, in order, one
// transaction each, until the channel is closed.
func (s *BoltStore) checkpointer() {
	defer close(s.done)
	for c := range s.ckpt {
		err := s.bgError()
		if err == nil && len(c.records) > 0 {
			began := time.Now()
			err = s.writeBolt(c.records, c.lastSeq)
			if s.opts.OnCheckpoint != nil {
				s.opts.OnCheckpoint(time.Since(began))
			}
			if err == nil {
				err = s.maybeShrink()
			}
			if err == nil && c.file != "" {
				// bbolt now holds the records: the file is not needed, and
				// if its removal is lost in a crash, recovery skips records
				// at or below the sequence number bbolt holds.
				if rerr := os.Remove(c.file); rerr != nil {
					err = fmt.Errorf("logstore: cannot remove checkpointed journal file %s: %w", c.file, rerr)
				}
			}
			if err != nil {
				s.errMu.Lock()
				if s.bgErr == nil {
					s.bgErr = err
				}
				s.errMu.Unlock()
			}
		}
		if c.ack != nil {
			c.ack <- s.bgError()
		}
	}
}

func (s *BoltStore) bgError() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.bgErr
}

// rotate closes the current journal file, hands what it holds to the
// checkpointer and starts the next file. Caller holds mu.
func (s *BoltStore) rotate() error {
	if s.j.next == s.j.first {
		return nil // empty: nothing to move
	}
	old := s.j
	nj, err := createJournal(s.path, old.next, s.opts.UnsafeNoSync)
	if err != nil {
		return fmt.Errorf("logstore: cannot start a new journal file next to %s: %w", s.path, err)
	}
	if err := old.close(); err != nil {
		_ = nj.close()
		return err
	}
	s.j = nj
	s.ckpt <- checkpoint{records: s.unflushed, lastSeq: old.next - 1, file: old.name}
	s.unflushed = nil
	return nil
}

// flushAll moves everything journaled into bbolt and waits until it is
// there. Caller holds mu.
func (s *BoltStore) flushAll() error {
	if err := s.rotate(); err != nil {
		return err
	}
	ack := make(chan error, 1)
	s.ckpt <- checkpoint{ack: ack}
	return <-ack
}

// openError turns a bbolt Open error into a one-line error for the operator.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return &storeError{
			msg:  fmt.Sprintf("logstore: data file %s is locked by another process (is a node already running on this data dir?)", path),
			kind: ErrLocked, cause: err,
		}
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return &storeError{
			msg:  fmt.Sprintf("logstore: data file %s is not a ketch log or is damaged (%v); move it aside and rebuild this node from its peers", path, err),
			kind: ErrCorrupt, cause: err,
		}
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("logstore: cannot open data file %s: permission denied (check the owner and mode of the file and its directory): %w", path, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("logstore: cannot create data file %s: its directory does not exist (create the data dir first): %w", path, err)
	}
	return fmt.Errorf("logstore: cannot open data file %s: %w", path, err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Path is the data file's path.
func (s *BoltStore) Path() string { return s.path }

// corrupt builds an error wrapping ErrCorrupt that names the file.
func (s *BoltStore) corrupt(detail string, cause error) error {
	return corruptError(s.path, detail, cause)
}

func corruptError(path, detail string, cause error) error {
	if cause != nil {
		detail += ": " + cause.Error()
	}
	return &storeError{
		msg: fmt.Sprintf("logstore: data file %s is corrupt (%s); this node must not rejoin with it: "+
			"stop it, move its data dir aside and start it again with an empty one, and it catches up from its peers", path, detail),
		kind: ErrCorrupt, cause: cause,
	}
}

// unsealValue checks the seal of the value named what and returns its
// bytes; legacy (a file from before seals, during recovery) takes it as it is.
func (s *BoltStore) unsealValue(what string, v []byte, legacy bool) ([]byte, error) {
	if legacy {
		return v, nil
	}
	b, err := unseal(v)
	if err != nil {
		return nil, s.corrupt(what+" "+err.Error(), nil)
	}
	return b, nil
}

// decodeEntry checks one key/value of the entries bucket, which must hold
// index want, verifies its seal and decodes it. proto.Unmarshal copies
// bytes fields, so the entry does not point into bbolt's mmap, which is
// only valid in the tx.
func (s *BoltStore) decodeEntry(k, v []byte, want uint64) (*pb.Entry, error) {
	if len(k) != 8 {
		return nil, s.corrupt(fmt.Sprintf("entry key %x is not an 8-byte index", k), nil)
	}
	idx := binary.BigEndian.Uint64(k)
	if idx != want {
		return nil, s.corrupt(fmt.Sprintf("entry %d is missing, the next key is %d", want, idx), nil)
	}
	if v == nil {
		return nil, s.corrupt(fmt.Sprintf("entry %d is a bucket, not a value", idx), nil)
	}
	b, err := s.unsealValue(fmt.Sprintf("entry %d", idx), v, false)
	if err != nil {
		return nil, err
	}
	e := &pb.Entry{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, s.corrupt(fmt.Sprintf("entry %d does not decode", idx), err)
	}
	if e.Index != idx {
		return nil, s.corrupt(fmt.Sprintf("key %d holds an entry with index %d", idx, e.Index), nil)
	}
	return e, nil
}

// Load reads the hard state and every entry in one read transaction and
// checks that the entries are exactly 1..n: each key 8 bytes, no gap, each
// value decodes, each entry's index equals its key.
func (s *BoltStore) Load() (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return State{}, s.closedError("load")
	}
	if err := s.flushAll(); err != nil {
		return State{}, s.wrapTxError("load", err)
	}
	var st State
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err := s.guard("load", func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			return s.loadTx(tx, &st)
		})
	})
	if err != nil {
		return State{}, s.wrapTxError("load", err)
	}
	return st, nil
}

// loadTx reads the hard state and every entry, checking each.
func (s *BoltStore) loadTx(tx *bolt.Tx, st *State) error {
	meta, ents := tx.Bucket(bucketMeta), tx.Bucket(bucketEntries)
	if meta == nil || ents == nil {
		return s.corrupt("a bucket is missing", nil)
	}
	if v := meta.Get(keyHardState); v != nil {
		b, err := s.unsealValue("the hard state", v, false)
		if err != nil {
			return err
		}
		hs := &pb.HardState{}
		if err := proto.Unmarshal(b, hs); err != nil {
			return s.corrupt("the hard state does not decode", err)
		}
		st.HardState = hs
	}
	base, err := s.readBase(meta)
	if err != nil {
		return err
	}
	st.Base = base
	c := ents.Cursor()
	if k, _ := c.Last(); len(k) == 8 {
		// A capacity hint only; a bogus last key is caught below.
		st.Entries = make([]*pb.Entry, 0, min(binary.BigEndian.Uint64(k)-min(base.Index, binary.BigEndian.Uint64(k)), 1<<20))
	}
	want := base.Index + 1
	for k, v := c.First(); k != nil; k, v = c.Next() {
		e, err := s.decodeEntry(k, v, want)
		if err != nil {
			return err
		}
		st.Entries = append(st.Entries, e)
		want++
	}
	return nil
}

// readBase reads the log's base from the meta bucket (zero when absent).
func (s *BoltStore) readBase(meta *bolt.Bucket) (Base, error) {
	v := meta.Get(keyLogBase)
	if v == nil {
		return Base{}, nil
	}
	b, err := s.unsealValue("the log base", v, false)
	if err != nil {
		return Base{}, err
	}
	var lb pb.LogBase
	if err := proto.Unmarshal(b, &lb); err != nil || lb.Index == 0 || lb.Term == 0 {
		return Base{}, s.corrupt("the log base does not decode", err)
	}
	return Base{Index: lb.Index, Term: lb.Term, Config: lb.Configuration, ConfigIndex: lb.ConfigurationIndex}, nil
}

// Write makes updates durable with one journal record and one fdatasync
// (journal.go), after checking them against the log's last index; bbolt
// receives them later, in the background.
func (s *BoltStore) Write(updates []Update) error {
	if len(updates) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.closedError("write")
	}
	if err := s.bgError(); err != nil {
		return s.wrapTxError("write", err)
	}
	base, last, err := checkUpdates(s.base, s.last, updates)
	if err != nil {
		return err
	}
	began := time.Now()
	payload, err := s.j.append(updates)
	if s.opts.OnSync != nil {
		s.opts.OnSync(time.Since(began))
	}
	if err != nil {
		return s.wrapTxError("write", err)
	}
	s.base, s.last = base, last
	s.unflushed = append(s.unflushed, journalRecord{payload: payload, sealed: true})
	if s.j.size >= s.opts.JournalFileBytes {
		if err := s.rotate(); err != nil {
			return s.wrapTxError("write", err)
		}
	}
	return nil
}

// writeBolt applies journal records to bbolt in one read-write
// transaction (synced unless UnsafeNoSync), recording that bbolt now holds
// the journal up to record seq. The records' fields are the very bytes
// bbolt stores (sealed); an entry at or below the last index truncates the
// log there first (Update's semantics), one past it is appended, and
// anything else fails with ErrInvalidUpdate.
func (s *BoltStore) writeBolt(records []journalRecord, seq uint64) error {
	var newLast uint64
	err := s.guard("checkpoint", func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			meta, ents := tx.Bucket(bucketMeta), tx.Bucket(bucketEntries)
			if meta == nil || ents == nil {
				return s.corrupt("a bucket is missing", nil)
			}
			last, err := s.lastIndex(ents)
			if err != nil {
				return err
			}
			base, err := s.readBase(meta)
			if err != nil {
				return err
			}
			last = max(last, base.Index)
			ents.FillPercent = appendFillPercent
			// bbolt requires keys and values to stay valid until the commit:
			// values are slices of the records, keys are carved out of slabs
			// that are replaced when full, never grown in place.
			var keys []byte
			for _, r := range records {
				err := walkRecord(r.payload, r.sealed, func(op recordOp) error {
					if op.hardState {
						return meta.Put(keyHardState, op.value)
					}
					if op.base != nil {
						// Raft §7: the prefix is in a snapshot now.
						if op.base.Reset_ {
							if err := truncateFrom(ents, 1); err != nil {
								return err
							}
							last = op.base.Index
						} else if err := deleteThrough(ents, op.base.Index); err != nil {
							return err
						}
						base.Index = max(base.Index, op.base.Index)
						return meta.Put(keyLogBase, op.value)
					}
					switch {
					case op.index <= base.Index:
						return fmt.Errorf("%w: journal entry %d is at or below the compacted index %d", ErrInvalidUpdate, op.index, base.Index)
					case op.index == 0 || op.index > last+1:
						return fmt.Errorf("%w: journal entry %d would leave a gap after last index %d", ErrInvalidUpdate, op.index, last)
					case op.index <= last:
						if err := truncateFrom(ents, op.index); err != nil {
							return err
						}
					}
					if len(keys)+8 > cap(keys) {
						keys = make([]byte, 0, 8<<10)
					}
					off := len(keys)
					keys = binary.BigEndian.AppendUint64(keys, op.index)
					last = op.index
					return ents.Put(keys[off:off+8], op.value)
				})
				if err != nil {
					return err
				}
			}
			newLast = last
			return meta.Put(keyJournalSeq, seal(binary.BigEndian.AppendUint64(nil, seq)))
		})
	})
	if err != nil {
		return s.wrapTxError("checkpoint", err)
	}
	s.boltLast.Store(newLast)
	return nil
}

// Entries reads entries lo..hi-1 from bbolt, first moving the journal into
// it if the range reaches past what bbolt holds. Each value is checked as
// Load checks it.
func (s *BoltStore) Entries(lo, hi uint64, maxBytes int) ([]*pb.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, s.closedError("read")
	}
	if lo <= s.base {
		return nil, nil // compacted away: the caller sends a snapshot
	}
	hi = min(hi, s.last+1)
	if lo >= hi {
		return nil, nil
	}
	if hi-1 > s.boltLast.Load() {
		if err := s.flushAll(); err != nil {
			return nil, s.wrapTxError("read", err)
		}
	}
	var out []*pb.Entry
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err := s.guard("read", func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			ents := tx.Bucket(bucketEntries)
			if ents == nil {
				return s.corrupt("a bucket is missing", nil)
			}
			c := ents.Cursor()
			size := 0
			want := lo
			for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, lo)); k != nil && want < hi; k, v = c.Next() {
				e, err := s.decodeEntry(k, v, want)
				if err != nil {
					return err
				}
				size += len(v) - sealBytes
				if len(out) > 0 && size > maxBytes {
					break
				}
				out = append(out, e)
				want++
			}
			if want < hi && len(out) == 0 {
				return s.corrupt(fmt.Sprintf("entry %d is missing", want), nil)
			}
			return nil
		})
	})
	if err != nil {
		return nil, s.wrapTxError("read", err)
	}
	return out, nil
}

// lastIndex is the index of the last stored entry, 0 if there is none.
func (s *BoltStore) lastIndex(ents *bolt.Bucket) (uint64, error) {
	k, _ := ents.Cursor().Last()
	if k == nil {
		return 0, nil
	}
	if len(k) != 8 {
		return 0, s.corrupt(fmt.Sprintf("entry key %x is not an 8-byte index", k), nil)
	}
	return binary.BigEndian.Uint64(k), nil
}

// deleteThrough deletes every entry with index <= last (a compaction).
func deleteThrough(ents *bolt.Bucket, last uint64) error {
	return deleteKeys(ents, 1, last)
}

// truncateFrom deletes every entry with index >= first.
func truncateFrom(ents *bolt.Bucket, first uint64) error {
	return deleteKeys(ents, first, math.MaxUint64)
}

// deleteKeys deletes the entries lo..hi. The keys are collected first and
// then deleted one by one: bbolt empties leaf nodes in memory and
// rebalances only at commit, so restarting a cursor after each delete
// (First or Seek) would walk every emptied leaf again, quadratic in a
// compaction of thousands of entries.
func deleteKeys(ents *bolt.Bucket, lo, hi uint64) error {
	var keys []byte
	c := ents.Cursor()
	for k, _ := c.Seek(binary.BigEndian.AppendUint64(nil, lo)); len(k) == 8 && binary.BigEndian.Uint64(k) <= hi; k, _ = c.Next() {
		keys = append(keys, k...)
	}
	for off := 0; off < len(keys); off += 8 {
		if err := ents.Delete(keys[off : off+8]); err != nil {
			return err
		}
	}
	return nil
}

// wrapTxError passes through errors that already speak for themselves
// (corrupt, invalid) and adds the file and advice to I/O errors.
func (s *BoltStore) wrapTxError(op string, err error) error {
	switch {
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrInvalidUpdate):
		return err
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return &storeError{msg: fmt.Sprintf("logstore: %s on data file %s after Close", op, s.path), kind: ErrClosed, cause: err}
	}
	return fmt.Errorf("logstore: %s on data file %s failed (check the disk and free space; the node restarts from what is on disk): %w", op, s.path, err)
}

func (s *BoltStore) closedError(op string) error {
	return &storeError{msg: fmt.Sprintf("logstore: %s on data file %s after Close", op, s.path), kind: ErrClosed}
}

// Close moves the journal into bbolt (a clean shutdown leaves everything in
// the bbolt file and no journal), closes the files and releases the lock.
// Closing twice is a no-op.
func (s *BoltStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.flushAll()
	close(s.ckpt)
	<-s.done
	if cerr := s.j.close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Everything is in bbolt: the empty journal file can go.
		err = os.Remove(s.j.name)
	}
	if cerr := s.db.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("logstore: closing data file %s: %w", s.path, err)
	}
	return nil
}

// Identity returns the node identity the data file records (see
// SetIdentity), or nil when it records none.
func (s *BoltStore) Identity() (*pb.NodeIdentity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, s.closedError("read the identity")
	}
	var id *pb.NodeIdentity
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err := s.guard("reading the identity", func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			v := tx.Bucket(bucketMeta).Get(keyIdentity)
			if v == nil {
				return nil
			}
			b, err := s.unsealValue("the node identity", v, false)
			if err != nil {
				return err
			}
			id = &pb.NodeIdentity{}
			if err := proto.Unmarshal(b, id); err != nil {
				return s.corrupt("the node identity does not decode", err)
			}
			return nil
		})
	})
	if err != nil {
		return nil, s.wrapTxError("read the identity", err)
	}
	return id, nil
}

// SetIdentity records the node's identity (cluster id, node id, the
// members it was bootstrapped with) in one synced transaction, so it is on
// disk before the node takes part. It refuses to replace another identity
// (ErrInvalidUpdate); recording the same one again does nothing.
func (s *BoltStore) SetIdentity(id *pb.NodeIdentity) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.closedError("record the identity")
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(id)
	if err != nil {
		return fmt.Errorf("logstore: cannot encode the node identity: %w", err)
	}
	s.dbMu.Lock() // exclusive: a shrink copies under the shared lock
	defer s.dbMu.Unlock()
	err = s.guard("recording the identity", func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if v := meta.Get(keyIdentity); v != nil {
				old, err := s.unsealValue("the node identity", v, false)
				if err != nil {
					return err
				}
				if !bytes.Equal(old, b) {
					return fmt.Errorf("%w: the data file records another node identity", ErrInvalidUpdate)
				}
				return nil
			}
			return meta.Put(keyIdentity, seal(b))
		})
	})
	if err != nil {
		return s.wrapTxError("record the identity", err)
	}
	return nil
}
