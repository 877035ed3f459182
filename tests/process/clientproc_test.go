package process

// The Go client runs in child processes (this test binary re-executed),
// never in the test process itself: protoactor's remote.Start writes gRPC's
// global logger (grpclog.SetLoggerV2) while the gRPC goroutines of any
// remote already running read it unsynchronized, so a second client (each
// client is an actor system with a remote) in one process is a data race
// under -race. One client per child keeps `go test -race` clean, and the
// children are race-built too, so the detector covers the client package.
//
// A child reads one command per line on stdin and answers one line on
// stdout, carrying the wall-clock time of the event it reports (parent and
// children share the machine's clock, so a kill-to-write time is the
// child's timestamp minus the parent's time of the kill):
//
//	put KEY VALUE TIMEOUT         one Put with a context of TIMEOUT
//	                              -> "ok UNIXNANO" | "err UNIXNANO REASON"
//	get KEY TIMEOUT               one Get -> "ok UNIXNANO VALUE" | "err ..."
//	load N KEYS BYTES CONC TIMEOUT  N puts over KEYS keys of BYTES-byte
//	                              values, CONC at a time, each within TIMEOUT
//	                              -> "ok UNIXNANO DONE" | "err ..."
//	leader TERM GIVE ADDR,ADDR    poll Status of ADDRs until one is leader
//	                              in a term above TERM, for at most GIVE
//	                              -> "ok UNIXNANO ID TERM" | "err UNIXNANO REASON"

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ketch-raft/ketch/actors/certs"
	"github.com/ketch-raft/ketch/actors/client"
)

const (
	childEnv        = "KETCH_PROCESS_TEST_CHILD"
	childClusterEnv = "KETCH_PROCESS_TEST_CLUSTER"
	childAttemptEnv = "KETCH_PROCESS_TEST_ATTEMPT"
)

// clientChildMain is the child's main: one client, commands from stdin.
// tlsFromEnv is the client TLS the CLI would use: $KETCH_CACERT,
// $KETCH_CERT, $KETCH_KEY (none set: plaintext).
func tlsFromEnv() certs.Files {
	return certs.Files{CA: os.Getenv("KETCH_CACERT"), Cert: os.Getenv("KETCH_CERT"), Key: os.Getenv("KETCH_KEY")}
}

func clientChildMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := client.Config{Cluster: strings.Split(os.Getenv(childClusterEnv), ","), Logger: log, TLS: tlsFromEnv()}
	if a := os.Getenv(childAttemptEnv); a != "" {
		d, err := time.ParseDuration(a)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad attempt timeout:", err)
			return 2
		}
		cfg.AttemptTimeout = d
	}
	cl, err := client.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer cl.Close()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		reply := func(err error, extra ...any) {
			now := time.Now().UnixNano()
			if err != nil {
				fmt.Printf("err %d %s\n", now, strings.ReplaceAll(err.Error(), "\n", " "))
				return
			}
			fmt.Println(append([]any{"ok", now}, extra...)...)
		}
		switch {
		case len(f) == 4 && f[0] == "put":
			d, err := time.ParseDuration(f[3])
			if err != nil {
				reply(err)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), d)
			err = cl.Put(ctx, f[1], []byte(f[2]))
			cancel()
			reply(err)
		case len(f) == 3 && f[0] == "get":
			d, err := time.ParseDuration(f[2])
			if err != nil {
				reply(err)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), d)
			v, err := cl.Get(ctx, f[1])
			cancel()
			reply(err, string(v))
		case len(f) == 6 && f[0] == "load":
			var v [4]int
			var err error
			for i := range v {
				if v[i], err = strconv.Atoi(f[1+i]); err != nil {
					break
				}
			}
			d, derr := time.ParseDuration(f[5])
			if err := errors.Join(err, derr); err != nil {
				reply(err)
				continue
			}
			done, err := load(cl, v[0], v[1], v[2], v[3], d)
			reply(err, done)
		case len(f) == 4 && f[0] == "leader":
			term, err1 := strconv.ParseUint(f[1], 10, 64)
			give, err2 := time.ParseDuration(f[2])
			if err := errors.Join(err1, err2); err != nil {
				reply(err)
				continue
			}
			id, newTerm, err := pollLeader(cl, term, give, strings.Split(f[3], ","))
			reply(err, id, newTerm)
		default:
			reply(fmt.Errorf("unknown command %q", in.Text()))
		}
	}
	return 0
}

// load makes n puts over keys keys with values of size bytes, conc at a
// time; it stops at the first failure and returns how many succeeded.
func load(cl *client.Client, n, keys, size, conc int, timeout time.Duration) (int, error) {
	var next, done atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	value := []byte(strings.Repeat("v", size))
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for first.Load() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				err := cl.Put(ctx, fmt.Sprintf("key%06d", i%int64(keys)), value)
				cancel()
				if err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return int(done.Load()), *err
	}
	return int(done.Load()), nil
}

// pollLeader polls the nodes' status until one reports itself leader in a
// term above term.
func pollLeader(cl *client.Client, term uint64, give time.Duration, addrs []string) (id, newTerm uint64, err error) {
	deadline := time.Now().Add(give)
	for time.Now().Before(deadline) {
		for _, a := range addrs {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			st, err := cl.Status(ctx, a)
			cancel()
			if err == nil && st.Role == "leader" && st.Term > term {
				return st.Id, st.Term, nil
			}
		}
		time.Sleep(2 * time.Millisecond) // polling tick
	}
	return 0, 0, fmt.Errorf("no leader in a term above %d within %v", term, give)
}

// clientProc is a running client child.
type clientProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	mu    sync.Mutex // one command at a time
	done  chan struct{}
	err   error // cmd.Wait's result, valid after done
}

// startClient starts a client child for cluster (attempt 0 = the client's
// default attempt timeout), logging to logPath. It is stopped, and its
// exit status checked (a race report exits 66), when the test ends.
func startClient(t testing.TB, name string, cluster []string, attempt time.Duration, logPath string) *clientProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(cliEnv(), childEnv+"=client", childClusterEnv+"="+strings.Join(cluster, ","))
	if attempt > 0 {
		cmd.Env = append(cmd.Env, childAttemptEnv+"="+attempt.String())
	}
	cmd.Stderr = logf
	setProcAttr(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start client %s: %v", name, err)
	}
	p := &clientProc{name: name, cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // the child exits at EOF
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
			t.Errorf("client %s did not exit within 10s of EOF", name)
			return
		}
		if p.err != nil {
			t.Errorf("client %s exited with %v (a race report exits 66); its log %s:\n%s", name, p.err, logPath, tail(logPath, 60))
		}
	})
	return p
}

// call sends one command and returns the child's answer: the time of the
// event, and the fields after it. An "err" answer is returned as an error.
func (p *clientProc) call(format string, args ...any) (time.Time, []string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(p.stdin, line); err != nil {
		return time.Time{}, nil, fmt.Errorf("client %s: %q: %w", p.name, line, err)
	}
	if !p.out.Scan() {
		return time.Time{}, nil, fmt.Errorf("client %s: %q: no answer (%v)", p.name, line, p.out.Err())
	}
	f := strings.Fields(p.out.Text())
	if len(f) < 2 {
		return time.Time{}, nil, fmt.Errorf("client %s: %q: bad answer %q", p.name, line, p.out.Text())
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("client %s: %q: bad answer %q", p.name, line, p.out.Text())
	}
	at := time.Unix(0, n)
	if f[0] != "ok" {
		return at, nil, fmt.Errorf("client %s: %s: %s", p.name, line, strings.Join(f[2:], " "))
	}
	return at, f[2:], nil
}

// get runs one Get with a context of timeout and returns the value.
func (p *clientProc) get(key string, timeout time.Duration) (string, error) {
	_, f, err := p.call("get %s %s", key, timeout)
	if err != nil {
		return "", err
	}
	if len(f) != 1 {
		return "", fmt.Errorf("client %s: get %s: answer %v", p.name, key, f)
	}
	return f[0], nil
}

// put runs one Put with a context of timeout and returns when it succeeded.
func (p *clientProc) put(key, value string, timeout time.Duration) (time.Time, error) {
	at, _, err := p.call("put %s %s %s", key, value, timeout)
	return at, err
}
