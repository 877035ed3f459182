package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/node"
)

// normalize rewrites a command line so that pflag reads it as ketch has
// always been read, while flags may also follow the arguments:
//   - a single-dash long flag (-cluster X, the Go flag package's form) is
//     the double-dash one (--cluster X);
//   - an argument that starts with "-" but is no flag of the command (a
//     value such as -5 or -x, or "-" for stdin) stays an argument;
//   - flags move in front of a "--" after which the arguments follow, in
//     their order, so no argument is taken for a flag.
//
// An unknown double-dash flag is left for pflag to refuse. Completion
// requests, and command lines that name no subcommand, are left alone.
func normalize(root *cobra.Command, args []string) []string {
	if len(args) == 0 || args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd {
		return args
	}
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	cmd, _, err := root.Find(args)
	if err != nil || cmd == root || cmd.DisableFlagParsing {
		return args
	}
	var path []string // the subcommand names, as the command line spells them
	for c := cmd; c != root; c = c.Parent() {
		path = append([]string{c.Name()}, path...)
	}
	lookup := func(name string) *pflag.Flag {
		if f := cmd.Flags().Lookup(name); f != nil {
			return f
		}
		return cmd.InheritedFlags().Lookup(name)
	}
	short := func(s string) *pflag.Flag {
		if f := cmd.Flags().ShorthandLookup(s); f != nil {
			return f
		}
		return cmd.InheritedFlags().ShorthandLookup(s)
	}
	var flags, rest []string
	seen := 0 // path names consumed
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		var f *pflag.Flag
		attached := false // the value is in a (--name=value, -wjson)
		switch {
		case strings.HasPrefix(a, "--"):
			name, _, eq := strings.Cut(a[2:], "=")
			f, attached = lookup(name), eq
			if f == nil {
				flags = append(flags, a) // unknown: pflag says so
				continue
			}
		case len(a) > 2 && a[0] == '-' && lookup(strings.SplitN(a[1:], "=", 2)[0]) != nil:
			name, _, eq := strings.Cut(a[1:], "=")
			f, attached, a = lookup(name), eq, "-"+a
		case a == "-h" || len(a) >= 2 && a[0] == '-' && short(a[1:2]) != nil:
			if a != "-h" {
				f, attached = short(a[1:2]), len(a) > 2
			}
		default:
			if seen < len(path) && a == path[seen] {
				seen++
				continue
			}
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		if f != nil && !attached && f.NoOptDefVal == "" && i+1 < len(args) {
			i++
			flags = append(flags, args[i]) // the flag's value
		}
	}
	out := append(append([]string{}, path...), flags...)
	if len(rest) > 0 {
		out = append(append(out, "--"), rest...)
	}
	return out
}

// ------------------------------------------------------------ connection

// clientFlags are the connection flags every client command takes, each
// with a $KETCH_* variable for its default (etcdctl's habit):
//
//	--cluster    $KETCH_CLUSTER      node addresses HOST:PORT,...
//	--cluster-id $KETCH_CLUSTER_ID   the cluster's name
//	--timeout    $KETCH_TIMEOUT      give up after this long
//	--cacert     $KETCH_CACERT       mutual TLS: the cluster's CA
//	--cert       $KETCH_CERT         mutual TLS: this client's certificate
//	--key        $KETCH_KEY          mutual TLS: this client's key
type clientFlags struct {
	cluster   string
	clusterID string
	timeout   time.Duration
	// Mutual TLS, etcdctl's names.
	cacert, cert, key string
	// envErr: $KETCH_TIMEOUT is set but is no duration; reported when the
	// command runs.
	envErr error
}

// addClientFlags adds the connection flags; timeout is the command's
// default when $KETCH_TIMEOUT is unset.
func addClientFlags(cmd *cobra.Command, timeout time.Duration) *clientFlags {
	f := &clientFlags{}
	if s := os.Getenv("KETCH_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			f.envErr = fmt.Errorf("$KETCH_TIMEOUT %q is not a positive duration such as 5s", s)
		} else {
			timeout = d
		}
	}
	clusterID := node.DefaultClusterID
	if s := os.Getenv("KETCH_CLUSTER_ID"); s != "" {
		clusterID = s
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cluster, "cluster", os.Getenv("KETCH_CLUSTER"), "node addresses HOST:PORT,... [$KETCH_CLUSTER]")
	fl.StringVar(&f.clusterID, "cluster-id", clusterID, "the cluster's name, as its nodes' --cluster-id [$KETCH_CLUSTER_ID]")
	fl.DurationVar(&f.timeout, "timeout", timeout, "give up after this long [$KETCH_TIMEOUT]")
	fl.StringVar(&f.cacert, "cacert", os.Getenv("KETCH_CACERT"), "mutual TLS: the cluster's CA certificate, with --cert and --key [$KETCH_CACERT]")
	fl.StringVar(&f.cert, "cert", os.Getenv("KETCH_CERT"), "mutual TLS: this client's certificate, from 'ketch certs client' [$KETCH_CERT]")
	fl.StringVar(&f.key, "key", os.Getenv("KETCH_KEY"), "mutual TLS: this client's key [$KETCH_KEY]")
	return f
}

// addresses is --cluster split, or an error saying it is required.
func (f *clientFlags) addresses() ([]string, error) {
	if f.envErr != nil {
		return nil, f.envErr
	}
	if f.timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v: give a positive duration such as 5s", f.timeout)
	}
	var addrs []string
	for _, a := range strings.Split(f.cluster, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("--cluster HOST:PORT,... (or $KETCH_CLUSTER) is required")
	}
	return addrs, nil
}

// open starts the client, and fails at once when no --cluster address has
// a ketch node (see client.Probe).
func (f *clientFlags) open() (*client.Client, []string, error) {
	return f.openProbing(true)
}

// openProbing is open; without probe it does not check first (status,
// which reports every node, reachable or not).
func (f *clientFlags) openProbing(probe bool) (*client.Client, []string, error) {
	addrs, err := f.addresses()
	if err != nil {
		return nil, nil, err
	}
	// The CLI's errors are its own one-line messages; protoactor's log
	// lines about unreachable nodes would only add noise on stderr.
	cl, err := client.New(client.Config{Cluster: addrs, ClusterID: f.clusterID, Timeout: f.timeout,
		AttemptTimeout: min(300*time.Millisecond, f.timeout/3), TLS: certs.Files{CA: f.cacert, Cert: f.cert, Key: f.key},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, err
	}
	// When no address has a node (nothing listens, something else does,
	// or TLS on one side only), say so at once instead of waiting out
	// --timeout.
	if !probe {
		return cl, addrs, nil
	}
	if err := cl.Probe(min(time.Second, f.timeout)); err != nil {
		cl.Close()
		return nil, nil, err
	}
	return cl, addrs, nil
}

// session is a client command's connection: the client, the --cluster
// addresses, and a context that ends after --timeout.
type session struct {
	cl     *client.Client
	addrs  []string
	ctx    context.Context
	cancel context.CancelFunc
}

func (s *session) close() {
	s.cancel()
	s.cl.Close()
}

// connect checks the output format, then opens the client (failing at
// once when no --cluster address has a node) and the context; on failure
// it has printed why and returns the exit code.
func connect(stderr io.Writer, verb string, cf *clientFlags, out *output) (*session, int) {
	if err := out.check(); err != nil {
		return nil, fail(stderr, "%s: %v", verb, err)
	}
	cl, addrs, err := cf.open()
	if err != nil {
		return nil, fail(stderr, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cf.timeout)
	return &session{cl: cl, addrs: addrs, ctx: ctx, cancel: cancel}, exitOK
}

// ---------------------------------------------------------------- output

// output is how a command prints: -w table (the default, for people) or
// -w json (for scripts); --json is kept as -w json.
type output struct {
	format string
	json   bool
}

func addOutput(cmd *cobra.Command, jsonHelp string) *output {
	o := &output{}
	cmd.Flags().StringVarP(&o.format, "write-out", "w", "table", "output format: table or json")
	cmd.Flags().BoolVar(&o.json, "json", false, "the same as -w json: "+jsonHelp)
	_ = cmd.RegisterFlagCompletionFunc("write-out", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
	return o
}

// check refuses an unknown -w; it sets json for -w json.
func (o *output) check() error {
	switch o.format {
	case "json":
		o.json = true
	case "table":
	default:
		return fmt.Errorf("-w %q: use json or table", o.format)
	}
	return nil
}

// emit writes v as one indented JSON document.
func emit(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// --------------------------------------------------------------- helpers

// argsError is an argument-count check with ketch's message.
func argsError(n int, msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return errors.New(msg)
		}
		return nil
	}
}

// noArgs refuses arguments, naming them.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %v", args)
	}
	return nil
}

// complete registers fixed completions for a flag.
func complete(cmd *cobra.Command, flag string, values ...string) {
	_ = cmd.RegisterFlagCompletionFunc(flag, func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	})
}
