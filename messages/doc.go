// Package messages holds ketch's protocol: the protobuf definitions in
// ketch/v1/*.proto and the Go generated from them. Peer messages
// (RequestVote, AppendEntries and their responses), log entries and the
// hard state live in ketch/v1/raft.proto, the client, key-value and admin
// messages in ketch/v1/node.proto; envelope.go (hand-written) wraps a body
// in its envelope. The files are registered with the protobuf runtime
// under those paths, as the package ketch.v1 says: a bare "raft.proto"
// collided with etcd-io/raft's raftpb, and the runtime panics at start-up
// when two files of one binary share a path.
//
// It must never import anything but protobuf: every other package may depend
// on it, so it depends on nothing of ketch's. Edit the .proto files, then run
// `go generate ./messages`; the generated code is committed and CI fails when
// it is stale.
package messages

//go:generate protoc --plugin=protoc-gen-go=../.ci/protoc-gen-go.sh --go_out=. --go_opt=module=github.com/ketch-raft/ketch/messages ketch/v1/raft.proto ketch/v1/node.proto
