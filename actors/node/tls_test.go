// Several protoactor remotes in one process race inside gRPC's global
// logger (remote.Start calls grpclog.SetLoggerV2): the TLS cluster tests,
// which start several nodes and clients, run without -race only (.ci/test
// runs this package again without it).

//go:build !race

package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/client"
	pb "github.com/ketch-raft/ketch/messages"
	"github.com/ketch-raft/ketch/sender"
)

// tlsCluster starts n nodes with mutual TLS from a CA made in dir.
func tlsCluster(t *testing.T, dir string, n int) ([]*Node, []string) {
	t.Helper()
	if err := certs.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		_ = l.Close()
	}
	var nodes []*Node
	for i := range n {
		id := uint64(i + 1)
		if err := certs.NewNodeCert(dir, DefaultClusterID, id, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
		peers := map[uint64]string{}
		for j, a := range addrs {
			if j != i {
				peers[uint64(j+1)] = a
			}
		}
		crt, key := certs.NodePaths(dir, id)
		nd, err := Start(Config{ID: id, Listen: addrs[i], Peers: peers, DataDir: filepath.Join(t.TempDir(), fmt.Sprint(id)),
			ElectionTimeout: 150 * time.Millisecond, HeartbeatInterval: 30 * time.Millisecond,
			TLS:    certs.Files{CA: filepath.Join(dir, "ca.crt"), Cert: crt, Key: key},
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.Stop(); <-nd.Done() })
		nodes = append(nodes, nd)
	}
	return nodes, addrs
}

func TestTLSCluster(t *testing.T) {
	dir := t.TempDir()
	_, addrs := tlsCluster(t, dir, 3)
	if err := certs.NewClientCert(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	crt, key := certs.ClientPaths(dir, "alice")
	cl, err := client.New(client.Config{Cluster: addrs, TLS: certs.Files{CA: filepath.Join(dir, "ca.crt"), Cert: crt, Key: key}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	v, err := cl.Get(ctx, "k")
	if err != nil || string(v) != "v" {
		t.Fatalf("get over TLS: %q %v", v, err)
	}
	plain, err := client.New(client.Config{Cluster: addrs, Timeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if err := plain.Put(ctx2, "k", []byte("plain")); err == nil {
		t.Fatal("a plaintext client's put succeeded")
	}
}

// rogue is an actor system with a remote that speaks TLS with the given
// certificate and verifies nothing itself: a process that holds some
// certificate and tries its luck.
type rogue struct {
	sys   *actor.ActorSystem
	reply *actor.PID
	got   chan any
}

func newRogue(t *testing.T, cert tls.Certificate) *rogue {
	t.Helper()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(sender.QuietLogger(slog.New(slog.DiscardHandler), slog.LevelError)))
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, ClientAuth: tls.RequireAnyClientCert}
	if _, err := sender.StartRemote(sys, "127.0.0.1", 0, sender.WithTLS(sender.TLS{Server: cfg, Client: cfg, Logger: slog.New(slog.DiscardHandler)}),
		sender.WithGuard(sender.GuardConfig{Routes: map[string][]string{}, OtherTargets: client.ResponseTypes()})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Shutdown)
	r := &rogue{sys: sys, got: make(chan any, 16)}
	r.reply = sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if _, ok := c.Message().(*pb.NodeStatus); ok {
			r.got <- c.Message()
		}
	}))
	return r
}

// answered reports whether node addr's gateway answers a status request
// from the rogue within d.
func (r *rogue) answered(addr string, d time.Duration) bool {
	r.sys.Root.RequestWithCustomSender(actor.NewPID(addr, GatewayID), &pb.StatusRequest{ClusterId: DefaultClusterID}, r.reply)
	select {
	case <-r.got:
		return true
	case <-time.After(d):
		return false
	}
}

func loadPair(t *testing.T, crt, key string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTLSRefusals is issue 15's list: a certificate of another CA, an
// expired one, plaintext, another cluster's, and node 2's certificate
// speaking as node 3 are each refused; a valid client certificate is
// answered (so the check can fail).
func TestTLSRefusals(t *testing.T) {
	dir := t.TempDir()
	nodes, addrs := tlsCluster(t, dir, 3)
	other := t.TempDir()
	if err := certs.InitCA(other); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		certs.NewClientCert(dir, "good"),
		certs.NewClientCert(dir, "expired", certs.WithNotBefore(time.Now().Add(-48*time.Hour)), certs.WithValidity(time.Hour)),
		certs.NewClientCert(other, "stranger"),
		certs.NewNodeCert(dir, "another-cluster", 4, []string{"127.0.0.1"}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	pair := func(d, name string) tls.Certificate {
		crt, key := certs.ClientPaths(d, name)
		return loadPair(t, crt, key)
	}
	anotherCrt, anotherKey := certs.NodePaths(dir, 4)
	if !newRogue(t, pair(dir, "good")).answered(addrs[0], 5*time.Second) {
		t.Fatal("a valid client certificate was not answered: the refusals below prove nothing")
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"a certificate of another CA", pair(other, "stranger")},
		{"an expired certificate", pair(dir, "expired")},
		{"a node certificate of another cluster", loadPair(t, anotherCrt, anotherKey)},
	} {
		if newRogue(t, tc.cert).answered(addrs[0], time.Second) {
			t.Errorf("%s was answered", tc.name)
		}
	}
	plain, err := client.New(client.Config{Cluster: addrs[:1], Timeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := plain.Status(ctx, addrs[0]); err == nil {
		t.Error("a plaintext client was answered")
	}

	// Node 2's certificate: its own RaftBatches pass the guard, one that
	// claims to be from node 3 does not (and changes nothing).
	crt2, key2 := certs.NodePaths(dir, 2)
	r := newRogue(t, loadPair(t, crt2, key2))
	target := nodes[0]
	term := target.Status().Term
	before := target.Status().RejectedWireMessages
	forged := &pb.RaftBatch{From: 3, Messages: []*pb.RaftMessage{{ClusterId: DefaultClusterID, From: 3, To: 1, Term: term + 5,
		Body: &pb.RaftMessage_RequestVote{RequestVote: &pb.RequestVote{LastLogIndex: 1 << 40, LastLogTerm: term + 4}}}}}
	r.sys.Root.Send(actor.NewPID(addrs[0], FSMID), forged)
	deadline := time.Now().Add(5 * time.Second)
	for target.Status().RejectedWireMessages == before {
		if time.Now().After(deadline) {
			t.Fatal("node 1's wire guard did not reject a RaftBatch from node 3 sent over node 2's certificate")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The batch says node 2 (as its certificate does) but a message in it
	// says node 3: the fsm actor refuses the message.
	peerBefore := target.Status().RejectedPeerMessages
	inner := &pb.RaftBatch{From: 2, Messages: []*pb.RaftMessage{{ClusterId: DefaultClusterID, From: 3, To: 1, Term: term + 1,
		Body: &pb.RaftMessage_AppendEntries{AppendEntries: &pb.AppendEntries{}}}}}
	r.sys.Root.Send(actor.NewPID(addrs[0], FSMID), inner)
	for target.Status().RejectedPeerMessages == peerBefore {
		if time.Now().After(deadline) {
			t.Fatal("node 1 took an AppendEntries from node 3 inside node 2's batch")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := target.Status(); st.Term != term {
		t.Fatalf("the forged messages moved node 1 from term %d to %d", term, st.Term)
	}
}

// TestTLSRotation: a node rereads its certificate for new connections, so
// a rotated one is served without a restart (and the cluster keeps
// working across the change).
func TestTLSRotation(t *testing.T) {
	dir := t.TempDir()
	_, addrs := tlsCluster(t, dir, 3)
	if err := certs.NewClientCert(dir, "ops"); err != nil {
		t.Fatal(err)
	}
	ccrt, ckey := certs.ClientPaths(dir, "ops")
	probe := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{loadPair(t, ccrt, ckey)}, InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	served := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", addrs[0], probe)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := served()
	if err := certs.NewNodeCert(dir, DefaultClusterID, 1, []string{"127.0.0.1"}, certs.Overwrite()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for served() == first {
		if time.Now().After(deadline) {
			t.Fatal("node 1 still serves its old certificate 5 s after it was rotated")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cl, err := client.New(client.Config{Cluster: addrs, TLS: certs.Files{CA: filepath.Join(dir, "ca.crt"), Cert: ccrt, Key: ckey}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Status(ctx, addrs[0]); err != nil {
		t.Fatalf("a new client after node 1's rotation: %v", err)
	}
	if err := cl.Put(ctx, "after", []byte("rotation")); err != nil {
		t.Fatalf("a write after the rotation: %v", err)
	}
}
