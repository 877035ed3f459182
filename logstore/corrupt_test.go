package logstore

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/ketch-raft/ketch/messages"
	bolt "go.etcd.io/bbolt"
)

var flipRounds = flag.Int("flip-rounds", 300, "TestRandomFlipsAreDiagnosed: damaged copies of the store to open")

// Corruption is diagnosed, never served (issue 11): bytes flipped at random
// offsets of a closed store's files, many times over. Every open either
// gives back exactly what was written or fails with ErrCorrupt, as one
// line naming the file; none panics (a panic would end the test binary)
// and none returns a damaged entry. Half the rounds damage a store closed
// cleanly (the bbolt file alone), half a crash image with journal files.
func TestRandomFlipsAreDiagnosed(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean", "ketch.db")
	crashed := filepath.Join(dir, "crashed", "ketch.db")
	// Both stores hold the same writes.
	var wantHS *pb.HardState
	var want []*pb.Entry
	rng := rand.New(rand.NewPCG(11, 22))
	for i := uint64(1); i <= 3000; i += 100 {
		batch := ents(i, i+99, 1+i/1000)
		for k, e := range batch {
			e.Data = make([]byte, 20+rng.IntN(200))
			if k%2 == 0 { // half the values zeros, as a value of zeros is
				for b := range e.Data {
					e.Data[b] = byte(rng.IntN(256))
				}
			}
		}
		want = append(want, batch...)
	}
	wantHS = hs(3, 1)
	for _, path := range []string{clean, crashed} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		s, err := OpenBolt(path, BoltOptions{JournalFileBytes: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(want); i += 100 {
			mustWrite(t, s, Update{HardState: hs(want[i].Term, 1), Entries: want[i : i+100]})
		}
		if path == clean {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		} else {
			path = crashImage(t, s)
			crashed = path
			_ = s.Close()
		}
	}
	files := func(path string) []string { // with bytes to flip
		out := []string{path}
		js, _ := journalFiles(path)
		for _, j := range js {
			if fi, err := os.Stat(j.path); err == nil && fi.Size() > 0 {
				out = append(out, j.path)
			}
		}
		return out
	}
	var ok, corrupt int
	for round := range *flipRounds {
		src := clean
		if round%2 == 1 {
			src = crashed
		}
		img := filepath.Join(t.TempDir(), "ketch.db")
		all := []string{src}
		js, _ := journalFiles(src)
		for _, j := range js {
			all = append(all, j.path)
		}
		for _, f := range all {
			copyFile(t, f, img+strings.TrimPrefix(f, src))
		}
		targets := files(img)
		victim := targets[rng.IntN(len(targets))]
		data, err := os.ReadFile(victim)
		if err != nil {
			t.Fatal(err)
		}
		flips := 1 + rng.IntN(4)
		var where []string
		for range flips {
			off := rng.IntN(len(data))
			data[off] ^= byte(1 + rng.IntN(255))
			where = append(where, fmt.Sprint(off))
		}
		if err := os.WriteFile(victim, data, 0o600); err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("round %d: %s at %s", round, filepath.Base(victim), strings.Join(where, ","))
		st, err := openAndLoad(img)
		switch {
		case err == nil:
			if !proto.Equal(st.HardState, wantHS) || len(st.Entries) != len(want) {
				t.Fatalf("%s: opened with hard state %v and %d entries, want %v and %d", what, st.HardState, len(st.Entries), wantHS, len(want))
			}
			for i := range want {
				if !proto.Equal(st.Entries[i], want[i]) {
					t.Fatalf("%s: served a damaged entry %d", what, i+1)
				}
			}
			ok++
		case errors.Is(err, ErrCorrupt):
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, img) {
				t.Fatalf("%s: %q is not one line naming the file", what, msg)
			}
			corrupt++
		default:
			t.Fatalf("%s: %v, want ErrCorrupt or the log", what, err)
		}
	}
	t.Logf("%d damaged copies: %d opened with the log intact (the flips hit unused space), %d refused as corrupt", *flipRounds, ok, corrupt)
}

func openAndLoad(path string) (State, error) {
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		return State{}, err
	}
	defer s.Close()
	return s.Load()
}

// A damaged meta page after a clean stop is corruption: bbolt would fall
// back to the other meta page, an older checkpoint, and lose the last one
// without a word. With journal files present (a crash) a torn meta page is
// what an interrupted commit leaves, and the journal has the records.
func TestDamagedMetaPageIsCorruption(t *testing.T) {
	for _, page := range []int{0, 1} {
		path := filepath.Join(t.TempDir(), "ketch.db")
		s := mustOpenBolt(t, path)
		mustWrite(t, s, Update{HardState: hs(1, 1), Entries: ents(1, 10, 1)})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		pageSize := int64(os.Getpagesize())
		if _, err := f.WriteAt([]byte{0xde, 0xad}, int64(page)*pageSize+16+40); err != nil { // the meta's high water mark
			t.Fatal(err)
		}
		_ = f.Close()
		_, err = openAndLoad(path)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("meta page %d", page)) {
			t.Fatalf("meta page %d damaged: %v, want ErrCorrupt naming the page", page, err)
		}
	}
}

// A file written before seals existed (no freelist on disk, no format key,
// values as they were, journal records of the old format) is copied into a
// new file of the current format when it opens, and reads back exactly as
// it was written.
func TestLegacyFileIsSealedOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ketch.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	old := ents(1, 20, 1)
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		es, err := tx.CreateBucket(bucketEntries)
		if err != nil {
			return err
		}
		for _, e := range old {
			if err := es.Put(key(e.Index), mustMarshal(t, e)); err != nil {
				return err
			}
		}
		if err := meta.Put(keyJournalSeq, binary.BigEndian.AppendUint64(nil, 3)); err != nil {
			return err
		}
		return meta.Put(keyHardState, mustMarshal(t, hs(1, 2)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// A journal record of the old format: record 4, entries 21-25 and a
	// hard state, values unsealed, no flag in the length.
	var payload []byte
	payload = protowire.AppendTag(payload, 1, protowire.BytesType)
	payload = protowire.AppendBytes(payload, mustMarshal(t, hs(2, 2)))
	for _, e := range ents(21, 25, 2) {
		payload = protowire.AppendTag(payload, 2, protowire.BytesType)
		payload = protowire.AppendBytes(payload, mustMarshal(t, e))
	}
	rec := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	rec = binary.LittleEndian.AppendUint32(rec, 0)
	rec = binary.LittleEndian.AppendUint64(rec, 4)
	binary.LittleEndian.PutUint32(rec[4:], headerCRC(rec, payload, false))
	rec = append(rec, payload...)
	if err := os.WriteFile(journalName(path, 4), rec, 0o600); err != nil {
		t.Fatal(err)
	}

	s := mustOpenBolt(t, path)
	if got := s.Recovered().Records; got != 1 {
		t.Errorf("replayed %d legacy records, want 1", got)
	}
	checkState(t, s, hs(2, 2), cat(old, ents(21, 25, 2)))
	mustWrite(t, s, Update{Entries: ents(26, 30, 2)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := mustOpenBolt(t, path)
	checkState(t, r, hs(2, 2), cat(old, ents(21, 30, 2)))
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The identity is recorded once, durably, survives a reopen, and is never
// replaced by another.
func TestIdentityIsRecordedOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ketch.db")
	s := mustOpenBolt(t, path)
	if id, err := s.Identity(); err != nil || id != nil {
		t.Fatalf("a new file's identity: %v, %v", id, err)
	}
	id := &pb.NodeIdentity{ClusterId: "c", NodeId: 2, Members: []*pb.Member{{Id: 1, Address: "a:1"}, {Id: 2, Address: "a:2"}}}
	if err := s.SetIdentity(id); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIdentity(proto.Clone(id).(*pb.NodeIdentity)); err != nil {
		t.Fatalf("recording the same identity again: %v", err)
	}
	other := &pb.NodeIdentity{ClusterId: "c", NodeId: 3}
	if err := s.SetIdentity(other); !errors.Is(err, ErrInvalidUpdate) {
		t.Fatalf("replacing the identity: %v, want ErrInvalidUpdate", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := mustOpenBolt(t, path)
	got, err := r.Identity()
	if err != nil || !proto.Equal(got, id) {
		t.Fatalf("identity after reopen: %v, %v; want %v", got, err, id)
	}
}

// A file from an older ketch has no freelist on disk (it was opened with
// NoFreelistSync), and bbolt rebuilds one when such a file is first opened
// for writing, with a check that panics on damaged pages in a goroutine
// nothing can recover. OpenBolt walks such a file under guard first: a
// damaged one is ErrCorrupt, never a crash of the process (which would end
// this test binary).
func TestDamagedFileWithoutFreelist(t *testing.T) {
	legacy := filepath.Join(t.TempDir(), "ketch.db")
	db, err := bolt.Open(legacy, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		es, err := tx.CreateBucket(bucketEntries)
		if err != nil {
			return err
		}
		for i := uint64(1); i <= 3000; i++ {
			if err := es.Put(key(i), mustMarshal(t, ent(i, 1))); err != nil {
				return err
			}
		}
		return meta.Put(keyHardState, mustMarshal(t, hs(1, 1)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var ok, corrupt int
	for range *flipRounds / 2 {
		img := filepath.Join(t.TempDir(), "ketch.db")
		copyFile(t, legacy, img)
		data, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		for range 1 + rng.IntN(4) {
			data[rng.IntN(len(data))] ^= byte(1 + rng.IntN(255))
		}
		if err := os.WriteFile(img, data, 0o600); err != nil {
			t.Fatal(err)
		}
		switch _, err := openAndLoad(img); {
		case err == nil:
			ok++
		case errors.Is(err, ErrCorrupt):
			corrupt++
		default:
			t.Fatalf("OpenBolt of a damaged older file: %v", err)
		}
	}
	t.Logf("damaged older files: %d opened, %d refused as corrupt, none crashed the process", ok, corrupt)
}

// A current file (its freelist on disk) that has lost its format marker is
// damaged, not old: it is refused, never "migrated" a second time.
func TestMissingFormatMarkerIsCorruption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ketch.db")
	s := mustOpenBolt(t, path)
	mustWrite(t, s, Update{HardState: hs(1, 1), Entries: ents(1, 5, 1)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyFormat) }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := openAndLoad(path); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "format marker") {
		t.Fatalf("a file without its format marker: %v, want ErrCorrupt naming the marker", err)
	}
}
