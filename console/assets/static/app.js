// fieldgate console: live updates without a framework.
"use strict";
(function () {
  const page = document.body.dataset.page;
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const $ = (s, el) => (el || document).querySelector(s);
  const $$ = (s, el) => Array.from((el || document).querySelectorAll(s));

  function dur(s) {
    if (!(s >= 0)) return "–";
    if (s < 60) return Math.round(s) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(Math.floor(s % 60)).padStart(2, "0") + "s";
    if (s < 172800) return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }
  function ago(ms) { return ms ? dur((Date.now() - ms) / 1000) + " ago" : "–"; }
  function fmtValue(v) {
    if (v === null || v === undefined) return "no value";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(10));
    return String(v);
  }

  // Relative times and staleness, re-evaluated every second.
  function tick() {
    $$("[data-ts]").forEach(el => {
      const ms = +el.dataset.ts;
      if (ms) el.textContent = ago(ms);
    });
    $$("[data-stale-after]").forEach(row => {
      const after = +row.dataset.staleAfter * 1000;
      const ts = +(($(".ts", row) || {}).dataset || {}).ts || 0;
      const q = ($(".q", row) || {}).textContent;
      // Only a value can be stale: a point never read shows "no value yet".
      const stale = ts > 0 && (row.dataset.offline === "1" || q === "bad" || (after > 0 && Date.now() - ts > after));
      row.classList.toggle("stale", stale);
      const big = $(".huge", row);
      if (big) big.classList.toggle("stale", stale);
    });
  }
  setInterval(tick, 1000);

  // Pages marked data-refresh re-render their main part from the server.
  function refresher() {
    const el = $("[data-refresh]");
    if (!el) return;
    const every = +el.dataset.refresh;
    setInterval(async () => {
      if (document.hidden) return;
      const u = new URL(location.href);
      u.searchParams.set("partial", "1");
      try {
        const r = await fetch(u, { credentials: "same-origin" });
        if (r.redirected || !r.ok) { live(false); return; } // logged out, or the gateway is stopping
        $("#main").innerHTML = await r.text();
        live(true);
      } catch (e) { live(false); }
    }, every);
  }

  function live(on) { const el = $("#live"); if (el) el.hidden = !on; }

  function stream(kinds, handlers) {
    const es = new EventSource("/api/v1/events?stream=" + kinds);
    es.onopen = () => live(true);
    es.onerror = () => live(false);
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, ev => fn(JSON.parse(ev.data)));
    }
    return es;
  }

  function applyPoint(p) {
    const id = p.device + "/" + p.point;
    $$('[data-point]').filter(el => el.dataset.point === id).forEach(row => {
      const v = $(".v", row);
      if (v) v.textContent = p.value === null || p.value === undefined ? "no value" : fmtValue(p.value);
      const q = $(".q", row);
      if (q) { q.textContent = p.quality; q.className = "q " + p.quality; }
      const ts = $(".ts", row);
      const ms = Date.parse(p.ts);
      if (ts) { ts.dataset.ts = ms; ts.textContent = ago(ms); }
      const err = $(".err", row);
      if (err) err.textContent = p.error || "none";
      if (row.tagName === "TR") { row.classList.remove("flash"); void row.offsetWidth; row.classList.add("flash"); }
    });
    if (chart && chart.id === id && typeof p.value !== "string" && p.value !== null && p.value !== undefined) {
      chart.add({ t: Date.parse(p.ts), v: typeof p.value === "boolean" ? (p.value ? 1 : 0) : p.value });
    }
    tick();
  }

  function applyDevices(list) {
    for (const d of list) {
      const card = $$(".device").find(el => el.dataset.device === d.name);
      if (card) {
        const st = $('[data-k="state"]', card);
        st.textContent = d.online ? "online" : "offline";
        st.className = "badge " + (d.online ? "ok" : "bad");
        $('[data-k="online"]', card).className = "dot " + (d.online ? "ok" : "bad");
        $('[data-k="poll_errors"]', card).textContent = d.poll_errors;
        $('[data-k="read_errors"]', card).textContent = d.read_errors;
        const ls = $('[data-k="last_sample"]', card);
        if (d.last_sample) ls.dataset.ts = Date.parse(d.last_sample);
        const le = $('[data-k="last_error"]', card);
        le.hidden = !d.last_error;
        if (d.last_error) le.textContent = d.last_error + " (" + ago(Date.parse(d.last_error_time)) + ")";
      }
      $$("[data-point]").filter(el => el.dataset.point.startsWith(d.name + "/")).forEach(row => {
        row.dataset.offline = d.online ? "0" : "1";
      });
    }
    tick();
  }

  // The point page's chart: an inline SVG polyline of the history ring.
  let chart = null;
  function makeChart(el) {
    const id = $("#point").dataset.point;
    let data = [];
    const max = 2000;
    function draw() {
      if (data.length < 2) return;
      const W = Math.max(el.clientWidth, 200), H = 220, L = 56, R = 10, T = 10, B = 24;
      let lo = Math.min(...data.map(d => d.v)), hi = Math.max(...data.map(d => d.v));
      if (lo === hi) { lo -= 1; hi += 1; }
      const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
      const t0 = data[0].t, t1 = data[data.length - 1].t || t0 + 1;
      const x = t => L + (W - L - R) * (t - t0) / Math.max(t1 - t0, 1);
      const y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
      const pts = data.map(d => x(d.t).toFixed(1) + "," + y(d.v).toFixed(1)).join(" ");
      const fmt = v => String(+v.toPrecision(4));
      const tf = t => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
      el.innerHTML =
        '<svg viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="history">' +
        '<line class="axis" x1="' + L + '" y1="' + T + '" x2="' + L + '" y2="' + (H - B) + '"/>' +
        '<line class="axis" x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) + '" y2="' + (H - B) + '"/>' +
        '<polygon class="area" points="' + x(t0).toFixed(1) + "," + (H - B) + " " + pts + " " + x(t1).toFixed(1) + "," + (H - B) + '"/>' +
        '<polyline class="line" points="' + pts + '"/>' +
        '<text x="' + (L - 6) + '" y="' + (T + 10) + '" text-anchor="end">' + fmt(hi - pad) + "</text>" +
        '<text x="' + (L - 6) + '" y="' + (H - B) + '" text-anchor="end">' + fmt(lo + pad) + "</text>" +
        '<text x="' + L + '" y="' + (H - 6) + '">' + tf(t0) + "</text>" +
        '<text x="' + (W - R) + '" y="' + (H - 6) + '" text-anchor="end">' + tf(t1) + "</text></svg>";
    }
    fetch(el.dataset.history, { credentials: "same-origin" }).then(r => r.json()).then(j => { data = j.history || []; draw(); });
    return { id, add(s) { data.push(s); if (data.length > max) data.shift(); draw(); } };
  }

  function writeForm() {
    const form = $("#write-form");
    if (!form) return;
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const target = $("#target").value, value = $("#value").value;
      const cut = target.indexOf("/"), device = target.slice(0, cut), point = target.slice(cut + 1);
      const out = $("#write-result"), btn = $("#write-submit");
      out.hidden = false; out.className = "result pending"; out.textContent = "Writing " + value + " to " + device + " / " + point + "…";
      btn.disabled = true;
      try {
        const r = await fetch("/api/v1/write", {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
          body: JSON.stringify({ device, point, value }),
        });
        const j = await r.json();
        out.className = "result " + (j.ok ? "ok" : "bad");
        out.textContent = "";
        if (j.ok) {
          out.append("Confirmed value: ");
          const s = document.createElement("strong"); s.className = "confirmed"; s.textContent = fmtValue(j.value); out.append(s);
        } else {
          out.textContent = "Refused: " + (j.error || r.statusText);
        }
      } catch (e) {
        out.className = "result bad"; out.textContent = "Request failed: " + e;
      } finally { btn.disabled = false; }
    });
  }

  function logPage() {
    const table = $("#log"), box = $("#logbox"), follow = $("#follow");
    const order = { DEBUG: 0, INFO: 1, WARN: 2, ERROR: 3 };
    const min = order[table.dataset.level.toUpperCase()] || 0;
    $("#level").addEventListener("change", ev => { location.search = "?level=" + ev.target.value; });
    box.scrollTop = box.scrollHeight;
    const body = $("tbody", table);
    stream("log", {
      log(l) {
        if ((order[l.level] || 0) < min) return;
        const empty = $("#log-empty"); if (empty) empty.remove();
        const tr = document.createElement("tr");
        tr.className = "lv-" + l.level;
        const t = new Date(l.time).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
        for (const [cls, text] of [["t", t], ["l", l.level]]) {
          const td = document.createElement("td"); td.className = cls; td.textContent = text; tr.append(td);
        }
        const td = document.createElement("td");
        const m = document.createElement("span"); m.className = "m"; m.textContent = l.msg;
        const a = document.createElement("span"); a.className = "a"; a.textContent = " " + l.attrs;
        td.append(m, a); tr.append(td);
        body.append(tr);
        while (body.rows.length > 1000) body.deleteRow(0);
        if (follow.checked) box.scrollTop = box.scrollHeight;
      },
      "log-dropped"(n) { $("#log-note").textContent = n + " lines skipped (too fast to show)"; },
    });
  }

  tick();
  refresher();
  if (page === "devices" || page === "point") {
    if (page === "point") { const el = $("#chart"); if (el) chart = makeChart(el); }
    stream("points", { point: applyPoint, devices: applyDevices });
  }
  if (page === "write") writeForm();
  if (page === "log") logPage();
})();
