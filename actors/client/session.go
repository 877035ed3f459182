package client

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
)

// Session is one client identity as the state machine's deduplication
// sees it (Raft thesis §6.3): a random id and the last sequence number
// used. It allows one command in flight at a time.
type Session struct{ ID, Seq uint64 }

// SessionPool hands each concurrent call a Session of its own, reusing
// idle ones so the state machine does not remember a session per call.
// The zero value is ready to use and safe for concurrent use.
type SessionPool struct {
	mu   sync.Mutex
	free []*Session
}

// Get returns an idle session, or a new one with a random non-zero id.
func (p *SessionPool) Get() *Session {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		s := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return s
	}
	p.mu.Unlock()
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return &Session{ID: id}
		}
	}
}

// Put returns a session whose call has finished.
func (p *SessionPool) Put(s *Session) {
	p.mu.Lock()
	p.free = append(p.free, s)
	p.mu.Unlock()
}
