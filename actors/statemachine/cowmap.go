package statemachine

// COWMap is a map that can be frozen for a snapshot while writes go on:
// Freeze returns a read-only view of the map as it is; Sets and Deletes
// made after it go to a delta beside the frozen map, and Thaw, once the view
// is no longer read, folds the delta back in. So starting a snapshot costs
// nothing, finishing one costs the writes made while it was written, and
// the state is never copied. (A frozen view rather than a copy or a
// persistent structure: a copy of a million keys stalls every apply behind
// it, and a persistent map costs every read and write a tree walk and an
// allocation; the frozen view costs nothing until a snapshot runs and one
// map lookup more while it does.)
//
// At most one view exists at a time. A COWMap is not safe for concurrent
// use, except that the frozen view may be read by one other goroutine while
// the owner goes on reading and writing the map.
type COWMap[K comparable, V any] struct {
	base   map[K]V
	delta  map[K]cowEntry[V] // writes since Freeze; nil when not frozen
	frozen bool
	n      int // entries, base and delta together
}

type cowEntry[V any] struct {
	v       V
	deleted bool
}

// NewCOWMap returns an empty map.
func NewCOWMap[K comparable, V any]() *COWMap[K, V] {
	return &COWMap[K, V]{base: map[K]V{}}
}

// Get returns the value of k.
func (m *COWMap[K, V]) Get(k K) (V, bool) {
	if m.frozen {
		if e, ok := m.delta[k]; ok {
			if e.deleted {
				var zero V
				return zero, false
			}
			return e.v, true
		}
	}
	v, ok := m.base[k]
	return v, ok
}

// Set sets k to v.
func (m *COWMap[K, V]) Set(k K, v V) {
	if _, ok := m.Get(k); !ok {
		m.n++
	}
	if m.frozen {
		m.delta[k] = cowEntry[V]{v: v}
		return
	}
	m.base[k] = v
}

// Delete removes k and reports whether it was there.
func (m *COWMap[K, V]) Delete(k K) bool {
	if _, ok := m.Get(k); !ok {
		return false
	}
	m.n--
	if m.frozen {
		m.delta[k] = cowEntry[V]{deleted: true}
		return true
	}
	delete(m.base, k)
	return true
}

// Len is the number of entries.
func (m *COWMap[K, V]) Len() int { return m.n }

// Range calls f for every entry, in no particular order, until f returns
// false. f must not change the map.
func (m *COWMap[K, V]) Range(f func(K, V) bool) {
	if m.frozen {
		for k, e := range m.delta {
			if !e.deleted && !f(k, e.v) {
				return
			}
		}
	}
	for k, v := range m.base {
		if m.frozen {
			if _, shadowed := m.delta[k]; shadowed {
				continue
			}
		}
		if !f(k, v) {
			return
		}
	}
}

// Freeze returns a view of the map as it is now, which later writes do not
// change, until Thaw. It panics if a view exists already.
func (m *COWMap[K, V]) Freeze() FrozenMap[K, V] {
	if m.frozen {
		panic("statemachine: COWMap frozen twice")
	}
	m.frozen, m.delta = true, map[K]cowEntry[V]{}
	return FrozenMap[K, V]{m: m.base}
}

// Thaw ends the view of Freeze: the writes made since are folded into the
// map. The view must no longer be read.
func (m *COWMap[K, V]) Thaw() {
	if !m.frozen {
		return
	}
	for k, e := range m.delta {
		if e.deleted {
			delete(m.base, k)
		} else {
			m.base[k] = e.v
		}
	}
	m.frozen, m.delta = false, nil
}

// FrozenMap is a read-only view of a COWMap at the time it was frozen.
type FrozenMap[K comparable, V any] struct{ m map[K]V }

// Len is the number of entries in the view.
func (f FrozenMap[K, V]) Len() int { return len(f.m) }

// Get returns the value of k in the view.
func (f FrozenMap[K, V]) Get(k K) (V, bool) {
	v, ok := f.m[k]
	return v, ok
}

// Range calls fn for every entry of the view until fn returns false.
func (f FrozenMap[K, V]) Range(fn func(K, V) bool) {
	for k, v := range f.m {
		if !fn(k, v) {
			return
		}
	}
}
