package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/node"
)

// ketch certs: a development CA in three commands, as `cockroach cert`
// does (issue 15; package actors/certs says what the files hold).
//
//	ketch certs init   --dir DIR
//	ketch certs node   --dir DIR --cluster-id C --id N --host H[,H2...]
//	ketch certs client --dir DIR --name NAME
//
// Each also takes --validity DURATION and --overwrite, prints the files it
// wrote, one per line, and exits 0; a bad flag or a refusal prints one line
// on stderr and exits 2.

const certsUsage = `usage:
  ketch certs init   --dir DIR [--validity 87600h] [--overwrite]
  ketch certs node   --dir DIR --cluster-id C --id N --host H[,H2...] [--validity 8760h] [--overwrite]
  ketch certs client --dir DIR --name NAME [--validity 8760h] [--overwrite]
`

// hostList is a flag of comma-separated hosts that may also be repeated.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(s string) error {
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			*h = append(*h, x)
		}
	}
	return nil
}

func cmdCerts(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, certsUsage)
		return exitFailure
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "init", "node", "client":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, certsUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "ketch: certs: unknown subcommand %q\n%s", sub, certsUsage)
		return exitFailure
	}
	name := "certs " + sub
	fs := newFlags(name, stderr)
	// The flag package's own messages take several lines; the error is
	// reported below in one, and -h prints the flags on stdout.
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "the certificate directory (required)")
	validity := fs.Duration("validity", 0, "how long the certificate is valid (default 87600h for init, 8760h otherwise)")
	overwrite := fs.Bool("overwrite", false, "replace existing files (replacing the CA invalidates every certificate it issued)")
	var (
		clusterID *string
		id        *uint64
		hosts     hostList
		client    *string
	)
	switch sub {
	case "node":
		clusterID = fs.String("cluster-id", node.DefaultClusterID, "the node's cluster, as 'ketch node --cluster-id' names it")
		id = fs.Uint64("id", 0, "the node's id (a positive integer; required)")
		fs.Var(&hosts, "host", "the DNS names and IP addresses the node is reached by, H[,H2...] (required; localhost and 127.0.0.1 only if listed)")
	case "client":
		client = fs.String("name", "", "the client's name, [A-Za-z0-9._-]{1,64} (required)")
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintf(stdout, "usage of ketch %s:\n", name)
			fs.PrintDefaults()
			return exitOK
		}
		return fail(stderr, "%s: %v (run 'ketch %s -h' for the flags)", name, err, name)
	}
	if fs.NArg() > 0 {
		return fail(stderr, "%s: unexpected arguments %v", name, fs.Args())
	}
	if *dir == "" {
		return fail(stderr, "%s: --dir DIR is required", name)
	}
	var opts []certs.Option
	switch {
	case *validity < 0:
		return fail(stderr, "%s: --validity %v: give a positive duration such as 8760h", name, *validity)
	case *validity > 0:
		opts = append(opts, certs.WithValidity(*validity))
	}
	if *overwrite {
		opts = append(opts, certs.Overwrite())
	}

	var certFile, keyFile string
	var err error
	switch sub {
	case "init":
		certFile, keyFile = certs.CAPaths(*dir)
		err = certs.InitCA(*dir, opts...)
	case "node":
		switch {
		case *id == 0:
			return fail(stderr, "%s: --id N (a positive node id) is required", name)
		case len(hosts) == 0:
			return fail(stderr, "%s: --host H[,H2...] is required: every DNS name and IP address the node is reached by", name)
		}
		certFile, keyFile = certs.NodePaths(*dir, *id)
		err = certs.NewNodeCert(*dir, *clusterID, *id, hosts, opts...)
	case "client":
		if *client == "" {
			return fail(stderr, "%s: --name NAME is required", name)
		}
		certFile, keyFile = certs.ClientPaths(*dir, *client)
		err = certs.NewClientCert(*dir, *client, opts...)
	}
	if err != nil {
		return fail(stderr, "%s: %v", name, err)
	}
	fmt.Fprintln(stdout, certFile)
	fmt.Fprintln(stdout, keyFile)
	return exitOK
}
