#!/bin/sh
# Runs the protoc-gen-go pinned as a tool in go.mod, so generated code does
# not depend on whatever protoc-gen-go happens to be on PATH.
exec go tool protoc-gen-go "$@"
