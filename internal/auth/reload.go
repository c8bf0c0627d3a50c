package auth

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// reloader is the part of a Verifier that re-reads its key file.
type reloader struct {
	// load reads the key file again; nil when the keys come from the
	// environment (AUTH_SECRET), which a running process cannot re-read.
	load     func() (*keySet, error)
	interval time.Duration
	// reloadMu makes reloads one at a time, so that "changed" compares a
	// set with the one it really replaces.
	reloadMu sync.Mutex
	watchMu  sync.Mutex
	watchers []func()
	log      atomic.Pointer[slog.Logger]
}

// SetLogger sets where Run reports reloads; slog.Default() otherwise.
func (v *Verifier) SetLogger(l *slog.Logger) { v.log.Store(l) }

func (v *Verifier) logger() *slog.Logger {
	if l := v.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// OnChange registers fn to be called after each reload that changed the key
// set (a key added, removed or replaced), so that open connections can be
// re-checked with Revoked. fn runs on the reloading goroutine and must not
// block; hand the work to another goroutine.
func (v *Verifier) OnChange(fn func()) {
	v.watchMu.Lock()
	v.watchers = append(v.watchers, fn)
	v.watchMu.Unlock()
}

// Reload re-reads AUTH_JWKS_FILE or AUTH_PUBLIC_KEY_FILE and swaps the new
// key set in whole; checks running meanwhile use the old set or the new one,
// never a mix. A file that cannot be read or holds no usable key leaves the
// old keys in use and returns the error (naming the variable). With keys
// from AUTH_SECRET it does nothing: those change only with a restart.
func (v *Verifier) Reload() error {
	if v.load == nil {
		return nil
	}
	v.reloadMu.Lock()
	set, err := v.load()
	if err != nil {
		v.reloadMu.Unlock()
		return err
	}
	old := v.keys.Swap(set)
	changed := !old.same(set)
	v.reloadMu.Unlock()
	if changed {
		v.logger().Info("auth keys changed", "keys", set.ids(), "before", old.ids())
		v.watchMu.Lock()
		fns := slices.Clone(v.watchers)
		v.watchMu.Unlock()
		for _, fn := range fns {
			fn()
		}
	}
	return nil
}

// Run reloads the key file every AUTH_KEYS_RELOAD_INTERVAL until ctx ends,
// then returns nil. A failed reload is logged and the old keys stay in use
// until a later one succeeds. With nothing to reload (AUTH_SECRET, or the
// interval 0) it only waits for ctx.
func (v *Verifier) Run(ctx context.Context) error {
	if v.load == nil || v.interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(v.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := v.Reload(); err != nil {
				v.logger().Warn("auth keys not reloaded; the previous keys stay in use", "error", err)
			}
		}
	}
}
