package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes of Main.
const (
	ExitOK     = 0 // nothing lost, nothing duplicated, connect failures within bounds
	ExitFailed = 1 // the run measured a problem (see Result.Problems)
	ExitError  = 2 // bad flags or the run could not be carried out
)

// Main is the load generator's command line; it returns the exit code.
// The first SIGINT/SIGTERM ends the sending phase (the drain still runs),
// a second one exits at once.
func Main(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if IsWorker() {
		ctx, cancel := signalContext(false)
		defer cancel()
		return WorkerMain(ctx, os.Stdin, stdout, stderr)
	}
	cfg, err := ParseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return ExitError
	}
	ctx, cancel := signalContext(true)
	defer cancel()
	res, err := Run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return ExitError
	}
	table := stdout
	if cfg.JSONPath == "-" {
		table = stderr
	}
	res.WriteTable(table)
	if cfg.JSONPath != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return ExitError
		}
		b = append(b, '\n')
		if cfg.JSONPath == "-" {
			_, err = stdout.Write(b)
		} else {
			err = os.WriteFile(cfg.JSONPath, b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "loadgen: -json:", err)
			return ExitError
		}
	}
	if !res.OK {
		return ExitFailed
	}
	return ExitOK
}

// signalContext ends on the first SIGINT/SIGTERM; with hard, a second one
// exits the process.
func signalContext(hard bool) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
		case <-ctx.Done():
			signal.Stop(ch)
			return
		}
		fmt.Fprintln(os.Stderr, "loadgen: stopping: sending ends, answers are drained (signal again to quit at once)")
		cancel()
		for range ch {
			if hard {
				os.Exit(130)
			}
		}
	}()
	return ctx, cancel
}
