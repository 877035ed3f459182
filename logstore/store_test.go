package logstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	pb "github.com/ketch-raft/ketch/messages"
)

// ---------------------------------------------------------------- helpers

// ent is the entry at index with the given term; its data is derived from
// both, so a test sees which write an entry came from.
func ent(index, term uint64) *pb.Entry {
	return &pb.Entry{Index: index, Term: term, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: fmt.Appendf(nil, "i%d-t%d", index, term)}
}

// ents is entries from..to (inclusive) of one term.
func ents(from, to, term uint64) []*pb.Entry {
	var out []*pb.Entry
	for i := from; i <= to; i++ {
		out = append(out, ent(i, term))
	}
	return out
}

func cat(parts ...[]*pb.Entry) []*pb.Entry {
	var out []*pb.Entry
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func hs(term, vote uint64) *pb.HardState { return &pb.HardState{Term: term, Vote: vote} }

// storeKind makes one implementation of Store for the table-driven tests.
// reopen stands for a process restart: the bolt store is closed and opened
// again from its file; the memory store, whose Close keeps the data, is
// simply returned again.
type storeKind struct {
	name string
	open func(t *testing.T) (s Store, reopen func(Store) Store)
}

var storeKinds = []storeKind{
	{"memory", func(t *testing.T) (Store, func(Store) Store) {
		return NewMemory(), func(s Store) Store { return s }
	}},
	{"bolt", func(t *testing.T) (Store, func(Store) Store) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "ketch.db")
		s := mustOpenBolt(t, path)
		return s, func(old Store) Store {
			t.Helper()
			if err := old.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			return mustOpenBolt(t, path)
		}
	}},
}

func mustOpenBolt(t *testing.T, path string) *BoltStore {
	t.Helper()
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustWrite(t *testing.T, s Store, updates ...Update) {
	t.Helper()
	if err := s.Write(updates); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func mustLoad(t *testing.T, s Store) State {
	t.Helper()
	st, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

// checkState fails unless s holds exactly wantHS and want.
func checkState(t *testing.T, s Store, wantHS *pb.HardState, want []*pb.Entry) {
	t.Helper()
	st := mustLoad(t, s)
	if !proto.Equal(st.HardState, wantHS) || (st.HardState == nil) != (wantHS == nil) {
		t.Errorf("hard state = %v, want %v", st.HardState, wantHS)
	}
	if len(st.Entries) != len(want) {
		t.Fatalf("got %d entries (last %d), want %d", len(st.Entries), st.LastIndex(), len(want))
	}
	for i := range want {
		if !proto.Equal(st.Entries[i], want[i]) {
			t.Errorf("entry %d = %v, want %v", i+1, st.Entries[i], want[i])
		}
	}
}

// ---------------------------------------------------------------- semantics

func TestStoreWrite(t *testing.T) {
	tests := []struct {
		name   string
		writes [][]Update // each inner slice is one Write call
		wantHS *pb.HardState
		want   []*pb.Entry
	}{
		{name: "empty store"},
		{
			name:   "append",
			writes: [][]Update{{{Entries: ents(1, 3, 1)}}},
			want:   ents(1, 3, 1),
		},
		{
			name:   "append over several writes",
			writes: [][]Update{{{Entries: ents(1, 2, 1)}}, {{Entries: ents(3, 3, 1)}}, {{Entries: ents(4, 6, 2)}}},
			want:   cat(ents(1, 3, 1), ents(4, 6, 2)),
		},
		{
			name:   "append over several updates of one write",
			writes: [][]Update{{{Entries: ents(1, 2, 1)}, {Entries: ents(3, 3, 1)}, {Entries: ents(4, 6, 2)}}},
			want:   cat(ents(1, 3, 1), ents(4, 6, 2)),
		},
		{
			name:   "replace a suffix",
			writes: [][]Update{{{Entries: ents(1, 5, 1)}}, {{Entries: ents(3, 4, 2)}}},
			want:   cat(ents(1, 2, 1), ents(3, 4, 2)),
		},
		{
			name:   "replace the last entry only",
			writes: [][]Update{{{Entries: ents(1, 3, 1)}}, {{Entries: ents(3, 3, 2)}}},
			want:   cat(ents(1, 2, 1), ents(3, 3, 2)),
		},
		{
			name:   "replace the whole log",
			writes: [][]Update{{{Entries: ents(1, 4, 1)}}, {{Entries: ents(1, 1, 3)}}},
			want:   ents(1, 1, 3),
		},
		{
			name:   "replace a suffix written earlier in the same write",
			writes: [][]Update{{{Entries: ents(1, 5, 1)}, {Entries: ents(2, 3, 2)}, {Entries: ents(4, 4, 3)}}},
			want:   cat(ents(1, 1, 1), ents(2, 3, 2), ents(4, 4, 3)),
		},
		{
			name:   "hard state",
			writes: [][]Update{{{HardState: hs(2, 3)}}},
			wantHS: hs(2, 3),
		},
		{
			name:   "nil hard state leaves the stored one",
			writes: [][]Update{{{HardState: hs(2, 3)}}, {{Entries: ents(1, 1, 2)}}, {{}}},
			wantHS: hs(2, 3),
			want:   ents(1, 1, 2),
		},
		{
			name:   "the last hard state of a write wins",
			writes: [][]Update{{{HardState: hs(2, 3)}, {HardState: hs(3, 0)}, {Entries: ents(1, 1, 3)}}},
			wantHS: hs(3, 0),
			want:   ents(1, 1, 3),
		},
		{
			name:   "hard state and entries in one update",
			writes: [][]Update{{{HardState: hs(1, 1), Entries: ents(1, 2, 1)}}, {{HardState: hs(4, 2), Entries: ents(2, 2, 4)}}},
			wantHS: hs(4, 2),
			want:   cat(ents(1, 1, 1), ents(2, 2, 4)),
		},
		{
			name:   "empty writes change nothing",
			writes: [][]Update{{{Entries: ents(1, 1, 1)}}, nil, {}, {{}}},
			want:   ents(1, 1, 1),
		},
	}
	for _, kind := range storeKinds {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				s, reopen := kind.open(t)
				for _, w := range tt.writes {
					mustWrite(t, s, w...)
				}
				checkState(t, s, tt.wantHS, tt.want)
				s = reopen(s)
				checkState(t, s, tt.wantHS, tt.want)
			})
		}
	}
}

func TestStoreRejectsInvalidUpdates(t *testing.T) {
	// Every case starts from the log 1..3 (term 1) with hard state (1, 1)
	// and must leave it untouched.
	tests := []struct {
		name    string
		updates []Update
	}{
		{"index zero", []Update{{Entries: []*pb.Entry{ent(0, 1)}}}},
		{"gap after the last index", []Update{{Entries: ents(5, 6, 1)}}},
		{"entries not contiguous", []Update{{Entries: []*pb.Entry{ent(4, 1), ent(6, 1)}}}},
		{"entries going backwards", []Update{{Entries: []*pb.Entry{ent(3, 2), ent(2, 2)}}}},
		{"nil entry", []Update{{Entries: []*pb.Entry{ent(4, 1), nil}}}},
		{"a valid update before an invalid one is not applied either",
			[]Update{{HardState: hs(9, 9), Entries: ents(4, 4, 9)}, {Entries: ents(7, 7, 9)}}},
		{"a gap left by a truncation earlier in the write",
			[]Update{{Entries: ents(2, 2, 2)}, {Entries: ents(4, 4, 2)}}},
	}
	for _, kind := range storeKinds {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				s, _ := kind.open(t)
				mustWrite(t, s, Update{HardState: hs(1, 1), Entries: ents(1, 3, 1)})
				err := s.Write(tt.updates)
				if !errors.Is(err, ErrInvalidUpdate) {
					t.Fatalf("Write = %v, want an error wrapping ErrInvalidUpdate", err)
				}
				checkState(t, s, hs(1, 1), ents(1, 3, 1))
			})
		}
	}
}

// The store copies: a caller changing what it wrote or what it loaded does
// not change the store.
func TestStoreDoesNotAlias(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			s, _ := kind.open(t)
			w := ents(1, 2, 1)
			h := hs(1, 1)
			mustWrite(t, s, Update{HardState: h, Entries: w})
			w[0].Data[0] = 'X'
			w[1].Term = 7
			h.Term = 7
			st := mustLoad(t, s)
			st.Entries[0].Data[0] = 'Y'
			st.HardState.Vote = 7
			checkState(t, s, hs(1, 1), ents(1, 2, 1))
		})
	}
}

func TestMemoryStoreConcurrentUse(t *testing.T) {
	s := NewMemory()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if g == 0 {
					if err := s.Write([]Update{{Entries: ents(uint64(i+1), uint64(i+1), 1)}}); err != nil {
						t.Errorf("Write: %v", err)
					}
				} else if _, err := s.Load(); err != nil {
					t.Errorf("Load: %v", err)
				}
			}
		})
	}
	wg.Wait()
	checkState(t, s, nil, ents(1, 200, 1))
}

// ---------------------------------------------------------------- bolt only

// TestBoltDetectsCorruption damages a file with bbolt directly, behind the
// store's back, and expects Load to refuse it.
func TestBoltDetectsCorruption(t *testing.T) {
	tests := []struct {
		name   string
		damage func(ents, meta *bolt.Bucket) error
		want   string // in the error message
	}{
		{"undecodable entry", func(e, _ *bolt.Bucket) error {
			return e.Put(key(2), seal([]byte{0xff, 0xff, 0xff, 0xff}))
		}, "entry 2 does not decode"},
		{"a flipped byte in an entry", func(e, _ *bolt.Bucket) error {
			v := slices.Clone(e.Get(key(3)))
			v[len(v)-1] ^= 1
			return e.Put(key(3), v)
		}, "entry 3 fails its checksum"},
		{"an entry without its seal", func(e, _ *bolt.Bucket) error {
			v, err := proto.Marshal(ent(2, 1))
			if err != nil {
				return err
			}
			return e.Put(key(2), v)
		}, "entry 2 fails its checksum"},
		{"a flipped byte in the hard state", func(_, m *bolt.Bucket) error {
			v := slices.Clone(m.Get(keyHardState))
			v[0] ^= 0x80
			return m.Put(keyHardState, v)
		}, "hard state fails its checksum"},
		{"an unknown format", func(_, m *bolt.Bucket) error {
			return m.Put(keyFormat, []byte{9})
		}, "format marker"},
		{"gap", func(e, _ *bolt.Bucket) error { return e.Delete(key(3)) }, "entry 3 is missing"},
		{"first entry missing", func(e, _ *bolt.Bucket) error { return e.Delete(key(1)) }, "entry 1 is missing"},
		{"key and index disagree", func(e, _ *bolt.Bucket) error {
			v, err := proto.Marshal(ent(7, 1))
			if err != nil {
				return err
			}
			return e.Put(key(2), seal(v))
		}, "key 2 holds an entry with index 7"},
		{"key of the wrong size", func(e, _ *bolt.Bucket) error {
			return e.Put([]byte("x"), []byte{})
		}, "not an 8-byte index"},
		{"undecodable hard state", func(_, m *bolt.Bucket) error {
			return m.Put(keyHardState, seal([]byte{0xff}))
		}, "hard state does not decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ketch.db")
			w := mustOpenBolt(t, path)
			mustWrite(t, w, Update{HardState: hs(1, 1), Entries: ents(1, 5, 1)})
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bolt.Tx) error {
				return tt.damage(tx.Bucket(bucketEntries), tx.Bucket(bucketMeta))
			}); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			// Damage may be found when the store opens (it reads the last
			// index to continue the log) or when it loads; either way the
			// error wraps ErrCorrupt and no data comes with it.
			s, err := OpenBolt(path, BoltOptions{})
			if err == nil {
				t.Cleanup(func() { _ = s.Close() })
				var st State
				st, err = s.Load()
				if st.HardState != nil || st.Entries != nil {
					t.Errorf("Load returned data with its error: %+v", st)
				}
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("OpenBolt and Load = %v; want an error wrapping ErrCorrupt", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, path) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %s and saying %q", msg, path, tt.want)
			}
		})
	}
}

func key(i uint64) []byte {
	k := make([]byte, 8)
	for j := 7; j >= 0; j-- {
		k[j] = byte(i)
		i >>= 8
	}
	return k
}

func TestBoltRejectsAFileThatIsNotALog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ketch.db")
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenBolt(path, BoltOptions{})
	if err == nil {
		s.Close()
		t.Fatal("OpenBolt opened a garbage file")
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Errorf("OpenBolt = %v, want an error wrapping ErrCorrupt that names the file", err)
	}
}

func TestBoltLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ketch.db")
	first := mustOpenBolt(t, path)

	start := time.Now()
	second, err := OpenBolt(path, BoltOptions{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		second.Close()
		t.Fatal("a second OpenBolt of a file in use succeeded")
	}
	want := fmt.Sprintf("logstore: data file %s is locked by another process (is a node already running on this data dir?)", path)
	if !errors.Is(err, ErrLocked) || err.Error() != want {
		t.Errorf("OpenBolt = %q, want %q wrapping ErrLocked", err, want)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("OpenBolt waited %v for the lock", waited)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	mustOpenBolt(t, path) // the lock went with Close
}

func TestBoltOpenErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "ketch.db")
	_, err := OpenBolt(path, BoltOptions{})
	if err == nil || !strings.Contains(err.Error(), "directory does not exist") {
		t.Errorf("OpenBolt in a missing dir = %v, want it to say the directory does not exist", err)
	}

	s := mustOpenBolt(t, filepath.Join(t.TempDir(), "ketch.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Write([]Update{{HardState: hs(1, 1)}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close = %v, want ErrClosed", err)
	}
}

// fsync is on unless UnsafeNoSync asks otherwise.
func TestBoltSyncsByDefault(t *testing.T) {
	dir := t.TempDir()
	safe := mustOpenBolt(t, filepath.Join(dir, "safe.db"))
	if safe.db.NoSync {
		t.Error("a store opened with default options does not fsync")
	}
	unsafe, err := OpenBolt(filepath.Join(dir, "unsafe.db"), BoltOptions{UnsafeNoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unsafe.Close()
	if !unsafe.db.NoSync {
		t.Error("UnsafeNoSync did not turn fsync off")
	}
}

func TestStoreEntries(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			s, reopen := kind.open(t)
			want := cat(ents(1, 30, 1), ents(31, 40, 2))
			mustWrite(t, s, Update{Entries: ents(1, 50, 1)}, Update{Entries: ents(31, 40, 2)})
			for _, tc := range []struct {
				lo, hi   uint64
				maxBytes int
				n        int
			}{
				{1, 41, 1 << 20, 40},
				{5, 9, 1 << 20, 4},
				{35, 100, 1 << 20, 6}, // the log ends at 40
				{41, 50, 1 << 20, 0},
				{3, 41, 1, 1}, // at least one
				{3, 41, 3 * proto.Size(ent(3, 1)), 3},
			} {
				got, err := s.Entries(tc.lo, tc.hi, tc.maxBytes)
				if err != nil {
					t.Fatalf("Entries(%d, %d): %v", tc.lo, tc.hi, err)
				}
				if len(got) != tc.n {
					t.Fatalf("Entries(%d, %d, %d) = %d entries, want %d", tc.lo, tc.hi, tc.maxBytes, len(got), tc.n)
				}
				for i, e := range got {
					if !proto.Equal(e, want[tc.lo-1+uint64(i)]) {
						t.Errorf("Entries(%d, %d)[%d] = %v, want %v", tc.lo, tc.hi, i, e, want[tc.lo-1+uint64(i)])
					}
				}
			}
			s = reopen(s)
			if got, err := s.Entries(31, 32, 1<<20); err != nil || len(got) != 1 || got[0].Term != 2 {
				t.Errorf("after reopening, Entries(31, 32) = %v, %v", got, err)
			}
		})
	}
}
