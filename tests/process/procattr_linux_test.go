package process

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel SIGKILL the child if the test process dies
// first (a crashed or interrupted `go test` leaves no node behind).
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
