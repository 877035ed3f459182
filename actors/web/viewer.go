package web

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
	"google.golang.org/protobuf/proto"
)

// ViewerName is the viewer actor's id in the node's actor system. Peers'
// answers come back to it over the wire, so a node that serves the view
// admits NodeStatus and CrashResponse for it (Routes).
const ViewerName = "ketch-web"

// Routes is what the wire guard must admit for the viewer: pass it in
// node.Config.ExtraRoutes.
func Routes() map[string][]string {
	return map[string][]string{ViewerName: {
		string(proto.MessageName(&pb.NodeStatus{})),
		string(proto.MessageName(&pb.CrashResponse{})),
	}}
}

// maxNodes bounds the nodes a frame holds (and so what a forged answer can
// make the viewer keep).
const maxNodes = 64

// tick makes the viewer ask every node again, if anyone watches; wake
// makes it ask at once (a watcher arrived after a quiet spell).
type (
	tick struct{}
	wake struct{}
)

// crashAsk asks the viewer to send a CrashRequest to a node.
type crashAsk struct {
	addr, child string
	reply       chan *pb.CrashResponse
}

// seen is the latest answer of one node.
type seen struct {
	view NodeView
	at   time.Time
}

// viewer is the actor that asks the nodes for their status and publishes
// frames. It is not a child of the node supervisor: it is not part of Raft,
// and its crash (it has none to expect) would not touch the node.
type viewer struct {
	n        *node.Node
	interval time.Duration
	chaos    bool
	log      *slog.Logger
	publish  func(Frame)
	// watched reports whether a page or a /view.json reader is watching:
	// nobody watching, the viewer asks nobody, and serving the view costs
	// the cluster nothing.
	watched func() bool

	nodes  map[uint64]*seen
	addrs  map[uint64]string
	events []Event
	// asked holds the peers asked in this round that have not answered:
	// the last answer publishes a frame at once, so a peer's change
	// reaches the page a round trip after the round began, not a round
	// later (the round publishes one anyway, for peers that are down).
	asked map[uint64]bool
	crash []chan *pb.CrashResponse // waiting for a CrashResponse, in order
	timer *time.Timer
}

func (v *viewer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		v.nodes, v.addrs = map[uint64]*seen{}, map[uint64]string{}
		ctx.Send(ctx.Self(), tick{})
	case *actor.Stopping:
		if v.timer != nil {
			v.timer.Stop()
		}
	case tick:
		if v.watched() {
			v.round(ctx)
		}
		self, root := ctx.Self(), ctx.ActorSystem().Root
		v.timer = time.AfterFunc(v.interval, func() { root.Send(self, tick{}) })
	case wake:
		v.round(ctx)
	case *pb.NodeStatus:
		if v.answer(m) && v.asked[m.Id] {
			delete(v.asked, m.Id)
			if len(v.asked) == 0 {
				v.publish(v.frame(time.Now()))
			}
		}
	case *crashAsk:
		v.crash = append(v.crash, m.reply)
		ctx.Request(actor.NewPID(m.addr, v.n.Names().Gateway), &pb.CrashRequest{ClusterId: v.n.ClusterID(), Actor: m.child})
	case *pb.CrashResponse:
		if len(v.crash) > 0 {
			v.crash[0] <- m // buffered
			v.crash = v.crash[1:]
		}
	}
}

// round takes the local node's status, asks every other member for its
// own, and publishes a frame of the latest answers.
func (v *viewer) round(ctx actor.Context) {
	now := time.Now()
	self := v.n.StatusDetail(true)
	v.take(self, v.n.Address(), now)
	// Everyone the local node's configuration names (both halves of a
	// joint one), and nobody else: the set is bounded by the members.
	want := map[uint64]string{self.Id: v.n.Address()}
	if c := self.Configuration; c != nil {
		for _, m := range append(slices.Clone(c.Members), c.Outgoing...) {
			if m.Address != "" && len(want) < maxNodes {
				want[m.Id] = m.Address
			}
		}
	}
	for id := range v.nodes {
		if _, ok := want[id]; !ok {
			delete(v.nodes, id)
		}
	}
	v.addrs = want
	v.asked = map[uint64]bool{}
	for id, addr := range want {
		if id != self.Id {
			v.asked[id] = true
			ctx.Request(actor.NewPID(addr, v.n.Names().Gateway), &pb.StatusRequest{ClusterId: v.n.ClusterID(), Detail: true})
		}
	}
	v.publish(v.frame(now))
}

// answer takes a peer's status: only of a member this viewer asked, of its
// cluster (a forged one could only draw a wrong picture, never touch Raft).
func (v *viewer) answer(st *pb.NodeStatus) bool {
	addr, ok := v.addrs[st.Id]
	if !ok || st.Id == v.n.ID() || st.Error != "" && st.Role == "" {
		return false
	}
	v.take(st, addr, time.Now())
	return true
}

func (v *viewer) take(st *pb.NodeStatus, addr string, now time.Time) {
	cur := ViewOf(st, addr)
	if old := v.nodes[st.Id]; old != nil {
		for _, e := range Changes(old.view, cur, now.UnixMilli()) {
			v.events = append(v.events, e)
			if len(v.events) > MaxEvents {
				v.events = v.events[len(v.events)-MaxEvents:]
			}
		}
	}
	v.nodes[st.Id] = &seen{view: cur, at: now}
}

func (v *viewer) frame(now time.Time) Frame {
	f := Frame{ClusterID: v.n.ClusterID(), Self: v.n.ID(), Chaos: v.chaos, AtUnixMillis: now.UnixMilli(),
		IntervalMillis: v.interval.Milliseconds(), Nodes: []NodeView{}, Events: slices.Clone(v.events)}
	if f.Events == nil {
		f.Events = []Event{}
	}
	for _, id := range slices.Sorted(maps.Keys(v.addrs)) {
		s := v.nodes[id]
		if s == nil {
			f.Nodes = append(f.Nodes, NodeView{ID: id, Address: v.addrs[id], Role: "unreachable", AgeMillis: -1,
				Members: []MemberJSON{}, Outgoing: []MemberJSON{}, Recent: []EntryView{}, Progress: []ProgressView{},
				Traffic: []TrafficView{}, Children: []ChildView{}})
			continue
		}
		nv := s.view
		nv.AgeMillis = now.Sub(s.at).Milliseconds()
		// An answer older than three rounds (and half a second) is a node
		// that stopped answering: its last picture stays, marked
		// unreachable.
		nv.Reachable = s.at.Equal(now) || now.Sub(s.at) <= max(3*v.interval, 500*time.Millisecond)
		f.Nodes = append(f.Nodes, nv)
	}
	return f
}

// latest holds the last published frame for the handlers.
type latest struct {
	mu      sync.Mutex
	frame   Frame
	version uint64
	changed chan struct{} // closed and replaced on every publish
}

func newLatest() *latest {
	return &latest{changed: make(chan struct{}), frame: Frame{Nodes: []NodeView{}, Events: []Event{}}}
}

func (l *latest) publish(f Frame) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frame = f
	l.version++
	close(l.changed)
	l.changed = make(chan struct{})
}

// get returns the latest frame, its version and a channel closed at the
// next publish.
func (l *latest) get() (Frame, uint64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.frame, l.version, l.changed
}
