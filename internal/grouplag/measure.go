package grouplag

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// view is one group as one round saw it.
type view struct {
	state   string
	members int
	lag     map[Target]map[int32]int64
	err     error // the first thing that kept the round from measuring the group
}

func (v *view) fail(err error) {
	if v.err == nil {
		v.err = err
	}
}

// round is what the broker answered in one measurement.
type round struct {
	ends      kadm.ListedOffsets
	starts    kadm.ListedOffsets // only topics with a partition nobody committed to
	commits   kadm.FetchOffsetsResponses
	described kadm.DescribedGroups
	descErr   error
}

// fetch asks the broker for one round. The requests: end offsets of every
// configured topic (a Metadata request and one ListOffsets per partition
// leader), the committed offsets of every group (one OffsetFetch per group
// coordinator), the groups' descriptions (one DescribeGroups per
// coordinator), and, only when some partition was never committed to, its
// topic's start offsets. Nothing here depends on a consumer being alive.
func fetch(ctx context.Context, adm *kadm.Client, targets []Target) (round, error) {
	var r round
	var err error
	if r.ends, err = adm.ListEndOffsets(ctx, topicsOf(targets)...); err != nil {
		return r, fmt.Errorf("end offsets: %w", err)
	}
	groups := groupsOf(targets)
	r.commits = adm.FetchManyOffsets(ctx, groups...)
	r.described, r.descErr = adm.DescribeGroups(ctx, groups...)
	var uncommitted []string
	for _, t := range targets {
		r.ends.Each(func(o kadm.ListedOffset) {
			if o.Topic != t.Topic || slices.Contains(uncommitted, t.Topic) {
				return
			}
			if at, err := committed(r.commits, t, o.Partition); err == nil && at < 0 {
				uncommitted = append(uncommitted, t.Topic)
			}
		})
	}
	if len(uncommitted) > 0 {
		if r.starts, err = adm.ListStartOffsets(ctx, uncommitted...); err != nil {
			return r, fmt.Errorf("start offsets: %w", err)
		}
	}
	return r, nil
}

// compute turns a round into one view per group.
func compute(targets []Target, r round, fetchErr error) map[string]*view {
	views := map[string]*view{}
	for _, t := range targets {
		v := views[t.Group]
		if v == nil {
			v = &view{lag: map[Target]map[int32]int64{}}
			views[t.Group] = v
			if fetchErr != nil {
				v.fail(fetchErr)
				continue
			}
			state, members, err := describe(r, t.Group)
			v.state, v.members = state, members
			if err != nil {
				v.fail(fmt.Errorf("describe group %s: %w", t.Group, err))
			}
		}
		if fetchErr == nil {
			v.lag[t] = topicLag(r, t, v)
		}
	}
	return views
}

// topicLag is the lag of every partition of t's topic, failing v on the
// first partition that cannot be measured.
func topicLag(r round, t Target, v *view) map[int32]int64 {
	parts := map[int32]int64{}
	found := false
	r.ends.Each(func(end kadm.ListedOffset) {
		if end.Topic != t.Topic {
			return
		}
		found = true
		at, err := committed(r.commits, t, end.Partition)
		if err != nil {
			v.fail(fmt.Errorf("committed offset of %s on %s/%d: %w", t.Group, t.Topic, end.Partition, err))
			return
		}
		start, _ := r.starts.Lookup(t.Topic, end.Partition)
		lag, err := partitionLag(end, start, at)
		if err != nil {
			v.fail(fmt.Errorf("offsets of %s/%d: %w", t.Topic, end.Partition, err))
			return
		}
		parts[end.Partition] = lag
	})
	if !found {
		v.fail(fmt.Errorf("topic %s: no end offsets", t.Topic))
	}
	return parts
}

// committed is the group's committed offset on a partition, -1 when the
// group never committed to it (or does not exist yet).
func committed(commits kadm.FetchOffsetsResponses, t Target, partition int32) (int64, error) {
	resp, ok := commits[t.Group]
	switch {
	case !ok:
		return 0, errors.New("not in the OffsetFetch answer")
	case errors.Is(resp.Err, kerr.GroupIDNotFound):
		return -1, nil
	case resp.Err != nil:
		return 0, resp.Err
	}
	o, ok := resp.Fetched.Lookup(t.Topic, partition)
	switch {
	case !ok:
		return -1, nil
	case o.Err != nil:
		return 0, o.Err
	}
	return o.At, nil
}

// partitionLag is end − committed; before a first commit it is end − log
// start, since the consumers start a new group at the earliest offset: every
// record still in the partition is waiting for them.
func partitionLag(end, start kadm.ListedOffset, at int64) (int64, error) {
	if end.Err != nil {
		return 0, end.Err
	}
	from := at
	if from < 0 {
		switch {
		case start.Err != nil:
			return 0, fmt.Errorf("start offset: %w", start.Err)
		case start.Topic == "":
			return 0, errors.New("no start offset")
		}
		from = start.Offset
	}
	return max(end.Offset-from, 0), nil
}

// describe is the group's state and member count. A group the broker does
// not know (never joined, or expired) has no members.
func describe(r round, group string) (string, int, error) {
	g, ok := r.described[group]
	switch {
	case !ok && r.descErr != nil:
		return "", 0, r.descErr
	case !ok:
		return "", 0, errors.New("not in the DescribeGroups answer")
	case errors.Is(g.Err, kerr.GroupIDNotFound):
		return "Dead", 0, nil
	case g.Err != nil:
		return "", 0, g.Err
	}
	return g.State, len(g.Members), nil
}

func topicsOf(targets []Target) []string {
	return distinct(targets, func(t Target) string { return t.Topic })
}

func groupsOf(targets []Target) []string {
	return distinct(targets, func(t Target) string { return t.Group })
}

func distinct(targets []Target, key func(Target) string) []string {
	var out []string
	for _, t := range targets {
		if k := key(t); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}
