// Command ketch will be the one ketch binary: node, demo, client verbs,
// status, crash and bench. The node issue builds it; until then it says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "ketch: the node, demo and client commands are not built yet; this version holds the consensus core (package fsm) and its simulator (go test ./tests/sim)")
	os.Exit(2)
}
