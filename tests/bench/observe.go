package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ketch-raft/ketch/actors/node"
	"github.com/ketch-raft/ketch/actors/web"
)

// The cost of watching (issue 14): "ketch-metrics" is "ketch" with the
// nodes' metrics on and each node's /metrics scraped once a second (more
// often than Prometheus's default 15 s: a pessimistic bound); "ketch-view"
// adds an open live view: a browser's worth of server-sent events from one
// node, whose viewer asks all three nodes for their status four times a
// second.

// observed is a ketch cluster with its HTTP endpoints and watchers.
type observed struct {
	cluster
	servers []*web.Server
	cancel  context.CancelFunc
	done    chan struct{}
}

func startKetchMetrics(dir string, log *slog.Logger) (cluster, error) {
	return startObserved(dir, log, false)
}

func startKetchView(dir string, log *slog.Logger) (cluster, error) {
	return startObserved(dir, log, true)
}

func startObserved(dir string, log *slog.Logger, view bool) (cluster, error) {
	c, err := startKetchLocalWith(dir, log, func(c *node.Config) {
		c.Metrics = true
		c.ExtraRoutes = web.Routes()
	})
	if err != nil {
		return nil, err
	}
	o := &observed{cluster: c, done: make(chan struct{})}
	for _, n := range c.(*ketchLocal).nodes {
		s, err := web.Start(web.Config{Listen: "127.0.0.1:0", Node: n, Logger: log})
		if err != nil {
			o.Close()
			return nil, err
		}
		o.servers = append(o.servers, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	go o.watch(ctx, view)
	return o, nil
}

// watch scrapes every node's /metrics each second and, with view, keeps
// node 1's /events open, reading every frame, until ctx ends.
func (o *observed) watch(ctx context.Context, view bool) {
	defer close(o.done)
	hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
	if view {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+o.servers[0].Addr()+"/events", nil)
			resp, err := hc.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				_ = strings.HasPrefix(sc.Text(), "data: ") // a browser parses it; the cost here is the server's
			}
		}()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for _, s := range o.servers {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr()+"/metrics", nil)
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (o *observed) Close() {
	if o.cancel != nil {
		o.cancel()
		<-o.done
	}
	for _, s := range o.servers {
		s.Close()
	}
	o.cluster.Close()
}
