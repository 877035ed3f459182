package lincheck

import "fmt"

// CorruptStaleRead edits a history so that one read turns stale, to show
// that a check has teeth: it finds an OK Get g of some key and two
// acknowledged writes w1, w2 of that key (OK puts, or cas that swapped) with
// w1 complete before w2 was invoked and w2 complete before g was invoked,
// and makes g return w1's value. The result is not linearizable as long as
// w1's value was written by no other operation. It picks the latest such
// read, changes entries in place and says what it did; ok is false if the
// history has no such triple.
func CorruptStaleRead(entries []Entry) (what string, ok bool) {
	written := writtenValues(entries)
	for gi := len(entries) - 1; gi >= 0; gi-- {
		g := &entries[gi]
		if g.Op.Kind != KindGet || g.Outcome != OK {
			continue
		}
		w2 := latestAck(entries, g.Op.Key, g.Call, nil)
		if w2 < 0 {
			continue
		}
		w1 := latestAck(entries, g.Op.Key, entries[w2].Call, func(e Entry) bool {
			v := string(e.Op.Value)
			return written[g.Op.Key][v] == 1 && !(g.Result.Found && string(g.Result.Value) == v)
		})
		if w1 < 0 {
			continue
		}
		what = fmt.Sprintf("op #%d %v: answer %s changed to %q, written by op #%d and overwritten by op #%d before the read began",
			g.ID, g.Op, describeOutput(g.Op.input(), g.Result.output()), entries[w1].Op.Value, entries[w1].ID, entries[w2].ID)
		g.Result = Result{Found: true, Value: cloneResult(Result{Value: entries[w1].Op.Value}).Value}
		return what, true
	}
	return "", false
}

// CorruptLostWrite edits a history so that an acknowledged write looks
// lost: the latest OK Get of a key that no operation ever deletes, invoked
// after an acknowledged write of that key completed, is made to return
// "absent". ok is false if there is no such read.
func CorruptLostWrite(entries []Entry) (what string, ok bool) {
	deleted := map[string]bool{}
	for _, e := range entries {
		if e.Op.Kind == KindDelete {
			deleted[e.Op.Key] = true
		}
	}
	for gi := len(entries) - 1; gi >= 0; gi-- {
		g := &entries[gi]
		if g.Op.Kind != KindGet || g.Outcome != OK || deleted[g.Op.Key] {
			continue
		}
		w := latestAck(entries, g.Op.Key, g.Call, nil)
		if w < 0 {
			continue
		}
		what = fmt.Sprintf("op #%d %v: answer %s changed to absent, after op #%d %v was acknowledged",
			g.ID, g.Op, describeOutput(g.Op.input(), g.Result.output()), entries[w].ID, entries[w].Op)
		g.Result = Result{}
		return what, true
	}
	return "", false
}

// isAckWrite reports whether e is an acknowledged write: an OK put or a
// cas that swapped.
func isAckWrite(e Entry) bool {
	return e.Outcome == OK && (e.Op.Kind == KindPut || e.Op.Kind == KindCAS && e.Result.Swapped)
}

// latestAck is the index of the acknowledged write of key that completed
// last before time before (and satisfies keep, if given), or -1.
func latestAck(entries []Entry, key string, before int64, keep func(Entry) bool) int {
	best := -1
	for i, e := range entries {
		if e.Op.Key != key || !isAckWrite(e) || e.Return >= before || keep != nil && !keep(e) {
			continue
		}
		if best < 0 || e.Return > entries[best].Return {
			best = i
		}
	}
	return best
}

// writtenValues counts, per key and value, the operations that may have
// written it (every put and cas not known to have failed).
func writtenValues(entries []Entry) map[string]map[string]int {
	m := map[string]map[string]int{}
	for _, e := range entries {
		if (e.Op.Kind != KindPut && e.Op.Kind != KindCAS) || e.Outcome == Failed {
			continue
		}
		if m[e.Op.Key] == nil {
			m[e.Op.Key] = map[string]int{}
		}
		m[e.Op.Key][string(e.Op.Value)]++
	}
	return m
}
