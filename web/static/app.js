// hyper2kvm dashboard: status cards, jobs by state, job details with log,
// cancel and retry. Live through /api/workflow/events, polling every 3 s
// while the stream is down. Talks only to this origin.
"use strict";

const H2K = (() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "hyper2kvm-api-token";
  const POLL_MS = 3000;
  const jobs = new Map(); // id -> job as the API shows it
  let pollTimer = null;
  let statusTimer = null;
  let openJob = null; // id shown in the job dialog
  let source = null;

  // el builds an element: el("p", {class: "x"}, "text", child...).
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v == null) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }

  const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY) || "",
    set: (t) => t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY),
  };

  // askToken opens the token dialog and resolves with the token ("" if
  // the user cancelled).
  function askToken() {
    return new Promise((resolve) => {
      const d = $("token-dialog");
      $("token-input").value = token.get();
      d.returnValue = "";
      d.addEventListener("close", () => {
        if (d.returnValue === "save" && $("token-input").value.trim()) token.set($("token-input").value.trim());
        updateTokenButton();
        resolve(d.returnValue === "save" ? token.get() : "");
      }, { once: true });
      d.showModal();
      $("token-input").focus();
    });
  }

  function updateTokenButton() {
    $("token-button").textContent = token.get() ? "API token set" : "Set API token";
  }

  // api calls the bridge; writes carry the token and ask for it once on
  // 401. It resolves to {status, body} and rejects only on network errors.
  async function api(method, path, body, write) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const headers = {};
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (token.get()) headers["Authorization"] = "Bearer " + token.get();
      const resp = await fetch(path, { method, headers, body, cache: "no-store" });
      const type = resp.headers.get("Content-Type") || "";
      const data = type.includes("json") ? await resp.json().catch(() => null) : await resp.text();
      if (resp.status === 401 && write && attempt === 0) {
        if (await askToken()) continue;
      }
      return { status: resp.status, body: data };
    }
  }

  function errText(r) {
    const e = r.body && r.body.error;
    if (!e) return "HTTP " + r.status;
    return e.message + (e.details && e.details.length ? ": " + e.details.join("; ") : "");
  }

  // failText is errText in plain words for what the user must act on: a
  // misconfigured agent answers every call with the file, line and key.
  function failText(r) {
    const code = r.body && r.body.error && r.body.error.code;
    if (code === "config-invalid") {
      return "The agent is not working because its configuration file is invalid: " +
        errText(r).replace(/^the agent's configuration is invalid: /, "");
    }
    return errText(r);
  }

  function banner(text) {
    const b = $("banner");
    b.textContent = text || "";
    b.hidden = !text;
  }

  // --- status and jobs ---------------------------------------------------

  async function refreshStatus() {
    try {
      const r = await api("GET", "/api/workflow/status");
      if (r.status !== 200) {
        // A misconfigured agent answers at once with the file, line and
        // key; say in plain words that this is why nothing works.
        banner(failText(r));
        if (r.body && r.body.error && r.body.error.code === "config-invalid") $("agent-meta").textContent = "agent misconfigured";
        return;
      }
      const s = r.body;
      // The drop folder works only while hyper2kvmd.path watches it.
      const ps = s.path_unit_state;
      if (ps && !["active", "activating", "reloading"].includes(ps)) {
        const why = s.path_unit_result && s.path_unit_result !== "success" ? ` (${s.path_unit_result})` : "";
        banner(`The drop folder is not watched: hyper2kvmd.path is ${ps}${why}; ` +
          "run: systemctl reset-failed hyper2kvmd.path && systemctl start hyper2kvmd.path");
      } else {
        banner("");
      }
      $("c-queue").textContent = s.queue_depth;
      $("c-active").textContent = s.active_jobs;
      $("c-done").textContent = s.processed_today;
      $("c-failed").textContent = s.failed_today;
      $("agent-meta").textContent = `agent ${s.version || "?"} · ${s.running ? "running" : "stopped"} · up ${duration(s.uptime_seconds)} · ${s.max_workers} workers`;
    } catch (e) {
      banner("cannot reach the bridge: " + e.message);
    }
  }

  // soon coalesces status refreshes after bursts of events.
  function soonStatus() {
    clearTimeout(statusTimer);
    statusTimer = setTimeout(refreshStatus, 300);
  }

  // Each tab shows one page of its jobs from the API, newest first (the
  // queue oldest first, as it runs); "more" asks for PAGE more. With a
  // month of history the list is 10,000 jobs: never load them all.
  const PAGE = 50;
  const TABS = {
    active: { query: "status=running&order=newest", limit: PAGE, total: 0 },
    pending: { query: "status=pending&order=oldest", limit: PAGE, total: 0 },
    completed: { query: "status=completed&order=newest", limit: PAGE, total: 0 },
    failed: { query: "status=failed,cancelled&order=newest", limit: PAGE, total: 0 },
  };

  async function fetchTab(name) {
    const tab = TABS[name];
    const r = await api("GET", `/api/workflow/jobs?${tab.query}&limit=${tab.limit}`);
    if (r.status !== 200) { banner(failText(r)); return null; }
    tab.total = r.body.total;
    return r.body.jobs;
  }

  // refreshJobs reloads every tab's page; jobs no tab lists any more (and
  // none open) are forgotten.
  async function refreshJobs() {
    try {
      const pages = await Promise.all(Object.keys(TABS).map(fetchTab));
      if (pages.includes(null)) return;
      const keep = openJob && jobs.get(openJob);
      jobs.clear();
      for (const page of pages) for (const j of page) jobs.set(j.id, j);
      if (keep && !jobs.has(keep.id)) jobs.set(keep.id, keep);
      renderJobs();
    } catch (e) {
      banner("cannot reach the bridge: " + e.message);
    }
  }

  async function moreJobs(name) {
    TABS[name].limit += PAGE;
    try {
      const page = await fetchTab(name);
      if (!page) return;
      for (const j of page) jobs.set(j.id, j);
      renderJobs();
    } catch (e) {
      banner("cannot reach the bridge: " + e.message);
    }
  }

  // Events change single jobs; the tabs' totals are re-read now and then.
  let jobsTimer = null;
  function soonJobs() {
    if (jobsTimer) return;
    jobsTimer = setTimeout(() => { jobsTimer = null; refreshJobs(); }, 2000);
  }

  function refreshAll() { refreshStatus(); refreshJobs(); }

  function tabOf(j) {
    switch (j.status) {
      case "running": return "active";
      case "pending": return "pending";
      case "completed": return "completed";
      default: return "failed"; // failed and cancelled
    }
  }

  function duration(sec) {
    sec = Math.max(0, Math.round(sec || 0));
    const h = Math.floor(sec / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
  }

  // elapsed is live for running jobs: the API's value is as of its answer.
  function elapsed(j) {
    if (j.status === "running" && j.started_at) return (Date.now() - Date.parse(j.started_at)) / 1000;
    return j.elapsed_seconds;
  }

  function jobItem(j) {
    const pct = j.progress == null ? null : j.progress;
    const prog = el("progress", { max: "100", "aria-label": `${j.name} ${j.stage || "progress"}` });
    if (pct != null) { prog.value = pct; prog.setAttribute("aria-valuetext", pct + "%"); }
    const stage = j.status === "running" ? `${j.stage || "starting"} ${pct == null ? "" : pct + "%"}` :
      j.status === "pending" ? "queued" : (j.error_stage ? "stopped in " + j.error_stage : j.stage || "");
    const li = el("li", { class: "job", "data-job": j.id, "data-status": j.status },
      el("div", {},
        el("div", { class: "job-name", text: j.name || j.id }),
        el("div", { class: "job-id", text: j.id })),
      el("div", {},
        el("div", { class: "job-stage" },
          el("span", { class: "status status-" + j.status, text: j.status }), " ",
          el("span", { text: stage }), " · ",
          el("span", { class: "elapsed", "data-elapsed": j.id, text: duration(elapsed(j)) })),
        j.status === "running" || j.status === "completed" ? prog : null),
      el("button", { type: "button", class: "secondary", "aria-label": `Details of ${j.name || j.id}`, onclick: () => showJob(j.id) }, "Details"));
    if (j.error) li.append(el("p", { class: "job-error", text: j.error }));
    return li;
  }

  let renderQueued = false;
  // renderSoon coalesces the renders of a burst of events into one frame.
  function renderSoon() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; renderJobs(); });
  }

  function renderJobs() {
    const lists = { active: [], pending: [], completed: [], failed: [] };
    for (const j of jobs.values()) lists[tabOf(j)].push(j);
    // newest first, except the queue, which runs oldest first
    const t = (j) => Date.parse(j.finished_at || j.started_at || j.created_at) || 0;
    for (const [name, l] of Object.entries(lists)) {
      const tab = TABS[name];
      l.sort((a, b) => name === "pending" ? t(a) - t(b) : t(b) - t(a));
      const shown = l.slice(0, Math.max(tab.limit, 0));
      const total = Math.max(tab.total, l.length);
      const items = shown.length ? shown.map(jobItem) : [el("li", { class: "empty", text: "No " + name + " jobs." })];
      if (shown.length < total) {
        items.push(el("li", { class: "more" },
          el("span", { text: `${shown.length} of ${total} shown` }), " ",
          el("button", { type: "button", class: "secondary", "data-more": name, onclick: () => moreJobs(name) },
            `Show ${Math.min(PAGE, total - shown.length)} more`)));
      }
      $("list-" + name).replaceChildren(...items);
      $("n-" + name).textContent = total;
    }
    if (openJob && jobs.has(openJob)) renderJobFields(jobs.get(openJob));
  }

  function tickElapsed() {
    for (const span of document.querySelectorAll("[data-elapsed]")) {
      const j = jobs.get(span.dataset.elapsed);
      if (j && j.status === "running") span.textContent = duration(elapsed(j));
    }
  }

  // --- live updates --------------------------------------------------------

  function setConn(text) { $("conn").textContent = text; }

  function startPolling() {
    if (pollTimer) return;
    setConn("polling every 3 s");
    pollTimer = setInterval(refreshAll, POLL_MS);
  }

  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  function onEvent(ev) {
    let d;
    try { d = JSON.parse(ev.data); } catch { return; }
    if (d.type === "job-removed") jobs.delete(d.job.id);
    else jobs.set(d.job.id, d.job);
    renderSoon();
    soonStatus();
    soonJobs();
  }

  function connect() {
    if (!window.EventSource) { startPolling(); return; }
    source = new EventSource("/api/workflow/events");
    source.addEventListener("open", () => {
      stopPolling();
      setConn("live");
      refreshAll(); // anything missed while disconnected
    });
    for (const name of ["job-new", "job-changed", "job-removed"]) source.addEventListener(name, onEvent);
    source.addEventListener("error", () => {
      // The browser reconnects by itself (retry: 3000) unless the answer
      // was an HTTP error; poll until the stream is back either way.
      startPolling();
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, POLL_MS);
    });
  }

  // --- tabs ------------------------------------------------------------------

  function selectTab(name, focus) {
    for (const tab of document.querySelectorAll("[role=tab]")) {
      const on = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", on);
      tab.tabIndex = on ? 0 : -1;
      $(tab.getAttribute("aria-controls")).hidden = !on;
      if (on && focus) tab.focus();
    }
  }

  function initTabs() {
    const tabs = [...document.querySelectorAll("[role=tab]")];
    tabs.forEach((tab, i) => {
      tab.addEventListener("click", () => selectTab(tab.dataset.tab));
      tab.addEventListener("keydown", (e) => {
        let n = null;
        if (e.key === "ArrowRight") n = (i + 1) % tabs.length;
        if (e.key === "ArrowLeft") n = (i - 1 + tabs.length) % tabs.length;
        if (e.key === "Home") n = 0;
        if (e.key === "End") n = tabs.length - 1;
        if (n != null) { e.preventDefault(); selectTab(tabs[n].dataset.tab, true); }
      });
    });
  }

  // --- job dialog --------------------------------------------------------------

  function renderJobFields(j) {
    $("job-title").textContent = `Job ${j.name || ""} (${j.id})`;
    const rows = [
      ["Status", j.status], ["Stage", j.stage], ["Progress", j.progress == null ? "unknown" : j.progress + "%"],
      ["Status text", j.status_text], ["Created", j.created_at], ["Started", j.started_at], ["Finished", j.finished_at],
      ["Elapsed", duration(elapsed(j))], ["Error", j.error], ["Failed stage", j.error_stage],
      ["Outputs", (j.outputs || []).join("\n")], ["Report", j.report_path], ["Manifest", j.manifest],
      ["Batch", j.batch], ["Unit", j.unit], ["Submitted by uid", j.submitted_by],
      ["Bytes", j.bytes_total ? `${j.bytes_done} / ${j.bytes_total}` : ""],
    ];
    const dl = $("job-fields");
    dl.replaceChildren();
    for (const [k, v] of rows) {
      if (v === "" || v == null) continue;
      dl.append(el("dt", { text: k }), el("dd", { text: String(v), "data-field": k }));
    }
    $("job-cancel").hidden = !(j.status === "pending" || j.status === "running");
    $("job-retry").hidden = !(j.status === "failed" || j.status === "cancelled");
  }

  async function loadLog(id) {
    const pre = $("job-log");
    pre.textContent = "loading…";
    try {
      const r = await api("GET", `/api/workflow/jobs/${encodeURIComponent(id)}/log?format=json&lines=1000`);
      if (r.status !== 200) { pre.textContent = errText(r); return; }
      pre.replaceChildren();
      if (!r.body.entries.length) pre.textContent = "(no log entries yet)";
      for (const e of r.body.entries) {
        pre.append(el("span", { class: "p" + e.priority, text: `${e.time} ${e.identifier || ""}${e.pid ? "[" + e.pid + "]" : ""}: ${e.message}\n` }));
      }
    } catch (e) {
      pre.textContent = "cannot load the log: " + e.message;
    }
  }

  async function showJob(id, message) {
    openJob = id;
    $("job-action-result").textContent = message || "";
    const d = $("job-dialog");
    if (!d.open) d.showModal();
    if (jobs.has(id)) renderJobFields(jobs.get(id));
    const r = await api("GET", `/api/workflow/jobs/${encodeURIComponent(id)}`);
    if (openJob !== id) return;
    if (r.status === 200) { jobs.set(id, r.body); renderJobFields(r.body); }
    else $("job-fields").replaceChildren(el("dd", { text: errText(r) }));
    loadLog(id);
  }

  async function jobAction(verb) {
    const id = openJob;
    const r = await api("POST", `/api/workflow/jobs/${encodeURIComponent(id)}/${verb}`, undefined, true);
    const out = $("job-action-result");
    if (r.status === 202) {
      if (r.body.job) jobs.set(r.body.job.id, r.body.job);
      renderJobs();
      if (verb === "retry") showJob(r.body.job_id, `Queued again as job ${r.body.job_id}.`);
      else out.textContent = "Cancel requested.";
    } else {
      out.textContent = `Cannot ${verb}: ${errText(r)}`;
    }
  }

  function init() {
    updateTokenButton();
    initTabs();
    $("token-button").addEventListener("click", askToken);
    $("token-forget").addEventListener("click", () => { token.set(""); $("token-input").value = ""; $("token-dialog").close(); });
    $("job-cancel").addEventListener("click", () => jobAction("cancel"));
    $("job-retry").addEventListener("click", () => jobAction("retry"));
    $("job-log-refresh").addEventListener("click", () => openJob && loadLog(openJob));
    // close is dispatched later; the dialog may have been opened again since.
    $("job-dialog").addEventListener("close", () => { if (!$("job-dialog").open) openJob = null; });
    refreshAll();
    connect();
    setInterval(tickElapsed, 1000);
  }

  document.addEventListener("DOMContentLoaded", init);
  return { api, errText, el, selectTab, showJob, jobs, refreshAll, askToken, moreJobs, tabs: TABS };
})();
