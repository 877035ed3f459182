package main

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
)

// The cost of mutual TLS (issue 15): "ketch-tls" is "ketch" (proposals on
// the leader, in-process) with TLS 1.3 between the nodes; "ketch-remote-tls"
// is "ketch-remote" (through the Go client) with TLS on the client's
// connections too. Certificates come from a CA made in the run's dir.

func tlsDir(dir string) (string, error) {
	d := filepath.Join(dir, "certs")
	if err := certs.InitCA(d); err != nil {
		return "", err
	}
	for id := uint64(1); id <= 3; id++ {
		if err := certs.NewNodeCert(d, node.DefaultClusterID, id, []string{"127.0.0.1"}); err != nil {
			return "", err
		}
	}
	return d, certs.NewClientCert(d, "bench")
}

func withTLS(d string) func(*node.Config) {
	return func(c *node.Config) {
		crt, key := certs.NodePaths(d, c.ID)
		c.TLS = certs.Files{CA: filepath.Join(d, "ca.crt"), Cert: crt, Key: key}
	}
}

func startKetchTLS(dir string, log *slog.Logger) (cluster, error) {
	d, err := tlsDir(dir)
	if err != nil {
		return nil, err
	}
	return startKetchLocalWith(dir, log, withTLS(d))
}

func startKetchRemoteTLS(dir string, log *slog.Logger) (cluster, error) {
	d, err := tlsDir(dir)
	if err != nil {
		return nil, err
	}
	k, err := startKetchWith(dir, log, withTLS(d))
	if err != nil {
		return nil, err
	}
	addrs := []string{k.leader.Address()}
	for _, a := range k.addrs {
		if a != k.leader.Address() {
			addrs = append(addrs, a)
		}
	}
	crt, key := certs.ClientPaths(d, "bench")
	cl, err := client.New(client.Config{Cluster: addrs, TLS: certs.Files{CA: filepath.Join(d, "ca.crt"), Cert: crt, Key: key}, Logger: log})
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("TLS client: %w", err)
	}
	c := &ketchRemote{ketchCluster: k, cl: cl}
	return c, warm(c)
}
