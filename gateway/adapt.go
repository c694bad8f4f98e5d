package gateway

import (
	"context"

	"github.com/fieldgate/fieldgate/bridge"
	"github.com/fieldgate/fieldgate/broker"
	"github.com/fieldgate/fieldgate/devices"
)

// devicePublisher lets device pollers publish on the local broker. Readings
// pass the same ingress as network publishes, so QoS ≥ 1 readings that match
// a forward route are durable before Publish returns (G1).
type devicePublisher struct{ b *broker.Broker }

func (p devicePublisher) Publish(ctx context.Context, m devices.Message) error {
	return p.b.Publish(ctx, broker.Message{
		Topic:           m.Topic,
		Payload:         m.Payload,
		QoS:             m.QoS,
		Retain:          m.Retain,
		Origin:          originDevices,
		ResponseTopic:   m.ResponseTopic,
		CorrelationData: m.CorrelationData,
	})
}

// deviceSubscriber delivers write requests (`…/set`) to the devices.
type deviceSubscriber struct{ b *broker.Broker }

func (s deviceSubscriber) Subscribe(filter string, fn func(devices.Message)) (func(), error) {
	return s.b.Subscribe(filter, func(m broker.Message) {
		fn(devices.Message{
			Topic:           m.Topic,
			Payload:         m.Payload,
			QoS:             m.QoS,
			Retain:          m.Retain,
			ResponseTopic:   m.ResponseTopic,
			CorrelationData: m.CorrelationData,
		})
	})
}

// bridgeLocal publishes messages from subscribe routes (upstream → local).
// Their origin tells the bridge's ingress never to forward them back up.
type bridgeLocal struct{ b *broker.Broker }

func (l bridgeLocal) Publish(ctx context.Context, m bridge.Message) error {
	props := make([]broker.UserProperty, len(m.UserProperties))
	for i, p := range m.UserProperties {
		props[i] = broker.UserProperty{Key: p.Key, Value: p.Value}
	}
	return l.b.Publish(ctx, broker.Message{
		Topic:           m.Topic,
		Payload:         m.Payload,
		QoS:             m.QoS,
		Retain:          m.Retain,
		Origin:          bridge.Origin,
		ContentType:     m.ContentType,
		ResponseTopic:   m.ResponseTopic,
		CorrelationData: m.CorrelationData,
		UserProperties:  props,
		MessageExpiry:   m.MessageExpiry,
	})
}

func toBridge(m *broker.Message) bridge.Message {
	props := make([]bridge.UserProperty, len(m.UserProperties))
	for i, p := range m.UserProperties {
		props[i] = bridge.UserProperty{Key: p.Key, Value: p.Value}
	}
	return bridge.Message{
		Topic:           m.Topic,
		Payload:         m.Payload,
		QoS:             m.QoS,
		Retain:          m.Retain,
		Origin:          bridgeOrigin(m.Origin),
		ContentType:     m.ContentType,
		ResponseTopic:   m.ResponseTopic,
		CorrelationData: m.CorrelationData,
		UserProperties:  props,
		MessageExpiry:   m.MessageExpiry,
	}
}

// bridgeOrigin maps the broker's origin of a message to the bridge's view:
// the bridge's own local publishes (subscribe routes) become bridge.Origin,
// which the bridge never forwards back up; anything else, a network client
// that happens to be called "bridge" included, does not.
func bridgeOrigin(origin string) string {
	switch origin {
	case broker.InProcessOrigin(bridge.Origin):
		return bridge.Origin
	case bridge.Origin:
		return "client/" + origin
	}
	return origin
}
