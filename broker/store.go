package broker

import (
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// persistHook drives mochi's own bbolt storage hook (hooks/storage/bolt), but
// only for state that must survive a restart: retained messages, and the
// client record, subscriptions and in-flight QoS 1/2 messages of persistent
// sessions (3.1.1 clean session false, MQTT 5 session expiry > 0). Clean
// sessions never touch the disk, so the hot path of ordinary clients costs no
// fsync. $SYS counters are not stored.
//
// bbolt was chosen over mochi's badger hook because it starts no goroutines
// (the badger hook's GC goroutine is never stopped) and its memory is the
// page cache of one small file; every write is one fsync'd transaction.
type persistHook struct {
	mqtt.HookBase
	inner *bolt.Hook
	// mu orders Stop after every store call in progress: mochi's event loop
	// (expiry, delayed wills) may still be calling hooks while Close stops
	// them.
	mu     sync.RWMutex
	closed bool
}

// open runs fn unless the store has been stopped.
func (h *persistHook) open(fn func()) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.closed {
		fn()
	}
}

func newPersistHook() *persistHook { return &persistHook{inner: new(bolt.Hook)} }

func (h *persistHook) ID() string { return "fieldgate-persist" }

// Provides: see policy.Provides.
func (h *persistHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage,
		mqtt.OnWillSent,
		mqtt.OnQosPublish,
		mqtt.OnQosComplete,
		mqtt.OnQosDropped,
		mqtt.OnClientExpired,
		mqtt.OnRetainedExpired,
		mqtt.StoredClients,
		mqtt.StoredInflightMessages,
		mqtt.StoredRetainedMessages,
		mqtt.StoredSubscriptions:
		return true
	}
	return false
}

// Init opens the bbolt file at path (a string).
func (h *persistHook) Init(config any) error {
	path, _ := config.(string)
	h.inner.SetOpts(h.Log, h.Opts)
	return h.inner.Init(&bolt.Options{
		Path:    path,
		Bucket:  "mochi",
		Options: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true},
	})
}

func (h *persistHook) Stop() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	return h.inner.Stop()
}

// persistent reports whether the client's session outlives its connection.
func persistent(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (h *persistHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) {
		h.open(func() { h.inner.OnSessionEstablished(cl, pk) })
		return
	}
	// A clean session replaces any stored persistent session of this id.
	h.open(func() { h.inner.OnDisconnect(cl, nil, true) })
}

func (h *persistHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) {
		h.open(func() { h.inner.OnWillSent(cl, pk) })
	}
}

func (h *persistHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if persistent(cl) || expire {
		h.open(func() { h.inner.OnDisconnect(cl, err, expire) })
	}
}

func (h *persistHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if persistent(cl) {
		h.open(func() { h.inner.OnSubscribed(cl, pk, codes) })
	}
}

func (h *persistHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) {
		h.open(func() { h.inner.OnUnsubscribed(cl, pk) })
	}
}

func (h *persistHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.open(func() { h.inner.OnRetainMessage(cl, pk, r) })
}

func (h *persistHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if persistent(cl) {
		h.open(func() { h.inner.OnQosPublish(cl, pk, sent, resends) })
	}
}

func (h *persistHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) {
		h.open(func() { h.inner.OnQosComplete(cl, pk) })
	}
}

func (h *persistHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) {
		h.open(func() { h.inner.OnQosDropped(cl, pk) })
	}
}

func (h *persistHook) OnClientExpired(cl *mqtt.Client) {
	h.open(func() { h.inner.OnClientExpired(cl) })
}

func (h *persistHook) OnRetainedExpired(filter string) {
	h.open(func() { h.inner.OnRetainedExpired(filter) })
}

func (h *persistHook) StoredClients() ([]storage.Client, error) { return h.inner.StoredClients() }

func (h *persistHook) StoredSubscriptions() ([]storage.Subscription, error) {
	return h.inner.StoredSubscriptions()
}

// StoredInflightMessages repairs what mochi's bolt hook stores: it does not
// record the packet id (so the resend after a restart was refused as "missing
// packet id"); the id is the suffix of the storage key. A topic alias belonged
// to the old connection and is dropped.
func (h *persistHook) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := h.inner.StoredInflightMessages()
	if err != nil {
		return nil, err
	}
	out := msgs[:0]
	for _, m := range msgs {
		if m.PacketID == 0 {
			i := strings.LastIndexByte(m.ID, ':')
			id, perr := strconv.ParseUint(m.ID[i+1:], 10, 16)
			if i < 0 || perr != nil || id == 0 {
				h.Log.Warn("skipping stored in-flight message without packet id", "key", m.ID)
				continue
			}
			m.PacketID = uint16(id)
		}
		m.Properties.TopicAlias = 0
		out = append(out, m)
	}
	return out, nil
}

func (h *persistHook) StoredRetainedMessages() ([]storage.Message, error) {
	return h.inner.StoredRetainedMessages()
}
