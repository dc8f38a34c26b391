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
  let status = null; // the last status answer
  // agentProblem is what the header says while the agent cannot work
  // ("agent misconfigured"), so that the fallback to polling does not hide it.
  let agentProblem = "";
  let retryDenied = ""; // why retry was refused (403), once learned
  const samples = new Map(); // id -> [{t, bytes}] for rate and ETA

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
        if (d.returnValue === "save" && $("token-input").value.trim()) {
          token.set($("token-input").value.trim());
          $("signin").hidden = true;
          signedInAs = "";
          whoami(token.get()).then((u) => { signedInAs = u; updateTokenButton(); }).catch(() => {});
        }
        updateTokenButton();
        resolve(d.returnValue === "save" ? token.get() : "");
      }, { once: true });
      d.showModal();
      $("token-input").focus();
    });
  }

  let signedInAs = ""; // who the token acts as (GET /api/workflow/whoami)

  function updateTokenButton() {
    $("token-button").textContent = token.get() ? (signedInAs ? "Signed in as " + signedInAs : "API token set") : "Sign in";
  }

  // whoami asks the bridge who tok acts as: the user's name, or "" when
  // the token is unknown or was revoked.
  async function whoami(tok) {
    const resp = await fetch("/api/workflow/whoami", { headers: tok ? { Authorization: "Bearer " + tok } : {}, cache: "no-store" });
    const body = await resp.json().catch(() => null);
    return resp.status === 200 && body && body.signed_in ? body.user || "?" : "";
  }

  // signIn checks tok and keeps it if the bridge knows it.
  async function signIn(tok) {
    $("signin-error").textContent = "";
    let who = "";
    try { who = await whoami(tok); } catch (e) { $("signin-error").textContent = "Cannot reach the bridge: " + e.message; return false; }
    if (!who) {
      $("signin-error").textContent = "This token is unknown or was revoked. Make a new one with: hyperctl token create";
      return false;
    }
    token.set(tok);
    signedInAs = who;
    $("signin").hidden = true;
    updateTokenButton();
    refreshAll();
    return true;
  }

  // showSignIn shows the sign-in screen unless the user said "not now".
  async function checkSignIn() {
    if (token.get()) {
      signedInAs = await whoami(token.get()).catch(() => "");
      if (!signedInAs) { token.set(""); $("signin-error").textContent = "Your token is no longer valid: sign in again."; }
    }
    updateTokenButton();
    $("signin").hidden = !!token.get() || sessionStorage.getItem("hyper2kvm-signin-later") === "1";
  }

  // api calls the bridge; writes, and reads of a job's details and log
  // (which need the token over TCP), carry the token and ask for it once on
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
    if (code === "agent-unreachable") {
      return "The hyper2kvm agent is not answering, so nothing can be shown or started (" + errText(r) +
        "). Check it with: systemctl status hyper2kvmd.service; journalctl -u hyper2kvmd.service";
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
        const code = r.body && r.body.error && r.body.error.code;
        agentProblem = code === "config-invalid" ? "agent misconfigured" : code === "agent-unreachable" ? "agent unreachable" : "";
        if (agentProblem) { $("agent-meta").textContent = agentProblem; setConn(agentProblem); }
        return;
      }
      const s = r.body;
      status = s;
      agentProblem = "";
      if (s.drop_dir) for (const e of document.querySelectorAll("[data-drop-dir]")) e.textContent = s.drop_dir;
      if (source && source.readyState === EventSource.OPEN) setConn("live");
      else if (pollTimer) setConn("polling every 3 s");
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
      $("agent-meta").textContent = `agent ${s.version || "?"}${s.host ? " on " + s.host : ""} · ${s.running ? "running" : "stopped"} · up ${duration(s.uptime_seconds)} · ${s.max_workers} workers` +
        (s.drop_dir ? ` · drop folder ${s.drop_dir}` : "");
      if (typeof H2KFleet !== "undefined") H2KFleet.status(s);
      refreshHosts();
    } catch (e) {
      banner("cannot reach the bridge: " + e.message);
    }
  }

  // refreshHosts shows a fleet's hosts (GET /api/workflow/hosts): each
  // one's labels, workers busy, queue and last heartbeat. One host says
  // nothing more than the line above, so the list stays hidden then.
  async function refreshHosts() {
    const box = $("fleet-hosts");
    if (!box) return;
    let hs = [];
    try {
      const r = await H2K.api("GET", "/api/workflow/hosts");
      if (r.status === 200 && r.body && Array.isArray(r.body.hosts)) hs = r.body.hosts;
    } catch (e) { /* an older bridge: no hosts */ }
    box.replaceChildren();
    box.hidden = hs.length < 2;
    for (const h of hs) {
      const labels = Object.entries(h.labels || {}).map(([k, v]) => k + "=" + v).join(",");
      const ago = Math.max(0, Math.round((Date.now() - Date.parse(h.heartbeat_at)) / 1000));
      box.append(el("li", { class: h.alive ? "host" : "host lost",
        text: `${h.name}${labels ? " [" + labels + "]" : ""} · ${h.busy} of ${h.max_workers} busy · ${h.queue || "running"} · ` +
          `heartbeat ${duration(ago)} ago${h.alive ? "" : " (lost: its jobs run elsewhere)"}` }));
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
    all: { query: "order=newest", limit: PAGE, total: 0 },
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

  // iec writes a byte count in IEC units: 1.4 GiB.
  function iec(n) {
    if (n == null || isNaN(n)) return "";
    const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    n = Number(n);
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + u[i];
  }

  // when writes a time short (today: 14:03:07; else 2026-12-06 14:03) in
  // the browser's zone; the full value goes in <time datetime>.
  function when(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d)) return "";
    const p = (x) => String(x).padStart(2, "0");
    const hms = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return hms;
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${hms.slice(0, 5)}`;
  }

  // full is a time for the details: local, then as the API gave it.
  const full = (iso) => iso ? `${when(iso)} (${iso})` : "";

  function timeEl(label, iso, cls) {
    if (!iso) return null;
    return el("span", { class: cls }, label + " ", el("time", { datetime: iso, title: iso, text: when(iso) }));
  }

  const base = (p) => String(p).replace(/^.*\//, "");
  const isXML = (p) => /\.xml$/i.test(p);

  // sourceOf is the job's source image: the path when the view has it,
  // else the manifest it came from.
  function sourceOf(j) {
    if (j.details_hidden) return HIDDEN;
    return j.source_path || j.source || (j.manifest ? "manifest " + j.manifest : "");
  }

  // HIDDEN stands for a job's paths, error and warnings, which the bridge
  // gives only with a token (or to group hyper2kvm on its Unix socket).
  const HIDDEN = "source, outputs and errors hidden: sign in with an API token";

  // rate gives bytes/s from the progress seen for a running job (samples
  // from the event stream, else the average since it started) and the ETA.
  function rate(j) {
    if (j.status !== "running" || !j.bytes_total) return null;
    const l = samples.get(j.id) || [];
    let bps = 0;
    // Samples over less than 3 s say more about event batching than speed.
    if (l.length >= 2 && l[l.length - 1].t - l[0].t >= 3000 && l[l.length - 1].bytes > l[0].bytes) {
      bps = (l[l.length - 1].bytes - l[0].bytes) / ((l[l.length - 1].t - l[0].t) / 1000);
    } else if (j.started_at && j.bytes_done > 0) {
      const sec = (Date.now() - Date.parse(j.started_at)) / 1000;
      if (sec > 0) bps = j.bytes_done / sec;
    }
    const left = Math.max(0, j.bytes_total - (j.bytes_done || 0));
    return { bps, eta: bps > 0 ? left / bps : null };
  }

  function noteProgress(j) {
    if (j.status !== "running" || !j.bytes_total) { samples.delete(j.id); return; }
    const l = samples.get(j.id) || [];
    const last = l[l.length - 1];
    if (!last || last.bytes !== j.bytes_done) l.push({ t: Date.now(), bytes: j.bytes_done || 0 });
    if (last && j.bytes_done < last.bytes) l.splice(0, l.length - 1); // a new stage counts again
    while (l.length > 10) l.shift();
    samples.set(j.id, l);
  }

  function transferText(j) {
    if (!j.bytes_total) return "";
    let t = `${iec(j.bytes_done || 0)} of ${iec(j.bytes_total)}`;
    const r = rate(j);
    if (r && r.bps > 0) t += ` · ${(r.bps / 1048576).toFixed(1)} MiB/s`;
    if (r && r.eta != null) t += ` · ETA ${duration(r.eta)}`;
    return t;
  }

  // result is what a finished job gave: its outputs, how long, how much.
  function resultText(j) {
    if (j.status !== "completed") return "";
    const outs = (j.outputs || []).map(base);
    const parts = [j.details_hidden ? "outputs hidden" : outs.length ? "→ " + outs.join(", ") : "no outputs recorded"];
    if (j.started_at) parts.push("took " + duration(j.elapsed_seconds));
    if (j.bytes_total) parts.push(iec(j.bytes_total));
    const nw = j.warning_count != null ? j.warning_count : Array.isArray(j.warnings) ? j.warnings.length : 0;
    if (nw > 0) parts.push(`${nw} warning${nw === 1 ? "" : "s"}`);
    return parts.join(" · ");
  }

  function jobItem(j) {
    const pct = j.progress == null ? null : j.progress;
    const prog = el("progress", { max: "100", "aria-label": `${j.name} ${j.stage || "progress"}` });
    if (pct != null) { prog.value = pct; prog.setAttribute("aria-valuetext", pct + "%"); }
    let stage;
    switch (j.status) {
      case "running": stage = `${j.stage || "starting"} ${pct == null ? "" : pct + "%"}`; break;
      case "pending": stage = "queued" + (j.priority ? " · priority " + j.priority : ""); break;
      case "completed": stage = ""; break;
      default: stage = j.error_stage ? "stopped in " + j.error_stage : "";
    }
    const showElapsed = j.status === "running" || (j.started_at && j.status !== "pending");
    const head = el("div", { class: "job-stage" },
      el("span", { class: "status status-" + j.status, text: j.status }),
      stage ? " " : null, stage ? el("span", { text: stage }) : null,
      showElapsed ? " · " : null,
      showElapsed ? el("span", { class: "elapsed", "data-elapsed": j.id, text: duration(elapsed(j)) }) : null);
    const times = el("div", { class: "job-times" },
      timeEl("created", j.created_at, "t-created"), timeEl("started", j.started_at, "t-started"),
      timeEl("finished", j.finished_at, "t-finished"));
    const li = el("li", { class: "job", "data-job": j.id, "data-status": j.status },
      el("div", {},
        el("div", { class: "job-name", text: j.name || j.id }),
        el("div", { class: "job-id", text: j.id + (j.host ? " · " + j.host : "") }),
        sourceOf(j) ? el("div", { class: "job-source", title: sourceOf(j), text: sourceOf(j) }) : null),
      el("div", {},
        head,
        j.status === "running" ? prog : null,
        j.status === "running" && j.bytes_total ? el("div", { class: "job-transfer", "data-transfer": j.id, text: transferText(j) }) : null,
        j.status === "completed" ? el("div", { class: "job-result", text: resultText(j) }) : null,
        times),
      el("button", { type: "button", class: "secondary", "aria-label": `Details of ${j.name || j.id}`, onclick: () => showJob(j.id) }, "Details"));
    if (j.error) li.append(el("p", { class: "job-error", text: j.error }));
    // Why a pending job waits (placement no host matches, and the like).
    if (j.status === "pending" && j.status_text) li.append(el("p", { class: "job-waiting", text: j.status_text }));
    return li;
  }

  let renderQueued = false;
  // renderSoon coalesces the renders of a burst of events into one frame.
  function renderSoon() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; renderJobs(); });
  }

  // matches says whether job j matches the search box (name, id, source,
  // manifest, host, error).
  function matches(j, q) {
    if (!q) return true;
    return [j.name, j.id, j.source_path, j.source, j.manifest, j.host, j.batch, j.error, ...(j.outputs || [])]
      .some((v) => v && String(v).toLowerCase().includes(q));
  }

  function renderJobs() {
    const lists = { active: [], pending: [], completed: [], failed: [], all: [] };
    const q = $("job-search").value.trim().toLowerCase();
    for (const j of jobs.values()) { lists[tabOf(j)].push(j); lists.all.push(j); }
    // newest first, except the queue, in the order it runs: highest
    // priority first, then oldest first
    const t = (j) => Date.parse(j.finished_at || j.started_at || j.created_at) || 0;
    for (const [name, l] of Object.entries(lists)) {
      const tab = TABS[name];
      l.sort((a, b) => name === "pending" ? (b.priority || 0) - (a.priority || 0) || t(a) - t(b) : t(b) - t(a));
      const loaded = l.slice(0, Math.max(tab.limit, 0));
      const shown = loaded.filter((j) => matches(j, q));
      const total = Math.max(tab.total, l.length);
      const none = q ? `No loaded ${name === "all" ? "" : name + " "}job matches “${q}”.` : `No ${name === "all" ? "" : name + " "}jobs.`;
      const items = shown.length ? shown.map(jobItem) : [el("li", { class: "empty", text: none })];
      if (q && loaded.length < total) {
        items.push(el("li", { class: "more" },
          el("span", { text: `searched the ${loaded.length} loaded of ${total}` }), " ",
          el("button", { type: "button", class: "secondary", "data-more": name, onclick: () => moreJobs(name) },
            `Load ${Math.min(PAGE, total - loaded.length)} more`)));
      } else if (!q && shown.length < total) {
        items.push(el("li", { class: "more" },
          el("span", { text: `${shown.length} of ${total} shown` }), " ",
          el("button", { type: "button", class: "secondary", "data-more": name, onclick: () => moreJobs(name) },
            `Show ${Math.min(PAGE, total - shown.length)} more`)));
      }
      $("list-" + name).replaceChildren(...items);
      $("n-" + name).textContent = total;
    }
    // Nothing at all yet: say how to start instead of five empty tabs.
    const empty = jobs.size === 0 && Object.values(TABS).every((t) => t.total === 0) && status != null;
    $("empty-state").hidden = !empty;
    if (openJob && jobs.has(openJob)) renderJobFields(jobs.get(openJob));
  }

  function tickElapsed() {
    for (const span of document.querySelectorAll("[data-elapsed]")) {
      const j = jobs.get(span.dataset.elapsed);
      if (j && j.status === "running") span.textContent = duration(elapsed(j));
    }
    for (const e of document.querySelectorAll("[data-transfer]")) {
      const j = jobs.get(e.dataset.transfer);
      if (j) e.textContent = transferText(j);
    }
  }

  // --- live updates --------------------------------------------------------

  function setConn(text) { $("conn").textContent = text; }

  function startPolling() {
    if (pollTimer) return;
    setConn(agentProblem || "polling every 3 s");
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
    else {
      // The event stream carries no token (EventSource sends no headers),
      // so over TCP its jobs come without details: keep the ones the
      // token-carrying list read.
      const old = jobs.get(d.job.id);
      if (d.job.details_hidden && old && !old.details_hidden) {
        for (const k of ["manifest", "outputs", "report_path", "error"]) d.job[k] = old[k];
        d.job.details_hidden = false;
      }
      noteProgress(d.job); jobs.set(d.job.id, d.job);
    }
    if (openJob === d.job.id && $("job-log-follow").checked) followLog(d.job.id);
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
    const outs = j.outputs || [];
    const rows = [
      ["Status", j.status], ["Host", j.host], ["Source", j.source_path || j.source], ["Manifest", j.manifest],
      ["Stage", j.stage], ["Progress", j.status === "running" ? (j.progress == null ? "unknown" : j.progress + "%") : ""],
      ["Transfer", j.status === "running" ? transferText(j) : ""],
      ["Status text", j.status_text], ["Created", full(j.created_at)], ["Started", full(j.started_at)], ["Finished", full(j.finished_at)],
      ["Duration", j.started_at ? duration(elapsed(j)) : ""], ["Error", j.error], ["Failed stage", j.error_stage],
      ["Size", j.status === "completed" && j.bytes_total ? iec(j.bytes_total) : ""],
      ["Priority", j.priority], ["Batch", j.batch], ["Unit", j.unit], ["Submitted by uid", j.submitted_by],
    ];
    const dl = $("job-fields");
    dl.replaceChildren();
    for (const [k, v] of rows) {
      if (v === "" || v == null) continue;
      dl.append(el("dt", { text: k }), el("dd", { text: String(v), "data-field": k }));
    }
    // Disks and domain XML: their paths on the agent's host (the bridge
    // serves no file from disk).
    const outList = $("job-outputs");
    outList.replaceChildren(...outs.map((o) => el("li", { "data-output": o },
      el("span", { class: "kind", text: isXML(o) ? "domain XML" : "disk" }), " ", el("code", { text: o }))));
    $("job-outputs-h").hidden = !outs.length;
    // The report: where it is and what the view carries of it.
    const rep = $("job-report");
    rep.replaceChildren();
    if (j.report_path) rep.append(el("p", {}, "Report: ", el("code", { text: j.report_path })));
    if (j.guest_os) rep.append(el("p", { text: "Guest found: " + j.guest_os }));
    const warns = Array.isArray(j.warnings) ? j.warnings : Array.isArray(j.warning_list) ? j.warning_list : null;
    if (warns && warns.length) {
      rep.append(el("p", { class: "warn", text: `${warns.length} warning${warns.length === 1 ? "" : "s"}:` }),
        el("ul", { class: "warnings" }, ...warns.map((w) => el("li", { text: typeof w === "string" ? w : (w.message || JSON.stringify(w)) }))));
    } else if (typeof j.warnings === "number" && j.warnings > 0) {
      rep.append(el("p", { class: "warn", text: `${j.warnings} warning${j.warnings === 1 ? "" : "s"}: see the report and the log.` }));
    }
    // Each failed run that was retried: where it ran and why it failed.
    const attempts = Array.isArray(j.attempts) ? j.attempts : [];
    if (attempts.length) {
      rep.append(el("p", { text: `${attempts.length} failed attempt${attempts.length === 1 ? "" : "s"}, retried:` }),
        el("ol", { class: "attempts" }, ...attempts.map((a) => el("li", { "data-attempt": String(a.attempt) },
          `attempt ${a.attempt} on ${a.host || "?"}${a.stage ? ", in " + a.stage : ""}, ended ${full(a.ended_at)}: `,
          el("span", { class: "job-error", text: a.error || "" }),
          a.retry_at ? ` · retried ${full(a.retry_at)}` : ""))));
    }
    for (const f of Array.isArray(j.fixes) ? j.fixes : []) {
      rep.append(el("details", { class: "fix" }, el("summary", { text: f.name || f.fix || "fix" }),
        el("pre", { class: "diff", text: f.diff || "" })));
    }
    $("job-report-h").hidden = !rep.childNodes.length && !$("job-report-body").childNodes.length;
    $("job-cancel").hidden = !(j.status === "pending" || j.status === "running");
    // Retry is offered for a job that ended badly, unless the bridge has
    // already been told it may not (403 access-denied).
    const canRetry = (j.status === "failed" || j.status === "cancelled") && !retryDenied;
    $("job-retry").hidden = !canRetry;
    $("job-retry-note").textContent = (j.status === "failed" || j.status === "cancelled") && retryDenied ? retryDenied : "";
    $("job-log-follow-l").hidden = j.status !== "running" && j.status !== "pending";
    // A pending job's place in the queue can change; a started one's not.
    $("job-priority-form").hidden = j.status !== "pending";
    if (document.activeElement !== $("job-priority")) $("job-priority").value = j.priority || 0;
  }

  // followLog reloads the open job's log on its events, at most once a
  // second.
  let followTimer = null;
  function followLog(id) {
    if (followTimer) return;
    followTimer = setTimeout(() => { followTimer = null; if (openJob === id) loadLog(id, true); }, 1000);
  }

  async function loadLog(id, quiet) {
    const pre = $("job-log");
    if (!quiet) pre.textContent = "loading…";
    try {
      const r = await api("GET", `/api/workflow/jobs/${encodeURIComponent(id)}/log?format=json&lines=1000`, undefined, true);
      if (r.status !== 200) { pre.textContent = errText(r); return; }
      pre.replaceChildren();
      if (!r.body.entries.length) pre.textContent = "(no log entries yet)";
      for (const e of r.body.entries) {
        pre.append(el("span", { class: "p" + e.priority, text: `${e.time} ${e.identifier || ""}${e.pid ? "[" + e.pid + "]" : ""}: ${e.message}\n` }));
      }
      if (quiet) pre.scrollTop = pre.scrollHeight;
    } catch (e) {
      pre.textContent = "cannot load the log: " + e.message;
    }
  }

  // lineDiff is a line diff of a and b: "  " kept, "- " removed, "+ "
  // added (longest common subsequence; files FIX edits are small).
  function lineDiff(a, b) {
    const x = (a || "").replace(/\n$/, "").split("\n"), y = (b || "").replace(/\n$/, "").split("\n");
    const n = x.length, m = y.length;
    if (n * m > 250000) return [...x.map((l) => "- " + l), ...y.map((l) => "+ " + l)];
    const L = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    const out = [];
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push("  " + x[i]); i++; j++; } else if (L[i + 1][j] >= L[i][j + 1]) out.push("- " + x[i++]); else out.push("+ " + y[j++]);
    }
    while (i < n) out.push("- " + x[i++]);
    while (j < m) out.push("+ " + y[j++]);
    return out;
  }

  // loadReport shows what the engine's report says a finished job found
  // and did: the guest's operating system and every change FIX made, with
  // its diff.
  async function loadReport(id) {
    const body = $("job-report-body");
    body.replaceChildren();
    const j = jobs.get(id);
    if (!j || j.status === "pending" || j.status === "running") return;
    const r = await api("GET", `/api/workflow/jobs/${encodeURIComponent(id)}/report`, undefined, true);
    if (openJob !== id) return;
    if (r.status !== 200 || !r.body) {
      if (r.status !== 404) body.append(el("p", { class: "meta", text: "Cannot read the report: " + errText(r) }));
      $("job-report-h").hidden = !$("job-report").childNodes.length && !body.childNodes.length;
      return;
    }
    const rep = r.body;
    const os = rep.guest && rep.guest.os;
    const osText = os ? (os.pretty_name || [os.id, os.version_id].filter(Boolean).join(" ") || os.type) : "";
    body.append(el("p", { id: "job-guest-os" }, "Guest operating system: ",
      el("strong", { text: osText || (rep.guest ? "none found" : "not inspected") })));
    const changes = Array.isArray(rep.changes) ? rep.changes : [];
    body.append(el("p", { id: "job-changes-h", text: changes.length ? `FIX made ${changes.length} change${changes.length === 1 ? "" : "s"}:` : "FIX changed nothing in the guest." }));
    for (const c of changes) {
      const pre = el("pre", { class: "diff" });
      for (const l of lineDiff(c.before, c.after)) {
        pre.append(el("span", { class: l[0] === "-" ? "del" : l[0] === "+" ? "add" : "", text: l + "\n" }));
      }
      body.append(el("details", { class: "fix", open: true, "data-fix": c.fix },
        el("summary", { text: `${c.fix}: ${c.file}${c.note ? " (" + c.note + ")" : ""}` }), pre));
    }
    $("job-report-h").hidden = false;
  }

  async function showJob(id, message) {
    openJob = id;
    $("job-action-result").textContent = message || "";
    const d = $("job-dialog");
    if (!d.open) d.showModal();
    if (jobs.has(id)) renderJobFields(jobs.get(id));
    const r = await api("GET", `/api/workflow/jobs/${encodeURIComponent(id)}`, undefined, true);
    if (openJob !== id) return;
    if (r.status === 200) { jobs.set(id, r.body); renderJobFields(r.body); }
    else $("job-fields").replaceChildren(el("dd", { text: errText(r) }));
    loadLog(id);
    loadReport(id);
  }

  // setPriority gives the open pending job the priority in the form.
  async function setPriority() {
    const id = openJob;
    const n = Number($("job-priority").value);
    const out = $("job-action-result");
    if (!Number.isInteger(n) || n < -100 || n > 100) { out.textContent = "A priority is a whole number from -100 to 100."; return; }
    const r = await api("POST", `/api/workflow/jobs/${encodeURIComponent(id)}/priority`, JSON.stringify({ priority: n }), true);
    if (r.status === 200) {
      if (r.body.job) jobs.set(r.body.job.id, r.body.job);
      renderJobs();
      if (r.body.job && openJob === id) renderJobFields(r.body.job);
      out.textContent = `Priority set to ${n}.`;
    } else {
      out.textContent = "Cannot set the priority: " + errText(r);
    }
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
      if (verb === "retry" && r.status === 403) {
        retryDenied = "Retry is not allowed for the dashboard here: " + errText(r);
        if (jobs.has(id)) renderJobFields(jobs.get(id));
      }
    }
  }

  function init() {
    updateTokenButton();
    initTabs();
    $("token-button").addEventListener("click", () => {
      if (token.get()) { askToken(); return; }
      $("signin").hidden = false;
      $("signin-token").focus();
    });
    $("token-forget").addEventListener("click", () => { token.set(""); signedInAs = ""; $("token-input").value = ""; $("token-dialog").close(); checkSignIn(); });
    $("signin-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("signin-token").value.trim()); });
    $("signin-later").addEventListener("click", () => { sessionStorage.setItem("hyper2kvm-signin-later", "1"); $("signin").hidden = true; });
    checkSignIn();
    $("job-cancel").addEventListener("click", () => jobAction("cancel"));
    $("job-retry").addEventListener("click", () => jobAction("retry"));
    $("job-priority-form").addEventListener("submit", (ev) => { ev.preventDefault(); setPriority(); });
    $("job-log-refresh").addEventListener("click", () => openJob && loadLog(openJob));
    $("job-search").addEventListener("input", renderJobs);
    // close is dispatched later; the dialog may have been opened again since.
    $("job-dialog").addEventListener("close", () => { if (!$("job-dialog").open) openJob = null; });
    refreshAll();
    connect();
    setInterval(tickElapsed, 1000);
  }

  document.addEventListener("DOMContentLoaded", init);
  return { api, errText, el, selectTab, showJob, jobs, refreshAll, askToken, moreJobs, tabs: TABS, iec };
})();
