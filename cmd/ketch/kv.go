package main

import (
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/ketch-raft/ketch/actors/client"
	pb "github.com/ketch-raft/ketch/messages"
)

// The key-value commands: put, get, delete and cas, each a linearizable
// operation on the cluster's built-in store.

// kvTimeout is their default --timeout.
const kvTimeout = 10 * time.Second

// limitsText states the store's limits, for help and errors.
func limitsText() string {
	l := pb.DefaultLimits()
	return fmt.Sprintf("Keys are valid UTF-8 of up to %d bytes; a value is up to a little under %d bytes (the %d-byte entry limit less the key and the command's framing).",
		l.MaxKeyBytes, l.MaxEntryBytes, l.MaxEntryBytes)
}

func newKVCmds(stdin io.Reader, stdout, stderr io.Writer) []*cobra.Command {
	put := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Write a value (VALUE - reads it from stdin)",
		Long: `Write VALUE under KEY through the leader; it is answered once a majority
has it on disk and it is applied. VALUE "-" reads the value from stdin (use
"--" before a value that starts with "-"). ` + limitsText(),
		Example: `  ketch put greeting hello
  ketch put config - < config.json
  ketch put -- offset -5`,
		Args: argsError(2, "put takes 2 argument(s): KEY VALUE (VALUE - reads it from stdin)"),
	}
	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Read a value (exit 1 if the key does not exist)",
		Long: `Read KEY's value, linearizably (ReadIndex: no log write). It prints the value
and exits 0, or says "not found" on stderr and exits 1.`,
		Example: `  ketch get greeting
  ketch get greeting -w json`,
		Args: argsError(1, "get takes 1 argument(s): KEY"),
	}
	del := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a key, saying whether it existed",
		Long:  `Delete KEY. It prints "deleted" or "did not exist (nothing deleted)" and exits 0 either way.`,
		Example: `  ketch delete greeting
  ketch delete greeting --json`,
		Args: argsError(1, "delete takes 1 argument(s): KEY"),
	}
	cas := &cobra.Command{
		Use:   "cas KEY OLD NEW | cas --if-absent KEY NEW",
		Short: "Compare-and-swap (exit 1 if not swapped)",
		Long: `Set KEY to NEW only if its value is OLD, or, with --if-absent, only if KEY
does not exist. It exits 0 when swapped, and 1 with the current value on
stderr when not.`,
		Example: `  ketch cas counter 41 42
  ketch cas --if-absent lock me`,
	}
	ifAbsent := cas.Flags().Bool("if-absent", false, "create the key: swap only if it does not exist (then: cas --if-absent KEY NEW)")
	cas.Args = func(cmd *cobra.Command, args []string) error {
		if *ifAbsent {
			return argsError(2, "cas takes 2 argument(s): KEY NEW with --if-absent")(cmd, args)
		}
		return argsError(3, "cas takes 3 argument(s): KEY OLD NEW")(cmd, args)
	}
	for _, c := range []*cobra.Command{put, get, del, cas} {
		verb := c.Name()
		cf := addClientFlags(c, kvTimeout)
		var out *output
		switch verb {
		case "put":
			out = addOutput(c, `print {"key": KEY, "bytes": N}`)
		case "get":
			out = addOutput(c, `print {"key": KEY, "found": true, "value": VALUE}, or "value_base64" for a value that is not UTF-8`)
		case "delete":
			out = addOutput(c, `print {"key": KEY, "existed": true|false}`)
		case "cas":
			out = addOutput(c, `print {"key": KEY, "swapped": true|false, "found": ..., "current": ...}`)
		}
		c.RunE = body(func(cmd *cobra.Command, args []string) int {
			return kv(verb, args, cf, out, *ifAbsent, stdin, stdout, stderr)
		})
	}
	return []*cobra.Command{put, get, del, cas}
}

func kv(verb string, a []string, cf *clientFlags, out *output, ifAbsent bool, stdin io.Reader, stdout, stderr io.Writer) int {
	if err := out.check(); err != nil {
		return fail(stderr, "%s: %v", verb, err)
	}
	// The input is checked before any node is asked (the client would
	// refuse it too, but only once it has a cluster to send it to).
	limits := pb.DefaultLimits()
	switch {
	case !utf8.ValidString(a[0]):
		return fail(stderr, "%s: the key %q is not valid UTF-8", verb, a[0])
	case len(a[0]) > limits.MaxKeyBytes:
		return fail(stderr, "%s: the key is %d bytes, over the %d-byte key limit", verb, len(a[0]), limits.MaxKeyBytes)
	}
	if verb == "put" && a[1] == "-" {
		// The value from stdin, up to the entry limit (one byte more
		// tells that it is over).
		limit := limits.MaxEntryBytes
		b, err := io.ReadAll(io.LimitReader(stdin, int64(limit)+1))
		if err != nil {
			return fail(stderr, "put: reading the value from stdin: %v", err)
		}
		if len(b) > limit {
			return fail(stderr, "put: the value on stdin is over the %d-byte entry limit (keys up to %d bytes, values a little under %d)", limit, limits.MaxKeyBytes, limit)
		}
		a[1] = string(b)
	}
	s, code := connect(stderr, verb, cf, out)
	if code != exitOK {
		return code
	}
	defer s.close()
	cl, ctx := s.cl, s.ctx
	var err error
	switch verb {
	case "put":
		err = cl.Put(ctx, a[0], []byte(a[1]))
		if err == nil && out.json {
			emit(stdout, map[string]any{"key": a[0], "bytes": len(a[1])})
		}
	case "get":
		var v []byte
		v, err = cl.Get(ctx, a[0])
		if errors.Is(err, client.ErrNotFound) {
			if out.json {
				emit(stdout, map[string]any{"key": a[0], "found": false})
			} else {
				fmt.Fprintln(stderr, "not found")
			}
			return exitNegative
		}
		if err == nil {
			if out.json {
				emit(stdout, valueJSON(map[string]any{"key": a[0], "found": true}, "value", v))
			} else {
				fmt.Fprintln(stdout, string(v))
			}
		}
	case "delete":
		var existed bool
		existed, err = cl.Delete(ctx, a[0])
		if err == nil {
			switch {
			case out.json:
				emit(stdout, map[string]any{"key": a[0], "existed": existed})
			case existed:
				fmt.Fprintln(stdout, "deleted")
			default:
				fmt.Fprintln(stdout, "did not exist (nothing deleted)")
			}
		}
	case "cas":
		var swapped, found bool
		var cur []byte
		old, value := []byte(a[1]), []byte(a[len(a)-1])
		if ifAbsent {
			old = nil // must not exist
		}
		swapped, cur, found, err = cl.CompareAndSwap(ctx, a[0], old, value)
		if err != nil {
			break
		}
		if out.json {
			o := map[string]any{"key": a[0], "swapped": swapped}
			if !swapped {
				o["found"] = found
				if found {
					o = valueJSON(o, "current", cur)
				}
			}
			emit(stdout, o)
		}
		if !swapped {
			switch {
			case out.json:
			case found:
				fmt.Fprintf(stderr, "not swapped: current value is %q\n", cur)
			default:
				fmt.Fprintln(stderr, "not swapped: the key does not exist")
			}
			return exitNegative
		}
	}
	if err != nil {
		return fail(stderr, "%s: %v", verb, err)
	}
	return exitOK
}

// valueJSON sets o[key] to v as a string, or o[key+"_base64"] when v is not
// UTF-8 (JSON strings cannot carry arbitrary bytes).
func valueJSON(o map[string]any, key string, v []byte) map[string]any {
	if utf8.Valid(v) {
		o[key] = string(v)
	} else {
		o[key+"_base64"] = v // encoding/json writes []byte as base64
	}
	return o
}
