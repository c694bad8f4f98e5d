package main

// Browser tests of the web console: the built binary on configs/demo.yaml,
// driven by Debian's headless Chromium through chromedp. One Chromium
// serves every subtest.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"
)

// demoConfig returns configs/demo.yaml with the test's ports, upstream on
// upPort, and extra appended.
func demoConfig(t *testing.T, upPort int, httpHost, extra string) string {
	t.Helper()
	raw, err := os.ReadFile("../../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(
		"127.0.0.1:1883", "127.0.0.1:{{mqtt}}",
		"127.0.0.1:9180", httpHost+":{{http}}",
		"127.0.0.1:1884", fmt.Sprintf("127.0.0.1:%d", upPort),
		"./data", "{{data}}",
	).Replace(string(raw)) + extra
}

// newBrowser starts one headless Chromium for the test and returns a tab
// context.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	need(t, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath("chromium"),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// do runs chromedp steps with a deadline.
func do(t *testing.T, ctx context.Context, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// get runs one chromedp action with a deadline and returns its value.
func get[T any](t *testing.T, ctx context.Context, timeout time.Duration, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitJS waits until the JavaScript expression is truthy.
func waitJS(expr string, timeout time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout))
}

// screenshot saves the page as name.png in dir (or in
// $FIELDGATE_SCREENSHOTS when set) and logs the path.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := get(t, ctx, 20*time.Second, chromedp.FullScreenshot(100))
	if d := os.Getenv("FIELDGATE_SCREENSHOTS"); d != "" {
		dir = d
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

func TestConsoleBrowser(t *testing.T) {
	need(t, "chromium", "/usr/sbin/mosquitto")
	shots := t.TempDir()
	upPort := freePort(t)
	// The demo's devices, plus a Modbus TCP device that is not there.
	cfg := strings.Replace(demoConfig(t, upPort, "127.0.0.1", ""), "\nbridge:\n", fmt.Sprintf(`
  - name: pump
    driver: modbus
    transport: tcp
    address: 127.0.0.1:%d
    unit: 1
    poll: 1s
    timeout: 300ms
    topic: "myhome/cellar/{device}/{point}"
    points:
      - {name: speed, table: holding, address: 0, type: uint16, unit: rpm}

bridge:
`, freePort(t)), 1)
	g := startGW(t, t.TempDir(), cfg)
	base := fmt.Sprintf("http://127.0.0.1:%d", g.httpPort)
	ctx := newBrowser(t)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	t.Run("overview and backlog drain", func(t *testing.T) {
		do(t, ctx, 20*time.Second,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(css("#backlog-messages")),
			chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`),
		)
		first, _ := strconv.Atoi(get(t, ctx, 10*time.Second, chromedp.AttributeValue(css("#backlog-messages"), "data-value")).Value)
		// No upstream yet: the backlog grows on screen (the page refreshes
		// its numbers every 2 s without reloading).
		do(t, ctx, 20*time.Second, waitJS(fmt.Sprintf(
			`+document.querySelector("#backlog-messages").dataset.value > %d && window.notReloaded === true`, first+3), 15*time.Second))
		if st := get(t, ctx, 5*time.Second, chromedp.Text(css("#upstream-state"))); st == "connected" {
			t.Errorf("upstream state %q before the upstream exists", st)
		}
		if why := get(t, ctx, 5*time.Second, chromedp.Text(css(".banner.bad"))); !strings.Contains(why, "connection refused") {
			t.Errorf("the overview does not say why the upstream is down: %q", why)
		}
		screenshot(t, ctx, shots, "overview-no-upstream")

		startMosquitto(t, upPort)
		do(t, ctx, 90*time.Second, waitJS(
			`+document.querySelector("#backlog-messages").dataset.value < 5 && document.querySelector("#upstream-state").textContent == "connected" && window.notReloaded === true`,
			80*time.Second))
		screenshot(t, ctx, shots, "overview")
	})

	t.Run("devices listed and live", func(t *testing.T) {
		do(t, ctx, 20*time.Second,
			chromedp.Navigate(base+"/devices"),
			chromedp.WaitVisible(css(`[data-device="livingroom"]`)),
			chromedp.WaitVisible(css(`[data-device="boiler"]`)),
		)
		for _, p := range []string{"livingroom/temperature", "livingroom/humidity", "livingroom/door", "boiler/temperature", "boiler/starts", "boiler/setpoint"} {
			n := get(t, ctx, 5*time.Second, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll('tr[data-point=%q]').length`, p)))
			if n != 1 {
				t.Errorf("point %s listed %d times, want once", p, n)
			}
		}
		// A value changes on screen within 2 s, without a reload (the door
		// toggles at every 1 s poll).
		do(t, ctx, 10*time.Second,
			chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`),
			waitJS(`document.querySelector('tr[data-point="livingroom/door"] .v').textContent != "–"`, 5*time.Second),
		)
		before := get(t, ctx, 5*time.Second, chromedp.Text(css(`tr[data-point="livingroom/door"] .v`)))
		do(t, ctx, 5*time.Second, waitJS(fmt.Sprintf(
			`document.querySelector('tr[data-point="livingroom/door"] .v').textContent != %q && window.notReloaded === true`, before),
			2*time.Second))
		// The absent Modbus device is offline, with the reason in words.
		do(t, ctx, 15*time.Second, waitJS(
			`document.querySelector('[data-device="pump"] [data-k="state"]').textContent == "offline" && /refused/.test(document.querySelector('[data-device="pump"] [data-k="last_error"]').textContent)`,
			10*time.Second))
		screenshot(t, ctx, shots, "devices")

		do(t, ctx, 20*time.Second,
			chromedp.Navigate(base+"/devices/livingroom/temperature"),
			chromedp.WaitVisible(css(`#chart svg polyline`)),
		)
		screenshot(t, ctx, shots, "point")
	})

	t.Run("write through the form", func(t *testing.T) {
		do(t, ctx, 30*time.Second,
			chromedp.Navigate(base+"/write?device=boiler&point=setpoint"),
			chromedp.WaitVisible(css(`#value`)),
			chromedp.SendKeys(css(`#value`), "65"),
			chromedp.Click(css(`#write-submit`)),
			chromedp.WaitVisible(css(`#write-result.ok .confirmed`)),
		)
		if confirmed := get(t, ctx, 5*time.Second, chromedp.Text(css(`#write-result .confirmed`))); confirmed != "65" {
			t.Errorf("confirmed value %q, want 65", confirmed)
		}
		screenshot(t, ctx, shots, "write")
		do(t, ctx, 30*time.Second,
			chromedp.SetValue(css(`#value`), "95"),
			chromedp.Click(css(`#write-submit`)),
			chromedp.WaitVisible(css(`#write-result.bad`)),
		)
		if refused := get(t, ctx, 5*time.Second, chromedp.Text(css(`#write-result`))); !strings.Contains(refused, "maximum 80") {
			t.Errorf("out-of-range write shows %q, want the device's refusal", refused)
		}
		// The same path as an MQTT write: the devices validated, wrote and
		// read back.
		if !strings.Contains(g.log.String(), "write done") || !strings.Contains(g.log.String(), "write rejected") {
			t.Errorf("the devices did not log the writes")
		}
	})

	t.Run("broker log config pages", func(t *testing.T) {
		startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-i", "console-test-sub", "-t", "myhome/#")
		do(t, ctx, 20*time.Second,
			chromedp.Navigate(base+"/broker"),
			waitJS(`document.body.textContent.includes("console-test-sub")`, 10*time.Second),
		)
		screenshot(t, ctx, shots, "broker")
		do(t, ctx, 20*time.Second,
			chromedp.Navigate(base+"/log"),
			chromedp.WaitVisible(css(`#log tbody tr`)),
			// A write logs a line: it appears in the live tail.
			chromedp.Evaluate[chromedp.Void](`fetch("/api/v1/write", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content}, body: JSON.stringify({device: "boiler", point: "setpoint", value: "61"})}), null`),
			waitJS(`Array.from(document.querySelectorAll("#log .m")).some(e => e.textContent == "console write")`, 10*time.Second),
		)
		screenshot(t, ctx, shots, "log")
		do(t, ctx, 20*time.Second,
			chromedp.Navigate(base+"/config"),
			chromedp.WaitVisible(css(`pre.config`)),
		)
		screenshot(t, ctx, shots, "config")
		// On a phone.
		do(t, ctx, 20*time.Second,
			chromedp.EmulateViewport(390, 844),
			chromedp.Navigate(base+"/devices"),
			chromedp.WaitVisible(css(`[data-device="boiler"]`)),
		)
		screenshot(t, ctx, shots, "devices-phone")
		do(t, ctx, 20*time.Second,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(css(`#backlog-messages`)),
		)
		screenshot(t, ctx, shots, "overview-phone")
		do(t, ctx, 10*time.Second, chromedp.EmulateViewport(1280, 900))
	})

	t.Run("login required off loopback", func(t *testing.T) {
		hash, err := bcrypt.GenerateFromPassword([]byte("s3cret-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		extra := fmt.Sprintf("\nconsole:\n  users:\n    - {username: tech, password_hash: %q, role: write}\n", hash)
		g2 := startGW(t, t.TempDir(), demoConfig(t, freePort(t), "0.0.0.0", extra))
		base2 := fmt.Sprintf("http://127.0.0.1:%d", g2.httpPort)
		// Without a login, the API answers 401.
		for _, p := range []string{"/api/v1/overview", "/api/v1/devices", "/api/v1/devices/boiler/points/setpoint", "/api/v1/broker", "/api/v1/log", "/api/v1/config", "/api/v1/events", "/api/v1/session"} {
			resp, err := http.Get(base2 + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s without login: %d, want 401", p, resp.StatusCode)
			}
		}
		resp, err := http.Post(base2+"/api/v1/write", "application/json", strings.NewReader(`{"device":"boiler","point":"setpoint","value":"70"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST /api/v1/write without login: %d, want 401", resp.StatusCode)
		}
		// /healthz stays open for probes.
		if resp, err := http.Get(base2 + "/healthz"); err != nil || resp.StatusCode != 200 {
			t.Errorf("/healthz: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}

		// Every page sends the browser to the login form.
		do(t, ctx, 10*time.Second, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, network.ClearBrowserCookies, cdp.Empty{})
			return err
		}))
		for _, p := range []string{"/", "/devices", "/devices/boiler/setpoint", "/write", "/broker", "/log", "/config"} {
			do(t, ctx, 20*time.Second, chromedp.Navigate(base2+p), chromedp.WaitVisible(css(`#username`)))
			loc := get(t, ctx, 5*time.Second, chromedp.Location())
			body := get(t, ctx, 5*time.Second, chromedp.Text(css("main")))
			if !strings.Contains(loc, "/login") || strings.Contains(body, "livingroom") {
				t.Errorf("page %s without login: at %s showing %q", p, loc, body)
			}
		}
		// A wrong password is refused, then the right one gets in.
		do(t, ctx, 20*time.Second,
			chromedp.SendKeys(css(`#username`), "tech"),
			chromedp.SendKeys(css(`#password`), "wrong"),
			chromedp.Submit(css(`#password`)),
			chromedp.WaitVisible(css(`#login-error`)),
		)
		screenshot(t, ctx, shots, "login")
		do(t, ctx, 20*time.Second,
			chromedp.SetValue(css(`#username`), "tech"),
			chromedp.SetValue(css(`#password`), "s3cret-pw"),
			chromedp.Submit(css(`#password`)),
			chromedp.WaitVisible(css(`pre.config`)), // back on /config, where the last redirect came from
		)
		if !strings.Contains(g2.log.String(), "console login failed") {
			t.Errorf("the failed login was not logged")
		}
		// Logged in, a POST without the CSRF token is refused; with it, the
		// write goes through.
		codes := get(t, ctx, 30*time.Second, chromedp.Evaluate[[]int](`(async () => {
			const body = JSON.stringify({device: "boiler", point: "setpoint", value: "70"});
			const h = {"Content-Type": "application/json"};
			const a = await fetch("/api/v1/write", {method: "POST", headers: h, body});
			const b = await fetch("/api/v1/write", {method: "POST", headers: {...h, "X-CSRF-Token": "forged"}, body});
			const c = await fetch("/api/v1/write", {method: "POST", headers: {...h, "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content}, body});
			return [a.status, b.status, c.status];
		})()`, chromedp.EvalAwaitPromise))
		if want := []int{403, 403, 200}; fmt.Sprint(codes) != fmt.Sprint(want) {
			t.Errorf("write without token, forged token, real token: %v, want %v", codes, want)
		}
		// The session cookie is HttpOnly and SameSite=Strict.
		cookies := get(t, ctx, 10*time.Second, func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
			r, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
			return r.Cookies, err
		})
		if len(cookies) == 0 {
			t.Errorf("no session cookie")
		}
		for _, c := range cookies {
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
				t.Errorf("cookie %s: HttpOnly %v SameSite %q", c.Name, c.HTTPOnly, c.SameSite)
			}
		}
		// No secret reaches the browser.
		do(t, ctx, 20*time.Second, chromedp.Navigate(base2+"/config"), chromedp.WaitVisible(css("pre.config")))
		cfgText := get(t, ctx, 5*time.Second, chromedp.Text(css("pre.config")))
		if strings.Contains(cfgText, string(hash)) || !strings.Contains(cfgText, "[redacted]") {
			t.Errorf("config page leaks the password hash or redacts nothing:\n%s", cfgText)
		}
		apiText := get(t, ctx, 10*time.Second, chromedp.Evaluate[string](`fetch("/api/v1/config").then(r => r.text())`, chromedp.EvalAwaitPromise))
		var j map[string]any
		if err := json.Unmarshal([]byte(apiText), &j); err != nil || strings.Contains(apiText, string(hash)) {
			t.Errorf("api config leaks the hash or is not JSON (%v)", err)
		}
	})
}
