package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ketch-raft/ketch/actors/web"
)

// The commands that operate a cluster: status, crash, transfer, snapshot.

func newStatusCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Every node's role, term, indexes and children",
		Long: `Ask every --cluster address for its node's status: role, term, leader, log
indexes, the supervisor's children with their restarts, and the members.
Nodes that do not answer are listed with the error. It exits 0 when at least
one node answered.`,
		Example: `  ketch status --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  ketch status -w json`,
		Args: noArgs,
	}
	cf := addClientFlags(cmd, 2*time.Second)
	out := addOutput(cmd, "print a JSON array, one object per node")
	cmd.RunE = body(func(*cobra.Command, []string) int {
		if err := out.check(); err != nil {
			return fail(stderr, "status: %v", err)
		}
		cl, addrs, err := cf.openProbing(false)
		if err != nil {
			return fail(stderr, "%v", err)
		}
		defer cl.Close()
		sts := make([]web.StatusJSON, len(addrs))
		done := make(chan struct{}, len(addrs))
		for i, addr := range addrs {
			go func() {
				defer func() { done <- struct{}{} }()
				ctx, cancel := context.WithTimeout(context.Background(), cf.timeout)
				defer cancel()
				st, err := cl.Status(ctx, addr)
				sts[i] = web.FromStatus(st, addr, err)
			}()
		}
		for range addrs {
			<-done
		}
		reached := 0
		for _, s := range sts {
			if s.Error == "" {
				reached++
			}
		}
		if out.json {
			emit(stdout, sts)
		} else {
			printStatus(stdout, sts)
		}
		if reached == 0 {
			return fail(stderr, "status: no node answered")
		}
		return exitOK
	})
	return cmd
}

// printStatus draws the status table; a stopped node (role "stopped", no
// figures) shows dashes rather than zeros.
func printStatus(w io.Writer, nodes []web.StatusJSON) {
	fmt.Fprintf(w, "%-4s %-21s %-11s %5s %6s %8s %8s %8s  %s\n", "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "LAST", "COMMIT", "APPLIED", "CHILDREN (restarts, last crash)")
	for _, n := range nodes {
		if n.Role == "stopped" || n.Error != "" && n.Term == 0 {
			role := n.Role
			if role == "" {
				role = "unreachable"
			}
			fmt.Fprintf(w, "%-4s %-21s %-11s %5s %6s %8s %8s %8s\n", idText(n.ID), n.Address, role, "-", "-", "-", "-", "-")
			if n.Error != "" {
				fmt.Fprintf(w, "     error: %s\n", n.Error)
			}
			continue
		}
		var kids []string
		names := make([]string, 0, len(n.Children))
		for name := range n.Children {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			c := n.Children[name]
			k := fmt.Sprintf("%s=%d", name, c.Restarts)
			if c.LastCrash != "" {
				k += fmt.Sprintf(" (%s)", c.LastCrash)
			}
			kids = append(kids, k)
		}
		fmt.Fprintf(w, "%-4d %-21s %-11s %5d %6d %8d %8d %8d  %s\n", n.ID, n.Address, n.Role, n.Term, n.Leader, n.LastIndex, n.Commit, n.Applied, strings.Join(kids, " "))
		if len(n.Members) > 0 || n.NotMember {
			var ms []string
			for _, m := range n.Members {
				x := fmt.Sprintf("%d=%s", m.ID, m.Role)
				if idx, ok := n.Match[m.ID]; ok {
					x += fmt.Sprintf("(match %d)", idx)
				}
				ms = append(ms, x)
			}
			note := ""
			if n.NotMember {
				note = "; this node is not a member"
			}
			fmt.Fprintf(w, "     members (configuration %d): %s%s\n", n.ConfigurationIndex, strings.Join(ms, " "), note)
		}
		if n.Error != "" {
			fmt.Fprintf(w, "     error: %s\n", n.Error)
		}
	}
}

// idText is a node id, or "?" for one not known (a node that did not answer).
func idText(id uint64) string {
	if id == 0 {
		return "?"
	}
	return fmt.Sprint(id)
}

func newCrashCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "crash --node ID --actor store|state|fsm|sender",
		Short: "Make a node's child actor panic (the node must run with --chaos)",
		Long: `Make one child actor of node ID panic, to watch its supervisor restart it
and the children after it (rest_for_one). Nodes obey only when started with
--chaos; otherwise the request is refused.`,
		Example: `  ketch crash --node 2 --actor fsm`,
		Args:    noArgs,
	}
	cf := addClientFlags(cmd, 3*time.Second)
	out := addOutput(cmd, `print {"node": ID, "actor": NAME}`)
	id := cmd.Flags().Uint64("node", 0, "the node whose actor should crash")
	actorName := cmd.Flags().String("actor", "", "store, state, fsm or sender")
	complete(cmd, "actor", "store", "state", "fsm", "sender")
	cmd.RunE = body(func(*cobra.Command, []string) int {
		if err := out.check(); err != nil {
			return fail(stderr, "crash: %v", err)
		}
		switch *actorName {
		case "store", "state", "fsm", "sender":
		default:
			return fail(stderr, "crash: --actor must be store, state, fsm or sender")
		}
		if *id == 0 {
			return fail(stderr, "crash: --node ID is required")
		}
		s, code := connect(stderr, "crash", cf, out)
		if code != exitOK {
			return code
		}
		defer s.close()
		cl, ctx := s.cl, s.ctx
		addrs := s.addrs
		// Find the node's address by asking the cluster.
		for _, addr := range addrs {
			st, err := cl.Status(ctx, addr)
			if err != nil || st.Id != *id {
				continue
			}
			if err := cl.Crash(ctx, addr, *actorName); err != nil {
				return fail(stderr, "crash: %v", err)
			}
			if out.json {
				emit(stdout, map[string]any{"node": *id, "actor": *actorName})
			} else {
				fmt.Fprintf(stdout, "node %d: %s crashed\n", *id, *actorName)
			}
			return exitOK
		}
		return fail(stderr, "crash: no node with id %d answered among %v", *id, addrs)
	})
	return cmd
}

// ketch snapshot asks nodes to take a snapshot now and compact their logs:
// the one --node names, or every node of --cluster.
func newSnapshotCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot [--node ID]",
		Short: "Snapshot nodes now and compact their logs",
		Long: `Ask the node --node names, or every node of --cluster, to snapshot its state
machine now and compact its log behind the snapshot. It exits 0 when every
node asked did so.`,
		Example: `  ketch snapshot
  ketch snapshot --node 2 -w json`,
		Args: noArgs,
	}
	cf := addClientFlags(cmd, 60*time.Second)
	out := addOutput(cmd, `print a JSON array of {"node", "index", "term", "bytes"} (or "error")`)
	id := cmd.Flags().Uint64("node", 0, "the node to snapshot (default: every node of --cluster)")
	cmd.RunE = body(func(*cobra.Command, []string) int {
		s, code := connect(stderr, "snapshot", cf, out)
		if code != exitOK {
			return code
		}
		defer s.close()
		cl, ctx := s.cl, s.ctx
		addrs := s.addrs
		type result struct {
			Node    uint64 `json:"node,omitempty"`
			Address string `json:"address"`
			Index   uint64 `json:"index,omitempty"`
			Term    uint64 `json:"term,omitempty"`
			Bytes   uint64 `json:"bytes,omitempty"`
			Error   string `json:"error,omitempty"`
		}
		var results []result
		failed, done := 0, 0
		for _, addr := range addrs {
			st, err := cl.Status(ctx, addr)
			switch {
			case err != nil && *id == 0:
				fmt.Fprintf(stderr, "ketch: snapshot: %s: %v\n", addr, err)
				results = append(results, result{Address: addr, Error: err.Error()})
				failed++
				continue
			case err != nil || *id != 0 && st.Id != *id:
				continue
			}
			r, err := cl.Snapshot(ctx, addr)
			if err != nil {
				fmt.Fprintf(stderr, "ketch: snapshot: node %d: %v\n", st.Id, err)
				results = append(results, result{Node: st.Id, Address: addr, Error: err.Error()})
				failed++
				continue
			}
			done++
			results = append(results, result{Node: st.Id, Address: addr, Index: r.Index, Term: r.Term, Bytes: r.Bytes})
			if !out.json {
				fmt.Fprintf(stdout, "node %d: snapshot through index %d (term %d), %d bytes\n", st.Id, r.Index, r.Term, r.Bytes)
			}
		}
		if out.json {
			emit(stdout, results)
		}
		switch {
		case *id != 0 && done+failed == 0:
			return fail(stderr, "snapshot: no node with id %d answered among %v", *id, addrs)
		case failed > 0 || done == 0:
			return exitFailure
		}
		return exitOK
	})
	return cmd
}

func newTransferCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "transfer [--to ID]",
		Short: "Hand leadership to another node",
		Long: `Ask the leader to hand leadership to node --to, or to the most up-to-date
voter (Raft thesis §3.10), and wait until it leads. When --to already leads
there is nothing to do: it says so and exits 0.`,
		Example: `  ketch transfer --to 3
  ketch transfer`,
		Args: noArgs,
	}
	cf := addClientFlags(cmd, 5*time.Second)
	out := addOutput(cmd, `print {"from": ID, "to": ID}`)
	to := cmd.Flags().Uint64("to", 0, "the node to hand leadership to (default: the most up-to-date one)")
	cmd.RunE = body(func(*cobra.Command, []string) int {
		s, code := connect(stderr, "transfer", cf, out)
		if code != exitOK {
			return code
		}
		defer s.close()
		cl, ctx := s.cl, s.ctx
		from, now, err := cl.Transfer(ctx, *to)
		if err != nil {
			return fail(stderr, "transfer: %v", err)
		}
		switch {
		case out.json:
			emit(stdout, map[string]any{"from": from, "to": now})
		case from == now:
			fmt.Fprintf(stdout, "node %d already leads; nothing moved\n", now)
		default:
			fmt.Fprintf(stdout, "leadership moved from node %d to node %d\n", from, now)
		}
		return exitOK
	})
	return cmd
}
