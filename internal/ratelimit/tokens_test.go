package ratelimit

import (
	"context"
	"testing"
	"time"
)

// Reservations made at once from two instances never hold more than the
// limit together.
func TestDailyTokensReserveIsAtomicAcrossInstances(t *testing.T) {
	a, b := twoInstances(t)
	ctx := context.Background()
	insts := []*DailyTokens{NewDailyTokens(a, 1000), NewDailyTokens(b, 1000)}
	got := hammer(t, 40, func(_ int, inst int) (bool, error) {
		_, ok, err := insts[inst].Reserve(ctx, "u1", 300)
		return ok, err
	})
	if got != 3 {
		t.Fatalf("%d reservations of 300 granted under a limit of 1000, want 3", got)
	}
	if used, _ := a.Get(ctx, DailyTokensKey("u1", time.Now())).Int64(); used != 900 {
		t.Fatalf("counter %d, want 900 (only the granted ones held)", used)
	}
}

func TestDailyTokensSettle(t *testing.T) {
	a, _ := twoInstances(t)
	ctx := context.Background()
	d := NewDailyTokens(a, 1000)
	used := func() int64 {
		v, _ := a.Get(ctx, DailyTokensKey("u1", d.Now())).Int64()
		return v
	}
	r, ok, err := d.Reserve(ctx, "u1", 300)
	if err != nil || !ok || r.Tokens != 300 {
		t.Fatalf("Reserve = %+v %v %v", r, ok, err)
	}
	if err := d.Settle(ctx, r, 450); err != nil || used() != 450 {
		t.Fatalf("settled at the real use: counter %d (%v), want 450", used(), err)
	}
	r, _, _ = d.Reserve(ctx, "u1", 300)
	if err := d.Settle(ctx, r, 0); err != nil || used() != 450 {
		t.Fatalf("a failed call releases its reservation: counter %d (%v), want 450", used(), err)
	}
	if _, ok, _ := d.Reserve(ctx, "u1", 551); ok {
		t.Fatal("450 used + 551 passes 1000 and must be refused")
	}
	if used() != 450 {
		t.Fatalf("a refusal holds nothing: counter %d", used())
	}
	// A counter lost meanwhile (a Redis restart without persistence) is not
	// driven below zero by a release, which would grant extra tokens.
	r, _, _ = d.Reserve(ctx, "u1", 300)
	a.Del(ctx, DailyTokensKey("u1", d.Now()))
	if err := d.Settle(ctx, r, 0); err != nil || used() != 0 {
		t.Fatalf("release on a lost counter: counter %d (%v), want 0", used(), err)
	}
	if r, ok, _ := d.Reserve(ctx, "u2", 5000); !ok || r.Tokens != 1000 {
		t.Fatalf("an estimate above the limit holds the whole limit on a fresh day: %+v %v", r, ok)
	}
	if _, ok, _ := d.Reserve(ctx, "u2", 1); ok {
		t.Fatal("nothing more fits while the whole limit is held")
	}
}

// A call that straddles UTC midnight is settled on the day it reserved on.
func TestDailyTokensSettleAfterMidnight(t *testing.T) {
	a, _ := twoInstances(t)
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 23, 59, 59, 0, time.UTC)
	d := NewDailyTokens(a, 1000)
	d.Now = func() time.Time { return now }
	r, _, _ := d.Reserve(ctx, "u1", 300)
	now = now.Add(2 * time.Second)
	if err := d.Settle(ctx, r, 500); err != nil {
		t.Fatal(err)
	}
	old, _ := a.Get(ctx, DailyTokensKey("u1", r.At)).Int64()
	fresh, _ := a.Get(ctx, DailyTokensKey("u1", now)).Int64()
	if old != 500 || fresh != 0 {
		t.Fatalf("old day %d, new day %d; want 500 and 0", old, fresh)
	}
}

// The bound docs/security.md states: one user's calls one at a time, each
// using more than it reserved, end at most one call's excess over the limit.
func TestDailyTokensOvershootIsOneAnswerBeyondItsEstimate(t *testing.T) {
	a, _ := twoInstances(t)
	ctx := context.Background()
	const limit, estimate, actual = 1000, 100, 160
	d := NewDailyTokens(a, limit)
	answered := 0
	for range 50 {
		r, ok, err := d.Reserve(ctx, "u1", estimate)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		answered++
		if err := d.Settle(ctx, r, actual); err != nil {
			t.Fatal(err)
		}
	}
	used, _ := a.Get(ctx, DailyTokensKey("u1", time.Now())).Int64()
	if used > limit+actual-estimate || answered != 6 {
		t.Fatalf("%d answered, %d used; want 6 answered and at most %d used", answered, used, limit+actual-estimate)
	}
}

func TestDailyTokensDisabledReservesNothing(t *testing.T) {
	d := NewDailyTokens(nil, 0) // no Redis: a disabled budget must not ask it
	r, ok, err := d.Reserve(context.Background(), "u1", 1e9)
	if err != nil || !ok {
		t.Fatalf("Reserve = %v %v", ok, err)
	}
	if err := d.Settle(context.Background(), r, 1e9); err != nil {
		t.Fatal(err)
	}
}

// A reservation and its settling each go in a shared pipeline (one round
// trip, with other users' calls of the moment), and still work on a server
// that lost the scripts.
func TestDailyTokensReserveAndSettleArePipelined(t *testing.T) {
	a, _ := twoInstances(t)
	ctx := context.Background()
	d := NewDailyTokens(a, 1000)
	h := &roundTrips{}
	a.AddHook(h)
	for flush := range 2 {
		if flush == 1 {
			if err := a.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		r, ok, err := d.Reserve(ctx, "u1", 300)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if err := d.Settle(ctx, r, 100); err != nil {
			t.Fatal(err)
		}
		if flush == 0 {
			h.take()
			continue
		}
		if used, _ := a.Get(ctx, DailyTokensKey("u1", r.At)).Int64(); used != 200 {
			t.Fatalf("after SCRIPT FLUSH: counter %d, want two settled calls of 100", used)
		}
	}
	h.take()
	r, _, err := d.Reserve(ctx, "u1", 300)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Settle(ctx, r, 50); err != nil {
		t.Fatal(err)
	}
	if singles, pipelines := h.take(); len(singles) != 0 || len(pipelines) != 2 {
		t.Fatalf("a reservation and its settling sent %v alone and pipelines %v; want two pipelines", singles, pipelines)
	}
}
