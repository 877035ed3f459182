package lincheck

import "fmt"

// LostWrites finds the keys whose final value (read by the final reads,
// ops of client finalClient) is older than an acknowledged write: absent
// although a write was acknowledged, or written by a write acknowledged
// before another acknowledged write was invoked. It returns a description
// of each.
func LostWrites(entries []Entry, finalClient int) []string {
	type write struct {
		call, ret int64
		id        int
	}
	acked := map[string][]write{} // key -> acknowledged writes
	byValue := map[string]write{} // key/value -> its write (values are unique)
	for _, e := range entries {
		isWrite := e.Op.Kind == KindPut || e.Op.Kind == KindCAS
		if !isWrite || e.Outcome == Failed || e.Outcome == OK && e.Op.Kind == KindCAS && !e.Result.Swapped {
			continue
		}
		w := write{e.Call, e.Return, e.ID}
		byValue[e.Op.Key+"/"+string(e.Op.Value)] = w
		if e.Outcome == OK && (e.Op.Kind == KindPut || e.Result.Swapped) {
			acked[e.Op.Key] = append(acked[e.Op.Key], w)
		}
	}
	var lost []string
	for _, e := range entries {
		if e.Client != finalClient || e.Op.Kind != KindGet {
			continue
		}
		if e.Outcome != OK {
			lost = append(lost, fmt.Sprintf("key %q: the final read did not complete (%v)", e.Op.Key, e.Outcome))
			continue
		}
		ws := acked[e.Op.Key]
		if !e.Result.Found {
			if len(ws) > 0 {
				lost = append(lost, fmt.Sprintf("key %q: absent after %d acknowledged writes (e.g. op #%d)", e.Op.Key, len(ws), ws[0].id))
			}
			continue
		}
		w, ok := byValue[e.Op.Key+"/"+string(e.Result.Value)]
		if !ok {
			lost = append(lost, fmt.Sprintf("key %q: final value %q was never written", e.Op.Key, e.Result.Value))
			continue
		}
		// w is the last write to take effect. If it was acknowledged before
		// another acknowledged write was invoked, that write is lost. (An
		// unknown write may take effect after it returned, so only an
		// acknowledged one's return time bounds it.)
		wEntry := entries[w.id]
		if wEntry.Outcome != OK {
			continue
		}
		for _, a := range ws {
			if a.call > w.ret {
				lost = append(lost, fmt.Sprintf("key %q: final value %q (op #%d) was overwritten by acknowledged op #%d", e.Op.Key, e.Result.Value, w.id, a.id))
				break
			}
		}
	}
	return lost
}
