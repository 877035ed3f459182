package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
}

// Layout of the bbolt file.
var (
	// bucketEntries maps an 8-byte big-endian index to a proto-marshalled
	// pb.Entry; big-endian keys sort in index order, so bbolt's B+tree is
	// in log order and appends go to its right edge.
	bucketEntries = []byte("entries")
	// bucketMeta holds keyHardState (a proto-marshalled pb.HardState), and
	// later the configuration and snapshot metadata.
	bucketMeta   = []byte("meta")
	keyHardState = []byte("hardstate")
)

// appendFillPercent is the entries bucket's page fill factor. Every insert
// lands at the right edge of the key space (after an optional suffix
// truncation), so pages that split never receive keys in their left half
// again: filling them completely, instead of bbolt's default half, keeps the
// file about half the size.
const appendFillPercent = 1.0

// BoltStore is a Store in one bbolt file. It is safe for concurrent use
// (bbolt serializes writers), though the store actor is its only user.
type BoltStore struct {
	db   *bolt.DB
	path string
}

var _ Store = (*BoltStore)(nil)

// OpenBolt opens the log in the bbolt file at path, creating the file (mode
// 0600) if it does not exist; its directory must exist. Errors are one line,
// name the file and say what to do; a file held by another process fails
// with an error wrapping ErrLocked, one that is not a readable bbolt file
// with one wrapping ErrCorrupt.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)

	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: timeout,
		// The freelist is not written on every commit (less I/O per fsync,
		// which is what an append-heavy log pays for); bbolt rebuilds it by
		// scanning the file when it opens.
		NoFreelistSync: true,
		// Truncations free runs of pages; the map freelist stays fast when
		// the free space is fragmented, the array one does not.
		FreelistType: bolt.FreelistMapType,
		NoSync:       opts.UnsafeNoSync,
	})
	if err != nil {
		return nil, openError(path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketEntries); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketMeta)
		return err
	})
	if err == nil && created {
		// A new file's directory entry is durable only once the directory
		// is synced; without this a power loss could lose the whole file.
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("logstore: cannot initialize data file %s (check the disk and the file's permissions): %w", path, err)
	}
	return &BoltStore{db: db, path: path}, nil
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
	if cause != nil {
		detail += ": " + cause.Error()
	}
	return &storeError{
		msg:  fmt.Sprintf("logstore: data file %s is corrupt (%s); this node must not rejoin with it: stop it, move the file aside and rebuild the node from its peers", s.path, detail),
		kind: ErrCorrupt, cause: cause,
	}
}

// Load reads the hard state and every entry in one read transaction and
// checks that the entries are exactly 1..n: each key 8 bytes, no gap, each
// value decodes, each entry's index equals its key.
func (s *BoltStore) Load() (State, error) {
	var st State
	err := s.db.View(func(tx *bolt.Tx) error {
		meta, ents := tx.Bucket(bucketMeta), tx.Bucket(bucketEntries)
		if meta == nil || ents == nil {
			return s.corrupt("a bucket is missing", nil)
		}
		if v := meta.Get(keyHardState); v != nil {
			hs := &pb.HardState{}
			if err := proto.Unmarshal(v, hs); err != nil {
				return s.corrupt("the hard state does not decode", err)
			}
			st.HardState = hs
		}
		c := ents.Cursor()
		if k, _ := c.Last(); len(k) == 8 {
			// A capacity hint only; a bogus last key is caught below.
			st.Entries = make([]*pb.Entry, 0, min(binary.BigEndian.Uint64(k), 1<<20))
		}
		want := uint64(1)
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return s.corrupt(fmt.Sprintf("entry key %x is not an 8-byte index", k), nil)
			}
			idx := binary.BigEndian.Uint64(k)
			if idx != want {
				return s.corrupt(fmt.Sprintf("entry %d is missing, the next key is %d", want, idx), nil)
			}
			if v == nil {
				return s.corrupt(fmt.Sprintf("entry %d is a bucket, not a value", idx), nil)
			}
			// proto.Unmarshal copies bytes fields, so the entry does not
			// point into bbolt's mmap, which is only valid in this tx.
			e := &pb.Entry{}
			if err := proto.Unmarshal(v, e); err != nil {
				return s.corrupt(fmt.Sprintf("entry %d does not decode", idx), err)
			}
			if e.Index != idx {
				return s.corrupt(fmt.Sprintf("key %d holds an entry with index %d", idx, e.Index), nil)
			}
			st.Entries = append(st.Entries, e)
			want++
		}
		return nil
	})
	if err != nil {
		return State{}, s.wrapTxError("load", err)
	}
	return st, nil
}

// Write applies updates in one read-write transaction, committed with one
// fsync, after checking them against the stored last index.
func (s *BoltStore) Write(updates []Update) error {
	if len(updates) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, ents := tx.Bucket(bucketMeta), tx.Bucket(bucketEntries)
		if meta == nil || ents == nil {
			return s.corrupt("a bucket is missing", nil)
		}
		last, err := s.lastIndex(ents)
		if err != nil {
			return err
		}
		if _, err := checkUpdates(last, updates); err != nil {
			return err
		}
		ents.FillPercent = appendFillPercent

		// bbolt requires keys and values to stay valid until the commit,
		// so they are carved out of one buffer that is never overwritten.
		size := 0
		for _, u := range updates {
			for _, e := range u.Entries {
				size += 8 + proto.Size(e)
			}
		}
		buf := make([]byte, 0, size)
		for _, u := range updates {
			if u.HardState != nil {
				v, err := proto.Marshal(u.HardState)
				if err != nil {
					return err
				}
				if err := meta.Put(keyHardState, v); err != nil {
					return err
				}
			}
			if len(u.Entries) == 0 {
				continue
			}
			if first := u.Entries[0].Index; first <= last {
				if err := truncateFrom(ents, first); err != nil {
					return err
				}
			}
			for _, e := range u.Entries {
				off := len(buf)
				buf = binary.BigEndian.AppendUint64(buf, e.Index)
				buf, err = proto.MarshalOptions{}.MarshalAppend(buf, e)
				if err != nil {
					return err
				}
				if err := ents.Put(buf[off:off+8], buf[off+8:]); err != nil {
					return err
				}
			}
			last = u.Entries[len(u.Entries)-1].Index
		}
		return nil
	})
	if err != nil {
		return s.wrapTxError("write", err)
	}
	return nil
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

// truncateFrom deletes every entry with index >= first. It seeks again after
// each delete rather than calling Next, which is not reliable after a
// cursor delete in bbolt.
func truncateFrom(ents *bolt.Bucket, first uint64) error {
	k := binary.BigEndian.AppendUint64(nil, first)
	c := ents.Cursor()
	for key, _ := c.Seek(k); key != nil; key, _ = c.Seek(k) {
		if err := c.Delete(); err != nil {
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

// Close closes the file and releases its lock.
func (s *BoltStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("logstore: closing data file %s: %w", s.path, err)
	}
	return nil
}
