package serial

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.uber.org/goleak"

	"github.com/fieldgate/fieldgate/devices"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a devices.Publisher that lets tests wait for messages.
type recorder struct {
	mu   sync.Mutex
	msgs []devices.Message
}

func (r *recorder) Publish(ctx context.Context, m devices.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return nil
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		out = append(out, m.Topic+" "+string(m.Payload))
	}
	return out
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// count returns how many recorded lines start with prefix.
func (r *recorder) count(prefix string) int {
	n := 0
	for _, l := range r.lines() {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// runDevices starts a devices.Set with the serial driver; the returned stop
// cancels it and waits for Run to return.
func runDevices(t *testing.T, cfg devices.DeviceConfig) (*Driver, *recorder, func()) {
	t.Helper()
	drv := New(nil)
	rec := &recorder{}
	set, err := devices.New([]devices.DeviceConfig{cfg}, devices.Options{Gateway: "gw", Drivers: map[string]devices.Driver{"serial": drv}, Publisher: rec})
	if err != nil {
		t.Fatalf("devices.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return drv, rec, stop
}

// openPTY returns a pty pair: the test plays the sensor on master, the
// driver opens slave's path. Closing slave (once the driver has closed its
// own descriptor) makes reads of master fail, which ends a sensor loop.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatalf("pty: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

func TestStreamSkipsBadLines(t *testing.T) {
	master, slave := openPTY(t)
	drv, rec, stop := runDevices(t, devices.DeviceConfig{
		Name: "weather", Driver: "serial", Port: slave.Name(), Baud: 115200, Timeout: 200 * time.Millisecond, MaxLineLength: 64,
		Parse:  &devices.ParseConfig{Regex: `^T=(?P<temperature>-?[0-9.]+) H=(?P<humidity>[0-9.]+)$`},
		Topic:  "myhome/garden/{device}/{point}",
		Points: []devices.PointConfig{{Name: "temperature", Unit: "°C"}, {Name: "humidity", Unit: "%"}},
	})
	st := func() LineStats { return drv.Stats()["weather"] }
	eventually(t, "port open", func() bool { return st().Opens == 1 })
	write := func(s string) {
		t.Helper()
		if _, err := master.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	write("T=21.5 H=40\r\n")
	eventually(t, "first reading", func() bool { return rec.count("myhome/garden/weather/temperature ") == 1 })
	write("T=99 H=99") // partial: never terminated within the timeout
	eventually(t, "partial line dropped", func() bool { return st().Partial == 1 })
	write(strings.Repeat("T=1 H=1 ", 20) + "\r\n") // over-long
	write("T=\xff\xfe H=1\r\n")                    // invalid UTF-8
	write("\x00\x13\x7fT=5 H=5\r\n")               // garbage
	write("hello world\r\n")                       // no match
	write("\r\n")                                  // empty
	write("T=22.0 H=41\r\n")
	eventually(t, "second reading", func() bool { return rec.count("myhome/garden/weather/temperature ") == 2 })
	stop()
	got := st()
	want := LineStats{Lines: 6, Parsed: 2, Empty: 1, NoMatch: 1, Garbage: 1, InvalidUTF8: 1, TooLong: 1, Partial: 1, Opens: 1}
	if got != want {
		t.Errorf("stats\n got %+v\nwant %+v", got, want)
	}
	var values []string
	for _, l := range rec.lines() {
		if strings.Contains(l, `"value"`) {
			values = append(values, l[:strings.Index(l, `,"ts"`)])
		}
	}
	want2 := []string{
		`myhome/garden/weather/temperature {"value":21.5,"unit":"°C"`,
		`myhome/garden/weather/humidity {"value":40,"unit":"%"`,
		`myhome/garden/weather/temperature {"value":22,"unit":"°C"`,
		`myhome/garden/weather/humidity {"value":41,"unit":"%"`,
	}
	if !slices.Equal(values, want2) {
		t.Errorf("published values\n got %q\nwant %q", values, want2)
	}
}

func TestRequestResponse(t *testing.T) {
	master, slave := openPTY(t)
	// The sensor: answers "READ\r\n" with a reading, ignores anything else.
	var requests sync.WaitGroup
	requests.Go(func() {
		r := bufio.NewReader(master)
		n := 0
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line != "READ\r\n" {
				continue
			}
			n++
			fmt.Fprintf(master, "noise\r\nT=21.%d H=40\r\n", n)
		}
	})
	drv, rec, stop := runDevices(t, devices.DeviceConfig{
		Name: "weather", Driver: "serial", Port: slave.Name(), Request: "READ\r\n", Poll: 50 * time.Millisecond, Timeout: time.Second,
		Parse: &devices.ParseConfig{KV: true}, Terminator: "\r\n", Payload: "value", Topic: "g/{device}/{point}",
		Points: []devices.PointConfig{{Name: "T"}, {Name: "H"}},
	})
	eventually(t, "three readings", func() bool { return rec.count("g/weather/T ") >= 3 })
	stop()
	slave.Close() // the driver's descriptor is closed too: the sensor's read fails
	requests.Wait()
	got := rec.lines()
	// No deadband or heartbeat: every answer publishes both points.
	want := []string{"g/weather/availability online", "g/weather/T 21.1", "g/weather/H 40", "g/weather/T 21.2", "g/weather/H 40", "g/weather/T 21.3"}
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("published\n got %q\nwant prefix %q", got, want)
	}
	if st := drv.Stats()["weather"]; st.Parsed < 3 || st.NoMatch < 3 {
		t.Errorf("stats %+v: want every answer parsed and every noise line skipped", st)
	}
}

func TestRequestTimeoutGoesOffline(t *testing.T) {
	_, slave := openPTY(t) // nobody answers
	drv, rec, stop := runDevices(t, devices.DeviceConfig{
		Name: "mute", Driver: "serial", Port: slave.Name(), Request: "READ\n", Timeout: 50 * time.Millisecond, Retries: new(1),
		Parse: &devices.ParseConfig{KV: true}, Topic: "g/{device}/{point}", Points: []devices.PointConfig{{Name: "t"}},
	})
	eventually(t, "offline", func() bool { return rec.count("g/mute/availability offline") == 1 })
	stop()
	if st := drv.Stats()["mute"]; st.Timeouts < 2 {
		t.Errorf("timeouts %d, want one per attempt (2)", st.Timeouts)
	}
	for _, l := range rec.lines() {
		if strings.HasPrefix(l, "g/mute/t ") {
			t.Errorf("published a value for a mute sensor: %s", l)
		}
	}
}

// socat starts a pty pair with links dir/a (sensor side) and dir/b
// (gateway side) and returns a function that kills it (unplug).
func socat(t *testing.T, dir string) (kill func()) {
	t.Helper()
	bin, err := exec.LookPath("socat")
	if err != nil {
		t.Fatalf("socat is required for this test (apt-get install -y socat): %v", err)
	}
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	cmd := exec.Command(bin, "-d", "-d", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	killed := false
	kill = func() {
		if killed {
			return
		}
		killed = true
		cmd.Process.Kill()
		<-done
	}
	t.Cleanup(kill)
	eventually(t, "socat links", func() bool {
		_, errA := os.Stat(a)
		_, errB := os.Stat(b)
		return errA == nil && errB == nil
	})
	return kill
}

// sensor writes a reading to dir/a every 20ms until stop is closed or the
// pty goes away.
func sensor(t *testing.T, dir string, stop <-chan struct{}) *sync.WaitGroup {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "a"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open sensor side: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer f.Close()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(f, "{\"t\": %d}\n", i); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	return &wg
}

func TestUnplugReplug(t *testing.T) {
	dir := t.TempDir()
	kill := socat(t, dir)
	stop1 := make(chan struct{})
	w1 := sensor(t, dir, stop1)
	drv, rec, stopRun := runDevices(t, devices.DeviceConfig{
		Name: "usb", Driver: "serial", Port: filepath.Join(dir, "b"), Parse: &devices.ParseConfig{JSON: true},
		Topic: "g/{device}/{point}", Points: []devices.PointConfig{{Name: "t"}},
	})
	eventually(t, "online with readings", func() bool { return rec.count("g/usb/t ") >= 3 })

	kill() // unplug: the gateway side reads EIO
	close(stop1)
	w1.Wait()
	eventually(t, "offline", func() bool { return rec.count("g/usb/availability offline") == 1 })
	before := rec.count("g/usb/t ")

	socat(t, dir) // replug under the same names (another /dev/pts/N behind the link)
	stop2 := make(chan struct{})
	w2 := sensor(t, dir, stop2)
	eventually(t, "online again with readings", func() bool {
		return rec.count("g/usb/availability online") == 2 && rec.count("g/usb/t ") >= before+3
	})
	stopRun()
	close(stop2)
	w2.Wait()

	var avail []string
	for _, l := range rec.lines() {
		if strings.HasPrefix(l, "g/usb/availability") {
			avail = append(avail, strings.TrimPrefix(l, "g/usb/availability "))
		}
	}
	if want := []string{"online", "offline", "online", "offline"}; !slices.Equal(avail, want) {
		t.Errorf("availability %q, want %q", avail, want)
	}
	if st := drv.Stats()["usb"]; st.Opens < 2 {
		t.Errorf("opens %d, want the port reopened after the replug", st.Opens)
	}
}

// TestSocatPythonSensor: a Python sensor on a socat pty pair writes good
// lines, garbage, invalid UTF-8, an over-long line, a line that does not
// parse and finally a line cut short by the port going away. Only the good
// lines are published; every bad one is counted under its reason.
func TestSocatPythonSensor(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is required for this test: %v", python, err)
	}
	dir := t.TempDir()
	socat(t, dir)
	drv, rec, stop := runDevices(t, devices.DeviceConfig{
		Name: "weather", Driver: "serial", Port: filepath.Join(dir, "b"), Timeout: 300 * time.Millisecond, MaxLineLength: 128,
		Parse: &devices.ParseConfig{Regex: `^T=(?P<temperature>-?[0-9.]+) H=(?P<humidity>[0-9.]+)$`},
		Topic: "myhome/garden/{device}/{point}", Payload: "value",
		Points: []devices.PointConfig{{Name: "temperature"}, {Name: "humidity"}},
	})
	eventually(t, "port open", func() bool { return drv.Stats()["weather"].Opens == 1 })
	out, err := exec.Command(python, "testdata/sensor.py", filepath.Join(dir, "a")).CombinedOutput()
	if err != nil {
		t.Fatalf("sensor.py: %v\n%s", err, out)
	}
	eventually(t, "partial line counted", func() bool { return drv.Stats()["weather"].Partial == 1 })
	stop()
	st := drv.Stats()["weather"]
	want := LineStats{Lines: 5, Parsed: 2, Garbage: 1, InvalidUTF8: 1, NoMatch: 1, TooLong: 1, Partial: 1}
	st.Opens, st.OpenErrors = 0, 0 // socat may or may not outlive the sensor; reopen attempts vary
	if st != want {
		t.Errorf("stats\n got %+v\nwant %+v", st, want)
	}
	var values []string
	for _, l := range rec.lines() {
		if !strings.Contains(l, "/availability") {
			values = append(values, l)
		}
	}
	want2 := []string{"myhome/garden/weather/temperature 21.5", "myhome/garden/weather/humidity 40",
		"myhome/garden/weather/temperature 22", "myhome/garden/weather/humidity 41"}
	if !slices.Equal(values, want2) {
		t.Errorf("published %q, want %q", values, want2)
	}
}
