package statemachine

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// The frozen view is the map at Freeze, whatever is written after; the map
// reads its own writes all along; Thaw folds them in. Checked against a
// plain map over random operations, with the view read on another
// goroutine meanwhile (go test -race checks that nothing is shared).
func TestCOWMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := NewCOWMap[int, int]()
	model := map[int]int{}
	check := func(what string) {
		t.Helper()
		if m.Len() != len(model) {
			t.Fatalf("%s: Len %d, want %d", what, m.Len(), len(model))
		}
		seen := 0
		m.Range(func(k, v int) bool {
			seen++
			if model[k] != v {
				t.Fatalf("%s: Range gave %d=%d, want %d", what, k, v, model[k])
			}
			return true
		})
		if seen != len(model) {
			t.Fatalf("%s: Range saw %d entries, want %d", what, seen, len(model))
		}
	}
	step := func() {
		k := rng.IntN(200)
		switch rng.IntN(3) {
		case 0, 1:
			v := rng.Int()
			m.Set(k, v)
			model[k] = v
		default:
			_, had := model[k]
			if got := m.Delete(k); got != had {
				t.Fatalf("Delete(%d) = %v, want %v", k, got, had)
			}
			delete(model, k)
		}
		want, has := model[k]
		if v, ok := m.Get(k); ok != has || ok && v != want {
			t.Fatalf("Get(%d) = %d, %v; want %d, %v", k, v, ok, want, has)
		}
	}
	for round := range 20 {
		for range 300 {
			step()
		}
		check("before freezing")
		frozenAt := map[int]int{}
		for k, v := range model {
			frozenAt[k] = v
		}
		view := m.Freeze()
		var wg sync.WaitGroup
		var viewErr string
		wg.Go(func() { // the snapshot writer
			n := 0
			view.Range(func(k, v int) bool {
				n++
				if frozenAt[k] != v {
					viewErr = "the view changed"
				}
				return true
			})
			if n != len(frozenAt) || view.Len() != len(frozenAt) {
				viewErr = "the view lost or gained entries"
			}
		})
		for range 300 {
			step()
		}
		wg.Wait()
		if viewErr != "" {
			t.Fatalf("round %d: %s", round, viewErr)
		}
		check("while frozen")
		m.Thaw()
		check("after thawing")
	}
}
