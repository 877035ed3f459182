package main

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMECommandsParse: every ketch command line in a shell block of the
// README (and of deploy/README.md) names a command that exists, with flags
// it has and the arguments it takes. tests/process's TestREADMEShellBlocks
// runs the quick start's blocks for real; this checks the rest without a
// cluster.
func TestREADMECommandsParse(t *testing.T) {
	lines := 0
	for _, file := range []string{"../../README.md", "../../deploy/README.md"} {
		b, err := os.ReadFile(file)
		if os.IsNotExist(err) && file != "../../README.md" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ketchLines(b) {
			lines++
			root := newRoot(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
			args := normalize(root, l)
			cmd, rest, err := root.Find(args)
			if err != nil || cmd == root {
				t.Errorf("%s: ketch %s: no such command (%v)", file, strings.Join(l, " "), err)
				continue
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Errorf("%s: ketch %s: %v", file, strings.Join(l, " "), err)
				continue
			}
			if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
				t.Errorf("%s: ketch %s: %v", file, strings.Join(l, " "), err)
			}
		}
	}
	if lines < 20 {
		t.Errorf("found only %d ketch lines in the README's shell blocks; is the parser broken?", lines)
	}
}

var (
	ketchCall = regexp.MustCompile(`(?:^|[;&|(]\s*|\s)(?:\./ketch|go run \./cmd/ketch|ketch)\s+(.*)$`)
	subst     = regexp.MustCompile(`\$\([^)]*\)`)
)

// ketchLines returns the arguments of each ketch invocation in the ```sh
// blocks of a markdown file: comments, $(...) and a trailing & removed,
// quotes honoured.
func ketchLines(md []byte) [][]string {
	var out [][]string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(md))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "```sh":
			in = true
			continue
		case l == "```":
			in = false
			continue
		case !in:
			continue
		}
		if i := strings.Index(l, " #"); i >= 0 {
			l = l[:i]
		}
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		m := ketchCall.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		rest := strings.TrimSuffix(strings.TrimSpace(subst.ReplaceAllString(m[1], "")), "&")
		if strings.HasPrefix(rest, "<(") || strings.Contains(l, "go build") {
			continue
		}
		out = append(out, shellWords(rest))
	}
	return out
}

// shellWords splits s as a shell would, for the quoting README lines use.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	quote, inWord := rune(0), false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
