// Command ketch is the one ketch binary. Its commands, each with --help:
//
//	ketch node      run a node (--id, --listen, --peers or --join, --data, ...)
//	ketch demo      a local 3-node cluster at a prompt
//	ketch put|get|delete|cas KEY ...   the key-value store
//	ketch status    every node's role, term, indexes and children
//	ketch crash     make a node's child actor panic (nodes run with --chaos)
//	ketch transfer  hand leadership to another node
//	ketch snapshot  snapshot nodes now and compact their logs
//	ketch member    list, add, promote, remove or replace members
//	ketch bench     measure a running cluster
//	ketch certs     a development CA for mutual TLS
//	ketch version   the build's version, commit and Go version
//	ketch completion bash|zsh|fish   shell completion
//
// The commands are built on github.com/spf13/cobra, as etcdctl's are:
// flags may come before or after the arguments, "--" ends the flags, and
// every client command takes its connection from flags or from $KETCH_*
// variables (see clientFlags).
//
// Exit codes: 0 success; 1 a negative answer (get: not found; cas: the
// current value differed); 2 any other failure, with a one-line reason on
// stderr. A node that fail-stops (its supervisor gave up) exits 3; one
// whose data file is corrupt exits 4, with one line naming the file and
// what to do.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK       = 0
	exitNegative = 1
	exitFailure  = 2
	exitFailStop = 3
	exitCorrupt  = 4
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command line and returns its exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(normalize(root, args))
	cmd, err := root.ExecuteC()
	var code exitCode
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &code):
		return int(code) // the command has said why
	}
	// cobra's own refusals: an unknown command or flag, a bad flag value.
	path, what := "ketch", "ketch: "
	if cmd != nil && cmd.HasParent() {
		path = cmd.CommandPath()
		what = "ketch: " + strings.TrimPrefix(path, "ketch ") + ": "
	}
	fmt.Fprintf(stderr, "%s%v (see '%s --help')\n", what, oneLine(err), path)
	return exitFailure
}

// exitCode is what a command returns for a non-zero exit once it has
// printed its one-line reason.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// body adapts a command that returns an exit code to cobra's RunE.
func body(f func(cmd *cobra.Command, args []string) int) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if code := f(cmd, args); code != exitOK {
			return exitCode(code)
		}
		return nil
	}
}

// fail prints a one-line error and returns the failure exit code.
func fail(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintln(stderr, "ketch: "+oneLine(fmt.Errorf(format, args...)))
	return exitFailure
}

// oneLine keeps an error on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
}

// newRoot builds the command tree for one run.
func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "ketch",
		Short: "Raft consensus built the Erlang/OTP way",
		Long: `ketch — Raft consensus built the Erlang/OTP way.

Each node is a supervision tree of actors (store, fsm, state, sender) that
keeps a replicated key-value store. Start a cluster with 'ketch node' (or
try 'ketch demo'), then use the client commands against it.

Client commands find the cluster with --cluster HOST:PORT,... or
$KETCH_CLUSTER; --cluster-id ($KETCH_CLUSTER_ID), --timeout ($KETCH_TIMEOUT)
and the TLS files --cacert, --cert, --key ($KETCH_CACERT, $KETCH_CERT,
$KETCH_KEY) work the same way everywhere.

Exit codes: 0 success; 1 a negative answer (get: not found; cas: not
swapped); 2 any other failure, with one line on stderr; a node exits 3 when
it fail-stops and 4 when its data file is corrupt.`,
		Example: `  ketch demo
  ketch node --id 1 --listen 127.0.0.1:7001 --peers 2=127.0.0.1:7002,3=127.0.0.1:7003 --data /var/lib/ketch/1
  export KETCH_CLUSTER=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  ketch put greeting hello
  ketch get greeting
  ketch status -w json`,
		Version:       versionString(),
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Bare 'ketch': the usage on stderr and exit 2, as before cobra.
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(stderr)
			_ = cmd.Usage()
			return exitCode(exitFailure)
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w", err) // reported by run, in one line
	})
	root.CompletionOptions.HiddenDefaultCmd = false
	root.AddGroup(
		&cobra.Group{ID: "cluster", Title: "Run a cluster:"},
		&cobra.Group{ID: "kv", Title: "Key-value commands:"},
		&cobra.Group{ID: "admin", Title: "Operate a cluster:"},
	)
	for _, c := range []*cobra.Command{newNodeCmd(stderr), newDemoCmd(stdin, stdout, stderr)} {
		c.GroupID = "cluster"
		root.AddCommand(c)
	}
	for _, c := range newKVCmds(stdin, stdout, stderr) {
		c.GroupID = "kv"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newStatusCmd(stdout, stderr), newCrashCmd(stdout, stderr), newTransferCmd(stdout, stderr),
		newSnapshotCmd(stdout, stderr), newMemberCmd(stdout, stderr), newBenchCmd(stdout, stderr)} {
		c.GroupID = "admin"
		root.AddCommand(c)
	}
	root.AddCommand(newCertsCmd(stdout, stderr), newVersionCmd(stdout))
	return root
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
