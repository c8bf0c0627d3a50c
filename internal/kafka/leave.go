package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chatrelay/chat/internal/telemetry"
)

// Static group membership (KIP-345) and leaving. A consumer with an
// InstanceID keeps its place in the group when it dies, so that its restart
// takes the same partitions back at once instead of waiting for the dead
// member's session to time out. The price is that a static member that is
// not coming back must say so, or its partitions wait for the session
// timeout; franz-go's Close never says so for a static member.
//
// Run leaves on every orderly stop. The process cannot tell a restart from
// a scale-down (both are SIGTERM), and need not: leaving hands the
// partitions to the other members at once, and a restart joins again as a
// new member. Measured, that is as fast as staying for the restart with one
// instance and faster with several (docs/takeover.md), since a rebalance
// costs little here (cooperative, only finished work committed, redelivered
// records de-duplicated). So only a crash keeps the member in its group,
// which is the case static membership is for.

// leave takes a static member out of its group. A dynamic member is left to
// Close, which leaves the group on its own.
func (c *Consumer) leave(ctx context.Context) {
	if c.cfg.InstanceID == "" {
		return
	}
	member, _ := c.cl.GroupMetadata()
	// For a static member this sends nothing: it stops the heartbeats and
	// any rejoin, so that none races the leave below, and revokes (our
	// revoked() commits, though nothing is left by now).
	_ = c.cl.LeaveGroupContext(ctx)
	if member == "" {
		return // never joined
	}
	err := c.leaveStatic(ctx, member)
	switch {
	case err == nil:
		c.log.Info("kafka consumer left the group; its partitions move to the other members now",
			"group", c.cfg.Group, "instance_id", c.cfg.InstanceID)
	case errors.Is(err, kerr.UnknownMemberID):
		// Gone already: franz-go left by itself (after a cooperative
		// revoke it had not rejoined from), or the session expired.
	default:
		c.log.Warn("kafka consumer could not leave the group; its partitions move after KAFKA_SESSION_TIMEOUT",
			"group", c.cfg.Group, "instance_id", c.cfg.InstanceID, "error", err)
	}
}

// leaveStatic sends the LeaveGroup that franz-go does not send for a static
// member. It names the member id too: Kafka then refuses (FENCED_INSTANCE_ID)
// rather than remove a newer member that took over the instance id.
func (c *Consumer) leaveStatic(ctx context.Context, member string) error {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = c.cfg.Group
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = member
	m.InstanceID = kmsg.StringPtr(c.cfg.InstanceID)
	m.Reason = kmsg.StringPtr("orderly stop: the partitions go to the other members now")
	req.Members = append(req.Members, m)
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return fmt.Errorf("leave group %s: %w", c.cfg.Group, err)
	}
	err = kerr.ErrorForCode(resp.ErrorCode)
	for _, mr := range resp.Members {
		err = errors.Join(err, kerr.ErrorForCode(mr.ErrorCode))
	}
	if err != nil {
		return fmt.Errorf("leave group %s as %s: %w", c.cfg.Group, c.cfg.InstanceID, err)
	}
	return nil
}

// NewFencedCounter counts the times a consumer was fenced: another member
// joined its group with the same instance id and took its place.
func NewFencedCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "kafka", Name: "group_fenced_total",
		Help: "Times another consumer joined the group with this instance's INSTANCE_ID and fenced it (each replica needs its own).",
	}, []string{"group"})
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

// fenceHook hears the group management loop's errors (kgo.HookGroupManageError).
type fenceHook struct{ c *Consumer }

// OnGroupManageError notes a fence. franz-go then keeps trying to rejoin
// with the fenced member id, which fails for as long as the other member
// holds the instance id: this instance consumes nothing meanwhile, without
// fighting back. Two replicas sharing an id is a deployment error, so it
// is made loud: an error log, a counter and failing readiness (Fenced).
func (h fenceHook) OnGroupManageError(err error) {
	c := h.c
	if !errors.Is(err, kerr.FencedInstanceID) {
		return
	}
	if c.cfg.Fenced != nil {
		c.cfg.Fenced.WithLabelValues(c.cfg.Group).Inc()
	}
	var member string
	if cl := c.hookCl.Load(); cl != nil {
		member, _ = cl.GroupMetadata()
	}
	if old := c.fencedMember.Swap(&member); old != nil && *old == member {
		return // the same episode: logged once
	}
	c.log.Error("kafka consumer fenced: another consumer joined the group with this INSTANCE_ID and took its partitions; this instance consumes nothing until that one leaves. Give each replica its own INSTANCE_ID",
		"group", c.cfg.Group, "instance_id", c.cfg.InstanceID)
}

// Fenced is an error while another member holds this consumer's instance id
// (see fenceHook), for readiness; nil once the group gave it a new member id.
func (c *Consumer) Fenced() error {
	fenced := c.fencedMember.Load()
	if fenced == nil {
		return nil
	}
	if member, _ := c.cl.GroupMetadata(); member != "" && member != *fenced {
		c.fencedMember.CompareAndSwap(fenced, nil)
		return nil
	}
	return fmt.Errorf("kafka group %s: fenced: another consumer uses INSTANCE_ID %q; each replica needs its own", c.cfg.Group, c.cfg.InstanceID)
}
