package sim

import (
	"github.com/ketch-raft/ketch/fsm"
	"time"

	pb "github.com/ketch-raft/ketch/messages"
)

// eventKind says what a scheduled event does when its time comes.
type eventKind uint8

const (
	evDeliver       eventKind = iota // a peer message reaches node `node`
	evTimer                          // a timer set by SetTimer fires: a = timer, b = generation
	evFsync                          // node's disk finishes the fsync in progress
	evApplied                        // node's state machine reports its applied index
	evPropose                        // proposals a..a+b-1 reach node `node`
	evClientTick                     // client `node` sends its next proposal
	evNemesis                        // the fault schedule acts
	evRestart                        // a crashed node comes back
	evHeal                           // the chaos phase ends: every fault is healed
	evStopClients                    // the clients stop proposing
	evCheckLiveness                  // poll the liveness condition
	evRead                           // client read a reaches node `node`
	evFetch                          // node's store answers the Fetch in `fetch`
	evHostile                        // a forged message reaches a random live node (hostile.go)
	evSnapshotDone                   // node's snapshot in `snap` is durable
	evChunkRead                      // node's store answers a ReadChunk with `chunk`
	evStaged                         // node's staged chunk in `stage` is durable
	evMembership                     // ask for a membership change (of node `node` in term b if >= 0: an awkward moment)
	evStop                           // node `node` is shut down for good
	evVoid                           // a message lost in flight (dropInFlight): nothing happens
)

// event is one entry of the simulator's agenda.
type event struct {
	at   time.Duration // virtual time it happens at
	seq  uint64        // insertion order; breaks ties between equal times
	kind eventKind
	node int // node index (client index for evClientTick)
	// inc is the node's incarnation when the event was scheduled. Timers,
	// fsyncs and apply reports die with the incarnation that asked for them.
	inc   uint32
	a, b  uint64 // kind-specific arguments
	msg   *pb.RaftMessage
	fetch *fsm.Fetch
	snap  *simSnap
	chunk *fsm.ChunkRead
	stage *fsm.StageChunk
}

// agenda is a binary min-heap of events ordered by (at, seq), so that two
// events at the same virtual time run in the order they were scheduled.
// It is written out rather than built on container/heap, which would box
// every event in an interface.
type agenda struct {
	items []event
	seq   uint64
}

func (q *agenda) less(i, j int) bool {
	a, b := &q.items[i], &q.items[j]
	return a.at < b.at || (a.at == b.at && a.seq < b.seq)
}

func (q *agenda) push(e event) {
	e.seq = q.seq
	q.seq++
	q.items = append(q.items, e)
	for i := len(q.items) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

// pop removes and returns the earliest event; ok is false when none is left.
func (q *agenda) pop() (e event, ok bool) {
	if len(q.items) == 0 {
		return event{}, false
	}
	e = q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items[last] = event{} // let the message be collected
	q.items = q.items[:last]
	for i := 0; ; {
		m := 2*i + 1
		if m >= last {
			break
		}
		if r := m + 1; r < last && q.less(r, m) {
			m = r
		}
		if !q.less(m, i) {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return e, true
}
