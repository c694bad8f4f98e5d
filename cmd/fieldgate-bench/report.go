package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// goal is one target of issue 7, judged on this run's numbers.
type goal struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Want     string  `json:"want"`
	Measured float64 `json:"measured"` // a ratio or an absolute value, as Want says
	Status   string  `json:"status"`   // pass | miss | n/a
	Note     string  `json:"note,omitempty"`
}

// Metric names shared by goals and the table.
const (
	mRate     = "delivered msg/s"
	mDelivery = "delivery"
	mCPU      = "CPU µs/msg"
	mRSS      = "peak RSS MB"
)

func find(rs []result, scenario, target string) *result {
	for i := range rs {
		if rs[i].Scenario == scenario && rs[i].Target == target && rs[i].Error == "" {
			return &rs[i]
		}
	}
	return nil
}

func status(ok bool) string {
	if ok {
		return "pass"
	}
	return "miss"
}

// goals judges the results against the goals. A goal whose inputs
// are missing (a target not run or a scenario that failed) is n/a.
func goals(o *options, rs []result) []goal {
	var gs []goal
	ratioGoal := func(scenario, metric, want string, min float64, lowerIsBetter bool, val func(*result) float64) {
		g := goal{Scenario: scenario, Metric: metric, Want: want, Status: "n/a"}
		gw, mq := find(rs, scenario, "gateway"), find(rs, scenario, "mosquitto")
		if gw != nil && mq != nil && val(mq) > 0 {
			g.Measured = val(gw) / val(mq)
			if lowerIsBetter {
				g.Status = status(g.Measured <= min)
			} else {
				g.Status = status(g.Measured >= min)
			}
		}
		gs = append(gs, g)
	}
	for _, q := range []int{0, 1, 2} {
		for _, sh := range shapes {
			name := fmt.Sprintf("qos%d-%s", q, sh.name)
			if !o.selected(name) {
				continue
			}
			min, want := 1.0, "≥ 1.0× mosquitto"
			if q == 0 {
				min, want = 0.9, "≥ 0.9× mosquitto"
			}
			ratioGoal(name, mRate, want, min, false, func(r *result) float64 { return r.Rate })
			if q > 0 {
				g := goal{Scenario: name, Metric: mDelivery, Want: "100%", Status: "n/a"}
				if gw := find(rs, name, "gateway"); gw != nil {
					g.Measured = gw.DeliveryRatio
					g.Status = status(gw.Delivered == gw.Expected && gw.Expected > 0)
				}
				gs = append(gs, g)
			}
			ratioGoal(name, mCPU, "≤ 2× mosquitto", 2, true, func(r *result) float64 { return r.CPUPerMsg })
		}
	}
	abs := func(scenario, metric, want string, ok func(*result) (float64, bool), note string) {
		g := goal{Scenario: scenario, Metric: metric, Want: want, Status: "n/a", Note: note}
		if gw := find(rs, scenario, "gateway"); gw != nil {
			v, pass := ok(gw)
			g.Measured, g.Status = v, status(pass)
		}
		gs = append(gs, g)
	}
	if o.selected("ingest") {
		abs("ingest", "acked msg/s", "≥ 100000 at 64 in flight", func(r *result) (float64, bool) { return r.Rate, r.Rate >= 100_000 }, "")
	}
	if o.selected("idle") {
		abs("idle", mRSS, "≤ 20 MB", func(r *result) (float64, bool) { return mb(r.PeakRSS), r.PeakRSS <= 20<<20 }, "")
	}
	if o.selected("drain") {
		note := ""
		if o.drainMessages < 1_000_000 {
			note = fmt.Sprintf("backlog was %d, not 1M", o.drainMessages)
		}
		abs("drain", mRSS, "≤ 128 MB with 1M backlog", func(r *result) (float64, bool) { return mb(r.PeakRSS), r.PeakRSS <= 128<<20 }, note)
		abs("drain", "drain s", "≤ 25 s for 1M, all delivered", func(r *result) (float64, bool) {
			return r.Seconds, r.Seconds > 0 && r.Seconds <= 25 && r.Delivered == r.Expected && r.Expected > 0
		}, note)
	}
	return gs
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// deliveryCell shows the unique-delivery ratio, with the count of lost
// messages whenever any was lost (99.997% would otherwise read as 100.00%).
func deliveryCell(x *result) string {
	if x == nil {
		return "—"
	}
	if lost := x.Expected - x.Delivered; lost > 0 {
		return fmt.Sprintf("%.3f%% (%d lost)", 100*x.DeliveryRatio, lost)
	}
	return fmt.Sprintf("%.2f%%", 100*x.DeliveryRatio)
}

func deliveryRow(w io.Writer, scenario string, gw, mq *result, goalFor func(string, string) (string, string)) {
	want, st := goalFor(scenario, mDelivery)
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", scenario, mDelivery, deliveryCell(gw), deliveryCell(mq), "", want, st)
}

// printTable writes the one human table: every metric of every scenario,
// gateway beside mosquitto, the ratio, and the goal with pass/miss.
func printTable(w io.Writer, rep *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tmetric\tgateway\tmosquitto\tratio\tgoal\tresult\t")
	goalFor := func(scenario, metric string) (string, string) {
		for _, g := range rep.Goals {
			if g.Scenario == scenario && g.Metric == metric {
				st := g.Status
				if g.Note != "" {
					st += " (" + g.Note + ")"
				}
				return g.Want, st
			}
		}
		return "", ""
	}
	var errs []string
	seen := map[string]bool{}
	for _, r := range rep.Results {
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("%s on %s: %s", r.Scenario, r.Target, r.Error))
		}
		if seen[r.Scenario] {
			continue
		}
		seen[r.Scenario] = true
		gw, mq := find(rep.Results, r.Scenario, "gateway"), find(rep.Results, r.Scenario, "mosquitto")
		if r.Scenario == "ingest-floor" {
			gw = find(rep.Results, r.Scenario, "floor") // shown in the first column; the note says what it is
		}
		row := func(metric string, val func(*result) (float64, bool), format string, ratio bool) {
			cell := func(x *result) (string, float64) {
				if x == nil {
					return "—", 0
				}
				v, ok := val(x)
				if !ok {
					return "n/a", 0
				}
				return fmt.Sprintf(format, v), v
			}
			g, gv := cell(gw)
			m, mv := cell(mq)
			if (g == "n/a" || g == "—") && (m == "n/a" || m == "—") {
				return // nothing measured on either side (e.g. an older report)
			}
			rt := ""
			if ratio && gv > 0 && mv > 0 {
				rt = fmt.Sprintf("%.2f×", gv/mv)
			}
			want, st := goalFor(r.Scenario, metric)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Scenario, metric, g, m, rt, want, st)
		}
		always := func(f func(*result) float64) func(*result) (float64, bool) {
			return func(x *result) (float64, bool) { return f(x), true }
		}
		switch {
		case strings.HasPrefix(r.Scenario, "qos"):
			row(mRate, always(func(x *result) float64 { return x.Rate }), "%.0f", true)
			deliveryRow(tw, r.Scenario, gw, mq, goalFor)
			row(mCPU, always(func(x *result) float64 { return 1e6 * x.CPUPerMsg }), "%.2f", true)
			row("write syscalls/msg", func(x *result) (float64, bool) { v, ok := x.Extra["write_syscalls_per_msg"]; return v, ok }, "%.3f", true)
			row(mRSS, always(func(x *result) float64 { return mb(x.PeakRSS) }), "%.1f", true)
		case r.Scenario == "idle":
			row(mRSS, always(func(x *result) float64 { return mb(x.PeakRSS) }), "%.1f", true)
		case r.Scenario == "ingest" || r.Scenario == "ingest-nostore" || r.Scenario == "ingest-floor":
			extra := func(k string, scale float64) func(*result) (float64, bool) {
				return func(x *result) (float64, bool) { v, ok := x.Extra[k]; return v * scale, ok }
			}
			row("acked msg/s", func(x *result) (float64, bool) { return x.Rate, true }, "%.0f", false)
			row("fsync ms (data dir)", extra("fsync_ms", 1), "%.2f", false)
			row("64 / fsync msg/s", extra("fsync_bound_per_s", 1), "%.0f", false)
			row("write+fdatasync ms", extra("batch_sync_ms", 1), "%.2f", false)
			row("msgs per fdatasync", extra("msgs_per_fsync", 1), "%.1f", false)
			row(mCPU, always(func(x *result) float64 { return 1e6 * x.CPUPerMsg }), "%.2f", false)
			row("bench CPU µs/msg", extra("bench_cpu_s_per_msg", 1e6), "%.2f", false)
			row("CPU-bound msg/s", extra("cpu_bound_per_s", 1), "%.0f", false)
			row(mRSS, always(func(x *result) float64 { return mb(x.PeakRSS) }), "%.1f", false)
		case r.Scenario == "drain":
			extra := func(k string, scale float64) func(*result) (float64, bool) {
				return func(x *result) (float64, bool) { v, ok := x.Extra[k]; return v * scale, ok }
			}
			row("fill acked msg/s", extra("fill_rate_per_s", 1), "%.0f", false)
			row("backlog before drain", extra("backlog_before", 1), "%.0f", false)
			row("drained msg/s", always(func(x *result) float64 { return x.Rate }), "%.0f", false)
			row("drain s", always(func(x *result) float64 { return x.Seconds }), "%.1f", false)
			row("reconnect s", extra("reconnect_s", 1), "%.2f", false)
			row(mCPU, always(func(x *result) float64 { return 1e6 * x.CPUPerMsg }), "%.2f", false)
			row("upstream CPU µs/msg", extra("upstream_cpu_s_per_msg", 1e6), "%.2f", false)
			row("bench CPU µs/msg", extra("bench_cpu_s_per_msg", 1e6), "%.2f", false)
			row(mDelivery, always(func(x *result) float64 { return 100 * x.DeliveryRatio }), "%.2f%%", false)
			row("fill peak RSS MB", extra("fill_peak_rss_bytes", 1.0/(1<<20)), "%.1f", false)
			row("drain peak RSS MB", extra("drain_peak_rss_bytes", 1.0/(1<<20)), "%.1f", false)
			row(mRSS, always(func(x *result) float64 { return mb(x.PeakRSS) }), "%.1f", false)
		case strings.HasPrefix(r.Scenario, "modbus"):
			row("polls/s", always(func(x *result) float64 { return x.Rate }), "%.1f", false)
			row("wire-limited polls/s", func(x *result) (float64, bool) { v, ok := x.Extra["wire_limit_per_s"]; return v, ok }, "%.1f", false)
		}
	}
	tw.Flush()
	if len(errs) > 0 {
		fmt.Fprintln(w, "\nerrors:")
		for _, e := range errs {
			fmt.Fprintln(w, "  "+e)
		}
	}
	for _, r := range rep.Results {
		if r.Note != "" {
			fmt.Fprintf(w, "note: %s on %s: %s\n", r.Scenario, r.Target, r.Note)
		}
	}
}
