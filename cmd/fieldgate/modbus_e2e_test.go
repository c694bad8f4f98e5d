package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startSlave runs the pymodbus slave script and waits for its "ready" line.
func startSlave(t *testing.T, args ...string) {
	t.Helper()
	need(t, python)
	cmd := exec.Command(python, append([]string{"testdata/modbus_slave.py"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("pymodbus slave exited: %s", errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("pymodbus slave not ready: %s", errb.String())
	}
}

// startSocat creates a pty pair at dir/ttyV0 (slave side) and dir/ttyV1.
func startSocat(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	need(t, "socat")
	a, b := filepath.Join(dir, "ttyV0"), filepath.Join(dir, "ttyV1")
	cmd := exec.Command("socat", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	eventually(t, 10*time.Second, "socat links", func() bool {
		return exec.Command("test", "-e", a, "-a", "-e", b).Run() == nil
	})
	return cmd
}

const modbusPoints = `    points:
      - {name: temperature, table: holding, address: 100, type: float32, order: CDAB, unit: "°C"}
      - {name: pressure, table: input, address: 3, type: int16, scale: 0.01, unit: bar}
      - {name: pump, table: coil, address: 0, type: bool, writable: true}
      - {name: setpoint, table: holding, address: 200, type: uint16, scale: 0.1, writable: true, min: 5, max: 80}
`

// The binary against Debian's pymodbus slave, over RTU on a socat pair (two
// unit ids on one port) and over TCP: every value checked, plus write-back.
func TestModbusPymodbus(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	dir := t.TempDir()
	startSocat(t, dir)
	startSlave(t, "rtu", filepath.Join(dir, "ttyV0"))
	tcpPort := freePort(t)
	startSlave(t, "tcp", fmt.Sprint(tcpPort))

	cfg := fmt.Sprintf(anonHeader+`devices:
  - name: rtu1
    driver: modbus
    transport: rtu
    port: %[1]s
    baud: 9600
    parity: N
    unit: 1
    poll: 200ms
    timeout: 500ms
    topic: "plant/{device}/{point}"
%[2]s  - name: rtu7
    driver: modbus
    transport: rtu
    port: %[1]s
    baud: 9600
    parity: N
    unit: 7
    poll: 200ms
    timeout: 500ms
    topic: "plant/{device}/{point}"
%[2]s  - name: tcp1
    driver: modbus
    transport: tcp
    address: 127.0.0.1:%[3]d
    unit: 1
    poll: 200ms
    topic: "plant/{device}/{point}"
%[2]s`, filepath.Join(dir, "ttyV1"), modbusPoints, tcpPort)
	g := startGW(t, dir, cfg)
	s := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-t", "plant/#")

	latest := func(topic string) (value any, ok bool) {
		lines := s.snapshot()
		for i := len(lines) - 1; i >= 0; i-- {
			if p, found := strings.CutPrefix(lines[i], topic+" "); found {
				var r struct {
					Value any    `json:"value"`
					TS    string `json:"ts"`
				}
				if json.Unmarshal([]byte(p), &r) != nil || r.TS == "" {
					return nil, false
				}
				return r.Value, true
			}
		}
		return nil, false
	}
	want := map[string]any{"temperature": 21.5, "pressure": 1.53, "pump": true, "setpoint": 45.0}
	for _, dev := range []string{"rtu1", "rtu7", "tcp1"} {
		for point, v := range want {
			topic := "plant/" + dev + "/" + point
			eventually(t, 15*time.Second, topic, func() bool {
				got, ok := latest(topic)
				return ok && fmt.Sprint(got) == fmt.Sprint(v)
			})
		}
		eventually(t, 5*time.Second, dev+" online", func() bool { return s.has("plant/" + dev + "/availability online") })
	}

	// Write-back through the same codec, confirmed by a read.
	for _, dev := range []string{"rtu7", "tcp1"} {
		if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "plant/"+dev+"/setpoint/set", "-m", "62.5"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		eventually(t, 10*time.Second, dev+" setpoint 62.5", func() bool {
			got, ok := latest("plant/" + dev + "/setpoint")
			return ok && fmt.Sprint(got) == "62.5"
		})
		if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "plant/"+dev+"/pump/set", "-m", "false"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		eventually(t, 10*time.Second, dev+" pump off", func() bool {
			got, ok := latest("plant/" + dev + "/pump")
			return ok && got == false
		})
	}
	// The other unit on the bus is untouched.
	if got, _ := latest("plant/rtu1/setpoint"); fmt.Sprint(got) != "45" {
		t.Errorf("rtu1 setpoint = %v, want 45 (only rtu7 was written)", got)
	}
	// Out of range: refused, nothing written.
	if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "plant/tcp1/setpoint/set", "-m", "99"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 10*time.Second, "refusal on the result topic", func() bool {
		for _, l := range s.snapshot() {
			if p, ok := strings.CutPrefix(l, "plant/tcp1/setpoint/set/result "); ok && strings.Contains(p, `"ok":false`) {
				return true
			}
		}
		return false
	})
	g.stop()

	// fieldgate probe finds the decoding that gives the expected value.
	out, errOut, code := runBin(t, "", "probe", "--address", fmt.Sprintf("127.0.0.1:%d", tcpPort), "--register", "100", "--count", "2", "--expect", "21.5")
	if code != 0 {
		t.Fatalf("probe: exit %d: %s", code, errOut)
	}
	_, ranked, _ := strings.Cut(out, "closest to 21.5 first:\n")
	first, _, _ := strings.Cut(ranked, "\n")
	if f := strings.Fields(first); len(f) != 4 || f[1] != "float32" || f[2] != "CDAB" || f[3] != "21.5" {
		t.Errorf("probe ranked %q first, want float32 CDAB 21.5:\n%s", first, out)
	}
}
