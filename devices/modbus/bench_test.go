package modbus

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	mb "github.com/goburrow/modbus"
	"go.bug.st/serial"

	"github.com/fieldgate/fieldgate/devices"
)

// wirePollRate is the most polls per second a real RS-485 line allows for
// a read of regs registers: request (8 bytes) and response (5+2·regs bytes)
// at bitsPerChar bits per character, each followed by the t3.5 silence
// (the slave's end-of-frame detection, then the master's before the next
// request). Slave processing time is taken as zero.
func wirePollRate(baud, regs, bitsPerChar int) float64 {
	chars := 8 + 5 + 2*regs
	cycle := float64(chars*bitsPerChar)/float64(baud) + 2*Silent(baud).Seconds()
	return 1 / cycle
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRTUPoll polls 10 and 125 holding registers (one request) from an
// instantly answering in-process slave on a pty, at 9600 and 115200 baud
// (8N1). A pty does not enforce the baud rate, so the only wait a correct
// transport has per poll is the t3.5 silent interval; overhead_us/poll is
// the time per poll beyond it (a transport with a fixed per-request sleep,
// like goburrow's ~26 ms at 115200, shows it here). wire_polls/s is what
// the real line allows; ours_vs_wire is the measured rate over it (≥ 1
// means the transport is not the bottleneck). est_line_vs_wire estimates
// the fraction of the wire-limited rate reached on a real line: wire cycle
// plus the measured overhead (conservative: the overhead includes the pty
// round trip). cpu_us/poll includes the in-process slave.
func BenchmarkRTUPoll(b *testing.B) {
	for _, baud := range []int{9600, 115200} {
		for _, regs := range []int{10, 125} {
			b.Run(fmt.Sprintf("%dregs/%dbaud", regs, baud), func(b *testing.B) {
				s := newSlave(b, 1)
				p := newPty(b, "")
				s.serveRTU(p)
				d := New(slog.New(slog.DiscardHandler))
				points := make([]devices.PointConfig, regs)
				for i := range points {
					points[i] = holdingU16(fmt.Sprintf("r%d", i), i)
				}
				cfg := rtuConfig("bench", p.Link, 1, points...)
				cfg.Baud = baud
				cfg.Timeout = 2 * time.Second // the machine may be loaded; this is not what is measured
				dev := newDevice(cfg)
				conn, err := d.Open(dev)
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				c := conn.(*Conn)
				ctx := context.Background()
				if _, err := c.Poll(ctx, dev.Points); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				cpu0, t0 := cpuTime(), time.Now()
				for i := 0; i < b.N; i++ {
					rs, err := c.Poll(ctx, dev.Points)
					if err != nil || rs[0].Err != nil {
						b.Fatalf("poll: %v %v", err, rs[0].Err)
					}
				}
				el := time.Since(t0)
				cpu := cpuTime() - cpu0
				b.StopTimer()
				perPoll := el / time.Duration(b.N)
				rate := float64(b.N) / el.Seconds()
				wire := wirePollRate(baud, regs, 10)
				b.ReportMetric(rate, "polls/s")
				b.ReportMetric(wire, "wire_polls/s")
				b.ReportMetric(rate/wire, "ours_vs_wire")
				overhead := perPoll - Silent(baud)
				b.ReportMetric(float64(overhead.Microseconds()), "overhead_us/poll")
				// On a real line the frames' wire time replaces the pty's
				// round trip, which overhead includes: a conservative estimate.
				est := 1 / (1/wire + max(overhead, 0).Seconds())
				b.ReportMetric(est/wire, "est_line_vs_wire")
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu_us/poll")
				st := d.Stats()
				b.ReportMetric(float64(st.Timeouts+st.FrameErrors), "line_errors")
			})
		}
	}
}

// BenchmarkTCPPoll polls 125 holding registers over loopback TCP.
func BenchmarkTCPPoll(b *testing.B) {
	s := newSlave(b, 1)
	ts := s.serveTCP(b)
	d := New(slog.New(slog.DiscardHandler))
	points := make([]devices.PointConfig, 125)
	for i := range points {
		points[i] = holdingU16(fmt.Sprintf("r%d", i), i)
	}
	dev := newDevice(tcpConfig("bench", ts.addr(), 1, points...))
	conn, err := d.Open(dev)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.(*Conn).Poll(ctx, dev.Points); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPtyRoundTrip is the baseline for BenchmarkRTUPoll: the same
// slave and pty, 10-register requests written and answers read directly
// with go.bug.st/serial, no driver (no t3.5, no bus goroutine, no decoding).
func BenchmarkPtyRoundTrip(b *testing.B) {
	s := newSlave(b, 1)
	p := newPty(b, "")
	s.serveRTU(p)
	port, err := serial.Open(p.tty.Name(), &serial.Mode{BaudRate: 115200})
	if err != nil {
		b.Fatal(err)
	}
	defer port.Close()
	pk := mb.NewRTUClientHandler("")
	pk.SlaveId = 1
	adu, _ := pk.Encode(&mb.ProtocolDataUnit{FunctionCode: 3, Data: []byte{0, 0, 0, 10}})
	buf := make([]byte, 25)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := port.Write(adu); err != nil {
			b.Fatal(err)
		}
		for n := 0; n < len(buf); {
			k, err := port.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += k
		}
	}
}

// BenchmarkGoburrowRTU is the reference the driver's own transport replaces:
// goburrow/modbus's RTU client on the same pty and slave, 10 registers at
// 115200 baud. Its transporter sleeps for the computed frame time on every
// request.
func BenchmarkGoburrowRTU(b *testing.B) {
	s := newSlave(b, 1)
	p := newPty(b, "")
	s.serveRTU(p)
	h := mb.NewRTUClientHandler(p.Link)
	h.BaudRate, h.DataBits, h.Parity, h.StopBits = 115200, 8, "N", 1
	h.SlaveId = 1
	h.Timeout = 2 * time.Second
	if err := h.Connect(); err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	client := mb.NewClient(h)
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := client.ReadHoldingRegisters(0, 10); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "polls/s")
}
