package logstore

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Raft §7, in the store: a compaction deletes the log's prefix and records
// where the log now starts; a reset (Figure 13 rule 7) deletes every entry.
// Both survive a restart (the journal replays them into bbolt) and a
// checkpoint, and the log goes on after the base.
func TestStoreCompaction(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			s, reopen := kind.open(t)
			mustWrite(t, s, Update{HardState: hs(2, 1), Entries: cat(ents(1, 10, 1), ents(11, 20, 2))})
			mustWrite(t, s, Update{Compact: &Compaction{Through: 12, Term: 2}})
			check := func(s Store, base Base, first, last uint64) {
				t.Helper()
				st := mustLoad(t, s)
				if st.Base != base || st.LastIndex() != last || len(st.Entries) != int(last-first+1) || len(st.Entries) > 0 && st.Entries[0].Index != first {
					t.Fatalf("state base %+v, %d entries from %v to %d; want base %+v, %d..%d", st.Base, len(st.Entries), st.Entries[:min(1, len(st.Entries))], st.LastIndex(), base, first, last)
				}
			}
			check(s, Base{Index: 12, Term: 2}, 13, 20)
			s = reopen(s)
			check(s, Base{Index: 12, Term: 2}, 13, 20)
			// Reads of compacted entries return none; the rest as before.
			if got, err := s.Entries(5, 15, 1<<20); err != nil || len(got) != 0 {
				t.Fatalf("Entries(5, 15) = %v, %v; want none (compacted)", got, err)
			}
			if got, err := s.Entries(13, 15, 1<<20); err != nil || len(got) != 2 || got[0].Index != 13 {
				t.Fatalf("Entries(13, 15) = %v, %v", got, err)
			}
			// Nothing may be written at or below the base.
			if err := s.Write([]Update{{Entries: ents(12, 13, 3)}}); !errors.Is(err, ErrInvalidUpdate) {
				t.Fatalf("a write at the base: %v, want ErrInvalidUpdate", err)
			}
			// Compacting past the end is invalid; again at the base a no-op.
			if err := s.Write([]Update{{Compact: &Compaction{Through: 21, Term: 2}}}); !errors.Is(err, ErrInvalidUpdate) {
				t.Fatalf("a compaction past the log: %v", err)
			}
			mustWrite(t, s, Update{Compact: &Compaction{Through: 12, Term: 2}})
			// A truncation after the base still works, then a reset, then
			// appends after it, in one batch.
			mustWrite(t, s, Update{Entries: ents(15, 16, 3)},
				Update{Compact: &Compaction{Through: 30, Term: 4, Reset: true}},
				Update{Entries: ents(31, 32, 4)})
			check(s, Base{Index: 30, Term: 4}, 31, 32)
			s = reopen(s)
			check(s, Base{Index: 30, Term: 4}, 31, 32)
			mustWrite(t, s, Update{Entries: ents(33, 33, 4)})
			s = reopen(s)
			check(s, Base{Index: 30, Term: 4}, 31, 33)
		})
	}
}

// thesis §4.1: a compaction records the configuration in effect at its
// index, and Load gives it back with the base, across a restart (journal
// replay) and a checkpoint, so a node knows its membership without the
// compacted entries.
func TestCompactionKeepsTheConfiguration(t *testing.T) {
	conf := &pb.Configuration{Members: []*pb.Member{
		{Id: 1, Address: "a:1", Role: pb.MemberRole_MEMBER_ROLE_VOTER},
		{Id: 4, Address: "a:4", Role: pb.MemberRole_MEMBER_ROLE_LEARNER},
	}, Removed: []uint64{2, 3}}
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			s, reopen := kind.open(t)
			mustWrite(t, s, Update{HardState: hs(2, 1), Entries: ents(1, 10, 2)})
			mustWrite(t, s, Update{Compact: &Compaction{Through: 8, Term: 2, Config: conf, ConfigIndex: 7}})
			for range 2 {
				st := mustLoad(t, s)
				if st.Base.Index != 8 || st.Base.ConfigIndex != 7 || !proto.Equal(st.Base.Config, conf) {
					t.Fatalf("base %+v, want 8 with the configuration of index 7 (%v)", st.Base, conf)
				}
				s = reopen(s)
			}
		})
	}
}

// A compaction still in the journal when the machine stops (a crash image)
// is replayed into bbolt, and one a checkpoint already moved is not
// replayed over the log that follows it; with rotations every write or
// two, some compactions reach bbolt by checkpoint, some by replay.
func TestCompactionIsReplayedFromTheJournal(t *testing.T) {
	for _, fileBytes := range []int64{1 << 20, 512} {
		s, err := OpenBolt(filepath.Join(t.TempDir(), "ketch.db"), BoltOptions{JournalFileBytes: fileBytes})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for i := uint64(0); i < 20; i++ {
			mustWrite(t, s, Update{Entries: ents(i*10+1, i*10+10, 1)}, Update{Compact: &Compaction{Through: i*10 + 5, Term: 1}})
		}
		r := mustOpenBolt(t, crashImage(t, s))
		st := mustLoad(t, r)
		if st.Base != (Base{Index: 195, Term: 1}) || len(st.Entries) != 5 || st.Entries[0].Index != 196 {
			t.Fatalf("JournalFileBytes %d: recovered base %+v with %d entries, want base 195 and 196..200", fileBytes, st.Base, len(st.Entries))
		}
	}
}

// bbolt never returns free pages to the file system: after a burst of large
// entries that a compaction then dropped, the store copies what is left
// into a new file (maybeShrink), while readers go on, and the log, the hard
// state and the base are as before, also after a restart. A leftover copy
// from a crash mid-shrink is removed at open.
func TestBoltFileShrinksWhenMostlyFree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ketch.db")
	opts := BoltOptions{JournalFileBytes: 1 << 20, ShrinkBytes: 4 << 20, UnsafeNoSync: true}
	s, err := OpenBolt(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	big := func(from, to uint64) []*pb.Entry {
		var out []*pb.Entry
		for i := from; i <= to; i++ {
			out = append(out, &pb.Entry{Index: i, Term: 1, Type: pb.EntryType_ENTRY_TYPE_NORMAL, Data: bytes.Repeat([]byte{byte(i)}, 32<<10)})
		}
		return out
	}
	mustWrite(t, s, Update{HardState: hs(1, 1)})
	for i := uint64(0); i < 40; i++ {
		mustWrite(t, s, Update{Entries: big(i*10+1, i*10+10)})
	}
	mustLoad(t, s) // everything checkpointed
	fileSize := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := fileSize()
	if before < 12<<20 || s.Shrinks() != 0 {
		t.Fatalf("after 12.5 MiB of entries the file is %d bytes, shrunk %d times", before, s.Shrinks())
	}
	// The compaction, then enough entries to fill a journal file: the
	// checkpointer moves them into bbolt in the background and shrinks
	// the file, while readers go on (no lock of the store held).
	mustWrite(t, s, Update{Compact: &Compaction{Through: 395, Term: 1}})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if got, err := s.Entries(396, 401, 1<<20); err != nil || len(got) != 5 || got[4].Index != 400 {
					t.Errorf("a read during the shrink: %d entries, %v", len(got), err)
					return
				}
			}
		})
	}
	for i := uint64(0); i < 4; i++ {
		mustWrite(t, s, Update{Entries: big(401+i*10, 410+i*10)})
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Shrinks() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if s.Shrinks() != 1 {
		t.Fatalf("the checkpointer did not shrink the file within 10 s (%v)", s.ShrinkError())
	}
	mustLoad(t, s)
	after := fileSize()
	if s.Shrinks() != 1 || after > 4<<20 || s.ShrinkError() != nil {
		t.Fatalf("after compacting all but 5 entries the file is %d bytes (was %d), shrunk %d times (%v)", after, before, s.Shrinks(), s.ShrinkError())
	}
	check := func(s Store) {
		t.Helper()
		st := mustLoad(t, s)
		if st.Base != (Base{Index: 395, Term: 1}) || len(st.Entries) != 45 || st.Entries[0].Index != 396 || st.HardState.GetTerm() != 1 ||
			!bytes.Equal(st.Entries[44].Data, big(440, 440)[0].Data) {
			t.Fatalf("after shrinking: base %+v, %d entries, hard state %v", st.Base, len(st.Entries), st.HardState)
		}
	}
	check(s)
	mustWrite(t, s, Update{Entries: big(441, 441)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+shrinkSuffix, []byte("half a copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := OpenBolt(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	if _, err := os.Stat(path + shrinkSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the leftover copy is still there: %v", err)
	}
	if st := mustLoad(t, r); st.LastIndex() != 441 || st.Base.Index != 395 {
		t.Fatalf("after a restart: base %+v, last %d", st.Base, st.LastIndex())
	}
	if r.Shrinks() != 0 {
		t.Fatal("a file already small was shrunk again")
	}
}
