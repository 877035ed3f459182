package lincheck

import (
	"fmt"
	"hash/fnv"

	"github.com/anishathalye/porcupine"
)

// Kind is the kind of a key-value operation.
type Kind uint8

// The operations of the key-value workload.
const (
	KindPut Kind = iota + 1
	KindGet
	KindCAS
	KindDelete
)

func (k Kind) String() string {
	switch k {
	case KindPut:
		return "put"
	case KindGet:
		return "get"
	case KindCAS:
		return "cas"
	case KindDelete:
		return "delete"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Op is one key-value operation as a client invoked it.
type Op struct {
	Kind Kind
	Key  string
	// Value is the value a put writes, or the new value of a cas.
	Value []byte
	// Old is the value a cas expects; nil means "expect the key absent".
	Old []byte
}

// Put is put(key, value).
func Put(key string, value []byte) Op { return Op{Kind: KindPut, Key: key, Value: value} }

// Get is get(key).
func Get(key string) Op { return Op{Kind: KindGet, Key: key} }

// CAS is cas(key, old, value): set key to value if its value is old (if it
// is absent, for old nil).
func CAS(key string, old, value []byte) Op {
	return Op{Kind: KindCAS, Key: key, Old: old, Value: value}
}

// Delete is delete(key).
func Delete(key string) Op { return Op{Kind: KindDelete, Key: key} }

func (o Op) String() string { return describeInput(o.input()) }

// Result is what the cluster answered to an operation that completed OK.
type Result struct {
	// Found: get — the key exists; delete — it existed; cas that did not
	// swap — the key exists (then Value is its value).
	Found bool
	// Value: get — the value, when Found; cas that did not swap — the
	// current value, when Found.
	Value []byte
	// Swapped: cas — the swap happened.
	Swapped bool
}

// input and output are the model's comparable forms of Op and Result.
type input struct {
	kind      Kind
	key       string
	value     string
	old       string
	oldAbsent bool
}

type output struct {
	unknown bool // the outcome is unknown: matches any result
	found   bool
	value   string
	swapped bool
}

// register is the state of one key.
type register struct {
	present bool
	value   string
}

func (o Op) input() input {
	return input{kind: o.Kind, key: o.Key, value: string(o.Value), old: string(o.Old), oldAbsent: o.Kind == KindCAS && o.Old == nil}
}

func (r Result) output() output {
	return output{found: r.Found, value: string(r.Value), swapped: r.Swapped}
}

// Model is the porcupine model of one key of ketch's key-value store,
// partitioned by key. Inputs and outputs are the recorder's own types; use
// Recorder.Operations to build a history for it.
var Model = porcupine.Model{
	Partition:      partition,
	PartitionEvent: partitionEvents,
	Init:           func() any { return register{} },
	Step:           step,
	Hash: func(state any) uint64 {
		s := state.(register)
		h := fnv.New64a()
		if s.present {
			_, _ = h.Write([]byte{1})
			_, _ = h.Write([]byte(s.value))
		}
		return h.Sum64()
	},
	DescribeOperation: func(in, out any) string {
		return describeInput(in.(input)) + " → " + describeOutput(in.(input), out.(output))
	},
	DescribeState: func(state any) string { return describeState(state.(register)) },
}

// step is the sequential specification of one key, as actors/kv executes
// it. An unknown output matches any result: the operation, if it happened,
// changed the state as it would have; the checker decides when (or whether,
// by placing it last) it happened.
func step(state, in, out any) (bool, any) {
	s, i, o := state.(register), in.(input), out.(output)
	sameValue := func() bool { return o.found == s.present && (!s.present || o.value == s.value) }
	switch i.kind {
	case KindPut:
		return true, register{present: true, value: i.value}
	case KindGet:
		return o.unknown || sameValue(), s
	case KindDelete:
		return o.unknown || o.found == s.present, register{}
	case KindCAS:
		match := (i.oldAbsent && !s.present) || (!i.oldAbsent && s.present && s.value == i.old)
		next := s
		if match {
			next = register{present: true, value: i.value}
		}
		switch {
		case o.unknown:
			return true, next
		case o.swapped:
			return match, next
		default:
			return !match && sameValue(), s
		}
	}
	return false, s
}

func partition(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string]int{}
	var parts [][]porcupine.Operation
	for _, op := range history {
		k := op.Input.(input).key
		i, ok := byKey[k]
		if !ok {
			i = len(parts)
			byKey[k] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], op)
	}
	return parts
}

func partitionEvents(history []porcupine.Event) [][]porcupine.Event {
	keyOf := map[int]string{} // event id -> key, from the call events
	byKey := map[string]int{}
	var parts [][]porcupine.Event
	for _, ev := range history {
		if ev.Kind == porcupine.CallEvent {
			keyOf[ev.Id] = ev.Value.(input).key
		}
		k, ok := keyOf[ev.Id]
		if !ok {
			panic(fmt.Sprintf("lincheck: return event %d before its call", ev.Id))
		}
		i, ok := byKey[k]
		if !ok {
			i = len(parts)
			byKey[k] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], ev)
	}
	return parts
}

func describeInput(i input) string {
	switch i.kind {
	case KindPut:
		return fmt.Sprintf("put(%q, %q)", i.key, i.value)
	case KindGet:
		return fmt.Sprintf("get(%q)", i.key)
	case KindDelete:
		return fmt.Sprintf("delete(%q)", i.key)
	case KindCAS:
		old := "absent"
		if !i.oldAbsent {
			old = fmt.Sprintf("%q", i.old)
		}
		return fmt.Sprintf("cas(%q, %s → %q)", i.key, old, i.value)
	}
	return fmt.Sprintf("%v(%q)", i.kind, i.key)
}

func describeOutput(i input, o output) string {
	if o.unknown {
		return "?"
	}
	cur := "absent"
	if o.found {
		cur = fmt.Sprintf("%q", o.value)
	}
	switch i.kind {
	case KindPut:
		return "ok"
	case KindGet:
		return cur
	case KindDelete:
		if o.found {
			return "existed"
		}
		return "absent"
	case KindCAS:
		if o.swapped {
			return "swapped"
		}
		return "not swapped, is " + cur
	}
	return fmt.Sprintf("%+v", o)
}

func describeState(s register) string {
	if !s.present {
		return "absent"
	}
	return fmt.Sprintf("%q", s.value)
}
