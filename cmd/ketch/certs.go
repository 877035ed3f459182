package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

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

func (h *hostList) Type() string { return "hosts" }

func newCertsCmd(stdout, stderr io.Writer) *cobra.Command {
	group := &cobra.Command{
		Use:   "certs init|node|client",
		Short: "A development CA for mutual TLS",
		Long: `Make a development CA and the certificates a cluster needs for mutual TLS:
'init' the CA once, then one 'node' certificate per node and one 'client'
certificate per client. Each prints the two files it wrote, one per line.
Identities are URI SANs: ketch://CLUSTER/node/ID and ketch://client/NAME.`,
		Example: `  ketch certs init --dir certs
  ketch certs node --dir certs --cluster-id prod --id 1 --host n1.example.com,10.0.0.1
  ketch certs client --dir certs --name alice`,
		// The flags of a subcommand mean nothing here: the missing or
		// unknown subcommand is what to report.
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		Args:               cobra.ArbitraryArgs,
		RunE: body(func(cmd *cobra.Command, args []string) int {
			if len(args) == 0 {
				return fail(stderr, "certs: usage: ketch certs init --dir DIR | ketch certs node --dir DIR --cluster-id C --id N --host H,... | ketch certs client --dir DIR --name NAME (see 'ketch certs --help')")
			}
			return fail(stderr, "certs: unknown subcommand %q: use ketch certs init --dir DIR | ketch certs node --dir DIR ... | ketch certs client --dir DIR ...", args[0])
		}),
	}
	sub := func(use, short, example string, defaultValidity time.Duration) (*cobra.Command, *string, *time.Duration, *bool) {
		cmd := &cobra.Command{Use: use, Short: short, Example: example, Args: noArgs}
		dir := cmd.Flags().String("dir", "", "the certificate directory (required)")
		validity := cmd.Flags().Duration("validity", defaultValidity, "how long the certificate is valid")
		overwrite := cmd.Flags().Bool("overwrite", false, "replace existing files (replacing the CA invalidates every certificate it issued)")
		_ = cmd.MarkFlagDirname("dir")
		group.AddCommand(cmd)
		return cmd, dir, validity, overwrite
	}
	// common checks the shared flags and returns the options they give.
	common := func(name, dir string, validity time.Duration, overwrite bool) ([]certs.Option, error) {
		if dir == "" {
			return nil, fmt.Errorf("%s: --dir DIR is required", name)
		}
		if validity <= 0 {
			return nil, fmt.Errorf("%s: --validity %v: give a positive duration such as 8760h", name, validity)
		}
		opts := []certs.Option{certs.WithValidity(validity)}
		if overwrite {
			opts = append(opts, certs.Overwrite())
		}
		return opts, nil
	}
	done := func(name, certFile, keyFile string, err error) int {
		if err != nil {
			return fail(stderr, "%s: %v", name, err)
		}
		fmt.Fprintln(stdout, certFile)
		fmt.Fprintln(stdout, keyFile)
		return exitOK
	}

	initCmd, dir, validity, overwrite := sub("init --dir DIR", "Make the cluster's CA (ca.crt, ca.key)", "  ketch certs init --dir certs", 87600*time.Hour)
	initCmd.RunE = body(func(*cobra.Command, []string) int {
		opts, err := common("certs init", *dir, *validity, *overwrite)
		if err != nil {
			return fail(stderr, "%v", err)
		}
		certFile, keyFile := certs.CAPaths(*dir)
		return done("certs init", certFile, keyFile, certs.InitCA(*dir, opts...))
	})

	nodeCmd, ndir, nvalidity, noverwrite := sub("node --dir DIR --cluster-id C --id N --host H[,H2...]", "Make a node's certificate (node-N.crt, node-N.key)",
		"  ketch certs node --dir certs --cluster-id prod --id 1 --host n1.example.com,10.0.0.1 --host localhost", 8760*time.Hour)
	clusterID := nodeCmd.Flags().String("cluster-id", node.DefaultClusterID, "the node's cluster, as 'ketch node --cluster-id' names it")
	id := nodeCmd.Flags().Uint64("id", 0, "the node's id (a positive integer; required)")
	var hosts hostList
	nodeCmd.Flags().Var(&hosts, "host", "the DNS names and IP addresses the node is reached by, H[,H2...] (required; localhost and 127.0.0.1 only if listed)")
	nodeCmd.RunE = body(func(*cobra.Command, []string) int {
		const name = "certs node"
		opts, err := common(name, *ndir, *nvalidity, *noverwrite)
		if err != nil {
			return fail(stderr, "%v", err)
		}
		switch {
		case *id == 0:
			return fail(stderr, "%s: --id N (a positive node id) is required", name)
		case len(hosts) == 0:
			return fail(stderr, "%s: --host H[,H2...] is required: every DNS name and IP address the node is reached by", name)
		}
		certFile, keyFile := certs.NodePaths(*ndir, *id)
		return done(name, certFile, keyFile, certs.NewNodeCert(*ndir, *clusterID, *id, hosts, opts...))
	})

	clientCmd, cdir, cvalidity, coverwrite := sub("client --dir DIR --name NAME", "Make a client's certificate (client-NAME.crt, client-NAME.key)",
		"  ketch certs client --dir certs --name alice", 8760*time.Hour)
	clientName := clientCmd.Flags().String("name", "", "the client's name, [A-Za-z0-9._-]{1,64} (required)")
	clientCmd.RunE = body(func(*cobra.Command, []string) int {
		const name = "certs client"
		opts, err := common(name, *cdir, *cvalidity, *coverwrite)
		if err != nil {
			return fail(stderr, "%v", err)
		}
		if *clientName == "" {
			return fail(stderr, "%s: --name NAME is required", name)
		}
		certFile, keyFile := certs.ClientPaths(*cdir, *clientName)
		return done(name, certFile, keyFile, certs.NewClientCert(*cdir, *clientName, opts...))
	})
	return group
}
