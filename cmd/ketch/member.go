package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ketch-raft/ketch/actors/client"
	"github.com/ketch-raft/ketch/actors/web"
	pb "github.com/ketch-raft/ketch/messages"
)

// ketch member: the cluster's membership (thesis chapter 4).
//
//	ketch member list    --cluster ... [--json]
//	ketch member add     --cluster ... ID=HOST:PORT [--learner]
//	ketch member promote --cluster ... ID
//	ketch member remove  --cluster ... ID
//	ketch member replace --cluster ... OLD=NEW=HOST:PORT ...
//
// A change is answered once the new configuration has committed: exit 0;
// refused or failed (with the reason on stderr, the configuration
// unchanged): exit 2. The one exit 2 whose outcome is unknown says so:
// leadership was lost after the configuration was appended (check with
// 'ketch member list').

const memberUsage = `usage:
  ketch member list    --cluster HOST:PORT,... [--json]
  ketch member add     --cluster HOST:PORT,... ID=HOST:PORT [--learner]
  ketch member promote --cluster HOST:PORT,... ID
  ketch member remove  --cluster HOST:PORT,... ID
  ketch member replace --cluster HOST:PORT,... OLD=NEW=HOST:PORT ...
`

func cmdMember(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, memberUsage)
		return exitFailure
	}
	sub, rest := args[0], args[1:]
	fs := newFlags("member "+sub, stderr)
	cf := addClientFlags(fs)
	asJSON := fs.Bool("json", false, "list: print a JSON array of {id, address, role}")
	asLearner := fs.Bool("learner", false, "add: add the server as a learner (it receives the log but does not vote)")
	expect := fs.Uint64("expect-index", 0, "refuse the change unless the configuration's entry is at this index (see 'member list')")
	*cf.timeout = 30 * time.Second
	switch sub {
	case "list", "add", "promote", "remove", "replace":
	default:
		fmt.Fprintf(stderr, "ketch: member: unknown subcommand %q\n%s", sub, memberUsage)
		return exitFailure
	}
	// Flags may also follow the arguments, as the usage shows them
	// (member add ... ID=HOST:PORT --learner); the flag package alone
	// stops at the first argument.
	args = nil
	for {
		if err := fs.Parse(rest); err != nil {
			return exitFailure
		}
		rest = fs.Args()
		for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			args, rest = append(args, rest[0]), rest[1:]
		}
		if len(rest) == 0 {
			break
		}
	}
	req := &pb.MemberRequest{ExpectIndex: *expect}
	switch sub {
	case "list":
		if len(args) != 0 {
			return fail(stderr, "member list takes no arguments")
		}
	case "add":
		if len(args) != 1 {
			return fail(stderr, "member add takes one argument: ID=HOST:PORT")
		}
		m, err := parseServer(args[0])
		if err != nil {
			return fail(stderr, "member add: %v", err)
		}
		m.Role = pb.MemberRole_MEMBER_ROLE_VOTER
		if *asLearner {
			m.Role = pb.MemberRole_MEMBER_ROLE_LEARNER
		}
		req.Add = []*pb.Member{m}
	case "promote", "remove":
		if len(args) != 1 {
			return fail(stderr, "member %s takes one argument: the member's ID", sub)
		}
		id, err := strconv.ParseUint(args[0], 10, 64)
		if err != nil || id == 0 {
			return fail(stderr, "member %s: %q is not a node id (a positive integer)", sub, args[0])
		}
		if sub == "promote" {
			req.Promote = []uint64{id}
		} else {
			req.Remove = []uint64{id}
		}
	case "replace":
		if len(args) == 0 {
			return fail(stderr, "member replace takes OLD=NEW=HOST:PORT ... (each old voter and the new voter that replaces it)")
		}
		for _, a := range args {
			old, rest, ok := strings.Cut(a, "=")
			id, err := strconv.ParseUint(old, 10, 64)
			if !ok || err != nil || id == 0 {
				return fail(stderr, "member replace: %q is not OLD=NEW=HOST:PORT", a)
			}
			m, err := parseServer(rest)
			if err != nil {
				return fail(stderr, "member replace: %q: %v", a, err)
			}
			m.Role = pb.MemberRole_MEMBER_ROLE_VOTER
			req.Remove = append(req.Remove, id)
			req.Add = append(req.Add, m)
		}
	}
	if sub != "list" && *asJSON || sub != "add" && *asLearner || sub == "list" && *expect != 0 {
		return fail(stderr, "member %s: --json is for list, --learner for add, --expect-index for changes", sub)
	}
	cl, _, err := cf.open(stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *cf.timeout)
	defer cancel()
	if sub == "list" {
		r, err := cl.Members(ctx)
		if err != nil {
			return fail(stderr, "member list: %v", err)
		}
		return printMembers(stdout, r, *asJSON)
	}
	r, err := cl.ChangeMembers(ctx, req)
	if err != nil {
		if errors.Is(err, client.ErrMemberChange) {
			return fail(stderr, "member %s refused: %v", sub, strings.TrimPrefix(err.Error(), client.ErrMemberChange.Error()+": "))
		}
		return fail(stderr, "member %s: %v", sub, err)
	}
	fmt.Fprintf(stdout, "configuration at index %d:\n", r.ConfigurationIndex)
	return printMembers(stdout, r, false)
}

// parseServer parses ID=HOST:PORT.
func parseServer(s string) (*pb.Member, error) {
	ids, addr, ok := strings.Cut(s, "=")
	id, err := strconv.ParseUint(ids, 10, 64)
	if !ok || err != nil || id == 0 {
		return nil, fmt.Errorf("%q is not ID=HOST:PORT with a positive ID", s)
	}
	if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("%q: the address %q is not HOST:PORT", s, addr)
	}
	return &pb.Member{Id: id, Address: addr}, nil
}

func printMembers(w io.Writer, r *pb.MemberResponse, asJSON bool) int {
	ms := web.MembersOf(r.Configuration)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ms)
		return exitOK
	}
	fmt.Fprintf(w, "%-4s %-21s %s\n", "ID", "ADDRESS", "ROLE")
	for _, m := range ms {
		fmt.Fprintf(w, "%-4d %-21s %s\n", m.ID, m.Address, m.Role)
	}
	if c := r.Configuration; c != nil && len(c.Outgoing) > 0 {
		var old []string
		for _, m := range c.Outgoing {
			old = append(old, strconv.FormatUint(m.Id, 10))
		}
		fmt.Fprintf(w, "joint change in progress: the old voters %s must also agree\n", strings.Join(old, ","))
	}
	return exitOK
}
