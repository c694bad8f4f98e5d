package gateway

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/devices"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// The discovery payloads of each config under testdata/homeassistant/*/
// (every entity type and unit class, Home Assistant on the local broker and
// upstream) against discovery.golden.
func TestHomeAssistantGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/homeassistant/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			got := renderPlan(t, filepath.Join(dir, "fieldgate.yaml"))
			golden := filepath.Join(dir, "discovery.golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("discovery differs from %s (-want +got; go test -run %s -update rewrites it):\n%s", golden, t.Name(), diff)
			}
		})
	}
}

// renderPlan loads a config and prints its discovery plan: the lifecycle
// topics, then every message's local and remote topic and its payload,
// indented.
func renderPlan(t *testing.T, path string) string {
	t.Helper()
	cfg, err := Load(path, Drivers(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	set, err := devices.New(cfg.Devices, devices.Options{Gateway: cfg.Gateway.ID, Drivers: Drivers(slog.New(slog.DiscardHandler)), Publisher: nopPublisher{}})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := haPlan(cfg, set.Devices(), "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "status (local): %s\navailability (local): %s\nqos: %d\n", plan.Status, plan.Availability, plan.QoS)
	for _, m := range plan.Messages {
		var ind bytes.Buffer
		if err := json.Indent(&ind, m.Payload, "", "  "); err != nil {
			t.Fatalf("%s: payload is not JSON: %v", m.Topic, err)
		}
		fmt.Fprintf(&b, "\n%s (as Home Assistant sees it: %s)\n%s\n", m.Topic, m.Remote, ind.String())
	}
	return b.String()
}

// `check` reports the section's own keys, the device map's overrides and,
// upstream, a discovery target that no route carries, each with its line.
func TestHomeAssistantProblems(t *testing.T) {
	text := `gateway: {id: gw}
integrations:
  homeassistant:
    broker: upstream
    qos: 3
bridge:
  upstream: {url: "mqtt://127.0.0.1:1"}
  forward: [{filter: "myhome/#", prefix: "sites/{gateway}/"}]
devices:
  - name: boiler
    driver: sim
    topic: "myhome/{device}/{point}"
    points:
      - {name: t, sim: constant, value: 1, unit: kWh, homeassistant: {state_class: measurement}}
`
	_, ce := parse(t, text)
	if ce == nil {
		t.Fatal("no problems reported")
	}
	var got []string
	for _, p := range ce.Problems {
		got = append(got, p.String())
	}
	want := []string{`integrations.homeassistant.qos (line 5): 3: want 0, 1 or 2`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("own keys (-want +got):\n%s", diff)
	}

	_, ce = parse(t, strings.Replace(text, "    qos: 3\n", "", 1))
	got = nil
	for _, p := range ce.Problems {
		got = append(got, p.String())
	}
	want = []string{
		`integrations.homeassistant.status_topic (line 3): "homeassistant/status": no bridge.subscribe route brings Home Assistant's status messages down to the gateway (add a route whose filter matches it)`,
		`integrations.homeassistant.broker (line 4): upstream: discovery topic "homeassistant/binary_sensor/gw/status/config" is not carried by any bridge.forward route (add one whose prefix and filter produce it, e.g. {filter: "homeassistant/#", prefix: ""})`,
		`integrations.homeassistant.broker (line 4): upstream: discovery topic "homeassistant/sensor/gw/boiler_t/config" is not carried by any bridge.forward route (add one whose prefix and filter produce it, e.g. {filter: "homeassistant/#", prefix: ""})`,
		`devices[0].points[0].homeassistant.state_class (line 13): device_class energy needs state_class total or total_increasing (Home Assistant refuses measurement, and the Energy dashboard lists only totals)`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}

	// No bridge at all.
	_, ce = parse(t, "gateway: {id: gw}\nintegrations:\n  homeassistant: {broker: upstream}\n")
	if ce == nil || len(ce.Problems) != 1 || ce.Problems[0].String() != "integrations.homeassistant.broker (line 3): upstream: there is no bridge section, so nothing reaches an upstream broker" {
		t.Errorf("no bridge: %v", ce)
	}
}

// Every configuration example in configs/ and testdata/homeassistant/
// passes check with discovery on.
func TestHomeAssistantExamplesLoad(t *testing.T) {
	for _, path := range []string{"../configs/fieldgate.yaml", "testdata/homeassistant/local/fieldgate.yaml", "testdata/homeassistant/upstream/fieldgate.yaml"} {
		cfg, err := Load(path, Drivers(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if path == "../configs/fieldgate.yaml" && cfg.Integrations.HomeAssistant == nil {
			t.Errorf("%s: no integrations.homeassistant example", path)
		}
	}
}
