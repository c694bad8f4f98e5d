package main

// Benchmarks of the web console's cost (not tests: they report numbers,
// they assert no speed). Run them with
//
//	go test ./cmd/fieldgate -run '^$' -bench Console -benchtime 1x
//
// BenchmarkConsoleIdleRSS: the gateway's resident memory after start-up on a
// 200-point config, console enabled (with the page open once) vs disabled.
// BenchmarkConsoleBrokerQoS1: broker QoS 1 throughput (one publisher, one
// subscriber) on that config with 0 or 3 live console viewers streaming.
// BenchmarkConsolePageLoad: first contentful paint of each page in headless
// Chromium on loopback.

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/chromedp/chromedp"
)

// config200 is a gateway with 10 simulated devices of 20 points each,
// polled every second, and no bridge.
func config200(extra string) string {
	var b strings.Builder
	b.WriteString(anonHeader)
	b.WriteString("devices:\n")
	for d := range 10 {
		fmt.Fprintf(&b, "  - name: dev%02d\n    driver: sim\n    poll: 1s\n    topic: \"bench/{device}/{point}\"\n    points:\n", d)
		for p := range 20 {
			kind := []string{"sine", "random", "counter", "toggle"}[p%4]
			fmt.Fprintf(&b, "      - {name: p%02d, sim: %s, min: 0, max: 100}\n", p, kind)
		}
	}
	return b.String() + extra
}

// rssKB reads VmRSS of pid.
func rssKB(b *testing.B, pid int) int {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// cpuSeconds reads the user+system CPU time of pid (clock ticks of 1/100 s).
func cpuSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

func BenchmarkConsoleIdleRSS(b *testing.B) {
	for _, tc := range []struct {
		name, extra string
		open        bool
	}{
		{"console=off", "console: {enabled: false}\n", false},
		{"console=on", "", false},
		{"console=on,pages-opened", "", true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var total, live float64
			for i := 0; b.Loop(); i++ {
				g := startGW(b, b.TempDir(), config200(tc.extra))
				if tc.open { // every page opened once
					for _, p := range []string{"/", "/devices", "/devices/dev00/p00", "/write", "/broker", "/log", "/config"} {
						resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", g.httpPort, p))
						if err != nil {
							b.Fatal(err)
						}
						resp.Body.Close()
					}
				}
				time.Sleep(10 * time.Second) // idle: 200 points polled and published every second
				total += float64(rssKB(b, g.cmd.Process.Pid)) / 1024
				live += metricValue(g.metrics(b), "go_gc_heap_live_bytes") / (1 << 20)
				g.stop()
			}
			b.ReportMetric(total/float64(b.N), "MB-rss")
			b.ReportMetric(live/float64(b.N), "MB-heap-live")
		})
	}
}

// viewer streams the console's live updates like an open Devices page and
// counts the events.
func viewer(ctx context.Context, url string, events *atomic.Int64) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url+"/api/v1/events?stream=points,log", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "event: ") {
			events.Add(1)
		}
	}
	return nil
}

func BenchmarkConsoleBrokerQoS1(b *testing.B) {
	const messages = 50000
	for _, viewers := range []int{0, 3} {
		b.Run(fmt.Sprintf("viewers=%d", viewers), func(b *testing.B) {
			g := startGW(b, b.TempDir(), config200(""))
			base := fmt.Sprintf("http://127.0.0.1:%d", g.httpPort)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var events atomic.Int64
			for range viewers {
				wg.Go(func() { _ = viewer(ctx, base, &events) })
			}
			defer func() { cancel(); wg.Wait() }()
			broker := fmt.Sprintf("tcp://127.0.0.1:%d", g.mqttPort)
			received := make(chan struct{}, messages)
			sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("bench-sub").SetCleanSession(true))
			if t := sub.Connect(); t.Wait() && t.Error() != nil {
				b.Fatal(t.Error())
			}
			defer sub.Disconnect(100)
			if t := sub.Subscribe("load/#", 1, func(mqtt.Client, mqtt.Message) { received <- struct{}{} }); t.Wait() && t.Error() != nil {
				b.Fatal(t.Error())
			}
			pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("bench-pub").SetMaxResumePubInFlight(64))
			if t := pub.Connect(); t.Wait() && t.Error() != nil {
				b.Fatal(t.Error())
			}
			defer pub.Disconnect(100)
			payload := []byte(strings.Repeat("x", 64))
			var rate, cpu float64
			for b.Loop() {
				start, cpu0 := time.Now(), cpuSeconds(b, g.cmd.Process.Pid)
				tokens := make([]mqtt.Token, 0, 64)
				for i := range messages {
					tokens = append(tokens, pub.Publish(fmt.Sprintf("load/%d", i%10), 1, false, payload))
					if len(tokens) == 64 { // 64 in flight
						for _, t := range tokens {
							t.Wait()
						}
						tokens = tokens[:0]
					}
				}
				for range messages {
					select {
					case <-received:
					case <-time.After(30 * time.Second):
						b.Fatal("subscriber stalled")
					}
				}
				rate = messages / time.Since(start).Seconds()
				cpu = (cpuSeconds(b, g.cmd.Process.Pid) - cpu0) * 1e6 / messages
			}
			b.ReportMetric(rate, "msgs/s")
			b.ReportMetric(cpu, "gateway-cpu-µs/msg")
			b.ReportMetric(float64(events.Load())/float64(max(viewers, 1)), "events/viewer")
		})
	}
}

func BenchmarkConsolePageLoad(b *testing.B) {
	need(b, "chromium")
	g := startGW(b, b.TempDir(), config200(""))
	base := fmt.Sprintf("http://127.0.0.1:%d", g.httpPort)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath("chromium"), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(b.TempDir()), chromedp.WindowSize(1280, 900))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		b.Fatal(err)
	}
	for _, page := range []string{"/", "/devices", "/devices/dev00/p00", "/write", "/broker", "/log", "/config"} {
		b.Run(strings.ReplaceAll(page, "/", "_"), func(b *testing.B) {
			var fcp, loaded float64
			for b.Loop() {
				tab, closeTab := chromedp.NewContext(ctx) // a fresh tab per load
				tctx, tcancel := context.WithTimeout(tab, 30*time.Second)
				err := chromedp.Do(tctx, chromedp.Navigate(base+page),
					chromedp.Poll[chromedp.Void](`performance.getEntriesByName("first-contentful-paint").length > 0`,
						chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
				var v []float64
				if err == nil {
					v, err = chromedp.Run(tctx, chromedp.Evaluate[[]float64](`[performance.getEntriesByName("first-contentful-paint")[0].startTime, performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd]`))
				}
				tcancel()
				closeTab()
				if err != nil {
					b.Fatal(err)
				}
				fcp += v[0]
				loaded += v[1]
			}
			b.ReportMetric(fcp/float64(b.N), "ms-first-paint")
			b.ReportMetric(loaded/float64(b.N), "ms-dom-loaded")
		})
	}
}
