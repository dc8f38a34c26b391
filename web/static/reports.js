// hyper2kvm dashboard Reports view: the workflow's numbers from
// GET /api/workflow/analytics (what hyperctl report prints) drawn as plain
// SVG, no chart library: jobs per day by outcome with the day's
// throughput, time per stage (p50 and p95), failures by stage and reason.
// Every chart has a text alternative (role="img", aria-label, <title>s).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, String(v));
    }
    for (const k of kids) if (k) e.append(k);
    return e;
  }

  const title = (t) => svg("title", { text: t });
  const gib = (b) => (b / 2 ** 30).toFixed(b >= 10 * 2 ** 30 ? 0 : 1) + " GiB";
  const secs = (s) => (s >= 90 ? (s / 60).toFixed(1) + " min" : s.toFixed(1) + " s");

  function none(box, text) {
    box.replaceChildren(Object.assign(document.createElement("p"), { className: "none", textContent: text }));
  }

  // days: stacked bars (completed, failed, cancelled) per day, and the
  // day's throughput as a line on its own scale.
  function drawDays(days) {
    const box = $("chart-days");
    if (!days.length) return none(box, "No job finished in this window.");
    const W = 360, H = 180, L = 28, B = 28, T = 10;
    const n = days.length, bw = (W - L - 8) / n;
    const maxJobs = Math.max(1, ...days.map((d) => d.completed + d.failed + d.cancelled));
    const maxRate = Math.max(0, ...days.map((d) => d.throughput_gib_per_hour));
    const y = (v) => H - B - (v / maxJobs) * (H - B - T);
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: "svg-days",
      "aria-label": days.map((d) => `${d.day}: ${d.completed} completed, ${d.failed} failed, ${d.cancelled} cancelled, ${gib(d.bytes_converted)} at ${d.throughput_gib_per_hour} GiB/h`).join("; ") });
    s.append(svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, stroke: "currentColor" }));
    s.append(svg("text", { x: 2, y: T + 8, text: String(maxJobs) }), svg("text", { x: 2, y: H - B, text: "0" }));
    const pts = [];
    days.forEach((d, i) => {
      const x = L + i * bw + bw * 0.15, w = bw * 0.7;
      let base = 0;
      for (const [k, cls] of [["completed", "bar-ok"], ["failed", "bar-bad"], ["cancelled", "bar-muted"]]) {
        if (!d[k]) continue;
        s.append(svg("rect", { x, y: y(base + d[k]), width: w, height: y(base) - y(base + d[k]), class: cls, "data-day": d.day, "data-kind": k },
          title(`${d.day}: ${d[k]} ${k}`)));
        base += d[k];
      }
      if (n <= 14 || i % Math.ceil(n / 10) === 0) s.append(svg("text", { x: x + w / 2, y: H - B + 14, "text-anchor": "middle", text: d.day.slice(5) }));
      if (maxRate > 0) pts.push(`${x + w / 2},${H - B - (d.throughput_gib_per_hour / maxRate) * (H - B - T)}`);
    });
    if (pts.length > 1) s.append(svg("polyline", { points: pts.join(" "), class: "line" }, title(`throughput, up to ${maxRate} GiB/h`)));
    if (maxRate > 0) s.append(svg("text", { x: W - 4, y: T + 8, "text-anchor": "end", text: `${maxRate} GiB/h` }));
    box.replaceChildren(s);
  }

  // stages: one row per stage, p95 behind p50.
  function drawStages(stages) {
    const box = $("chart-stages");
    if (!stages.length) return none(box, "No stage times recorded.");
    const W = 360, row = 26, L = 60, H = stages.length * row + 8;
    const max = Math.max(0.001, ...stages.map((x) => x.p95_seconds));
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: "svg-stages",
      "aria-label": stages.map((x) => `${x.stage}: p50 ${secs(x.p50_seconds)}, p95 ${secs(x.p95_seconds)} over ${x.count} jobs`).join("; ") });
    stages.forEach((x, i) => {
      const yy = 4 + i * row, w = (v) => Math.max(1, (v / max) * (W - L - 120));
      s.append(svg("text", { x: 0, y: yy + 15, text: x.stage }),
        svg("rect", { x: L, y: yy + 3, width: w(x.p95_seconds), height: 16, class: "p95", "data-stage": x.stage }, title(`${x.stage} p95 ${secs(x.p95_seconds)}`)),
        svg("rect", { x: L, y: yy + 7, width: w(x.p50_seconds), height: 8, class: "bar-accent" }, title(`${x.stage} p50 ${secs(x.p50_seconds)}`)),
        svg("text", { x: L + w(x.p95_seconds) + 4, y: yy + 15, text: `${secs(x.p50_seconds)} / ${secs(x.p95_seconds)}` }));
    });
    box.replaceChildren(s);
  }

  // failures: one bar per (stage, reason), the reason as text.
  function drawFailures(failures) {
    const box = $("chart-failures");
    if (!failures.length) return none(box, "No failures.");
    const shown = failures.slice(0, 8);
    const W = 360, row = 34, H = shown.length * row + 4;
    const max = Math.max(1, ...shown.map((f) => f.count));
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: "svg-failures",
      "aria-label": shown.map((f) => `${f.count} in ${f.stage}: ${f.reason}`).join("; ") });
    shown.forEach((f, i) => {
      const yy = 2 + i * row;
      const reason = f.reason.length > 58 ? f.reason.slice(0, 57) + "…" : f.reason;
      s.append(svg("rect", { x: 0, y: yy + 16, width: Math.max(2, (f.count / max) * (W - 40)), height: 12, class: "bar-bad", "data-stage": f.stage },
        title(`${f.count} × ${f.stage}: ${f.reason} (e.g. job ${f.example})`)),
        svg("text", { x: 0, y: yy + 12, text: `${f.stage}: ${reason}` }),
        svg("text", { x: W - 2, y: yy + 26, "text-anchor": "end", text: String(f.count) }));
    });
    box.replaceChildren(s);
  }

  async function load() {
    const since = $("report-since").value;
    try {
      const r = await H2K.api("GET", "/api/workflow/analytics?since=" + encodeURIComponent(since));
      if (r.status !== 200 || !r.body) {
        $("report-summary").textContent = "cannot load the reports: " + H2K.errText(r);
        return;
      }
      const a = r.body;
      $("report-summary").textContent = `${a.jobs} jobs (${a.completed} completed, ${a.failed} failed, ${a.cancelled} cancelled), ` +
        `${gib(a.bytes_converted)} converted at ${a.throughput_gib_per_hour} GiB/h`;
      drawDays(a.days || []);
      drawStages(a.stages || []);
      drawFailures(a.failures || []);
      $("reports").dataset.loaded = since;
    } catch (e) {
      $("report-summary").textContent = "cannot load the reports: " + e.message;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("report-since").addEventListener("change", load);
    $("report-refresh").addEventListener("click", load);
    load();
  });
  window.H2KReports = { load };
})();
