// Package web is a node's HTTP endpoint (`ketch node --http`): Prometheus
// metrics at /metrics, the node's `ketch status --json` object at /status,
// and at / a live view of the whole cluster drawn in the browser from real
// nodes: each node's role and term, the tail of its log with the commit,
// applied and snapshot marks, the leader's view of each follower, the
// message rates between nodes, each node's supervision tree with its
// restart counts, and the membership.
//
// The view is fed by one actor (the viewer), which asks every member's
// gateway for its status with detail (a StatusRequest over Proto.Actor
// remote, as `ketch status` does) a few times a second, keeps the latest
// answer of each, and publishes a Frame; the HTTP handlers only read the
// latest published Frame and push it to browsers as server-sent events.
// So an open page costs the cluster one status request per node per
// interval, whatever the number of browsers.
//
// It must never block an actor of the node: everything it reads of the
// local node is an atomic snapshot the actors publish (node.StatusDetail,
// the metrics registry), and everything it asks of peers is a message.
// The page and its script are embedded in the binary (ui/), fetch nothing
// from the network and need no build step.
package web
