package protoconflict

import "os"

// env is read by google.golang.org/protobuf/reflect/protoregistry when a
// conflict occurs, not at its own init, so setting it here is in time.
const env = "GOLANG_PROTOBUF_REGISTRATION_CONFLICT"

func init() {
	if os.Getenv(env) == "" {
		_ = os.Setenv(env, "ignore")
	}
}
