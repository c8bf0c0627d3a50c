package testinfra

import (
	"runtime"
	"syscall"
	"time"
)

// ProcessCPU is the user and system time of every thread of this process
// so far: benchmarks report it per operation (cpu-ns/op), since on a
// machine whose system calls are slow the wall time hides the thread
// wake-ups a change adds or saves.
func ProcessCPU(tb interface{ Fatal(...any) }) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// KeepAPBusy runs a goroutine that keeps one P running (yielding in a
// loop) until the returned stop is called, as a loaded server's other work
// does: the runtime then hands a P in a system call to another thread
// sooner, and a woken goroutine finds no idle P. Its CPU counts in
// ProcessCPU, so compare ns/op, or cpu-ns/op against another busy run.
func KeepAPBusy() (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	return func() { close(done) }
}
