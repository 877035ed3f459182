//go:build !linux

package process

import "os/exec"

// setProcAttr does nothing here: only Linux has a parent-death signal, so
// elsewhere only t.Cleanup kills the nodes.
func setProcAttr(*exec.Cmd) {}
