package devices

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// enqueueWrite is the Subscriber callback of `<point topic>/set`. It never
// blocks: a request that finds the device's queue full is dropped and
// counted.
func (r *runner) enqueueWrite(ps *pointState, m Message) {
	w := writeReq{ps: ps, msg: m, name: ps.p.Name(), topic: ps.topic}
	if !ps.p.Config.Writable {
		w.reject = fmt.Errorf("point %s of device %s is read-only (writable: true in its config allows writes)", ps.p.Name(), r.dev.Name())
	}
	r.queueWrite(w)
}

// enqueueUnknown is the Subscriber callback of `<device topic root>/+/set`:
// a request for a name that is no point of the device is answered with an
// error listing the points. Requests for points are left to enqueueWrite.
func (r *runner) enqueueUnknown(m Message) {
	topic := strings.TrimSuffix(m.Topic, "/set")
	for _, ps := range r.points {
		if ps.topic == topic {
			return
		}
	}
	name := strings.TrimPrefix(topic, r.root+"/")
	names := make([]string, len(r.points))
	for i, ps := range r.points {
		names[i] = ps.p.Name()
	}
	r.queueWrite(writeReq{msg: m, name: name, topic: topic,
		reject: fmt.Errorf("device %s has no point %q (points: %s)", r.dev.Name(), name, strings.Join(names, ", "))})
}

func (r *runner) queueWrite(w writeReq) {
	r.stats.writes.Add(1)
	select {
	case r.writes <- w:
	default:
		r.stats.writesDropped.Add(1)
		r.log.Warn("write request dropped: device queue full", "point", w.name)
	}
}

// write performs a write request on the device goroutine: parse, validate,
// convert to raw, Write, read back with Poll, publish the confirmed value.
// It returns the confirmed engineering value.
func (r *runner) write(ctx context.Context, conn Conn, ps *pointState, payload []byte) (any, error) {
	cfg := &ps.p.Config
	if !cfg.Writable {
		return nil, errors.New("point is not writable")
	}
	wc, ok := conn.(WriteConn)
	if !ok {
		return nil, fmt.Errorf("driver %s does not support writes", r.dev.Config.Driver)
	}
	req, err := parseSetPayload(payload)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	last := ps.lastRaw
	r.mu.Unlock()
	raw, err := toRaw(cfg, kindOf(cfg, last, req), req)
	if err != nil {
		return nil, err
	}
	if err := wc.Write(ctx, ps.p, raw); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	pc, ok := conn.(PollConn)
	if !ok {
		return nil, errors.New("written, but the device cannot be read back")
	}
	rs, err := pc.Poll(ctx, []*Point{ps.p})
	if err == nil && len(rs) != 1 {
		err = fmt.Errorf("driver returned %d readings for 1 point", len(rs))
	}
	if err == nil {
		err = rs[0].Err
	}
	if err != nil {
		return nil, fmt.Errorf("written, but read-back failed: %w", err)
	}
	rs[0].Point = ps.p
	eng, err := engineering(rs[0].Value, cfg)
	if err != nil {
		return nil, fmt.Errorf("written, but read-back failed: %w", err)
	}
	r.process(ctx, rs, true)
	return eng, nil
}

// reply publishes the result of a write request on `<point topic>/set/result`
// and, when the request carried an MQTT 5 response topic, there too with
// its correlation data.
func (r *runner) reply(ctx context.Context, w writeReq, v any, err error) {
	if w.reject != nil {
		v, err = nil, w.reject
	}
	if err != nil {
		r.stats.writeErrors.Add(1)
		r.log.Warn("write rejected", "point", w.name, "topic", w.topic+"/set", "error", err)
	} else {
		r.log.Info("write done", "point", w.name, "value", v)
	}
	qos := byte(1)
	if w.ps != nil {
		qos = w.ps.qos
	}
	payload := resultPayload(v, err)
	r.publish(ctx, Message{Topic: w.topic + "/set/result", Payload: payload, QoS: qos})
	if w.msg.ResponseTopic != "" {
		r.publish(ctx, Message{Topic: w.msg.ResponseTopic, Payload: payload, QoS: qos, CorrelationData: w.msg.CorrelationData})
	}
}
