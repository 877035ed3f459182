package sim

import (
	"github.com/ketch-raft/ketch/fsm"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// Logs are compared through rolling hashes: h[i] = hash(h[i-1], entry i),
// with h[0] = 0 for the empty prefix. Two logs with equal hashes at index i
// hold the same entries 1..i (up to a 2^-64 collision), so checking the Log
// Matching Property or "the leader holds every committed entry" costs one
// comparison instead of a walk over the log.

// mix64 is the splitmix64 finalizer: a cheap, well-spread 64-bit mix.
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// entryHash extends the rolling hash prev of a log with entry e. The index
// is implied by the position in the chain.
func entryHash(prev uint64, e *pb.Entry) uint64 {
	h := mix64(prev^0x9e3779b97f4a7c15) ^ e.GetTerm()
	h = mix64(h) ^ uint64(e.GetType())
	data := e.GetData()
	for _, b := range data {
		h = (h ^ uint64(b)) * 0x100000001b3 // FNV-1a step
	}
	return mix64(h ^ uint64(len(data)))
}

// logChain is a log reduced to what the invariants need: the term and the
// rolling hash at every index, and the configuration entries, decoded.
// Index 0 is the empty prefix (term 0, hash 0).
type logChain struct {
	terms  []uint64
	hashes []uint64
	confs  []chainConf // by index
}

// chainConf is a configuration entry of a chain; conf is nil when its data
// does not decode (the fsm broke its contract, see updateMirror).
type chainConf struct {
	index uint64
	conf  *pb.Configuration
}

func newChain() logChain {
	return logChain{terms: []uint64{0}, hashes: []uint64{0}}
}

func (c *logChain) last() uint64 { return uint64(len(c.terms) - 1) }

// hashAt is the rolling hash at index i, or false when the log ends before i.
func (c *logChain) hashAt(i uint64) (uint64, bool) {
	if i > c.last() {
		return 0, false
	}
	return c.hashes[i], true
}

// termAt is the term at index i, or false when the log ends before i.
func (c *logChain) termAt(i uint64) (uint64, bool) {
	if i > c.last() {
		return 0, false
	}
	return c.terms[i], true
}

func (c *logChain) truncate(last uint64) {
	c.terms = c.terms[:last+1]
	c.hashes = c.hashes[:last+1]
	k := len(c.confs)
	for k > 0 && c.confs[k-1].index > last {
		k--
	}
	c.confs = c.confs[:k]
}

func (c *logChain) append(e *pb.Entry) {
	c.hashes = append(c.hashes, entryHash(c.hashes[len(c.hashes)-1], e))
	c.terms = append(c.terms, e.GetTerm())
	if e.GetType() == pb.EntryType_ENTRY_TYPE_CONFIG {
		c.confs = append(c.confs, chainConf{index: c.last(), conf: decodeConf(e.GetData())})
	}
}

// confAt is the configuration entry at index i, nil when i holds none.
func (c *logChain) confAt(i uint64) *pb.Configuration {
	for k := len(c.confs) - 1; k >= 0 && c.confs[k].index >= i; k-- {
		if c.confs[k].index == i {
			return c.confs[k].conf
		}
	}
	return nil
}

// decodeConf decodes a configuration entry's data, nil if it does not.
func decodeConf(data []byte) *pb.Configuration {
	c := &pb.Configuration{}
	if proto.Unmarshal(data, c) != nil {
		return nil
	}
	return c
}

func (c *logChain) clone() logChain {
	return logChain{
		terms:  append([]uint64(nil), c.terms...),
		hashes: append([]uint64(nil), c.hashes...),
		confs:  append([]chainConf(nil), c.confs...),
	}
}

// firstDifference returns the first index at which c and o differ (an
// index one of them lacks counts as a difference), or 0 if they are equal.
func (c *logChain) firstDifference(o *logChain) uint64 {
	n := min(c.last(), o.last())
	// The hashes are rolling, so the first difference is where the equal
	// prefix ends: binary search for it.
	lo, hi := uint64(0), n // hashes agree at lo; find the largest such lo
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if c.hashes[mid] == o.hashes[mid] {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == c.last() && lo == o.last() {
		return 0
	}
	return lo + 1
}

// disk is a node's durable state: what a crash leaves behind.
type disk struct {
	hs *pb.HardState // nil until the first hard state is written
	// entries[i-1] holds index i; owned by the disk. Entries through base
	// were compacted away (nil).
	entries        []*pb.Entry
	base, baseTerm uint64
	chain          logChain
	// baseConf is the configuration in effect at base, as the last
	// durable Compact recorded it (fsm.Compact.Config; zero: none yet).
	baseConf fsm.ConfigState
	// snap is the latest durable snapshot of the state machine (nil:
	// none), staged the snapshot being received as far as it is durable.
	snap   *simSnap
	staged *stagedFile
}

func newDisk() disk { return disk{chain: newChain()} }

// diskWrite is one write the store makes durable in order: a Persist, or
// a Compact (Seq 0) riding with them.
type diskWrite struct {
	fsm.Persist
	compact *fsm.Compact
}

// write makes one Persist durable, with the semantics documented on
// fsm.Persist: a non-nil HardState replaces the stored one, and Entries
// replace every stored entry from Entries[0].Index on. The Persist's
// entries must already be the simulator's own copies (see copyPersist).
func (d *disk) write(p fsm.Persist) {
	if p.HardState != nil {
		d.hs = p.HardState
	}
	if len(p.Entries) == 0 {
		return
	}
	keep := p.Entries[0].GetIndex() - 1
	d.entries = append(d.entries[:keep], p.Entries...)
	d.chain.truncate(keep)
	for _, e := range p.Entries {
		d.chain.append(e)
	}
}

// compact carries out a Compact (fsm.Compact): the entries through
// c.Through go; with Reset every entry goes, and the log's chain through
// c.Through becomes prefix (the committed entries the snapshot holds).
func (d *disk) compact(c fsm.Compact, prefix func(uint64) logChain) {
	if c.Reset {
		d.entries = make([]*pb.Entry, c.Through)
		d.chain = prefix(c.Through)
	} else {
		for i := d.base; i < c.Through && i < uint64(len(d.entries)); i++ {
			d.entries[i] = nil
		}
	}
	d.base, d.baseTerm = max(d.base, c.Through), c.Term
	d.baseConf = c.Config
}

// restore returns a fresh copy of the disk's contents for fsm.New, so that
// nothing the restarted fsm does can reach the disk's own entries: the log
// after its base, and the state machine's snapshot and staged file.
func (d *disk) restore() fsm.Restore {
	r := fsm.Restore{Entries: make([]*pb.Entry, 0, len(d.entries)-int(d.base)),
		Base: fsm.SnapshotMeta{Index: d.base, Term: d.baseTerm}}
	if d.hs != nil {
		r.HardState = &pb.HardState{Term: d.hs.GetTerm(), Vote: d.hs.GetVote()}
	}
	for _, e := range d.entries[d.base:] {
		r.Entries = append(r.Entries, copyEntry(e))
	}
	r.BaseConfig = cloneConf(d.baseConf)
	if d.snap != nil {
		r.Snapshot, r.Applied = d.snap.meta, d.snap.meta.Index
		r.SnapshotConfig = cloneConf(d.snap.conf)
	}
	if f := d.staged; f != nil {
		r.Staging = fsm.Staging{Meta: f.meta, Size: f.size, FileCRC: f.crc, Offset: uint64(len(f.data))}
	}
	return r
}

// cloneConf deep-copies a configuration state.
func cloneConf(c fsm.ConfigState) fsm.ConfigState {
	if c.Config != nil {
		c.Config = proto.Clone(c.Config).(*pb.Configuration)
	}
	return c
}

func copyEntry(e *pb.Entry) *pb.Entry {
	return &pb.Entry{Index: e.GetIndex(), Term: e.GetTerm(), Type: e.GetType(), Data: e.GetData()}
}

// copyPersist copies what a Persist action carries, so that the disk keeps
// what the fsm asked for at that moment whatever the fsm does later with
// its own entries and slices.
func copyPersist(p fsm.Persist) fsm.Persist {
	c := fsm.Persist{Seq: p.Seq}
	if p.HardState != nil {
		c.HardState = &pb.HardState{Term: p.HardState.GetTerm(), Vote: p.HardState.GetVote()}
	}
	if len(p.Entries) > 0 {
		c.Entries = make([]*pb.Entry, len(p.Entries))
		for i, e := range p.Entries {
			c.Entries[i] = copyEntry(e)
		}
	}
	return c
}
