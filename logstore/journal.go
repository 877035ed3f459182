package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The journal is a write-ahead log in front of the bbolt file.
//
// Why it exists: a bbolt commit makes two fdatasyncs (the data pages, then
// the meta page that points at them), and every write the fsm waits for
// pays both. The journal makes a write durable with one: the batch is
// appended to a journal file as one checksummed record and the file is
// fdatasynced. The bbolt file stays the log's home: the journal is moved
// into it in the background (a checkpoint: one ordinary, twice-synced bbolt
// transaction for thousands of writes), and then deleted. Only the journal
// is on the path of a write; bbolt is always a consistent, fully synced
// image of the log up to some journal record, whose sequence number the
// checkpoint stores in the meta bucket (keyJournalSeq) in the same
// transaction.
//
// Files: next to the bbolt file at path, journal files named
// path + ".journal." + the first record's sequence number (16 hex digits).
// A new file is started when the current one passes JournalFileBytes; the
// full one is checkpointed in the background and removed.
//
// Record format, little-endian:
//
//	length  uint32  bytes of payload; the top bit (recordSealed) marks the
//	                format every record written since seals exist has
//	crc     uint32  CRC-32C of length, seq and payload
//	seq     uint64  sequence number, +1 per record, never reused
//	payload         protowire: field 1 (bytes) a HardState, field 2 (bytes)
//	                an Entry, field 3 (bytes) a LogBase (a compaction),
//	                each sealed (seal.go), in the order of the Updates
//	                they came from
//	trailer         seq uint64, length uint32, and a CRC-32C of both (uint32):
//	                written last, so a record with a valid trailer was
//	                written whole
//
// A record without the flag (written before seals existed) has no trailer,
// its CRC covers seq and payload only, and its values are sealed when it is
// replayed; such records are accepted only in a file that predates seals.
//
// Replaying a record applies its fields in order: a hard state replaces the
// stored one; an entry whose index is at or below the last index truncates
// the log from there first (the semantics of Update, entry by entry); a
// LogBase deletes the entries through its index (all of them with reset)
// and is stored as the log's base.
//
// Recovery (OpenBolt): the records with a sequence number above the one
// bbolt holds are replayed into bbolt in one synced transaction, and the
// journal files are removed. A record cut short or failing its checksum at
// the very end of the last file is a write that was never acknowledged
// (its fdatasync had not returned when the process or machine died) and is
// dropped; anywhere else it is corruption (ErrCorrupt). The trailer tells
// the two apart: a write is appended and torn only at its end, so a torn
// record never ends the file with its valid trailer, while an acknowledged
// record always does; a record that fails its checksum although the file
// ends with its trailer (its bytes, or its length field, were damaged
// afterwards) was acknowledged and is ErrCorrupt. A record whose checksum
// holds but whose trailer does not is whole and is kept.

const (
	journalHeaderBytes = 16
	// maxJournalRecord bounds a record's claimed length when reading, so a
	// damaged length field is recognised instead of allocating gigabytes.
	maxJournalRecord = 1 << 30
	// recordSealed flags, in the length field, a record of the current
	// format: sealed values, a CRC over the length too, and a trailer.
	recordSealed = 1 << 31
	// journalTrailerBytes is the size of a record's trailer.
	journalTrailerBytes = 16
	// DefaultJournalFileBytes is BoltOptions.JournalFileBytes's default.
	DefaultJournalFileBytes = 1 << 20
)

var keyJournalSeq = []byte("journalseq")

// journalName is the file of the journal of path whose first record is seq.
func journalName(path string, seq uint64) string {
	return fmt.Sprintf("%s.journal.%016x", path, seq)
}

// journalFiles lists the journal files of path in sequence order.
func journalFiles(path string) ([]journalFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	prefix := base + ".journal."
	var out []journalFile
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimPrefix(name, prefix), 16, 64)
		if err != nil || len(name) != len(prefix)+16 {
			continue // not ours
		}
		out = append(out, journalFile{path: filepath.Join(dir, name), first: seq})
	}
	slices.SortFunc(out, func(a, b journalFile) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	return out, nil
}

type journalFile struct {
	path  string
	first uint64
}

// encodeRecord returns the record for updates, numbered seq, in a buffer
// of exactly its size (the payload is kept until the checkpoint). Each
// message is sized once: the marshalling reuses the size it cached. Every
// value is sealed in place: its checksum is written in front of it once it
// is marshalled.
func encodeRecord(seq uint64, updates []Update) ([]byte, error) {
	var msgs []proto.Message
	var fields []protowire.Number
	for _, u := range updates {
		if u.HardState != nil {
			msgs, fields = append(msgs, u.HardState), append(fields, 1)
		}
		for _, e := range u.Entries {
			msgs, fields = append(msgs, e), append(fields, 2)
		}
		if c := u.Compact; c != nil {
			msgs, fields = append(msgs, &pb.LogBase{Index: c.Through, Term: c.Term, Reset_: c.Reset,
				Configuration: c.Config, ConfigurationIndex: c.ConfigIndex}), append(fields, 3)
		}
	}
	sizes := make([]int, len(msgs))
	payload := 0
	for k, m := range msgs {
		sizes[k] = proto.Size(m)
		payload += protowire.SizeTag(fields[k]) + protowire.SizeBytes(sealBytes+sizes[k])
	}
	if payload > maxJournalRecord {
		return nil, fmt.Errorf("%w: a batch of %d bytes is too large for one journal record", ErrInvalidUpdate, payload)
	}
	buf := make([]byte, journalHeaderBytes, journalHeaderBytes+payload+journalTrailerBytes)
	cached := proto.MarshalOptions{UseCachedSize: true}
	var err error
	for k, m := range msgs {
		buf = protowire.AppendTag(buf, fields[k], protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(sealBytes+sizes[k]))
		at := len(buf)
		buf = append(buf, 0, 0, 0, 0) // the seal, once the bytes are there
		if buf, err = cached.MarshalAppend(buf, m); err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint32(buf[at:], crc32.Checksum(buf[at+sealBytes:], crcTable))
	}
	if len(buf) != journalHeaderBytes+payload {
		panic(fmt.Sprintf("invariant: a journal record of %d bytes was sized %d", len(buf)-journalHeaderBytes, payload))
	}
	binary.LittleEndian.PutUint32(buf[0:], uint32(payload)|recordSealed)
	binary.LittleEndian.PutUint64(buf[8:], seq)
	binary.LittleEndian.PutUint32(buf[4:], headerCRC(buf[:journalHeaderBytes], buf[journalHeaderBytes:], true))
	return appendTrailer(buf, seq, uint32(payload)), nil
}

// headerCRC is a record's checksum: of the length word (current format
// only), seq and payload.
func headerCRC(header, payload []byte, current bool) uint32 {
	crc := uint32(0)
	if current {
		crc = crc32.Update(crc, crcTable, header[0:4])
	}
	crc = crc32.Update(crc, crcTable, header[8:16])
	return crc32.Update(crc, crcTable, payload)
}

// appendTrailer appends the trailer of record seq with a payload of n bytes.
func appendTrailer(buf []byte, seq uint64, n uint32) []byte {
	at := len(buf)
	buf = binary.LittleEndian.AppendUint64(buf, seq)
	buf = binary.LittleEndian.AppendUint32(buf, n)
	return binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf[at:], crcTable))
}

// trailerAt reports whether data holds a valid trailer at off, and its
// seq and payload length.
func trailerAt(data []byte, off int) (seq uint64, n uint32, ok bool) {
	if off < 0 || off+journalTrailerBytes > len(data) {
		return 0, 0, false
	}
	t := data[off : off+journalTrailerBytes]
	if crc32.Checksum(t[:12], crcTable) != binary.LittleEndian.Uint32(t[12:]) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(t), binary.LittleEndian.Uint32(t[8:]), true
}

// recordOp is one field of a record's payload: a sealed, marshalled
// HardState, a sealed, marshalled Entry with its index, or a sealed,
// marshalled LogBase (decoded in base). All are exactly the bytes bbolt
// stores, so a checkpoint copies them without decoding.
type recordOp struct {
	hardState bool
	index     uint64
	base      *pb.LogBase
	value     []byte
}

// walkRecord calls fn for each field of a payload, in order, with its value
// sealed (a record of sealed values passes them as they are, after
// checking each seal; an older record's values are sealed on the way). It
// fails on a payload it cannot parse, a bad seal or an entry without an
// index.
func walkRecord(payload []byte, sealed bool, fn func(recordOp) error) error {
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 || typ != protowire.BytesType || num < 1 || num > 3 || num == 3 && !sealed {
			return errors.New("a field of the record is not a hard state, an entry or a log base")
		}
		payload = payload[n:]
		v, n := protowire.ConsumeBytes(payload)
		if n < 0 {
			return errors.New("a field of the record is cut short")
		}
		payload = payload[n:]
		plain := v
		if sealed {
			var err error
			if plain, err = unseal(v); err != nil {
				return fmt.Errorf("a value of the record %v", err)
			}
		} else {
			v = seal(v)
		}
		op := recordOp{hardState: num == 1, value: v}
		switch num {
		case 2:
			op.index = entryIndex(plain)
			if op.index == 0 {
				return errors.New("an entry of the record has no index")
			}
		case 3:
			op.base = &pb.LogBase{}
			if err := proto.Unmarshal(plain, op.base); err != nil || op.base.Index == 0 {
				return errors.New("a log base of the record does not decode")
			}
		}
		if err := fn(op); err != nil {
			return err
		}
	}
	return nil
}

// entryIndex reads the index (field 1) of a marshalled Entry without
// decoding the rest; 0 if it has none or does not parse.
func entryIndex(b []byte) uint64 {
	var idx uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0
			}
			idx = v // the last occurrence wins, as in proto.Unmarshal
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0
		}
		b = b[n:]
	}
	return idx
}

// journalRecord is one record read back, or one a checkpoint moves.
type journalRecord struct {
	seq     uint64
	payload []byte
	sealed  bool // its values are sealed (every record since seals exist)
}

// errJournalDamaged marks readJournal's errors that are about the file's
// content, as opposed to failing to read it.
var errJournalDamaged = errors.New("journal damaged")

// readJournal reads every record of one file. current says the file's
// records must be of the current format (the store's file is marked with
// the format; see seal.go); otherwise they must be of the old one. A bad
// record at the end of the last file (last == true) that is torn (see the
// top of this file) ends the file, reported as torn (the bytes dropped);
// any other bad record is corruption.
func readJournal(f journalFile, last, current bool) (recs []journalRecord, tornBytes int64, err error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, 0, err
	}
	off := 0
	want := f.first
	for off < len(data) {
		rec, size, bad, torn := parseRecord(data, off, current)
		if bad == "" && rec.seq != want {
			bad, torn = fmt.Sprintf("record %d follows %d", rec.seq, want-1), false
		}
		if bad != "" {
			// A torn write can only be the last thing in the last file:
			// nothing after it was ever acknowledged. If a whole valid
			// record follows, this is damage, not a torn write.
			if last && torn && !validRecordAfter(data, off, current) {
				return recs, int64(len(data) - off), nil
			}
			return nil, 0, fmt.Errorf("%w: journal %s at byte %d: %s", errJournalDamaged, f.path, off, bad)
		}
		if derr := walkRecord(rec.payload, rec.sealed, func(recordOp) error { return nil }); derr != nil {
			return nil, 0, fmt.Errorf("%w: journal %s at byte %d: record %d does not decode: %v", errJournalDamaged, f.path, off, rec.seq, derr)
		}
		recs = append(recs, rec)
		off += size
		want++
	}
	return recs, 0, nil
}

// parseRecord reads the record at off: the record and its size, or why it
// is bad and whether that is what a torn write leaves (only meaningful at
// the end of the last file).
func parseRecord(data []byte, off int, current bool) (rec journalRecord, size int, bad string, torn bool) {
	rest := data[off:]
	if len(rest) < journalHeaderBytes {
		return rec, 0, "a record header is cut short", true
	}
	word := binary.LittleEndian.Uint32(rest[0:])
	n, flagged := word&^recordSealed, word&recordSealed != 0
	rec.seq, rec.sealed = binary.LittleEndian.Uint64(rest[8:]), flagged
	if flagged != current {
		// The flag is covered by the checksum of current records; an
		// unflagged record in a current file (or the reverse) is damage,
		// unless the write was torn.
		return rec, 0, fmt.Sprintf("a record of the wrong format (flag %v in a file of format %v)", flagged, current), !wholeRecordEnds(data, off, current)
	}
	trailer := 0
	if current {
		trailer = journalTrailerBytes
	}
	if n > maxJournalRecord || int(n)+trailer > len(rest)-journalHeaderBytes {
		return rec, 0, fmt.Sprintf("a record of %d bytes is cut short", n), !wholeRecordEnds(data, off, current)
	}
	rec.payload = rest[journalHeaderBytes : journalHeaderBytes+int(n)]
	size = journalHeaderBytes + int(n) + trailer
	if headerCRC(rest, rec.payload, current) != binary.LittleEndian.Uint32(rest[4:]) {
		switch {
		case !current:
			return rec, 0, "a record fails its checksum", true // the old format cannot tell
		case size < len(rest):
			// Bytes follow it: a torn write is the last thing in a file.
			return rec, 0, "a record fails its checksum", false
		}
		return rec, 0, "a record fails its checksum", !wholeRecordEnds(data, off, current)
	}
	return rec, size, "", false
}

// wholeRecordEnds reports whether the file ends with the trailer of the
// record at off (the last one), found by its seq or by its length: then the
// record was written to its end and acknowledged, and damage to it is not
// a torn write. Records of the old format have no trailer; for them it
// reports false.
func wholeRecordEnds(data []byte, off int, current bool) bool {
	if !current {
		return false
	}
	seq, n, ok := trailerAt(data, len(data)-journalTrailerBytes)
	return ok && (seq == binary.LittleEndian.Uint64(data[off+8:]) || int(n) == len(data)-off-journalHeaderBytes-journalTrailerBytes)
}

// validRecordAfter reports whether a complete record with a good checksum
// starts anywhere after the bad one at off.
func validRecordAfter(data []byte, off int, current bool) bool {
	for p := off + 1; p+journalHeaderBytes <= len(data); p++ {
		if _, _, bad, _ := parseRecord(data, p, current); bad == "" {
			return true
		}
	}
	return false
}

// journalWriter appends records to the current journal file.
type journalWriter struct {
	f      *os.File
	name   string
	first  uint64 // seq of the file's first record
	next   uint64 // seq of the next record
	size   int64
	noSync bool
}

// createJournal starts the file whose first record will be seq, and makes
// its directory entry durable.
func createJournal(path string, seq uint64, noSync bool) (*journalWriter, error) {
	name := journalName(path, seq)
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if !noSync {
		if err := syncDir(filepath.Dir(name)); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	return &journalWriter{f: f, name: name, first: seq, next: seq, noSync: noSync}, nil
}

// append writes one record and fdatasyncs it; when it returns nil the
// record survives a crash. It returns the record's payload, which holds
// copies of everything in updates (the caller may reuse those).
func (w *journalWriter) append(updates []Update) ([]byte, error) {
	buf, err := encodeRecord(w.next, updates)
	if err != nil {
		return nil, err
	}
	if _, err := w.f.Write(buf); err != nil {
		return nil, err
	}
	if !w.noSync {
		if err := fdatasync(w.f); err != nil {
			return nil, err
		}
	}
	w.size += int64(len(buf))
	w.next++
	return buf[journalHeaderBytes : len(buf)-journalTrailerBytes], nil
}

func (w *journalWriter) close() error { return w.f.Close() }
