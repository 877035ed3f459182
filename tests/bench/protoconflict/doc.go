// Package protoconflict lets ketch's and etcd-io/raft's generated protobuf
// code live in one binary: both register a file named "raft.proto" (ketch's
// messages/raft.proto, package ketch.v1, and etcd's raftpb, package raftpb),
// and google.golang.org/protobuf panics at start-up over the shared path
// although no message name is shared. Imported blank by the bench command,
// it sets GOLANG_PROTOBUF_REGISTRATION_CONFLICT=ignore (unless the
// environment already sets it) before either registers.
//
// It must import nothing but the standard library's os, and its import path
// must sort before go.etcd.io/raft/v3/raftpb's: the Go spec initialises,
// at each step, the first package by import path whose imports are all
// initialised, so this one runs as soon as os has, which raftpb's imports
// need first. It must never be imported outside tests/bench.
package protoconflict
