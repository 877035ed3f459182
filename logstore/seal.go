package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"runtime/debug"
)

// Checksums on everything stored (issue 11). bbolt checksums its meta
// pages only: a flipped byte in a value would be read back as good. So
// every value ketch stores (an entry, the hard state, the identity, the
// journal sequence number) is sealed: a CRC-32C of the bytes, then the
// bytes. Journal records carry the sealed values as they will be stored,
// so a checkpoint still copies them without decoding, and every read from
// bbolt or the journal verifies the seal before anything is decoded.
//
// Files written before seals existed (by an older ketch: no freelist on
// disk, no format key in the meta bucket) are copied once into a new file
// of the current format (migrateLegacy), and their journal records (which
// lack the flag of the current record format) are sealed as they are
// replayed. Damage those files took before the upgrade cannot be told from
// data: they had no checksums.

// sealBytes is the size of a seal.
const sealBytes = 4

// formatVersion is the value of keyFormat: values are sealed.
const formatVersion = 2

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// seal returns b sealed: its CRC-32C, little-endian, then b.
func seal(b []byte) []byte {
	out := make([]byte, sealBytes, sealBytes+len(b))
	binary.LittleEndian.PutUint32(out, crc32.Checksum(b, crcTable))
	return append(out, b...)
}

// errBadSeal is unseal's error.
var errBadSeal = errors.New("fails its checksum")

// unseal checks a sealed value and returns the bytes it seals.
func unseal(v []byte) ([]byte, error) {
	if len(v) < sealBytes {
		return nil, fmt.Errorf("is %d bytes, too short for its checksum", len(v))
	}
	b := v[sealBytes:]
	if crc32.Checksum(b, crcTable) != binary.LittleEndian.Uint32(v) {
		return nil, errBadSeal
	}
	return b, nil
}

// guard runs f, which reads or writes the bbolt file, and turns a panic
// into an error wrapping ErrCorrupt: bbolt trusts its pages, and damaged
// ones make its page arithmetic go out of bounds (a slice out of range in
// a cursor, a page id past the file) or fault on the memory map, which
// debug.SetPanicOnFault turns into a panic as well. bbolt rolls its
// transactions back on a panic; a panic inside bolt.Open may leave the
// file open and locked in this process, which then stops (the node exits
// on ErrCorrupt). The store must not be used for anything but Close
// afterwards.
func (s *BoltStore) guard(op string, f func() error) error { return guard(s.path, op, f) }

func guard(path, op string, f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = corruptError(path, fmt.Sprintf("bbolt failed on damaged pages during %s: %v", op, p), nil)
		}
	}()
	return f()
}
