package logstore

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data (and the metadata needed to read it back, such
// as its size) to the device, skipping timestamps that fsync would also
// write.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
