package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkCase is one field mistake: a config, the exit code of `fieldgate
// check` and the words the user must see.
type checkCase struct {
	name string
	cfg  string // {{dir}} is the test directory
	code int
	want []string
}

func runCheckCases(t *testing.T, cases []checkCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "fieldgate.yaml")
			if err := os.WriteFile(path, []byte(strings.ReplaceAll(c.cfg, "{{dir}}", dir)), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := runBin(t, "", "check", "--config", path)
			all := strings.ReplaceAll(out+errOut, dir, "{{dir}}")
			if code != c.code {
				t.Errorf("exit %d, want %d", code, c.code)
			}
			for _, w := range c.want {
				if !strings.Contains(all, w) {
					t.Errorf("missing %q", w)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", all)
			}
		})
	}
}

// Every *_file key is opened by check: a missing or unreadable file is a
// problem with its key and line, exit 1.
func TestCheckSecretFiles(t *testing.T) {
	if os.Geteuid() == 0 {
		// root reads any file; the permission case below needs another user
		t.Log("running as root: the unreadable-file case checks a directory instead")
	}
	runCheckCases(t, []checkCase{
		{
			name: "missing password_file",
			cfg:  "gateway: {id: gw1, data_dir: {{dir}}/data}\nbroker: {auth: {anonymous: true}}\nbridge:\n  upstream:\n    url: mqtt://127.0.0.1:1883\n    username: gw1\n    password_file: {{dir}}/upstream.pass\n  forward: [{filter: '#'}]\n",
			code: exitConfig,
			want: []string{"bridge.upstream.password_file (line 7): {{dir}}/upstream.pass does not exist"},
		},
		{
			name: "missing ca_file",
			cfg:  "gateway: {id: gw1, data_dir: {{dir}}/data}\nbroker: {auth: {anonymous: true}}\nbridge:\n  upstream:\n    url: mqtts://127.0.0.1:8883\n    tls:\n      ca_file: {{dir}}/ca.pem\n  forward: [{filter: '#'}]\n",
			code: exitConfig,
			want: []string{"bridge.upstream.tls.ca_file (line 7): {{dir}}/ca.pem does not exist"},
		},
		{
			name: "client cert_file is a directory",
			cfg:  "gateway: {id: gw1, data_dir: {{dir}}/data}\nbroker: {auth: {anonymous: true}}\nbridge:\n  upstream:\n    url: mqtts://127.0.0.1:8883\n    tls: {cert_file: {{dir}}, key_file: {{dir}}/k.pem}\n  forward: [{filter: '#'}]\n",
			code: exitConfig,
			want: []string{
				"bridge.upstream.tls.cert_file (line 6): {{dir}} is a directory, not a file",
				"bridge.upstream.tls.key_file (line 6): {{dir}}/k.pem does not exist",
			},
		},
		{
			name: "listener key_file missing",
			cfg:  "gateway: {id: gw1, data_dir: {{dir}}/data}\nbroker:\n  listeners:\n    - type: tls\n      address: 127.0.0.1:8883\n      tls: {cert_file: {{dir}}/s.crt, key_file: {{dir}}/s.key}\n  auth: {anonymous: true}\n",
			code: exitConfig,
			want: []string{"broker.listeners[0].tls.cert_file (line 6)", "s.crt"},
		},
	})
}

// Valid but almost certainly wrong settings are warnings: exit 0, each with
// its key, line and what to do.
func TestCheckWarnings(t *testing.T) {
	const head = "gateway: {id: gw1, data_dir: {{dir}}/data}\n"
	const sim = "devices:\n  - name: d\n    driver: sim\n    points: [{name: t, sim: sine, min: 1, max: 2}]\n"
	runCheckCases(t, []checkCase{
		{
			name: "acl for an unknown user",
			cfg:  head + "broker:\n  auth:\n    anonymous: true\n    acl:\n      - {username: bob, publish: ['a/#']}\n",
			want: []string{`warning: broker.auth.acl[0].username (line 6): user "bob" is not in broker.auth.users: this rule applies to no one`},
		},
		{
			name: "tls with mqtt url",
			cfg:  head + "broker: {auth: {anonymous: true}}\nbridge:\n  upstream:\n    url: mqtt://127.0.0.1:8883\n    tls: {server_name: cloud.example.com}\n  forward: [{filter: '#'}]\n",
			want: []string{"warning: bridge.upstream.tls (line 6): set, but the URL is mqtt:// (no TLS)", "use mqtts://"},
		},
		{
			name: "tls with ws url",
			cfg:  head + "broker: {auth: {anonymous: true}}\nbridge:\n  upstream:\n    url: ws://127.0.0.1:8080/mqtt\n    tls: {insecure_skip_verify: true}\n  forward: [{filter: '#'}]\n",
			want: []string{"warning: bridge.upstream.tls (line 6): set, but the URL is ws://", "use wss://"},
		},
		{
			name: "anonymous off and no users",
			cfg:  head + "broker:\n  auth:\n    anonymous: false\n",
			want: []string{"warning: broker.auth (line 3): anonymous is off and there are no users: no MQTT client can connect"},
		},
		{
			name: "serial port by number",
			cfg:  head + "broker: {auth: {anonymous: true}}\ndevices:\n  - name: meter\n    driver: modbus\n    transport: rtu\n    port: /dev/ttyUSB0\n    points: [{name: v, table: holding, address: 0, type: uint16}]\n",
			want: []string{"warning: devices[0].port (line 7): /dev/ttyUSB0 is numbered in plug order", "/dev/serial/by-id/"},
		},
		{
			name: "deadband without heartbeat or retain",
			cfg:  head + "broker: {auth: {anonymous: true}}\ndevices:\n  - name: d\n    driver: sim\n    points:\n      - {name: t, sim: sine, min: 1, max: 2, deadband: 0.5}\n",
			want: []string{"warning: devices[0].points[0].deadband (line 7): a deadband with neither heartbeat nor retain", "heartbeat: 5m or retain: true"},
		},
		{
			name: "size in bits",
			cfg:  head + "broker: {auth: {anonymous: true}}\nbridge:\n  upstream: {url: mqtt://127.0.0.1:1883}\n  forward: [{filter: '#'}]\n  buffer: {max_bytes: 32 Mb}\n",
			want: []string{`warning: bridge.buffer.max_bytes (line 6): "32 Mb" is read as bytes (32 MB)`, "write MB or MiB"},
		},
		{
			name: "register number instead of address",
			cfg:  head + "broker: {auth: {anonymous: true}}\ndevices:\n  - name: meter\n    driver: modbus\n    transport: tcp\n    address: 127.0.0.1:502\n    points:\n      - {name: v, table: holding, address: 40001, type: uint16}\n",
			want: []string{"warning: devices[0].points[0].address (line 9): 40001 looks like a Modbus register number (4xxxx); fieldgate takes the 0-based address, so it is probably address: 0 (table: holding)"},
		},
		{
			name: "device topics no forward route carries",
			cfg:  head + "broker: {auth: {anonymous: true}}\ndevices:\n  - name: boiler\n    driver: sim\n    topic: 'home/{device}/{point}'\n    points: [{name: t, sim: toggle}]\nbridge:\n  upstream: {url: 'mqtt://127.0.0.1:1883'}\n  forward: [{filter: 'myhome/#'}]\n",
			want: []string{"warning: devices[0].topic (line 6): no bridge.forward filter matches this device's topics (e.g. home/boiler/t): its readings stay on this gateway"},
		},
		{
			name: "gateway id left to a shared host name is not warned when set",
			cfg:  "gateway: {id: raspberrypi, data_dir: {{dir}}/data}\nbroker: {auth: {anonymous: true}}\n" + sim,
			want: []string{": ok\n"},
		},
	})
}

// Type errors name the key and say in plain words what is wanted; YAML
// syntax errors point at the wrong line, not the start of its block.
func TestCheckPlainErrors(t *testing.T) {
	runCheckCases(t, []checkCase{
		{
			name: "text where a number goes",
			cfg:  "devices:\n  - name: d\n    driver: sim\n    points:\n      - {name: t, sim: sine, min: 1, max: abc}\n",
			code: exitConfig,
			want: []string{`devices[0].points[0].max (line 5): "abc" must be a number`},
		},
		{
			name: "duration without unit",
			cfg:  "gateway:\n  id: x\n  shutdown_timeout: 10\n",
			code: exitConfig,
			want: []string{`gateway.shutdown_timeout (line 3): "10" needs a unit, e.g. 10s`},
		},
		{
			name: "mapping where a list goes",
			cfg:  "devices:\n  - name: a\n    driver: sim\n    points: {name: x}\n",
			code: exitConfig,
			want: []string{"devices[0].points (line 4): must be a list (- item, or [a, b]), not a mapping"},
		},
		{
			name: "word where a boolean goes",
			cfg:  "broker:\n  auth:\n    anonymous: maybe\n",
			code: exitConfig,
			want: []string{`broker.auth.anonymous (line 3): "maybe" must be true or false`},
		},
		{
			name: "bad size",
			cfg:  "bridge:\n  upstream: {url: mqtt://127.0.0.1:1883}\n  buffer:\n    max_bytes: lots\n",
			code: exitConfig,
			want: []string{`bridge.buffer.max_bytes (line 4): invalid size "lots"`},
		},
		{
			name: "mis-indented key in a list",
			cfg:  "gateway:\n  id: x\ndevices:\n  - name: a\n    driver: sim\n   points:\n      - {name: x, sim: toggle}\n",
			code: exitConfig,
			want: []string{"line 6: did not find expected '-' indicator (check the indentation"},
		},
		{
			name: "mis-indented key in a mapping",
			cfg:  "devices:\n  - name: a\n    driver: sim\n    points:\n      - name: x\n       sim: sine\n",
			code: exitConfig,
			want: []string{"line 6: "},
		},
		{
			name: "unclosed brace",
			cfg:  "devices:\n  - name: a\n    driver: sim\n    points:\n      - {name: x, sim: toggle\n      - {name: y, sim: toggle}\n",
			code: exitConfig,
			want: []string{"line 5: did not find expected ',' or '}' (a '{' or '[' that is not closed on this line)"},
		},
		{
			name: "valid range without bounds",
			cfg:  "devices:\n  - name: a\n    driver: sim\n    points:\n      - {name: x, sim: sine, min: 1, max: 2, valid: {}}\n",
			code: exitConfig,
			want: []string{"devices[0].points[0].valid (line 5): needs min, max or both, e.g. valid: {min: 0, max: 400}"},
		},
		{
			name: "valid range upside down",
			cfg:  "devices:\n  - name: a\n    driver: sim\n    points:\n      - {name: x, sim: sine, min: 1, max: 2, valid: {min: 400, max: 0}}\n",
			code: exitConfig,
			want: []string{"devices[0].points[0].valid.max (line 5): max (0) is below min (400)"},
		},
		{
			name: "key on a modbus point",
			cfg:  "devices:\n  - name: a\n    driver: modbus\n    transport: tcp\n    address: 127.0.0.1:502\n    points:\n      - {name: x, key: T, table: holding, address: 0, type: uint16}\n",
			code: exitConfig,
			want: []string{"devices[0].points[0].key (line 7): key is only valid for driver serial with parse: {kv: true} or {json: true}"},
		},
		{
			name: "misspelt key",
			cfg:  "devices:\n  - name: d\n    driver: sim\n    point: [{name: t, sim: toggle}]\n",
			code: exitConfig,
			want: []string{`devices[0].point (line 4): unknown key "point" (did you mean "points"?)`},
		},
		{
			name: "duration in days",
			cfg:  "bridge:\n  upstream: {url: \"mqtt://127.0.0.1:1883\"}\n  buffer: {max_age: 7d}\n",
			code: exitConfig,
			want: []string{`bridge.buffer.max_age (line 3): "7d" must be a duration in h, m, s or ms: there are no days, write 168h`},
		},
		{
			name: "listener port without host",
			cfg:  "broker:\n  listeners:\n    - {type: tcp, address: 1883}\n",
			code: exitConfig,
			want: []string{"broker.listeners[0].address (line 3): ", "(write host:port, e.g. 0.0.0.0:1883)"},
		},
		{
			name: "password instead of its hash",
			cfg:  "broker:\n  auth:\n    users: [{username: bob, password_hash: secret}]\n",
			code: exitConfig,
			want: []string{"broker.auth.users[0].password_hash (line 3): ", "takes the hash that `fieldgate passwd` prints, not the password itself"},
		},
		{
			name: "tab indentation",
			cfg:  "gateway:\n  id: x\n\tdata_dir: /tmp\n",
			code: exitConfig,
			want: []string{"line 3: found a tab character that violates indentation (indent with spaces"},
		},
	})
}
