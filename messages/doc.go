// Package messages holds ketch's protocol: the protobuf definitions in
// *.proto and the Go generated from them. Peer messages (RequestVote,
// AppendEntries and their responses), log entries and the hard state live in
// raft.proto; envelope.go (hand-written) wraps a body in its envelope.
//
// It must never import anything but protobuf: every other package may depend
// on it, so it depends on nothing of ketch's. Edit the .proto files, then run
// `go generate ./messages`; the generated code is committed and CI fails when
// it is stale.
package messages

//go:generate protoc --plugin=protoc-gen-go=../.ci/protoc-gen-go.sh --go_out=. --go_opt=paths=source_relative raft.proto node.proto
