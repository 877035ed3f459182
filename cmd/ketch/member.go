package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

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

const memberForms = "list | add ID=HOST:PORT [--learner] | promote ID | remove ID | replace OLD=NEW=HOST:PORT ..."

func newMemberCmd(stdout, stderr io.Writer) *cobra.Command {
	member := &cobra.Command{
		Use:   "member list|add|promote|remove|replace",
		Short: "List or change the cluster's members",
		Long: `List the cluster's members, or change them one step at a time through the
leader (thesis chapter 4). A change is answered once the new configuration
has committed: exit 0. Refused or failed, with the configuration unchanged:
exit 2 with the reason. The one exit 2 whose outcome is unknown says so
(leadership was lost after the configuration was appended; check with
'ketch member list').`,
		Example: `  ketch member list
  ketch node --id 4 --listen 127.0.0.1:7004 --data d4 --join &
  ketch member add 4=127.0.0.1:7004 --learner
  ketch member promote 4
  ketch member replace 3=5=127.0.0.1:7005
  ketch member remove 4`,
		// The flags of a subcommand mean nothing here: the missing or
		// unknown subcommand is what to report.
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		// 'ketch member' alone, or with an unknown subcommand: one line.
		Args: cobra.ArbitraryArgs,
		RunE: body(func(cmd *cobra.Command, args []string) int {
			if len(args) == 0 {
				return fail(stderr, "member: usage: ketch member %s (see 'ketch member --help')", memberForms)
			}
			return fail(stderr, "member: unknown subcommand %q: use %s", args[0], memberForms)
		}),
	}
	sub := func(use, short, example string, args cobra.PositionalArgs, build func(args []string) (*pb.MemberRequest, error)) *cobra.Command {
		cmd := &cobra.Command{Use: use, Short: short, Example: example, Args: args}
		cf := addClientFlags(cmd, 30*time.Second)
		name := cmd.Name()
		var out *output
		if name == "list" {
			out = addOutput(cmd, "print a JSON array of {id, address, role}")
		} else {
			out = addOutput(cmd, "print {configuration_index, members: [{id, address, role}]}")
		}
		var expect *uint64
		if name != "list" {
			expect = cmd.Flags().Uint64("expect-index", 0, "refuse the change unless the configuration's entry is at this index (see 'member list')")
		}
		cmd.RunE = body(func(_ *cobra.Command, args []string) int {
			if err := out.check(); err != nil {
				return fail(stderr, "member %s: %v", name, err)
			}
			req, err := build(args)
			if err != nil {
				return fail(stderr, "member %s: %v", name, err)
			}
			if expect != nil {
				req.ExpectIndex = *expect
			}
			s, code := connect(stderr, "member "+name, cf, out)
			if code != exitOK {
				return code
			}
			defer s.close()
			cl, ctx := s.cl, s.ctx
			if name == "list" {
				r, err := cl.Members(ctx)
				if err != nil {
					return fail(stderr, "member list: %v", err)
				}
				return printMembers(stdout, r, out.json)
			}
			r, err := cl.ChangeMembers(ctx, req)
			if err != nil {
				if errors.Is(err, client.ErrMemberChange) {
					return fail(stderr, "member %s refused: %v", name, strings.TrimPrefix(err.Error(), client.ErrMemberChange.Error()+": "))
				}
				return fail(stderr, "member %s: %v", name, err)
			}
			if out.json {
				emit(stdout, map[string]any{"configuration_index": r.ConfigurationIndex, "members": web.MembersOf(r.Configuration)})
				return exitOK
			}
			fmt.Fprintf(stdout, "configuration at index %d:\n", r.ConfigurationIndex)
			return printMembers(stdout, r, false)
		})
		return cmd
	}
	nodeID := func(args []string) (uint64, error) {
		id, err := strconv.ParseUint(args[0], 10, 64)
		if err != nil || id == 0 {
			return 0, fmt.Errorf("%q is not a node id (a positive integer)", args[0])
		}
		return id, nil
	}
	list := sub("list", "List the members and their roles", "  ketch member list -w json",
		func(_ *cobra.Command, args []string) error {
			if len(args) != 0 {
				return errors.New("member list takes no arguments")
			}
			return nil
		},
		func([]string) (*pb.MemberRequest, error) { return &pb.MemberRequest{}, nil })
	var asLearner bool
	add := sub("add ID=HOST:PORT [--learner]", "Add a server started with 'ketch node --join'",
		"  ketch member add 4=127.0.0.1:7004\n  ketch member add 4=127.0.0.1:7004 --learner",
		argsError(1, "member add takes one argument: ID=HOST:PORT"),
		func(args []string) (*pb.MemberRequest, error) {
			m, err := parseServer(args[0])
			if err != nil {
				return nil, err
			}
			m.Role = pb.MemberRole_MEMBER_ROLE_VOTER
			if asLearner {
				m.Role = pb.MemberRole_MEMBER_ROLE_LEARNER
			}
			return &pb.MemberRequest{Add: []*pb.Member{m}}, nil
		})
	add.Flags().BoolVar(&asLearner, "learner", false, "add the server as a learner (it receives the log but does not vote)")
	promote := sub("promote ID", "Make a learner a voter", "  ketch member promote 4",
		argsError(1, "member promote takes one argument: the member's ID"),
		func(args []string) (*pb.MemberRequest, error) {
			id, err := nodeID(args)
			return &pb.MemberRequest{Promote: []uint64{id}}, err
		})
	remove := sub("remove ID", "Remove a member", "  ketch member remove 4",
		argsError(1, "member remove takes one argument: the member's ID"),
		func(args []string) (*pb.MemberRequest, error) {
			id, err := nodeID(args)
			return &pb.MemberRequest{Remove: []uint64{id}}, err
		})
	replace := sub("replace OLD=NEW=HOST:PORT ...", "Replace voters in one joint change", "  ketch member replace 3=5=127.0.0.1:7005",
		func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("member replace takes OLD=NEW=HOST:PORT ... (each old voter and the new voter that replaces it)")
			}
			return nil
		},
		func(args []string) (*pb.MemberRequest, error) {
			req := &pb.MemberRequest{}
			for _, a := range args {
				old, rest, ok := strings.Cut(a, "=")
				id, err := strconv.ParseUint(old, 10, 64)
				if !ok || err != nil || id == 0 {
					return nil, fmt.Errorf("%q is not OLD=NEW=HOST:PORT", a)
				}
				m, err := parseServer(rest)
				if err != nil {
					return nil, fmt.Errorf("%q: %v", a, err)
				}
				m.Role = pb.MemberRole_MEMBER_ROLE_VOTER
				req.Remove = append(req.Remove, id)
				req.Add = append(req.Add, m)
			}
			return req, nil
		})
	member.AddCommand(list, add, promote, remove, replace)
	return member
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
