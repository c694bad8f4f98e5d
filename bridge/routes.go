package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// routeSet is the compiled forward and subscribe routes. It is immutable;
// SetRoutes swaps it whole, so Ingest and receive never see half of a change.
type routeSet struct {
	fwd []fwdRoute
	sub []subRoute
}

func compileRoutes(forward []ForwardRoute, subscribe []SubscribeRoute, gateway string) *routeSet {
	rs := &routeSet{}
	for _, r := range forward {
		rs.fwd = append(rs.fwd, fwdRoute{filter: expand(r.Filter, gateway), prefix: expand(r.Prefix, gateway), qos: qosOf(r.QoS), bufferQoS0: r.BufferQoS0})
	}
	for _, r := range subscribe {
		rs.sub = append(rs.sub, subRoute{filter: expand(r.Filter, gateway), strip: expand(r.StripPrefix, gateway), prefix: expand(r.Prefix, gateway), qos: qosOf(r.QoS)})
	}
	return rs
}

// SetRoutes replaces the forward and subscribe routes of a running bridge
// (configuration reload) without touching the upstream connection, its
// session or the buffer. Messages already buffered keep the upstream topic
// and QoS they were accepted with; new messages follow the new routes.
// Subscribe filters that are new are subscribed on the current connection
// at once; filters that were removed stay subscribed upstream until the
// next clean session, but what arrives on them is no longer published
// locally. The routes must have passed Config.Validate. Safe for concurrent
// use.
func (b *Bridge) SetRoutes(forward []ForwardRoute, subscribe []SubscribeRoute) error {
	c := b.cfg
	c.Forward, c.Subscribe = forward, subscribe
	if err := c.Validate(); err != nil {
		return fmt.Errorf("bridge: invalid routes: %w", err)
	}
	if len(subscribe) > 0 && b.local == nil {
		return errors.New("bridge: subscribe routes need Options.Local")
	}
	next := compileRoutes(forward, subscribe, b.gateway)
	prev := b.routes.Swap(next)

	var filters []string
	var qos []byte
	for _, r := range next.sub {
		if !slices.ContainsFunc(prev.sub, func(p subRoute) bool { return p.filter == r.filter && p.qos == r.qos }) {
			filters, qos = append(filters, r.filter), append(qos, r.qos)
		}
	}
	b.mu.Lock()
	l := b.cur
	b.mu.Unlock()
	if l == nil || len(filters) == 0 {
		return nil // subscribed on the next connection
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Upstream.ConnectTimeout+time.Second)
	defer cancel()
	if err := l.subscribe(ctx, filters, qos); err != nil {
		return fmt.Errorf("bridge: subscribe %v upstream: %w", filters, err)
	}
	return nil
}
