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
//	length  uint32  bytes of payload; the top bit (recordSealed) says the
//	                payload's values are sealed (seal.go), as every record
//	                written since seals exist is
//	crc     uint32  CRC-32C of seq and payload
//	seq     uint64  sequence number, +1 per record, never reused
//	payload         protowire: field 1 (bytes) a HardState, field 2 (bytes)
//	                an Entry, each sealed, in the order of the Updates they
//	                came from
//
// Replaying a record applies its fields in order: a hard state replaces the
// stored one; an entry whose index is at or below the last index truncates
// the log from there first (the semantics of Update, entry by entry).
//
// Recovery (OpenBolt): the records with a sequence number above the one
// bbolt holds are replayed into bbolt in one synced transaction, and the
// journal files are removed. A record cut short or failing its checksum at
// the very end of the last file is a write that was never acknowledged
// (its fdatasync had not returned when the process or machine died) and is
// dropped; anywhere else it is corruption (ErrCorrupt). A torn write looks
// like a cut: the file ends inside the record, or zero-filled sectors end
// it (blocks allocated but never written). A whole record that fails its
// checksum with data to its end, or a cut-short record whose bytes to the
// end of the file would pass as the whole record (its length field is what
// is damaged), is a flipped byte, not a tear: ErrCorrupt, since the write
// was acknowledged.

const (
	journalHeaderBytes = 16
	// maxJournalRecord bounds a record's claimed length when reading, so a
	// damaged length field is recognised instead of allocating gigabytes.
	maxJournalRecord = 1 << 30
	// recordSealed flags, in the length field, a record whose values are
	// sealed.
	recordSealed = 1 << 31
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
	buf := make([]byte, journalHeaderBytes, journalHeaderBytes+payload)
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
	crc := crc32.Update(0, crcTable, buf[8:16])
	crc = crc32.Update(crc, crcTable, buf[journalHeaderBytes:])
	binary.LittleEndian.PutUint32(buf[4:], crc)
	return buf, nil
}

// recordOp is one field of a record's payload: a sealed, marshalled
// HardState, or a sealed, marshalled Entry with its index. Both are exactly
// the bytes bbolt stores, so a checkpoint copies them without decoding.
type recordOp struct {
	hardState bool
	index     uint64
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
		if n < 0 || typ != protowire.BytesType || (num != 1 && num != 2) {
			return errors.New("a field of the record is not a hard state or an entry")
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
		if !op.hardState {
			op.index = entryIndex(plain)
			if op.index == 0 {
				return errors.New("an entry of the record has no index")
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

// readJournal reads every record of one file. A bad record at the end of
// the last file (last == true) that looks torn (tornAt) ends the file,
// reported as torn (the bytes dropped); any other bad record is
// corruption.
func readJournal(f journalFile, last bool) (recs []journalRecord, tornBytes int64, err error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, 0, err
	}
	off := 0
	want := f.first
	for off < len(data) {
		bad, cut := "", false
		var seq uint64
		var payload []byte
		var sealed bool
		switch rest := data[off:]; {
		case len(rest) < journalHeaderBytes:
			bad, cut = "a record header is cut short", true
		default:
			word := binary.LittleEndian.Uint32(rest[0:])
			n, crc := word&^recordSealed, binary.LittleEndian.Uint32(rest[4:])
			sealed = word&recordSealed != 0
			seq = binary.LittleEndian.Uint64(rest[8:])
			switch {
			case n > maxJournalRecord:
				bad = fmt.Sprintf("a record claims %d bytes", n)
			case int(n) > len(rest)-journalHeaderBytes:
				bad, cut = "a record is cut short", true
				if recordCRC(rest[8:16], rest[journalHeaderBytes:]) == crc {
					// The bytes to the end pass as the whole record: its
					// length field is damaged, not the write torn.
					cut = false
					bad = "a record's length field is damaged"
				}
			default:
				payload = rest[journalHeaderBytes : journalHeaderBytes+int(n)]
				if recordCRC(rest[8:16], payload) != crc {
					bad = "a record fails its checksum"
				} else if seq != want {
					bad = fmt.Sprintf("record %d follows %d", seq, want-1)
				}
			}
		}
		if bad != "" {
			// A torn write can only be the last thing in the last file:
			// nothing after it was ever acknowledged. If a whole valid
			// record follows, this is damage, not a torn write.
			if last && (cut || zeroTail(data, off)) && !validRecordAfter(data, off) {
				return recs, int64(len(data) - off), nil
			}
			return nil, 0, fmt.Errorf("%w: journal %s at byte %d: %s", errJournalDamaged, f.path, off, bad)
		}
		if derr := walkRecord(payload, sealed, func(recordOp) error { return nil }); derr != nil {
			return nil, 0, fmt.Errorf("%w: journal %s at byte %d: record %d does not decode: %v", errJournalDamaged, f.path, off, seq, derr)
		}
		recs = append(recs, journalRecord{seq: seq, payload: payload, sealed: sealed})
		off += journalHeaderBytes + len(payload)
		want++
	}
	return recs, 0, nil
}

func recordCRC(seq, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, crcTable, seq), crcTable, payload)
}

// zeroTail reports whether the file, from the record at off on, ends in
// what an unfinished write leaves: zeros from off to the end, or whole
// zero-filled sectors after the last byte written (blocks allocated but
// never written read as zeros; pages are written whole or not at all). A
// flipped byte inside a record does not make zeros.
func zeroTail(data []byte, off int) bool {
	z := len(data)
	for z > off && data[z-1] == 0 {
		z--
	}
	if z == off {
		return true
	}
	return (z+511)&^511 < len(data)
}

// validRecordAfter reports whether a complete record with a good checksum
// starts anywhere after the bad one at off.
func validRecordAfter(data []byte, off int) bool {
	for p := off + 1; p+journalHeaderBytes <= len(data); p++ {
		n := binary.LittleEndian.Uint32(data[p:]) &^ recordSealed
		if n > maxJournalRecord || int(n) > len(data)-p-journalHeaderBytes {
			continue
		}
		if recordCRC(data[p+8:p+16], data[p+journalHeaderBytes:p+journalHeaderBytes+int(n)]) == binary.LittleEndian.Uint32(data[p+4:]) {
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
	return buf[journalHeaderBytes:], nil
}

func (w *journalWriter) close() error { return w.f.Close() }
