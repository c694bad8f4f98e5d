package bridge

import (
	"errors"
	"fmt"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// flight is one message sent upstream, waiting for its final
// acknowledgement (PUBACK for QoS 1, PUBCOMP for QoS 2).
type flight struct {
	seq  uint64
	size int
	// MQTT 5 and QoS 0: ch is closed once err is set.
	ch  chan struct{}
	err error
	// MQTT 3.1.1: the paho.mqtt.golang token.
	tok mqtt.Token
}

var (
	// errRejected marks a message the upstream refused with a reason code.
	errRejected = errors.New("rejected by upstream")
	// errRetry marks a message the upstream refused for now (quota
	// exceeded, packet identifier in use): the connection is dropped and
	// the message resent, in order, after the backoff.
	errRetry = errors.New("refused by upstream for now")
	// errLost marks a message whose connection dropped before it was acknowledged.
	errLost = errors.New("connection lost before acknowledgement")
)

func newFlight() *flight { return &flight{ch: make(chan struct{})} }

func (f *flight) complete(err error) {
	f.err = err
	close(f.ch)
}

func (f *flight) done() <-chan struct{} {
	if f.tok != nil {
		return f.tok.Done()
	}
	return f.ch
}

// result is valid once done is closed: nil (acknowledged), errRejected, errRetry or errLost.
func (f *flight) result() error {
	if f.tok != nil {
		if err := f.tok.Error(); err != nil {
			return fmt.Errorf("%w: %v", errLost, err)
		}
		return nil
	}
	return f.err
}

// retry reports whether f is complete with errRetry.
func (f *flight) retry() bool {
	select {
	case <-f.done():
		return errors.Is(f.result(), errRetry)
	default:
		return false
	}
}
