// Package metrics holds one node's Prometheus metrics: the counters and
// histograms its actors update on their hot paths, and the gauges read at
// scrape time from what the actors already publish (ketch status's
// figures). Every metric is named ketch_* with Prometheus's units and
// suffixes; labels are bounded by the member set (peer ids) and the
// node's fixed children.
//
// A nil *Metrics is valid and records nothing, so an actor holds one
// unconditionally and a node started without metrics pays one nil check per
// update. Metrics never block and never allocate per update (label
// children are looked up once per peer and cached).
//
// It must never hold a reference into an actor's state: what it reads at
// scrape time comes through the Source callbacks, which read atomics.
package metrics
