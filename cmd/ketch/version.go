package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// commit may be set at build time, for builds without VCS stamping:
//
//	go build -ldflags "-X main.commit=$(git rev-parse HEAD)" ./cmd/ketch
var commit string

// buildInfo is the binary's module version, VCS commit (with "+modified"
// for a dirty tree) and Go version, from what the Go toolchain stamped.
type buildInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: "(unknown)", Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if info.Main.Version != "" {
		b.Version = info.Main.Version // (devel) for a build inside the module
	}
	var rev string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if b.Commit == "" {
		b.Commit = rev
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	} else if modified && b.Commit == rev {
		b.Commit += "+modified"
	}
	return b
}

func versionString() string {
	b := readBuildInfo()
	return fmt.Sprintf("ketch %s, commit %s, %s %s", b.Version, b.Commit, b.Go, b.Platform)
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "The build's module version, commit and Go version",
		Long: `Print the module version (a release tag when installed with 'go install
.../cmd/ketch@VERSION', "(devel)" when built in a checkout), the commit the
toolchain stamped (or that -ldflags "-X main.commit=..." set; "unknown" when
neither did), and the Go version and platform. 'ketch --version' prints the
same line.`,
		Example: `  ketch version
  ketch version -w json`,
		Args: noArgs,
	}
	out := addOutput(cmd, `print {"version", "commit", "go", "platform"}`)
	cmd.RunE = body(func(cmd *cobra.Command, _ []string) int {
		if err := out.check(); err != nil {
			return fail(cmd.ErrOrStderr(), "version: %v", err)
		}
		if out.json {
			emit(stdout, readBuildInfo())
			return exitOK
		}
		fmt.Fprintln(stdout, versionString())
		return exitOK
	})
	return cmd
}
