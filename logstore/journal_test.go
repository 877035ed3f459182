package logstore

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/ketch-raft/ketch/messages"
)

// The journal's tests take crash images: copies of the data file and the
// journal files of a store that is still open, as a machine that lost
// power would leave them (with nothing in flight: the checkpointer is idle
// when the copy is taken, and every Write has returned). Opening the copy
// must give back exactly what was acknowledged.

// waitCheckpoints waits until the checkpointer has done everything queued.
func waitCheckpoints(t *testing.T, s *BoltStore) {
	t.Helper()
	ack := make(chan error, 1)
	s.ckpt <- checkpoint{ack: ack}
	if err := <-ack; err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
}

// crashImage copies s's files to a new directory and returns the copy's
// data file path.
func crashImage(t *testing.T, s *BoltStore) string {
	t.Helper()
	waitCheckpoints(t, s)
	dst := filepath.Join(t.TempDir(), "ketch.db")
	copyFile(t, s.path, dst)
	files, err := journalFiles(s.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		copyFile(t, f.path, dst+strings.TrimPrefix(f.path, s.path))
	}
	return dst
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// history writes a log with appends, hard states and a truncation, and
// returns what the store must hold afterwards.
func history(t *testing.T, s Store) (*pb.HardState, []*pb.Entry) {
	t.Helper()
	mustWrite(t, s, Update{HardState: hs(1, 1), Entries: ents(1, 40, 1)})
	mustWrite(t, s, Update{Entries: ents(41, 80, 1)}, Update{HardState: hs(2, 3)})
	mustWrite(t, s, Update{HardState: hs(3, 0), Entries: ents(61, 70, 3)}) // truncates 61..80
	mustWrite(t, s, Update{Entries: ents(71, 120, 3)})
	return hs(3, 0), cat(ents(1, 60, 1), ents(61, 120, 3))
}

func TestJournalRecoversAcknowledgedWrites(t *testing.T) {
	for _, fileBytes := range []int64{1 << 20, 512} { // no rotation; a rotation every write or two
		s, err := OpenBolt(filepath.Join(t.TempDir(), "ketch.db"), BoltOptions{JournalFileBytes: fileBytes})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wantHS, want := history(t, s)

		img := crashImage(t, s)
		files, _ := journalFiles(img)
		if len(files) == 0 {
			t.Fatal("the crash image has no journal file")
		}
		r := mustOpenBolt(t, img)
		if got := r.Recovered(); got.TornBytes != 0 || (fileBytes > 4096 && got.Records != 4) {
			t.Errorf("JournalFileBytes %d: Recovered = %+v, want 4 records (without rotation), nothing torn", fileBytes, got)
		}
		checkState(t, r, wantHS, want)
		if left, _ := journalFiles(img); len(left) != 1 {
			t.Errorf("after recovery %d journal files, want the one new file", len(left))
		}
		// The recovered store continues the log and the sequence numbers.
		mustWrite(t, r, Update{Entries: ents(121, 130, 3)})
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		checkState(t, mustOpenBolt(t, img), wantHS, cat(want, ents(121, 130, 3)))
	}
}

// A write whose fdatasync never returned was never acknowledged: a torn
// last record (the file ends inside it or before its trailer; the bytes
// that did land may be zeros) is dropped. A last record that fails its
// checksum although the file ends with its trailer, or whose length field
// is damaged, was acknowledged: that is corruption, never a quiet loss.
// The data is zeros, as a value of zeros is, so no test relies on the data
// looking unlike a tear; a damaged trailer alone loses nothing.
func TestJournalDropsATornTail(t *testing.T) {
	s := mustOpenBolt(t, filepath.Join(t.TempDir(), "ketch.db"))
	wantHS, want := history(t, s)
	big := ents(121, 125, 3)
	for _, e := range big {
		e.Data = make([]byte, 1200)
	}
	mustWrite(t, s, Update{Entries: big}) // the write that will be torn

	const (
		torn = iota
		corrupt
		intact
	)
	for _, tc := range []struct {
		name string
		tear func(data []byte) []byte
		want int
	}{
		{"cut short", func(d []byte) []byte { return d[:len(d)-7] }, torn},
		{"cut before its trailer", func(d []byte) []byte { return d[:len(d)-journalTrailerBytes] }, torn},
		{"header cut short", func(d []byte) []byte { return d[:len(d)-lastRecordLen(t, d)+5] }, torn},
		{"all zeros from the record on", func(d []byte) []byte {
			clear(d[len(d)-lastRecordLen(t, d):])
			return d
		}, torn},
		{"zero sectors at the end", func(d []byte) []byte {
			from := (len(d) - lastRecordLen(t, d) + 600) &^ 511
			clear(d[from:])
			return d
		}, torn},
		{"a flipped byte in the last record's data", func(d []byte) []byte {
			d[len(d)-journalTrailerBytes-3] ^= 0x5a
			return d
		}, corrupt},
		{"a zero byte made non-zero in the last record", func(d []byte) []byte {
			d[len(d)-journalTrailerBytes-600] = 0x01
			return d
		}, corrupt},
		{"the last record's length damaged", func(d []byte) []byte {
			d[len(d)-lastRecordLen(t, d)] ^= 0x40
			return d
		}, corrupt},
		{"the last record's format flag damaged", func(d []byte) []byte {
			d[len(d)-lastRecordLen(t, d)+3] ^= 0x80
			return d
		}, corrupt},
		{"a flipped byte in the last record's trailer", func(d []byte) []byte {
			d[len(d)-3] ^= 0x5a
			return d
		}, intact},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := crashImage(t, s)
			files, _ := journalFiles(img)
			last := files[len(files)-1].path
			data, err := os.ReadFile(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(last, tc.tear(data), 0o600); err != nil {
				t.Fatal(err)
			}
			switch tc.want {
			case corrupt:
				r, err := OpenBolt(img, BoltOptions{})
				if err == nil {
					r.Close()
					t.Fatal("OpenBolt dropped an acknowledged record as if torn")
				}
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("OpenBolt = %v, want ErrCorrupt", err)
				}
			case torn:
				r := mustOpenBolt(t, img)
				if r.Recovered().TornBytes == 0 {
					t.Error("Recovered().TornBytes = 0, want the torn record's size")
				}
				checkState(t, r, wantHS, want) // everything but the torn write
			case intact:
				r := mustOpenBolt(t, img)
				if r.Recovered().TornBytes != 0 {
					t.Errorf("Recovered().TornBytes = %d, want nothing dropped", r.Recovered().TornBytes)
				}
				checkState(t, r, wantHS, cat(want, big))
			}
		})
	}
}

// lastRecordLen is the size of the last record in a journal file that holds
// only whole records.
func lastRecordLen(t *testing.T, d []byte) int {
	off, n := 0, 0
	for off < len(d) {
		n = journalHeaderBytes + int(binary.LittleEndian.Uint32(d[off:])&^recordSealed) + journalTrailerBytes
		off += n
	}
	if off != len(d) {
		t.Fatal("journal file does not end at a record boundary")
	}
	return n
}

func TestJournalDamageBeforeTheEndIsCorruption(t *testing.T) {
	s := mustOpenBolt(t, filepath.Join(t.TempDir(), "ketch.db"))
	history(t, s)
	img := crashImage(t, s)
	files, _ := journalFiles(img)
	data, err := os.ReadFile(files[0].path)
	if err != nil {
		t.Fatal(err)
	}
	data[journalHeaderBytes+10] ^= 0xff // inside the first of four records
	if err := os.WriteFile(files[0].path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := OpenBolt(img, BoltOptions{})
	if err == nil {
		r.Close()
		t.Fatal("OpenBolt accepted a journal damaged before its last record")
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), img) || strings.Contains(err.Error(), "\n") {
		t.Errorf("OpenBolt = %v, want a one-line error wrapping ErrCorrupt that names the file", err)
	}
}

// A journal file whose records bbolt already holds (its removal after a
// checkpoint was lost in a crash) is skipped, not replayed over newer
// writes.
func TestJournalSkipsCheckpointedFiles(t *testing.T) {
	s := mustOpenBolt(t, filepath.Join(t.TempDir(), "ketch.db"))
	mustWrite(t, s, Update{HardState: hs(1, 1), Entries: ents(1, 50, 1)})
	stale := crashImage(t, s) // holds the journal file with record 1
	staleFiles, _ := journalFiles(stale)

	mustLoad(t, s)                                                         // checkpoints record 1 into bbolt
	mustWrite(t, s, Update{HardState: hs(2, 2), Entries: ents(20, 30, 2)}) // truncates 20..50
	img := crashImage(t, s)
	copyFile(t, staleFiles[0].path, img+strings.TrimPrefix(staleFiles[0].path, stale))

	r := mustOpenBolt(t, img)
	if got := r.Recovered().Records; got != 1 {
		t.Errorf("Recovered().Records = %d, want 1 (record 1 is in bbolt already)", got)
	}
	checkState(t, r, hs(2, 2), cat(ents(1, 19, 1), ents(20, 30, 2)))
}

// A clean Close leaves everything in bbolt and no journal behind.
func TestJournalCleanCloseLeavesNoJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ketch.db")
	s := mustOpenBolt(t, path)
	wantHS, want := history(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if files, _ := journalFiles(path); len(files) != 0 {
		t.Errorf("%d journal files after a clean Close", len(files))
	}
	r := mustOpenBolt(t, path)
	if got := r.Recovered(); got != (Recovery{}) {
		t.Errorf("Recovered after a clean Close = %+v, want nothing", got)
	}
	checkState(t, r, wantHS, want)
}

func TestEntryIndex(t *testing.T) {
	for _, e := range []*pb.Entry{ent(1, 1), ent(1<<40, 9), {Index: 7}, {Index: 3, Data: []byte("x")}} {
		b, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := entryIndex(b); got != e.Index {
			t.Errorf("entryIndex(%v) = %d", e, got)
		}
	}
	if got := entryIndex([]byte{0xff}); got != 0 {
		t.Errorf("entryIndex(garbage) = %d, want 0", got)
	}
}
