package fsm

import "slices"

// Quorum math, in one place (after etcd-io/raft's quorum package). A
// decision (an election won, an index committed, a read round confirmed, a
// leader still heard from) needs a majority of the voters of the
// configuration; during a joint change (thesis §4.3) it needs a majority of
// C_new's voters and, separately, a majority of C_old's.
//
// Learners are in neither set: they never count (thesis §4.2.1).

// majority is one configuration's voters, sorted, without duplicates.
type majority []uint64

// quorum is the voters a decision needs: in (the configuration, or C_new
// during a joint change) and out (C_old during a joint change; empty
// otherwise).
type quorum struct {
	in, out majority
}

// joint reports whether a decision needs two majorities.
func (q quorum) joint() bool { return len(q.out) > 0 }

// isVoter reports whether id votes in either configuration.
func (q quorum) isVoter(id uint64) bool {
	_, in := slices.BinarySearch(q.in, id)
	_, out := slices.BinarySearch(q.out, id)
	return in || out
}

// voters lists every voter of either configuration, sorted.
func (q quorum) voters() []uint64 {
	all := append(slices.Clone(q.in), q.out...)
	slices.Sort(all)
	return slices.Compact(all)
}

// index is the largest value that a majority of m has reached, given each
// voter's value: the quorum index of Raft §5.3 when the values are match
// indexes. An empty configuration has no majority: 0.
func (m majority) index(value func(id uint64) uint64) uint64 {
	if len(m) == 0 {
		return 0
	}
	vals := make([]uint64, len(m))
	for i, id := range m {
		vals[i] = value(id)
	}
	slices.Sort(vals)
	// Sorted ascending: a majority (len/2+1 voters) holds at least the
	// value at position len - (len/2+1).
	return vals[len(vals)-(len(vals)/2+1)]
}

// index is the largest value both majorities have reached.
func (q quorum) index(value func(id uint64) uint64) uint64 {
	i := q.in.index(value)
	if q.joint() {
		i = min(i, q.out.index(value))
	}
	return i
}

// has reports whether the voters for which yes is true form a majority.
func (m majority) has(yes func(id uint64) bool) bool {
	if len(m) == 0 {
		return false
	}
	n := 0
	for _, id := range m {
		if yes(id) {
			n++
		}
	}
	return n >= len(m)/2+1
}

// has reports whether the voters for which yes is true form a quorum: a
// majority of each configuration.
func (q quorum) has(yes func(id uint64) bool) bool {
	return q.in.has(yes) && (!q.joint() || q.out.has(yes))
}

// blocks reports whether the voters for which no is true make a quorum
// impossible: enough of them in either configuration that the rest cannot
// form a majority there.
func (q quorum) blocks(no func(id uint64) bool) bool {
	block := func(m majority) bool {
		if len(m) == 0 {
			return true
		}
		n := 0
		for _, id := range m {
			if no(id) {
				n++
			}
		}
		return len(m)-n < len(m)/2+1
	}
	return block(q.in) || q.joint() && block(q.out)
}
