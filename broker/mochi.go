package broker

import (
	"bytes"
	"reflect"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// This file is the one place that reaches into mochi's unexported state
// (mochi-mqtt/server v2.7.9). Delivery flow control (see delivery.go) needs
// two things mochi does not export:
//
//   - a client's write queue, ClientState.outbound (a channel of packets
//     that the client's WriteLoop goroutine writes in order): its length is
//     what publishers wait for, and a resumed session's messages are put on
//     it in order;
//   - the client's write buffer, ClientConnection.outbuf: mochi keeps small
//     packets there while its write queue is not empty and writes them only
//     with a later packet, so before the write loop waits for an
//     acknowledgement the buffer must be written out (otherwise the client
//     never sees the packet it is to acknowledge).
//
// Both fields are located by name and type once; TestMochiInternals fails
// when a mochi upgrade moves them. Without them, flow control degrades
// instead of breaking: no queue waits (mochi drops what does not fit),
// and mochi's write coalescing is turned off (see capabilities).

var (
	outboundField, outboundOK = field(reflect.TypeFor[mqtt.ClientState](), "outbound", reflect.TypeFor[chan *packets.Packet]())
	outbufField, outbufOK     = field(reflect.TypeFor[mqtt.ClientConnection](), "outbuf", reflect.TypeFor[*bytes.Buffer]())
)

func field(t reflect.Type, name string, want reflect.Type) (reflect.StructField, bool) {
	f, ok := t.FieldByName(name)
	return f, ok && f.Type == want
}

// outboundQueue returns cl's write queue, or nil if it cannot be found. The
// channel is made with the client and never replaced, so it may be kept;
// len and cap of a channel are safe to read concurrently.
func outboundQueue(cl *mqtt.Client) chan *packets.Packet {
	if !outboundOK {
		return nil
	}
	return *(*chan *packets.Packet)(unsafe.Add(unsafe.Pointer(&cl.State), outboundField.Offset))
}

// flushWrites writes out what mochi holds in cl's write buffer, as its
// WritePacket does (under the client's lock, which guards the buffer).
func flushWrites(cl *mqtt.Client) error {
	if !outbufOK || cl.Net.Conn == nil {
		return nil
	}
	cl.Lock()
	defer cl.Unlock()
	buf := (**bytes.Buffer)(unsafe.Add(unsafe.Pointer(&cl.Net), outbufField.Offset))
	if *buf == nil {
		return nil
	}
	_, err := (*buf).WriteTo(cl.Net.Conn)
	if err == nil {
		*buf = nil
	}
	return err
}

// writeBufferSize is mochi's Options.ClientNetWriteBufferSize: mochi's
// default (0), or 1 when its write buffer cannot be flushed from outside,
// so that every packet is written at once and none waits in the buffer.
func writeBufferSize() int {
	if outbufOK {
		return 0
	}
	return 1
}
