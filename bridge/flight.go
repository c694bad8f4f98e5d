package bridge

import (
	"errors"
	"fmt"
	"sync/atomic"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// flight is one message sent upstream, waiting for its final
// acknowledgement (PUBACK for QoS 1, PUBCOMP for QoS 2).
//
// MQTT 5 flights have no channel of their own (one per message cost an
// allocation and a close each): complete sets done and signals sig, a
// channel shared by every flight of one session, which the single
// goroutine waiting for flights (the drain's, or closeLink's after it)
// receives from before checking isDone again.
type flight struct {
	seq  uint64
	size int
	// MQTT 5 and QoS 0: err is valid once done is set.
	done atomic.Bool
	err  error
	sig  chan struct{} // capacity 1; nil for flights completed at once
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

// newFlight returns a flight whose completion is signalled on sig (nil if
// it is completed before anyone waits for it).
func newFlight(seq uint64, sig chan struct{}) *flight { return &flight{seq: seq, sig: sig} }

func (f *flight) complete(err error) {
	f.err = err
	f.done.Store(true)
	if f.sig != nil {
		select {
		case f.sig <- struct{}{}:
		default: // already signalled
		}
	}
}

// isDone reports whether the flight is complete.
func (f *flight) isDone() bool {
	if f.tok != nil {
		select {
		case <-f.tok.Done():
			return true
		default:
			return false
		}
	}
	return f.done.Load()
}

// wait returns a channel that is ready when f may have completed: check
// isDone again after receiving from it.
func (f *flight) wait() <-chan struct{} {
	if f.tok != nil {
		return f.tok.Done()
	}
	return f.sig
}

// result is valid once isDone: nil (acknowledged), errRejected, errRetry or errLost.
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
	return f.isDone() && errors.Is(f.result(), errRetry)
}
