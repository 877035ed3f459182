package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// TestNormalize: the command line as pflag will read it. Flags may follow
// the arguments, single-dash long flags are double-dash ones, and what is
// no flag of the command stays an argument, in order, after "--".
func TestNormalize(t *testing.T) {
	root := newRoot(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	tests := []struct {
		in, want string
	}{
		{"put k v --cluster a:1", "put --cluster a:1 -- k v"},
		{"put --cluster a:1 k v", "put --cluster a:1 -- k v"},
		{"put -cluster a:1 k v", "put --cluster a:1 -- k v"},
		{"put -cluster=a:1 k v", "put --cluster=a:1 -- k v"},
		{"put k -5", "put -- k -5"},
		{"put k - --timeout 1s", "put --timeout 1s -- k -"},
		{"put -- k --cluster", "put -- k --cluster"},
		{"get k -w json", "get -w json -- k"},
		{"get k -wjson", "get -wjson -- k"},
		{"get k --json", "get --json -- k"},
		{"get k --bogus", "get --bogus -- k"}, // pflag refuses it
		{"get k -h", "get -h -- k"},           // help
		{"member add 4=h:1 --learner", "member add --learner -- 4=h:1"},
		{"member --cluster a:1 add 4=h:1", "member add --cluster a:1 -- 4=h:1"},
		{"status", "status"},
		{"frobnicate --x", "frobnicate --x"}, // no such command: left to cobra
		{"__complete put --clu", "__complete put --clu"},
		{"node --peers ''", "node --peers ''"},
	}
	for _, tt := range tests {
		in := strings.Fields(tt.in)
		for i := range in {
			if in[i] == "''" {
				in[i] = ""
			}
		}
		got := normalize(root, in)
		for i := range got {
			if got[i] == "" {
				got[i] = "''"
			}
		}
		if !slices.Equal(got, strings.Fields(tt.want)) {
			t.Errorf("normalize(%q) = %q, want %q", tt.in, strings.Join(got, " "), tt.want)
		}
	}
}

// TestExitCodes: cobra's refusals and the commands' own are exit 2 with
// one line; help is exit 0.
func TestExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
		err  string // the one line on stderr starts so
	}{
		{[]string{"--help"}, exitOK, ""},
		{[]string{"help", "put"}, exitOK, ""},
		{[]string{"get", "--help"}, exitOK, ""},
		{[]string{"frobnicate"}, exitFailure, `ketch: unknown command "frobnicate"`},
		{[]string{"get"}, exitFailure, "ketch: get: get takes 1 argument(s): KEY"},
		{[]string{"get", "k", "--bogus"}, exitFailure, "ketch: get: unknown flag: --bogus"},
		{[]string{"get", "k", "-w", "yaml"}, exitFailure, `ketch: get: -w "yaml": use json or table`},
		{[]string{"status", "extra"}, exitFailure, "ketch: status: unexpected arguments [extra]"},
		{[]string{"node", "--id", "x"}, exitFailure, `ketch: node: invalid argument "x" for "--id" flag`},
		{[]string{"member"}, exitFailure, "ketch: member: usage: ketch member list"},
		{[]string{"bench", "--clients", "0"}, exitFailure, "ketch: bench: --clients must be at least 1"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := run(tt.args, strings.NewReader(""), &out, &errOut)
		if code != tt.code {
			t.Errorf("ketch %q: exit %d, want %d (stderr %q)", tt.args, code, tt.code, errOut.String())
			continue
		}
		if tt.err == "" {
			if errOut.Len() != 0 || out.Len() == 0 {
				t.Errorf("ketch %q: want help on stdout only, got stdout %d bytes, stderr %q", tt.args, out.Len(), errOut.String())
			}
			continue
		}
		if s := errOut.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, tt.err) {
			t.Errorf("ketch %q: stderr %q, want one line starting %q", tt.args, s, tt.err)
		}
	}
}
