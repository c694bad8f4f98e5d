package serial

import (
	"testing"

	"github.com/fieldgate/fieldgate/devices"
)

// BenchmarkLine measures framing, checking and regex-parsing one sensor line.
func BenchmarkLine(b *testing.B) {
	dev := testDevice(devices.ParseConfig{Regex: `^T=(?P<t>-?[0-9.]+) H=(?P<h>[0-9.]+)$`}, "t", "h")
	p, err := newParser(dev)
	if err != nil {
		b.Fatal(err)
	}
	c := &conn{dev: dev, parser: p, stats: &counters{}}
	fr := newFramer("\n", 1024, c.stats)
	line := []byte("T=21.5 H=40\r\n")
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		fr.feed(line, func(l []byte) {
			if c.line(l) == nil {
				b.Fatal("line not parsed")
			}
		})
	}
}
