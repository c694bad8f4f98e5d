package bridge

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/google/go-cmp/cmp"
)

func readPacket(t *testing.T, s *sessionStore, id uint16) *packets.ControlPacket {
	t.Helper()
	r, err := s.Get(id)
	if err != nil {
		t.Fatalf("Get(%d): %v", id, err)
	}
	defer r.Close()
	p, err := packets.ReadPacket(r)
	if err != nil {
		t.Fatalf("packet %d: %v", id, err)
	}
	return p
}

// The persisted session keeps QoS 2 PUBLISH/PUBREL packets with their
// record seq, in put order, across a reopen; QoS 1 packets stay in memory.
func TestSessionStore(t *testing.T) {
	dir := t.TempDir()
	s, err := openSessionStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	put := func(id uint16, seq uint64, qos byte) {
		s.setNext(seq)
		if err := s.Put(id, packets.PUBLISH, &packets.Publish{PacketID: id, QoS: qos, Topic: "t", Payload: []byte{byte(seq)}}); err != nil {
			t.Fatal(err)
		}
	}
	put(9, 100, 2)
	put(3, 101, 1)
	put(5, 102, 2)
	put(7, 103, 2)
	if err := s.Put(9, packets.PUBREL, &packets.Pubrel{PacketID: 9}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(7); err != nil {
		t.Fatal(err)
	}
	ids, _ := s.List()
	if d := cmp.Diff([]uint16{9, 3, 5}, ids); d != "" {
		t.Errorf("List (-want +got):\n%s", d)
	}
	if p := readPacket(t, s, 3); p.Type != packets.PUBLISH {
		t.Errorf("in-memory packet 3 has type %d", p.Type)
	}

	// Reopen: only the durable (QoS 2) entries survive, with their seqs.
	s2, err := openSessionStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	gotIDs, gotSeqs := s2.restored()
	if d := cmp.Diff([]uint16{9, 5}, gotIDs); d != "" {
		t.Errorf("restored ids (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]uint64{100, 102}, gotSeqs); d != "" {
		t.Errorf("restored seqs (-want +got):\n%s", d)
	}
	if p := readPacket(t, s2, 9); p.Type != packets.PUBREL {
		t.Errorf("packet 9 has type %d, want PUBREL", p.Type)
	}

	// Garbage is quarantined, not fatal; the retry marker is cleared by Reset.
	if err := os.WriteFile(filepath.Join(dir, "11.pkt"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s2.markRetry(); err != nil {
		t.Fatal(err)
	}
	s3, err := openSessionStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := s3.List(); len(ids) != 2 {
		t.Errorf("after garbage: ids %v, want 2 entries", ids)
	}
	if _, err := os.Stat(filepath.Join(dir, "11.pkt.corrupt")); err != nil {
		t.Errorf("garbage not quarantined: %v", err)
	}
	if !s3.retryMarked() {
		t.Error("retry marker lost")
	}
	if err := s3.Reset(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s3.List(); len(ids) != 0 || s3.retryMarked() {
		t.Errorf("after Reset: ids %v, marker %v", ids, s3.retryMarked())
	}
	if _, err := s3.Get(9); err == nil {
		t.Error("Get after Reset succeeded")
	}
}

// Without a directory the store keeps every packet in memory, QoS 2 and
// PUBREL included, writes no file (not even in the working directory) and
// returns each packet as it was put.
func TestSessionStoreInMemory(t *testing.T) {
	t.Chdir(t.TempDir())
	s := &sessionStore{entries: make(map[uint16]storeEntry)}
	s.setNext(100)
	if err := s.Put(1, packets.PUBLISH, &packets.Publish{PacketID: 1, QoS: 1, Topic: "a", Payload: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	s.setNext(101)
	if err := s.Put(2, packets.PUBLISH, &packets.Publish{PacketID: 2, QoS: 2, Topic: "b", Payload: []byte("two")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(2, packets.PUBREL, &packets.Pubrel{PacketID: 2}); err != nil {
		t.Fatal(err)
	}
	p := readPacket(t, s, 1)
	pub, ok := p.Content.(*packets.Publish)
	if !ok || pub.Topic != "a" || string(pub.Payload) != "one" || pub.QoS != 1 || pub.PacketID != 1 {
		t.Errorf("packet 1 = %+v", p.Content)
	}
	if p := readPacket(t, s, 2); p.Type != packets.PUBREL {
		t.Errorf("packet 2 has type %d, want PUBREL", p.Type)
	}
	ids, _ := s.List()
	if d := cmp.Diff([]uint16{1, 2}, ids); d != "" {
		t.Errorf("List (-want +got):\n%s", d)
	}
	if ids, _ := s.restored(); len(ids) != 0 {
		t.Errorf("restored() = %v, want nothing durable", ids)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if des, _ := os.ReadDir("."); len(des) != 0 {
		t.Errorf("files written: %v", des)
	}
}
