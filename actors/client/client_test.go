package client

import (
	"net"
	"testing"
)

// The client must listen where the nodes can answer it: on the address
// that routes to them, not always on loopback (a CLI on one host talking to
// nodes on others got no answers at all).
func TestListenHostFor(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"127.0.0.1:7000", "127.0.0.1"},
		{"127.0.0.5:7000", "127.0.0.1"},
		{"not-an-address", "127.0.0.1"},
	} {
		if got := listenHostFor(c.addr); got != c.want {
			t.Errorf("listenHostFor(%q) = %q, want %q", c.addr, got, c.want)
		}
	}
	// A non-loopback target routes through a non-loopback local address
	// (when the machine has a route at all; UDP dial sends nothing).
	if host := listenHostFor("10.255.255.1:7000"); host != "127.0.0.1" {
		if ip := net.ParseIP(host); ip == nil || ip.IsLoopback() {
			t.Errorf("listenHostFor(10.255.255.1:7000) = %q, want a routable local address", host)
		}
	}
}
