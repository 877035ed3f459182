package logstore

import (
	"errors"
	"path/filepath"
	"testing"
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
			check(s, Base{12, 2}, 13, 20)
			s = reopen(s)
			check(s, Base{12, 2}, 13, 20)
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
			check(s, Base{30, 4}, 31, 32)
			s = reopen(s)
			check(s, Base{30, 4}, 31, 32)
			mustWrite(t, s, Update{Entries: ents(33, 33, 4)})
			s = reopen(s)
			check(s, Base{30, 4}, 31, 33)
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
		if st.Base != (Base{195, 1}) || len(st.Entries) != 5 || st.Entries[0].Index != 196 {
			t.Fatalf("JournalFileBytes %d: recovered base %+v with %d entries, want base 195 and 196..200", fileBytes, st.Base, len(st.Entries))
		}
	}
}
