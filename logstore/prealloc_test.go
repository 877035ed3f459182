package logstore

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

// TestJournalIsPreallocated: journal files are written in place into a file
// that already has its full size (zeros), the next one is prepared in the
// background and taken at a rotation, and none of it changes what a reopen
// reads back. No spare is left after Close, and a stale one is not used.
func TestJournalIsPreallocated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ketch.db")
	opts := BoltOptions{JournalFileBytes: 64 << 10}
	s, err := OpenBolt(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	prealloc := opts.JournalFileBytes + journalSlack
	size := func(name string) int64 {
		t.Helper()
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	waitSpare := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if st, err := os.Stat(spareName(path)); err == nil && st.Size() == prealloc {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("no spare journal file of the preallocated size within 10 s")
			}
			time.Sleep(5 * time.Millisecond) // polling the background writer
		}
	}
	waitSpare()
	mustWrite(t, s, Update{HardState: &pb.HardState{Term: 1}, Entries: ents(1, 10, 1)})
	files, _ := journalFiles(path)
	if len(files) != 1 || size(files[0].path) != prealloc {
		t.Fatalf("journal files %v: want one of %d bytes", files, prealloc)
	}
	// Past JournalFileBytes the store rotates into the spare (renamed:
	// the spare is gone until the next one is written).
	var want []*pb.Entry
	want = append(want, ents(1, 10, 1)...)
	big := ents(11, 60, 1)
	for _, e := range big {
		e.Data = make([]byte, 2000)
		e.Data[0] = 1
	}
	for _, e := range big {
		mustWrite(t, s, Update{Entries: []*pb.Entry{e}})
	}
	want = append(want, big...)
	waitSpare()
	files, _ = journalFiles(path)
	if len(files) == 0 || files[0].first == 1 {
		t.Fatalf("journal files %v: want a rotation past the first file", files)
	}
	for _, f := range files {
		if size(f.path) != prealloc {
			t.Errorf("%s: %d bytes, want %d", f.path, size(f.path), prealloc)
		}
	}
	// A crash image (journal files as they are) reads back every write.
	img := crashImage(t, s)
	checkState(t, mustOpenBolt(t, img), &pb.HardState{Term: 1}, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{spareName(path), spareName(path) + ".tmp"} {
		if _, err := os.Stat(name); !os.IsNotExist(err) {
			t.Errorf("%s after Close: %v, want it gone", name, err)
		}
	}
	// A stale spare (say, of a run that crashed while writing it) is
	// removed at start-up, never used as it is.
	if err := os.WriteFile(spareName(path), []byte("not zeros"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mustOpenBolt(t, path)
	checkState(t, r, &pb.HardState{Term: 1}, want)
	mustWrite(t, r, Update{Entries: ents(61, 61, 1)})
	checkState(t, mustOpenBolt(t, crashImage(t, r)), &pb.HardState{Term: 1}, append(want, ents(61, 61, 1)...))
}

// TestWrittenEnd: the written part of a preallocated file ends after the
// last trailer, also when that trailer ends in zero bytes; a record cut
// inside its trailer is whole and kept; one cut inside its data is not.
func TestWrittenEnd(t *testing.T) {
	// A record whose trailer's checksum ends in a zero byte.
	var rec []byte
	var seq uint64
	for seq = 1; ; seq++ {
		var err error
		if rec, err = encodeRecord(seq, []Update{{Entries: ents(seq, seq, 1)}}); err != nil {
			t.Fatal(err)
		}
		if rec[len(rec)-1] == 0 {
			break
		}
	}
	zeros := make([]byte, 4096)
	for _, tc := range []struct {
		name string
		data []byte
		want int
	}{
		{"a record, then zeros", append(append([]byte(nil), rec...), zeros...), len(rec)},
		{"only zeros", zeros, 0},
		{"no zeros", rec, len(rec)},
	} {
		if got := writtenEnd(tc.data); got != tc.want {
			t.Errorf("%s: writtenEnd = %d, want %d", tc.name, got, tc.want)
		}
	}
	read := func(data []byte) int {
		t.Helper()
		name := filepath.Join(t.TempDir(), "j")
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		recs, _, err := readJournal(journalFile{path: name, first: seq}, true, true)
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}
	if n := read(append(append([]byte(nil), rec...), zeros...)); n != 1 {
		t.Errorf("a record then zeros: %d records read, want 1", n)
	}
	cut := append(append([]byte(nil), rec[:len(rec)-5]...), zeros...)
	if n := read(cut); n != 1 {
		t.Errorf("a record whose trailer is cut short: %d records, want it kept", n)
	}
	cut = append(append([]byte(nil), rec[:len(rec)-journalTrailerBytes-3]...), zeros...)
	if n := read(cut); n != 0 {
		t.Errorf("a record cut inside its data: %d records, want it dropped as torn", n)
	}
}
