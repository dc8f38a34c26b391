// hyper2kvm dashboard: this host's queue control (pause, drain, resume:
// POST /api/workflow/queue/ACTION, polkit's io.hyper2kvm.agent.manage as
// hyperctl queue) and the recurring schedules of schedules.d with their
// next firing (GET /api/workflow/schedules). app.js calls status() with
// each status answer.
"use strict";

const H2KFleet = (() => {
  const $ = (id) => document.getElementById(id);
  const el = (...a) => H2K.el(...a);
  const WHAT = {
    running: "running: jobs start as workers free up",
    paused: "paused: dropped files are claimed, no job starts",
    draining: "draining: no file is claimed and no job starts; running jobs finish (host maintenance)",
  };
  let lastSchedules = 0;

  // status shows the queue state of the status answer s and offers the
  // actions that change it to a signed-in user (the agent's polkit decides).
  function status(s) {
    const q = s.queue || "running";
    $("queue-state").dataset.queue = q;
    $("queue-state").textContent = `Queue of ${s.host || "this host"}: ${WHAT[q] || q}`;
    $("queue-buttons").hidden = !sessionStorage.getItem("hyper2kvm-api-token");
    $("queue-pause").disabled = q === "paused";
    $("queue-drain").disabled = q === "draining";
    $("queue-resume").disabled = q === "running";
    if (Date.now() - lastSchedules > 30000) loadSchedules();
  }

  async function setQueue(action) {
    const out = $("queue-result");
    out.textContent = "";
    const r = await H2K.api("POST", "/api/workflow/queue/" + action, undefined, true);
    if (r.status === 200) out.textContent = `Queue ${r.body.queue}.`;
    else out.textContent = `Cannot ${action} the queue: ${H2K.errText(r)}`;
    H2K.refreshAll();
  }

  // when is a local time for a schedule's run, "–" for none.
  function when(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d)) return "–";
    const p = (x) => String(x).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  async function loadSchedules() {
    lastSchedules = Date.now();
    const list = $("schedule-list");
    let r;
    try { r = await H2K.api("GET", "/api/workflow/schedules"); } catch (e) { return; }
    if (r.status !== 200 || !r.body || !Array.isArray(r.body.schedules)) {
      list.replaceChildren(el("li", { class: "meta", text: "Cannot list the schedules: " + H2K.errText(r) }));
      return;
    }
    const ss = r.body.schedules;
    if (!ss.length) {
      list.replaceChildren(el("li", { class: "meta", text: "No recurring work: none in /etc/hyper2kvm/schedules.d." }));
      return;
    }
    list.replaceChildren(...ss.map((s) => {
      if (!s.name) return el("li", { class: "job-error", text: "refused: " + s.error });
      const last = s.error ? "last run failed: " + s.error : (s.last_jobs || []).length ? "last jobs " + s.last_jobs.join(", ") : "";
      return el("li", { "data-schedule": s.name },
        el("strong", { text: s.name }), ` · ${s.cron} · ${s.manifest || "template " + s.template} · next `,
        s.next_run ? el("time", { datetime: s.next_run, title: s.next_run, text: when(s.next_run) }) : "–",
        ` · last ${when(s.last_run)}`, last ? " · " : "", last ? el("span", { class: s.error ? "job-error" : "", text: last }) : null);
    }));
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const a of ["pause", "drain", "resume"]) $("queue-" + a).addEventListener("click", () => setQueue(a));
    $("schedules-refresh").addEventListener("click", loadSchedules);
  });
  return { status, loadSchedules };
})();
