package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// WorkerEnv marks a child process started by -procs: it reads its share of
// the run from stdin instead of parsing flags.
const WorkerEnv = "LOADGEN_WORKER"

// IsWorker reports whether this process is a -procs child.
func IsWorker() bool { return os.Getenv(WorkerEnv) == "1" }

// workerMsg is one line a worker writes on stdout: a phase it reached, its
// result, or why it failed.
type workerMsg struct {
	Phase  string  `json:"phase,omitempty"`
	Result *Result `json:"result,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// WorkerMain runs a -procs child: the first stdin line is its share of the
// run (JSON); at each phase it writes {"phase":…} on stdout and waits for a
// line on stdin; at the end it writes {"result":…}.
func WorkerMain(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) int {
	in := bufio.NewReader(stdin)
	enc := json.NewEncoder(stdout)
	line, err := in.ReadBytes('\n')
	if err != nil {
		fmt.Fprintln(stderr, "loadgen worker: no configuration on stdin:", err)
		return 2
	}
	var wc workerConfig
	if err := json.Unmarshal(line, &wc); err != nil {
		_ = enc.Encode(workerMsg{Error: "bad configuration: " + err.Error()})
		return 2
	}
	wait := func(phase string) {
		_ = enc.Encode(workerMsg{Phase: phase})
		if _, err := in.ReadBytes('\n'); err != nil {
			// The coordinator is gone: nobody will read a result.
			os.Exit(3)
		}
	}
	res, err := runWorker(ctx, wc, wait, stderr, "")
	if err != nil {
		_ = enc.Encode(workerMsg{Error: err.Error()})
		return 2
	}
	if err := enc.Encode(workerMsg{Result: res}); err != nil {
		return 2
	}
	return 0
}

// prefixWriter writes whole lines to w, each prefixed; writers sharing mu
// never interleave within a line.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix []byte
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.mu.Lock()
		_, _ = p.w.Write(append(append([]byte{}, p.prefix...), p.buf[:i+1]...))
		p.mu.Unlock()
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	msgs  chan workerMsg
}

// runProcesses spreads the users over cfg.Procs children of this
// executable, moves them through the phases together and merges their
// results.
func runProcesses(ctx context.Context, cfg Config, runID string, wait barrier, log io.Writer) (*Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("-procs: cannot find my own executable: %w", err)
	}
	var logMu sync.Mutex
	var children []*child
	killAll := func() {
		for _, c := range children {
			_ = c.cmd.Process.Kill()
		}
		for _, c := range children {
			_ = c.cmd.Wait()
		}
	}
	for i := range cfg.Procs {
		start, end := i*cfg.Users/cfg.Procs, (i+1)*cfg.Users/cfg.Procs
		wc := workerConfig{Config: cfg, Secret: cfg.Secret, RunID: runID, Index: i, UserStart: start, UserCount: end - start}
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), WorkerEnv+"=1")
		cmd.Stderr = &prefixWriter{mu: &logMu, w: log, prefix: fmt.Appendf(nil, "loadgen[%d]: ", i)}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			killAll()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			killAll()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			killAll()
			return nil, fmt.Errorf("-procs: start worker %d: %w", i, err)
		}
		c := &child{cmd: cmd, stdin: stdin, msgs: make(chan workerMsg, 4)}
		children = append(children, c)
		go func() {
			defer close(c.msgs)
			dec := json.NewDecoder(stdout)
			for {
				var m workerMsg
				if err := dec.Decode(&m); err != nil {
					if !errors.Is(err, io.EOF) {
						c.msgs <- workerMsg{Error: "unreadable output: " + err.Error()}
					}
					// Let the process finish so that Wait can reap it.
					_, _ = io.Copy(io.Discard, stdout)
					return
				}
				c.msgs <- m
			}
		}()
		b, _ := json.Marshal(wc)
		if _, err := stdin.Write(append(b, '\n')); err != nil {
			killAll()
			return nil, fmt.Errorf("-procs: worker %d: %w", i, err)
		}
	}
	// A stop asked of the coordinator ends the children's current phase.
	stopFwd := make(chan struct{})
	defer close(stopFwd)
	go func() {
		select {
		case <-ctx.Done():
			for _, c := range children {
				_ = c.cmd.Process.Signal(os.Interrupt)
			}
		case <-stopFwd:
		}
	}()
	// next waits for every child's next message and checks it is want.
	next := func(want string) ([]workerMsg, error) {
		out := make([]workerMsg, len(children))
		for i, c := range children {
			m, ok := <-c.msgs
			switch {
			case !ok:
				return nil, fmt.Errorf("worker %d exited before %q", i, want)
			case m.Error != "":
				return nil, fmt.Errorf("worker %d: %s", i, m.Error)
			case want == "result" && m.Result == nil, want != "result" && m.Phase != want:
				return nil, fmt.Errorf("worker %d: got %+v, want %q", i, m, want)
			}
			out[i] = m
		}
		return out, nil
	}
	for _, phase := range []string{phaseConnected, phaseDrained} {
		if _, err := next(phase); err != nil {
			killAll()
			return nil, err
		}
		wait(phase)
		for _, c := range children {
			_, _ = io.WriteString(c.stdin, "go\n")
		}
	}
	msgs, err := next("result")
	if err != nil {
		killAll()
		return nil, err
	}
	for i, c := range children {
		_ = c.stdin.Close()
		for range c.msgs {
			// Read to the end before Wait closes the pipe.
		}
		if err := c.cmd.Wait(); err != nil {
			return nil, fmt.Errorf("worker %d: %w", i, err)
		}
	}
	parts := make([]*Result, len(msgs))
	for i, m := range msgs {
		parts[i] = m.Result
	}
	return mergeResults(parts)
}
