// Package nemesis is ketch's Jepsen-style fault test: real `ketch node`
// processes, each in its own Docker container on a private bridge network,
// attacked by a nemesis while ten or more clients run a put/get/cas
// workload whose history is then checked.
//
// # What it does
//
// TestNemesis builds the ketch binary statically (CGO_ENABLED=0), wraps it in
// an image built FROM scratch (a temporary build context holding only the
// binary and a three-line Dockerfile, so nothing is pulled), creates a bridge
// network with a random private /24, and runs 3 or 5 nodes with fixed IPs,
// --chaos, and their data dir bind-mounted from a temporary directory on the
// host (so it survives kill -9 and is readable by the checker afterwards).
// Everything it creates — containers, network, image, iptables rules — is
// named or commented with a unique run prefix (ketch-nemesis-<random>) and
// removed by t.Cleanup, also when the test fails.
//
// The clients are goroutines in the test process sharing one
// client.Client (one protoactor remote; each concurrent call gets its own
// session), which listens on the bridge's gateway address so the nodes'
// answers reach it. Each client does get (40 %), put (30 %) and cas (30 %,
// expecting the value it last saw) with values unique in the run, on a few
// keys (-keys, default 8) that rotate to fresh ones every -key-life (5 s),
// so that no key's history outgrows porcupine. Each operation is recorded by
// lincheck.Recorder with outcome ok, failed or unknown (a timeout after
// -op-timeout, default 1 s: it may or may not have taken effect, now or
// later).
//
// # Nemeses
//
//   - kill: docker kill -s KILL one node, later docker start it (same IP,
//     same bind-mounted data dir).
//   - pause: docker pause / docker unpause one node (cgroup freezer: the
//     process stops without noticing; its peers' TCP connections stall).
//   - isolate: iptables DROP, in the DOCKER-USER chain, of every packet
//     between one node and each other node, both directions.
//   - partition: the nodes split into a minority and a majority, every
//     packet between the sides dropped.
//   - bridge: two sides that cannot talk, and one node that talks to both
//     (Jepsen's bridge); with 3 nodes the sides have one node each.
//   - oneway: one node's messages to every other node are lost while
//     theirs reach it (or the reverse). For a pair A→B: protoactor remote
//     sends each direction over its own gRPC connection, dialled by the
//     sender to the receiver's listen port (7000 in every container; `ss` in
//     a node's network namespace shows one outbound connection per peer to
//     its :7000 and one inbound from it), so the rule drops TCP packets from
//     A to B's port 7000:
//     A's connection to B stalls (its SYNs and data are lost), while B's
//     connection to A — whose packets from A to B carry source port 7000 —
//     keeps working, TCP acknowledgements included. This is a true one-way
//     loss of Raft messages, not of IP packets; dropping every packet from A
//     to B would also kill B's stream (its ACKs) and act like a partition.
//   - crash: makes a random child actor (store, state, fsm or sender) of a
//     random node panic, through the same CrashRequest that `ketch crash`
//     sends (the CLI's own client listens on 127.0.0.1 and cannot be
//     answered from a container, so the test uses client.Client.Crash).
//   - restart: docker kill -s KILL every node at once, then start them all.
//   - combo: faults at once — a minority/majority partition, a kill of a
//     random node and a crash of a random actor of another.
//   - member: replaces a node (the leader in half of the steps) by a new
//     server started with --join (thesis chapter 4): either added as a
//     learner, promoted and the old node removed, or one joint change
//     (ketch member replace). The old node is stopped and retired; the new
//     one takes its slot (later faults aim at it), the clients are given the
//     new addresses (client.SetCluster), and the checks below run on the
//     members of the end. A refused change (the catch-up can run out of
//     rounds under load) is undone and the run goes on; a mixed schedule
//     always has one member step.
//
// kill, pause, isolate and oneway aim at the leader of the moment in half
// of the steps (the schedule says "the leader"; the journal names the node).
// A node that fail-stops (exit 3, past its restart intensity — the crash
// nemesis can cause that) is restarted at the final heal, as an outer
// supervisor would; any other exit the nemesis did not cause fails the run.
//
// The traffic between the test's clients and the nodes goes through the
// host's INPUT/OUTPUT chains, not FORWARD, so the network nemeses cut only
// node-to-node traffic: a client may still reach an isolated node (which then
// cannot commit anything and must not answer with stale data).
//
// With -nemesis=mixed, a schedule drawn from -seed alternates quiet spells
// and faults of every kind; a fault is always healed before the next. At
// the end every fault is healed, the cluster settles, the workload stops,
// every node is killed and restarted, and every key is read once more.
//
// # Checks
//
//   - linearizability of each key's history with porcupine (lincheck), the
//     final reads included. Writes of unknown outcome whose value no
//     operation observed are left out first, as etcd's robustness tests do:
//     such a write can always be placed after everything else, so leaving it
//     out does not change the verdict, and each one otherwise doubles
//     porcupine's search;
//   - lost writes: each key's final value must not be older than an
//     acknowledged write (a write acknowledged before another acknowledged
//     write was invoked cannot be the final value, and a key with an
//     acknowledged write cannot be absent);
//   - divergence: after the nodes stop, each node's bbolt file is opened on
//     the host and the entries up to the smallest commit index the nodes
//     reported are compared; any index where two nodes differ counts.
//
// On failure the porcupine visualization and every node's docker logs are
// saved under -failure-dir (default nemesis-artifacts/ in this directory) and
// the path is printed.
//
// # Running it
//
// Every run prints one line such as
//
//	nemesis=mixed seed=7 nodes=5 ops=4211 ok=3980 failed=120 unknown=111 linearizable=true lost=0 divergent=0 snapshots=812 installs=9 replaced=1
//
// with fmt.Println: run from this directory or with -v (`go test
// ./tests/nemesis` hides a passing package's output).
//
//	go test -run TestNemesis -v                                  # mixed, 15 s, 3 nodes
//	go test -run TestNemesis -v -nemesis=partition -seed=7 -duration=60s -nodes=5
//	bash .ci/nemesis                                             # three seeds × 60 s
//
// It needs a Docker engine and root (for iptables). Without an engine it
// skips with a message, unless CI=true, where that is a failure; without
// iptables the network nemeses are left out of mixed schedules (and a run
// asking for one of them skips). It skips under -short.
//
// Other flags: -clients (10), -keys (8), -key-life (5s), -op-timeout (1s),
// -check-timeout (5m), -failure-dir (nemesis-artifacts), -ketch-bin (use a
// prebuilt static binary instead of building ./cmd/ketch).
//
// -sabotage=stale|lost|log shows that each check has teeth: it turns a read
// stale, turns a final read "absent", or rewrites node 1's last committed
// entry before the checks run, and the run must fail.
//
// Only t.Cleanup removes what a run created, so a test binary that is killed
// (SIGKILL, or go test's -timeout panic: keep -timeout well above
// -duration plus a minute) leaves its ketch-nemesis-* containers, network,
// image and DOCKER-USER rules behind. To remove them by hand:
//
//	docker rm -f $(docker ps -aq --filter name=ketch-nemesis-)
//	docker network rm $(docker network ls -q --filter name=ketch-nemesis-)
//	docker rmi $(docker images -q 'ketch-nemesis-*')
//	iptables -S DOCKER-USER | grep ketch-nemesis- | sed 's/^-A/-D/' | xargs -L1 iptables
//
// It must never touch containers, networks, images or firewall rules it did
// not create, and never leave one behind.
package nemesis
