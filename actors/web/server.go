package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/node"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed ui
var uiFiles embed.FS

// Config configures a node's HTTP endpoint.
type Config struct {
	// Listen is host:port to serve on (port 0: any free port; see Addr).
	Listen string
	// Node is the local node. Its metrics are served if it was started
	// with node.Config.Metrics; its viewer's answers need web.Routes in
	// node.Config.ExtraRoutes.
	Node *node.Node
	// Chaos offers crash buttons in the view (`ketch crash` from the
	// page); each node obeys only if it runs with --chaos itself.
	Chaos bool
	// Interval is how often the viewer asks the nodes (default 250ms: the
	// page lags the cluster by at most about that plus one round trip).
	Interval time.Duration
	Logger   *slog.Logger
}

// DefaultInterval is Config.Interval's default.
const DefaultInterval = 250 * time.Millisecond

// Server is a running HTTP endpoint.
type Server struct {
	cfg    Config
	ln     net.Listener
	srv    *http.Server
	latest *latest
	viewer *actor.PID
	// streams counts the open /events streams; viewed is when /view.json
	// was last read (Unix nanoseconds). Either makes the viewer ask.
	streams atomic.Int64
	viewed  atomic.Int64
}

// watchGrace is how long a /view.json read keeps the viewer asking.
const watchGrace = 5 * time.Second

func (s *Server) watched() bool {
	return s.streams.Load() > 0 || time.Since(time.Unix(0, s.viewed.Load())) < watchGrace
}

// fresh returns the latest frame, first waking the viewer (and waiting up
// to a second for its frame) if the latest is older than two rounds.
func (s *Server) fresh(ctx context.Context) Frame {
	f, _, changed := s.latest.get()
	if time.Since(time.UnixMilli(f.AtUnixMillis)) <= 2*s.cfg.Interval {
		return f
	}
	s.cfg.Node.System().Root.Send(s.viewer, wake{})
	select {
	case <-changed:
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	f, _, _ = s.latest.get()
	return f
}

// Start binds cfg.Listen, spawns the viewer in the node's actor system and
// serves. A bad or taken address is an error naming it.
func Start(cfg Config) (*Server, error) {
	if cfg.Node == nil {
		return nil, errors.New("web: no node")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if err := ValidateListen(cfg.Listen); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--http %s: cannot listen: %w", cfg.Listen, err)
	}
	s := &Server{cfg: cfg, ln: ln, latest: newLatest()}
	v := &viewer{n: cfg.Node, interval: cfg.Interval, chaos: cfg.Chaos, log: cfg.Logger.With("actor", "web"),
		publish: s.latest.publish, watched: s.watched}
	s.viewer, err = cfg.Node.System().Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return v }), ViewerName)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("web: cannot spawn the viewer: %w", err)
	}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("the HTTP endpoint stopped", "err", err)
		}
	}()
	return s, nil
}

// ValidateListen checks an --http address: host:port with a port in
// 0..65535 (the host may be empty: every interface).
func ValidateListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--http %q is not HOST:PORT", addr)
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--http %q: %q is not a port number (0-65535)", addr, port)
	}
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the view's URL.
func (s *Server) URL() string {
	host, port, _ := net.SplitHostPort(s.Addr())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// Close stops serving and stops the viewer.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	s.cfg.Node.System().Root.Stop(s.viewer)
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	if m := s.cfg.Node.Metrics(); m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn)}))
	} else {
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "this node was started without metrics", http.StatusNotFound)
		})
	}
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("GET /view.json", s.viewJSON)
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("POST /crash", s.crash)
	mux.HandleFunc("GET /crash", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "crash requests are POSTs", http.StatusMethodNotAllowed)
	})
	sub, _ := fs.Sub(uiFiles, "ui")
	mux.Handle("GET /", http.FileServerFS(sub))
	return mux
}

// status serves the node's `ketch status --json` object.
func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, FromStatus(s.cfg.Node.Status(), s.cfg.Node.Address(), nil))
}

func (s *Server) viewJSON(w http.ResponseWriter, r *http.Request) {
	s.viewed.Store(time.Now().UnixNano())
	writeJSON(w, s.fresh(r.Context()))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// events streams every new frame as a server-sent event ("data: {json}").
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	s.streams.Add(1)
	defer s.streams.Add(-1)
	s.cfg.Node.System().Root.Send(s.viewer, wake{}) // a first frame now, not at the next round
	var last uint64
	for {
		f, version, changed := s.latest.get()
		if version != last && version > 0 {
			last = version
			b, err := json.Marshal(f)
			if err != nil {
				return
			}
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return
			}
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		case <-time.After(15 * time.Second):
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}

// crash asks node ?node=ID to crash its child ?child=NAME, as `ketch
// crash` does; only with Config.Chaos.
func (s *Server) crash(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Chaos {
		http.Error(w, "this endpoint was started without --chaos; it crashes nothing", http.StatusForbidden)
		return
	}
	child := r.URL.Query().Get("child")
	if !slices.Contains(node.Children, child) || child == "gateway" {
		http.Error(w, fmt.Sprintf("child %q: crashable children are store, state, fsm and sender", child), http.StatusBadRequest)
		return
	}
	f := s.fresh(r.Context())
	var addr string
	for _, n := range f.Nodes {
		if fmt.Sprint(n.ID) == r.URL.Query().Get("node") {
			addr = n.Address
		}
	}
	if addr == "" {
		http.Error(w, fmt.Sprintf("node %q is not a member this node knows", r.URL.Query().Get("node")), http.StatusBadRequest)
		return
	}
	reply := make(chan *pb.CrashResponse, 1)
	s.cfg.Node.System().Root.Send(s.viewer, &crashAsk{addr: addr, child: child, reply: reply})
	select {
	case resp := <-reply:
		if !resp.Ok {
			http.Error(w, resp.Error, http.StatusConflict)
			return
		}
		writeJSON(w, map[string]any{"ok": true, "node": r.URL.Query().Get("node"), "child": child})
	case <-time.After(2 * time.Second):
		http.Error(w, "node "+r.URL.Query().Get("node")+" did not answer within 2s", http.StatusGatewayTimeout)
	case <-r.Context().Done():
	}
}
