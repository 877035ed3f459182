// Package counter is a replicated counter service built on ketch: the
// second state machine beside the built-in key-value store, and the example
// of how to write one (actors/statemachine).
//
// The state is a set of named 64-bit counters. A command adds a delta to a
// counter and answers its new value; a query reads one. Commands and
// queries travel as opaque bytes (client.Propose, client.Query); this
// package encodes them, so users of the service call Client.Add and
// Client.Get and never see the bytes.
//
//	go run ./examples/counter        # a 3-node cluster in one process
//
// What it shows, in the order a state machine's author meets it:
//
//   - Apply is deterministic: no clock, no randomness, no map iteration,
//     and a command it cannot run (a malformed one, an overflow) gets an
//     error result, the same on every replica, rather than a panic.
//   - Snapshots are frozen views (statemachine.COWMap): Snapshot costs
//     nothing, Persist writes the view while Apply goes on.
//   - Restore checks what it reads: a snapshot is input from disk or from
//     the leader, and hostile until checked.
package counter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/statemachine"
)

// MaxNameBytes bounds a counter's name.
const MaxNameBytes = 256

// The encoding of commands and results, small enough to read in a hex dump:
//
//	command: 'a' | delta (8 bytes, big endian, two's complement) | name
//	query:   'g' | name
//	result:  'v' | value (8 bytes)     or     'e' | error text
const (
	opAdd  = 'a'
	opGet  = 'g'
	okTag  = 'v'
	errTag = 'e'
)

// EncodeAdd is the command that adds delta to counter name.
func EncodeAdd(name string, delta int64) []byte {
	b := make([]byte, 9, 9+len(name))
	b[0] = opAdd
	binary.BigEndian.PutUint64(b[1:], uint64(delta))
	return append(b, name...)
}

// EncodeGet is the query that reads counter name.
func EncodeGet(name string) []byte { return append([]byte{opGet}, name...) }

// DecodeResult turns a result into the counter's value or the service's
// error.
func DecodeResult(b []byte) (int64, error) {
	switch {
	case len(b) == 9 && b[0] == okTag:
		return int64(binary.BigEndian.Uint64(b[1:])), nil
	case len(b) > 0 && b[0] == errTag:
		return 0, fmt.Errorf("counter: %s", b[1:])
	}
	return 0, fmt.Errorf("counter: a result of %d bytes that is not one", len(b))
}

func value(v int64) []byte {
	b := make([]byte, 9)
	b[0] = okTag
	binary.BigEndian.PutUint64(b[1:], uint64(v))
	return b
}

func failure(format string, args ...any) []byte {
	return append([]byte{errTag}, fmt.Sprintf(format, args...)...)
}

func checkName(name []byte) error {
	switch {
	case len(name) == 0:
		return errors.New("the counter's name is empty")
	case len(name) > MaxNameBytes:
		return fmt.Errorf("the counter's name is %d bytes; the limit is %d", len(name), MaxNameBytes)
	case !utf8.Valid(name):
		return errors.New("the counter's name is not UTF-8")
	}
	return nil
}

// StateMachine is the counters. Use New as node.Config.StateMachine.
type StateMachine struct {
	counters *statemachine.COWMap[string, int64]
}

var _ statemachine.StateMachine = (*StateMachine)(nil)

// New returns an empty set of counters.
func New() statemachine.StateMachine {
	return &StateMachine{counters: statemachine.NewCOWMap[string, int64]()}
}

// Apply adds each command's delta to its counter and answers the new value.
func (s *StateMachine) Apply(cmds []statemachine.Command) [][]byte {
	out := make([][]byte, len(cmds))
	for i, c := range cmds {
		out[i] = s.apply(c.Data)
	}
	return out
}

func (s *StateMachine) apply(cmd []byte) []byte {
	if len(cmd) < 9 || cmd[0] != opAdd {
		return failure("not an add command")
	}
	name := cmd[9:]
	if err := checkName(name); err != nil {
		return failure("%v", err)
	}
	delta := int64(binary.BigEndian.Uint64(cmd[1:9]))
	cur, _ := s.counters.Get(string(name))
	if delta > 0 && cur > math.MaxInt64-delta || delta < 0 && cur < math.MinInt64-delta {
		return failure("adding %d to %s (%d) overflows", delta, name, cur)
	}
	s.counters.Set(string(name), cur+delta)
	return value(cur + delta)
}

// Query reads one counter (0 if it was never added to).
func (s *StateMachine) Query(q []byte) ([]byte, error) {
	if len(q) < 1 || q[0] != opGet {
		return nil, errors.New("counter: not a get query")
	}
	if err := checkName(q[1:]); err != nil {
		return nil, fmt.Errorf("counter: %w", err)
	}
	v, _ := s.counters.Get(string(q[1:]))
	return value(v), nil
}

// The snapshot format: a magic line, the number of counters, then each
// counter's name length (uvarint), name and value (8 bytes), in name order
// (so that equal states write equal snapshots).
const snapMagic = "ketch-counter-1\n"

// Snapshot freezes the counters.
func (s *StateMachine) Snapshot() (statemachine.Snapshot, error) {
	return &snapshot{m: s.counters, view: s.counters.Freeze()}, nil
}

type snapshot struct {
	m    *statemachine.COWMap[string, int64]
	view statemachine.FrozenMap[string, int64]
}

func (sn *snapshot) Persist(w io.Writer) error {
	type counter struct {
		name  string
		value int64
	}
	all := make([]counter, 0, sn.view.Len())
	sn.view.Range(func(k string, v int64) bool { all = append(all, counter{k, v}); return true })
	slices.SortFunc(all, func(a, b counter) int { return strings.Compare(a.name, b.name) })
	bw := bufio.NewWriter(w)
	bw.WriteString(snapMagic)
	var buf [binary.MaxVarintLen64]byte
	bw.Write(buf[:binary.PutUvarint(buf[:], uint64(len(all)))])
	for _, c := range all {
		bw.Write(buf[:binary.PutUvarint(buf[:], uint64(len(c.name)))])
		bw.WriteString(c.name)
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(c.value))
		bw.Write(v[:])
	}
	return bw.Flush() // the first write error, if any
}

func (sn *snapshot) Release() { sn.m.Thaw() }

// Restore replaces the counters with a snapshot's.
func (s *StateMachine) Restore(r io.Reader) error {
	br := bufio.NewReader(r)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapMagic {
		return errors.New("counter: not a counter snapshot")
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("counter: snapshot cut short: %w", err)
	}
	m := statemachine.NewCOWMap[string, int64]()
	for range n {
		l, err := binary.ReadUvarint(br)
		if err != nil || l > MaxNameBytes {
			return fmt.Errorf("counter: snapshot holds a bad name length (%d, %v)", l, err)
		}
		rec := make([]byte, l+8)
		if _, err := io.ReadFull(br, rec); err != nil {
			return fmt.Errorf("counter: snapshot cut short: %w", err)
		}
		if err := checkName(rec[:l]); err != nil {
			return fmt.Errorf("counter: snapshot: %w", err)
		}
		m.Set(string(rec[:l]), int64(binary.BigEndian.Uint64(rec[l:])))
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return errors.New("counter: snapshot holds more than its counters")
	}
	s.counters = m
	return nil
}

// Client is the counter service's client: a ketch client that speaks the
// service's encoding.
type Client struct{ c *client.Client }

// NewClient connects to a cluster that runs the counter state machine.
func NewClient(cfg client.Config) (*Client, error) {
	c, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

// Close releases the client.
func (c *Client) Close() { c.c.Close() }

// Add adds delta to counter name and returns its new value and the log
// index the addition was applied at.
func (c *Client) Add(ctx context.Context, name string, delta int64) (value int64, index uint64, err error) {
	if err := checkName([]byte(name)); err != nil {
		return 0, 0, fmt.Errorf("counter: %w", err)
	}
	r, err := c.c.Propose(ctx, EncodeAdd(name, delta))
	if err != nil {
		return 0, 0, err
	}
	v, err := DecodeResult(r.Data)
	return v, r.Index, err
}

// Get reads counter name, linearizably.
func (c *Client) Get(ctx context.Context, name string) (int64, error) {
	if err := checkName([]byte(name)); err != nil {
		return 0, fmt.Errorf("counter: %w", err)
	}
	r, err := c.c.Query(ctx, EncodeGet(name))
	if err != nil {
		return 0, err
	}
	return DecodeResult(r.Data)
}

// String shows the counters, for debugging a replica (never for answering
// clients: that would not be linearizable).
func (s *StateMachine) String() string {
	var names []string
	s.counters.Range(func(k string, _ int64) bool { names = append(names, k); return true })
	slices.Sort(names)
	var b strings.Builder
	for _, k := range names {
		v, _ := s.counters.Get(k)
		fmt.Fprintf(&b, "%s=%d ", k, v)
	}
	return strings.TrimSpace(b.String())
}
