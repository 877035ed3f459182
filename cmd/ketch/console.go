package main

import (
	"io"
	"os"
	"strings"
	"sync"
)

// console is the demo's terminal: its answers to commands, and the lines
// that arrive while the prompt waits for input (announcements of elections,
// crashes and restarts, and the nodes' log lines), which go above the
// prompt rather than across it: on a terminal the prompt's line is cleared,
// the line written, and the prompt drawn again below it.
type console struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	waiting string // the prompt on screen, "" while a command runs
}

func newConsole(w io.Writer) *console {
	return &console{w: w, tty: isTerminal(w)}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Write is for answers to commands (no prompt waits then).
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

func (c *console) println(s string) { _, _ = io.WriteString(c, s+"\n") }

// prompt shows p and waits for input.
func (c *console) prompt(p string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiting = p
	_, _ = io.WriteString(c.w, p)
}

// answered: the user ended the line; the prompt is no longer on screen.
func (c *console) answered() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiting = ""
}

// say writes a line of its own to the console, above the prompt if one
// waits.
func (c *console) say(line string) { c.sayTo(c.w, line) }

func (c *console) sayTo(w io.Writer, line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	line = strings.TrimRight(line, "\n")
	if c.waiting != "" {
		if c.tty {
			_, _ = io.WriteString(c.w, "\r\x1b[K") // back to the start of the prompt's line, cleared
		} else {
			_, _ = io.WriteString(c.w, "\n")
		}
	}
	_, _ = io.WriteString(w, line+"\n")
	if c.waiting != "" {
		_, _ = io.WriteString(c.w, c.waiting)
	}
}

// lines is a writer for w (the nodes' logger) whose writes go through say,
// each a line of its own.
func (c *console) lines(w io.Writer) io.Writer { return lineWriter{c: c, w: w} }

type lineWriter struct {
	c *console
	w io.Writer
}

func (l lineWriter) Write(p []byte) (int, error) {
	l.c.sayTo(l.w, string(p))
	return len(p), nil
}
