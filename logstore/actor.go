package logstore

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/ketch-raft/ketch/messages"
)

// ---------------------------------------------------------------- messages
//
// The store actor's messages are plain Go structs: they only travel between
// actors of one process and never cross the network, so they are not in
// messages/.

// WriteRequest asks the store actor to make HardState and Entries durable;
// it carries one fsm Persist action (same Seq, HardState and Entries
// semantics, see Update). Send it with ctx.Request or
// ctx.RequestWithCustomSender so that it has a sender: the answer, Durable or
// Fenced, goes to that sender. A request without a sender is written but not
// answered.
//
// The store reads HardState and Entries until it answers; the sender must
// not modify them after sending (the fsm treats entries as immutable).
type WriteRequest struct {
	// Epoch identifies the incarnation of the fsm actor that sends the
	// request; it must change every time that actor (re)starts.
	Epoch uint64
	// Seq is the Persist sequence number, increasing within an epoch.
	Seq       uint64
	HardState *pb.HardState
	Entries   []*pb.Entry
}

// CompactRequest carries one fsm Compact action: the entries through
// Through are in a durable snapshot and may go (with Reset, every entry).
// It is batched with the writes around it, in order, and made durable by
// the same Write; like a WriteRequest it belongs to the sender's Epoch, and
// losing it in a store crash fences that epoch. It is not answered.
type CompactRequest struct {
	Epoch         uint64
	Through, Term uint64
	Reset         bool
	// The configuration in effect at Through (Compaction.Config).
	Config      *pb.Configuration
	ConfigIndex uint64
}

// Durable tells the sender of WriteRequests that every one of them it sent
// in Epoch up to and including Seq is durable (fsynced). The fsm actor turns
// it into fsm.Persisted{Seq} and drops Durable of other epochs, which answer
// its previous incarnations. The store answers once per batch, not once per
// request, so Seqs may be skipped; they never go backwards.
type Durable struct {
	Epoch uint64
	Seq   uint64
}

// Fenced answers a WriteRequest whose epoch lost writes: the store actor
// crashed with accepted but unsynced requests of that epoch (or while a
// write of them failed), so acknowledging anything later in the epoch would
// claim that the lost ones are durable too. The request was not written and
// no request of that epoch will be again. The fsm actor of Epoch must crash
// on it, so that it restarts with a new epoch and reloads what is really on
// disk; Fenced of another epoch is stale and dropped. Under the node's
// rest_for_one supervision the fsm is restarted after a store crash anyway;
// Fenced closes the window before that restart.
type Fenced struct {
	Epoch uint64
	Seq   uint64
}

// LoadRequest asks the store actor for the whole durable state; it answers
// Loaded to the sender. The mailbox is FIFO and a LoadRequest first flushes
// the writes batched before it, so a Load sees every write queued before it
// (a restarted fsm relies on this: what its previous incarnation queued is
// on disk before it loads). Epoch is the asker's incarnation; Loaded echoes
// it, so an answer to an earlier incarnation is recognised as stale.
type LoadRequest struct{ Epoch uint64 }

// Loaded answers a LoadRequest of Epoch. When Err is not nil State is empty
// and the store actor crashes right after sending it (a corrupt or
// unreadable log must stop the node, not be worked around); the receiver
// must not use State and should crash too.
type Loaded struct {
	Epoch uint64
	State State
	Err   error
}

// ReadEntries asks the store actor for durable entries Lo..Hi-1, at most
// MaxBytes of them (at least one); it answers EntriesRead to the sender.
// The fsm actor sends it for an fsm.Fetch; Tag is echoed back for it.
type ReadEntries struct {
	Lo, Hi   uint64
	MaxBytes int
	Tag      any
}

// EntriesRead answers ReadEntries. When Err is not nil Entries is empty and
// the store actor crashes right after sending it, as for a failed Load.
type EntriesRead struct {
	Entries []*pb.Entry
	Tag     any
	Err     error
}

// Crash makes the store actor panic with Reason, as if its disk had failed,
// for fault-injection tests: writes it accepted but had not yet synced are
// lost and their epochs fenced. The node forwards it only when started with
// --chaos.
type Crash struct {
	Reason string
}

// ---------------------------------------------------------------- config

// Defaults of Config.
const (
	DefaultMaxBatchUpdates = 1024
	DefaultMaxBatchBytes   = 4 << 20
)

// Config tunes the store actor. Zero fields take the documented defaults.
type Config struct {
	// Logger receives the actor's few log lines (open, close, lost writes
	// on restart, fenced epochs). Default slog.Default() with actor=store.
	Logger *slog.Logger
	// MaxBatchUpdates caps the WriteRequests committed in one transaction:
	// the batch is flushed when it reaches this many even if more are
	// queued. Default DefaultMaxBatchUpdates.
	MaxBatchUpdates int
	// MaxBatchBytes caps the entry bytes (approximately: data plus a fixed
	// overhead per entry) of one transaction, so a flood of writes cannot
	// grow one fsync without bound. Default DefaultMaxBatchBytes.
	MaxBatchBytes int
	// OnCorrupt, if set, is called with the error when the store finds
	// its file corrupt (an error wrapping ErrCorrupt), just before the
	// actor crashes on it. Restarting cannot help then: the node should
	// stop and its operator restore the node from its peers. It must not
	// block.
	OnCorrupt func(error)
}

// Validate fills in defaults and reports the first problem.
func (c *Config) Validate() error {
	if c.Logger == nil {
		c.Logger = slog.Default().With("actor", "store")
	}
	if c.MaxBatchUpdates == 0 {
		c.MaxBatchUpdates = DefaultMaxBatchUpdates
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxBatchUpdates < 1 || c.MaxBatchBytes < 1 {
		return errors.New("logstore: MaxBatchUpdates and MaxBatchBytes must be positive")
	}
	return nil
}

// ---------------------------------------------------------------- props

// Props returns the props of a store actor with the default Config. open is
// called when the actor starts and again on every restart (the previous
// Store is closed first), so a restart reopens the file and reads what is
// really on disk; it typically is
//
//	func() (logstore.Store, error) { return logstore.OpenBolt(path, logstore.BoltOptions{}) }
//
// The actor panics — crashes, for its supervisor to handle — when open
// fails, when a Write fails, when a Load fails and on Crash.
func Props(open func() (Store, error)) *actor.Props {
	return PropsWithConfig(open, Config{})
}

// PropsWithConfig is Props with a Config. It panics if cfg is invalid (call
// cfg.Validate first to get the error) or open is nil.
//
// How the pieces are wired, and why. Group commit needs to know, on the
// actor's goroutine, whether more messages are queued ("flush when the
// mailbox runs dry"). protoactor's MailboxMiddleware.MailboxEmpty hook looks
// like the place, but it is unusable for this: the mailbox calls it after it
// has marked itself idle, so a message posted in that gap starts a new
// processing goroutine and Receive runs concurrently with the hook (a probe
// saw thousands of overlaps in 20k messages). Flushing there would race with
// the actor, and a panic there would kill the process instead of crashing
// the actor. Instead the actor asks its own mailbox, after every message,
// how many user messages are still queued (Mailbox.UserMessageCount) and
// flushes when none is: the same rule, decided on the actor's goroutine. The
// count is incremented after a message is enqueued and decremented after it
// is dequeued, so a positive count always means a message the actor will
// still receive; but a message can be dequeued (and counted off) before
// its enqueuer's increment, so the count can also read -1 with nothing
// queued, and the actor flushes on any count <= 0: a batch is never
// stranded. (== 0 stranded one under load: a write waited for the next
// message, TestActorWritesAreAnsweredInOrder timed out in CI.)
//
// The actor therefore needs its mailbox, and protoactor does not hand it
// over. The mailbox is created once per spawn and survives restarts, while
// the actor value is recreated by the producer on every restart, and the
// same Props may be spawned many times. So the props carry a spawn func
// that, for each spawn, creates one spawnState and spawns a clone of the
// props whose mailbox producer records the mailbox in that spawnState and
// whose producer hands the same spawnState to every incarnation. The
// spawnState also keeps the fenced epochs across restarts (see Fenced).
// Options the caller set on the props (supervisor, dispatcher, middleware)
// are kept; a mailbox option is replaced by the unbounded mailbox.
func PropsWithConfig(open func() (Store, error), cfg Config) *actor.Props {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	if open == nil {
		panic("logstore: Props needs an open func")
	}
	spawn := func(system *actor.ActorSystem, id string, props *actor.Props, parent actor.SpawnerContext) (*actor.PID, error) {
		sp := &spawnState{cfg: cfg, open: open, fenced: map[fenceKey]int{}}
		own := props.Clone(
			actor.WithProducer(func() actor.Actor { return &storeActor{sp: sp, log: cfg.Logger} }),
			actor.WithMailbox(func() actor.Mailbox {
				// Called once, by DefaultSpawner, before the actor's first
				// message is posted; the actor reads it only in Receive.
				sp.mailbox = actor.Unbounded()()
				return sp.mailbox
			}),
		)
		return actor.DefaultSpawner(system, id, own, parent)
	}
	return actor.PropsFromProducer(func() actor.Actor {
		panic("logstore: store actor props were spawned without their spawn func (do not replace it with actor.WithSpawnFunc)")
	}, actor.WithSpawnFunc(spawn))
}

// spawnState is what one spawned store actor keeps across its restarts.
// It is only touched on the actor's goroutine (or before the actor's first
// message), so it needs no lock.
type spawnState struct {
	cfg     Config
	open    func() (Store, error)
	mailbox actor.Mailbox
	// fenced maps an epoch that lost writes to how many of its later
	// requests were refused.
	fenced map[fenceKey]int
}

// fenceKey names one sender's epoch. The PID is reduced to its address and
// id: a PID's other fields are caches.
type fenceKey struct {
	address, id string
	epoch       uint64
}

func keyOf(pid *actor.PID, epoch uint64) fenceKey {
	if pid == nil {
		return fenceKey{epoch: epoch}
	}
	return fenceKey{address: pid.Address, id: pid.Id, epoch: epoch}
}

// ---------------------------------------------------------------- actor

// storeActor owns a Store and serves WriteRequest, LoadRequest and Crash.
type storeActor struct {
	sp    *spawnState
	log   *slog.Logger
	store Store

	// The batch: updates accepted but not yet written, and for each
	// distinct (sender, epoch) in it the highest Seq, to answer with one
	// Durable each (in order of first appearance).
	pending      []Update
	pendingBytes int
	acks         []ack

	// For the summary logged when the store is closed.
	batches, updates int
}

type ack struct {
	to    *actor.PID
	key   fenceKey
	epoch uint64
	seq   uint64
}

// perEntryOverhead approximates an entry's bytes beyond its data (key,
// index, term, type, framing), for MaxBatchBytes.
const perEntryOverhead = 32

// Receive handles one message, then flushes the batch if no user message is
// left in the mailbox (group commit; see PropsWithConfig).
func (a *storeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start()
	case *WriteRequest:
		a.write(ctx, m)
	case *CompactRequest:
		a.compact(ctx, m)
	case *LoadRequest:
		a.flush(ctx) // a Load sees every write queued before it
		a.load(ctx, m.Epoch)
	case *ReadEntries:
		ents, err := a.store.Entries(m.Lo, m.Hi, m.MaxBytes)
		if ctx.Sender() != nil {
			ctx.Respond(&EntriesRead{Entries: ents, Tag: m.Tag, Err: err})
		}
		if err != nil {
			a.crash(fmt.Errorf("logstore: store actor: reading entries %d..%d failed: %w", m.Lo, m.Hi-1, err))
		}
	case *Crash:
		panic(fmt.Errorf("logstore: store actor crashed on request: %s", m.Reason))
	case *actor.Restarting:
		a.losePending()
		a.closeStore()
	case *actor.Stopping:
		// A clean stop: what was accepted is written and acknowledged if
		// the disk lets us. Panicking here would wedge the stop, so a
		// failure is logged and the batch dropped unacknowledged.
		if err := a.commit(ctx); err != nil {
			a.log.Error("store actor stopping: batch not written", "updates", len(a.pending), "err", err)
			a.losePending()
		}
		a.closeStore()
	}
	// <= 0, not == 0: the mailbox pushes a message before it counts it,
	// so the actor can take a message, and count it off, before the
	// sender's increment lands; the count then reads -1 while that very
	// message is handled, and nothing more is coming.
	if len(a.pending) > 0 && a.sp.mailbox.UserMessageCount() <= 0 {
		a.flush(ctx)
	}
}

// start opens the store; a failure is a crash, and the supervisor decides
// whether to try again.
func (a *storeActor) start() {
	s, err := a.sp.open()
	if err != nil {
		a.crash(err)
	}
	if s == nil {
		panic("logstore: invariant: open returned neither a Store nor an error")
	}
	a.store = s
	if r, ok := s.(interface{ Recovered() Recovery }); ok && r.Recovered() != (Recovery{}) {
		rec := r.Recovered()
		a.log.Warn("store opened after an unclean stop: acknowledged writes replayed from the journal, a torn unacknowledged write dropped if any",
			"replayed_records", rec.Records, "torn_bytes", rec.TornBytes)
	}
	a.log.Info("store opened", "fenced_epochs", len(a.sp.fenced))
}

// write adds a request to the batch, or refuses it if its epoch is fenced.
func (a *storeActor) write(ctx actor.Context, m *WriteRequest) {
	to := ctx.Sender()
	key := keyOf(to, m.Epoch)
	if n, fenced := a.sp.fenced[key]; fenced {
		if n == 0 {
			a.log.Warn("refusing writes of an epoch that lost writes in a store crash", "epoch", m.Epoch, "seq", m.Seq, "sender", to)
		}
		a.sp.fenced[key] = n + 1
		if to != nil {
			ctx.Send(to, &Fenced{Epoch: m.Epoch, Seq: m.Seq})
		}
		return
	}
	a.pending = append(a.pending, Update{HardState: m.HardState, Entries: m.Entries})
	for _, e := range m.Entries {
		a.pendingBytes += len(e.GetData()) + perEntryOverhead
	}
	a.noteAck(to, key, m.Epoch, m.Seq)
	if len(a.pending) >= a.sp.cfg.MaxBatchUpdates || a.pendingBytes >= a.sp.cfg.MaxBatchBytes {
		a.flush(ctx)
	}
}

// compact adds a compaction to the batch, unless its epoch is fenced.
func (a *storeActor) compact(ctx actor.Context, m *CompactRequest) {
	to := ctx.Sender()
	key := keyOf(to, m.Epoch)
	if _, fenced := a.sp.fenced[key]; fenced {
		return // its epoch lost writes: the fsm crashes and reloads
	}
	a.pending = append(a.pending, Update{Compact: &Compaction{Through: m.Through, Term: m.Term, Reset: m.Reset, Config: m.Config, ConfigIndex: m.ConfigIndex}})
	a.noteAck(to, key, m.Epoch, 0) // so that losing it fences the epoch
}

func (a *storeActor) noteAck(to *actor.PID, key fenceKey, epoch, seq uint64) {
	for i := range a.acks {
		if a.acks[i].key == key {
			a.acks[i].seq = max(a.acks[i].seq, seq)
			return
		}
	}
	a.acks = append(a.acks, ack{to: to, key: key, epoch: epoch, seq: seq})
}

// flush commits the batch; a failure crashes the actor, which restarts from
// what is on disk.
func (a *storeActor) flush(ctx actor.Context) {
	if err := a.commit(ctx); err != nil {
		a.crash(err)
	}
}

// crash panics with err, the actor's way to fail; a corrupt file is
// reported to OnCorrupt first.
func (a *storeActor) crash(err error) {
	if errors.Is(err, ErrCorrupt) && a.sp.cfg.OnCorrupt != nil {
		a.sp.cfg.OnCorrupt(err)
	}
	panic(err)
}

// commit writes the batch in one Store.Write (one transaction, one fsync)
// and then, only then, answers each (sender, epoch) in it with one Durable
// carrying its highest Seq. On failure the batch is kept, so that a restart
// fences its epochs.
func (a *storeActor) commit(ctx actor.Context) error {
	if len(a.pending) == 0 {
		return nil
	}
	if err := a.store.Write(a.pending); err != nil {
		return fmt.Errorf("logstore: store actor: batch of %d writes not written: %w", len(a.pending), err)
	}
	for _, k := range a.acks {
		if k.to != nil {
			ctx.Send(k.to, &Durable{Epoch: k.epoch, Seq: k.seq})
		}
	}
	a.batches++
	a.updates += len(a.pending)
	a.resetBatch()
	return nil
}

func (a *storeActor) resetBatch() {
	clear(a.pending) // drop references to the entries
	a.pending = a.pending[:0]
	a.pendingBytes = 0
	clear(a.acks)
	a.acks = a.acks[:0]
}

// losePending drops the batch as a crash would, fencing the epochs it held:
// their senders were promised nothing about these writes, but they may have
// later ones queued, and acknowledging those would imply these are durable.
func (a *storeActor) losePending() {
	if len(a.pending) == 0 {
		return
	}
	for _, k := range a.acks {
		if _, ok := a.sp.fenced[k.key]; !ok {
			a.sp.fenced[k.key] = 0
		}
	}
	a.log.Warn("store actor restarting: unsynced writes lost, their epochs fenced", "writes", len(a.pending), "epochs", len(a.acks))
	a.resetBatch()
}

// load answers a LoadRequest. A failing Load crashes the actor after the
// answer went out, so the requester is not left waiting.
func (a *storeActor) load(ctx actor.Context, epoch uint64) {
	st, err := a.store.Load()
	if ctx.Sender() != nil {
		ctx.Respond(&Loaded{Epoch: epoch, State: st, Err: err})
	}
	if err != nil {
		a.crash(fmt.Errorf("logstore: store actor: load failed: %w", err))
	}
}

func (a *storeActor) closeStore() {
	if a.store == nil {
		return
	}
	if err := a.store.Close(); err != nil {
		a.log.Error("closing the store", "err", err)
		if errors.Is(err, ErrCorrupt) && a.sp.cfg.OnCorrupt != nil {
			// Found while moving the journal into bbolt: the node must not
			// start on this file again without being told.
			a.sp.cfg.OnCorrupt(err)
		}
	}
	a.store = nil
	a.log.Info("store closed", "batches", a.batches, "writes", a.updates)
}
