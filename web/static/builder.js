// hyper2kvm manifest builder: a form for every manifest v1.0 field (with
// the agent's defaults), a JSON editor kept in step both ways, validation
// as you type through /api/workflow/manifest/validate with each problem
// shown at its field, download as JSON, and submit.
//
// The manifest object (doc) is the one source of truth: form inputs write
// single paths into it (removing values equal to their default, so the
// JSON stays short and fields the form does not know survive), and the
// JSON editor replaces it and redraws the form.
//
// The allowed values of every choice and every default come from the
// manifest's JSON Schema (GET /api/workflow/schema: its "enum"s and
// "default"s), never from copies here: a test in api/ fails when this file
// repeats one, and one in agent/manifest when the schema's defaults differ
// from what the agent fills in.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = (...a) => H2K.el(...a);

  // The manifest's JSON Schema, loaded by init before the first render.
  let schema = {};

  // node resolves a schema node's "$ref", keeping the node's own keywords
  // (a "default" beside a "$ref").
  function node(n) {
    while (n && n.$ref) {
      const { $ref, ...own } = n;
      n = { ...((schema.$defs || {})[$ref.replace(/^#\/\$defs\//, "")] || {}), ...own };
    }
    return n || {};
  }

  // spec is what the schema says of the pipeline field at path p: its
  // allowed values and its default (its own, else its value in the default
  // of an enclosing object, like fix.grub's {"enabled": true}).
  function spec(p) {
    let n = node({ $ref: "#/$defs/pipeline" });
    let def;
    for (const k of p.split(".")) {
      def = def !== null && typeof def === "object" ? def[k] : undefined;
      n = node((n.properties || {})[k]);
      if (n.default !== undefined) def = n.default;
    }
    return { options: n.enum || [], def };
  }

  const sourceTypes = () => spec("load.source_type").options;
  const newPipeline = () => ({ load: { source_type: sourceTypes()[0] || "", source_path: "" } });
  const version = () => ((schema.properties || {}).version || {}).const || "";

  // One entry per field of agent/manifest's Pipeline, path relative to it.
  // A select lists the schema's enum; "unset" adds a first choice that
  // leaves the field out (the agent decides), named by it. A field's
  // default is the schema's unless "unset" makes the empty choice the form's.
  const PIPELINE = [
    ["load", "Load", [
      { p: "load.source_type", label: "Source type", type: "select", keep: true },
      { p: "load.source_path", label: "Source path", type: "text", keep: true, placeholder: "/data/vms/web01/web01.vmdk", hint: "Absolute path of the disk image, OVA or OVF on the agent's host." },
      { p: "load.sha256", label: "SHA-256 of the source (optional)", type: "text", hint: "64 hex digits; checked before converting." },
      { p: "load.source", label: "Source (vCenter/ESXi)", type: "text", placeholder: "vc1", hint: "A VM read from a registered source: its name (hyperctl sources); then vm, not source_path." },
      { p: "load.vm", label: "VM inventory path", type: "text", placeholder: "/DC0/vm/web01", hint: "As hyperctl vms prints it, or pick it above." },
    ]],
    ["inspect", "Inspect", [
      { p: "inspect.enabled", label: "Inspect the guest", type: "check" },
      { p: "inspect.detect_os", label: "Detect the operating system", type: "check" },
    ]],
    ["fix", "Fix", [
      { p: "fix.enabled", label: "Fix the guest for KVM", type: "check" },
      { p: "fix.backend", label: "Guest access backend", type: "select", unset: () => "agent default" },
      { p: "fix.fstab.enabled", label: "Stabilise fstab and crypttab", type: "check" },
      { p: "fix.fstab.mode", label: "fstab mode", type: "select" },
      { p: "fix.grub.enabled", label: "Fix the boot loader", type: "check" },
      { p: "fix.initramfs.enabled", label: "Fix the initramfs", type: "check" },
      { p: "fix.initramfs.regenerate", label: "Regenerate the initramfs with virtio drivers", type: "check" },
      { p: "fix.network.enabled", label: "Adapt the network configuration", type: "check" },
      { p: "fix.network.fix_level", label: "Network fix level", type: "select" },
      { p: "fix.vmware_tools.enabled", label: "Remove VMware tools", type: "check" },
    ]],
    ["convert", "Convert", [
      { p: "convert.output_format", label: "Output format", type: "select" },
      { p: "convert.compress", label: "Compress (qcow2)", type: "check" },
      { p: "convert.compression", label: "Compression", type: "select", unset: (def) => `default (${def})` },
      { p: "convert.output_path", label: "Output file name", type: "text", placeholder: "NAME.qcow2", hint: "A plain file name; default NAME.FORMAT." },
      { p: "convert.output_dir", label: "Output directory", type: "text", placeholder: "<output_dir>/<date>/<job id>", hint: "Absolute; default from the agent's configuration." },
      { p: "convert.disks", label: "Disks of a multi-disk OVA/OVF", type: "disks" },
    ]],
    ["validate", "Validate", [
      { p: "validate.enabled", label: "Validate the output", type: "check" },
      { p: "validate.boot_test", label: "Boot test under QEMU", type: "check" },
      { p: "validate.boot_timeout", label: "Boot timeout (seconds)", type: "number", min: 1 },
      { p: "validate.boot_marker", label: "Boot marker", type: "text" },
      // A boolean whose default depends on fix.enabled: no schema default.
      { p: "validate.compare", label: "Compare with the source", type: "select", choices: ["", "true", "false"], names: { "": "default (when FIX is off)", "true": "yes", "false": "no" }, bool: true },
    ]],
  ];
  // The job's window, retries and placement: top-level fields of the
  // manifest (every VM of a batch), whose choices come from the schema's
  // top-level properties (topSpec).
  const WHEN = [
    { p: "schedule.not_before", label: "Not before", type: "text", placeholder: "2026-12-24T02:00:00+01:00", hint: "RFC 3339: the job starts no earlier (a maintenance window)." },
    { p: "schedule.not_after", label: "Not after", type: "text", placeholder: "2026-12-24T06:00:00+01:00", hint: "RFC 3339: a job not started by then fails, saying so." },
    { p: "retry.max_attempts", label: "Attempts in all", type: "number", min: 1, max: 20, hint: "Retry a failure that may pass (I/O error, source unreadable); empty: the agent's job.retry." },
    { p: "retry.backoff", label: "Backoff", type: "select", unset: () => "agent default" },
    { p: "retry.initial", label: "First wait", type: "text", placeholder: "30s", hint: "A Go duration." },
    { p: "retry.max", label: "Longest wait", type: "text", placeholder: "1h" },
    { p: "placement", label: "Placement (fleet)", type: "list", placeholder: "datastore=ds01, kvm02", hint: "Host names (any) and host.labels key=value (all), comma-separated; empty: any host that can read the source." },
  ];

  const RESOURCES = [
    { p: "resources.memory_max", label: "MemoryMax", type: "text", placeholder: "e.g. 4G", hint: "systemd MemoryMax=; empty: agent default" },
    { p: "resources.cpu_quota", label: "CPUQuota", type: "text", placeholder: "e.g. 200%" },
    { p: "resources.io_weight", label: "IOWeight", type: "number", min: 1, max: 10000 },
    { p: "resources.tasks_max", label: "TasksMax", type: "number", min: 1 },
    { p: "resources.runtime_max_sec", label: "RuntimeMaxSec", type: "number", min: 1 },
  ];

  const fresh = () => ({ version: version(), name: "", pipeline: newPipeline() });
  let doc = {};
  let jsonMode = false;
  let validateTimer = null;
  let validateSeq = 0;
  // A problem is shown only at a field the user changed (touched holds
  // their paths) or after they pressed Validate or Submit (revealAll): an
  // untouched form is not an error, whatever it lacks.
  const touched = new Set();
  let revealAll = false;
  let lastProblems = [];

  // --- paths ---------------------------------------------------------------

  const split = (path) => path.split(".").map((k) => (/^\d+$/.test(k) ? Number(k) : k));
  // normPath turns the agent's "vms[0].pipeline" into "vms.0.pipeline".
  const normPath = (p) => String(p || "").replace(/\[(\d+)\]/g, ".$1").replace(/^\./, "");
  const idOf = (path) => "f-" + path.replace(/[^A-Za-z0-9]/g, "-");

  function getPath(obj, path) {
    let o = obj;
    for (const k of split(path)) {
      if (o == null || typeof o !== "object") return undefined;
      o = o[k];
    }
    return o;
  }

  function setPath(obj, path, v) {
    const keys = split(path);
    let o = obj;
    keys.slice(0, -1).forEach((k, i) => {
      if (o[k] == null || typeof o[k] !== "object") o[k] = typeof keys[i + 1] === "number" ? [] : {};
      o = o[k];
    });
    o[keys[keys.length - 1]] = v;
  }

  // delPath removes path and the objects it leaves empty.
  function delPath(obj, path) {
    const keys = split(path);
    const chain = [obj];
    for (const k of keys.slice(0, -1)) {
      const next = chain[chain.length - 1][k];
      if (next == null || typeof next !== "object") return;
      chain.push(next);
    }
    delete chain[chain.length - 1][keys[keys.length - 1]];
    for (let i = chain.length - 1; i > 0; i--) {
      const o = chain[i];
      if (Array.isArray(o) || Object.keys(o).length) break;
      delete chain[i - 1][keys[i - 1]];
    }
  }

  // --- form ----------------------------------------------------------------

  function errorSlot(path) {
    return el("p", { class: "field-error", id: "e-" + idOf(path).slice(2), "data-error-for": path });
  }

  function field(f, path) {
    const id = idOf(path);
    const described = ["e-" + id.slice(2)];
    const hint = f.hint ? el("span", { class: "hint", id: "h-" + id.slice(2), text: f.hint }) : null;
    if (hint) described.push(hint.id);
    const common = { id, "data-path": path, "aria-describedby": described.join(" ") };
    let input;
    const cur = getPath(doc, path);
    if (f.type === "check") {
      input = el("input", { ...common, type: "checkbox" });
      input.checked = cur === undefined ? f.def : cur === true;
      input.addEventListener("change", () => write(f, path, input.checked));
      return el("div", { class: "field check" }, input, el("label", { for: id, text: f.label }), hint, errorSlot(path));
    }
    if (f.type === "select") {
      input = el("select", common);
      const opts = [...f.options];
      const val = cur === undefined ? (f.def === undefined ? "" : String(f.def)) : String(cur);
      if (!opts.includes(val)) opts.push(val); // a value from the JSON editor the form does not offer
      for (const o of opts) input.append(el("option", { value: o, text: (f.names && f.names[o]) || o || "(none)" }));
      input.value = val;
      input.addEventListener("change", () => write(f, path, f.bool && input.value !== "" ? input.value === "true" : input.value));
    } else {
      input = el("input", { ...common, type: f.type === "number" ? "number" : "text", placeholder: f.placeholder || "",
        min: f.min, max: f.max, spellcheck: "false", autocomplete: "off" });
      input.value = cur === undefined ? (f.def === undefined ? "" : f.def) : cur;
      input.addEventListener("input", () => {
        if (f.type !== "number") return write(f, path, input.value);
        if (input.value === "") return write(f, path, undefined);
        write(f, path, Number(input.value));
      });
    }
    return el("div", { class: "field" }, el("label", { for: id, text: f.label }), input, hint, errorSlot(path));
  }

  // write stores one form value and refreshes the JSON and the validation.
  function write(f, path, v) {
    const isDefault = v === undefined || (f.def !== undefined ? v === f.def : v === "");
    if (isDefault && !f.keep) delPath(doc, path);
    else setPath(doc, path, v === undefined ? "" : v);
    changed();
  }

  function disksEditor(f, path) {
    const box = el("fieldset", { "data-path": path, class: "rows" }, el("legend", { text: f.label }));
    const list = getPath(doc, path) || [];
    list.forEach((d, i) => {
      const rp = `${path}.${i}`;
      const id = el("input", { type: "text", id: idOf(rp + ".id"), "data-path": rp + ".id", "aria-describedby": "e-" + idOf(rp + ".id").slice(2), placeholder: "vmdisk1" });
      id.value = d.id || "";
      const out = el("input", { type: "text", id: idOf(rp + ".output_path"), "data-path": rp + ".output_path", "aria-describedby": "e-" + idOf(rp + ".output_path").slice(2) });
      out.value = d.output_path || "";
      const skip = el("input", { type: "checkbox", id: idOf(rp + ".skip"), "data-path": rp + ".skip" });
      skip.checked = !!d.skip;
      const sync = () => {
        const e = { id: id.value };
        if (out.value) e.output_path = out.value;
        if (skip.checked) e.skip = true;
        setPath(doc, rp, e);
        changed();
      };
      id.addEventListener("input", sync); out.addEventListener("input", sync); skip.addEventListener("change", sync);
      box.append(el("div", { class: "row" },
        el("div", { class: "field" }, el("label", { for: id.id, text: `Disk ${i + 1} id (ovf:diskId)` }), id, errorSlot(rp + ".id")),
        el("div", { class: "field" }, el("label", { for: out.id, text: "Output file name" }), out, errorSlot(rp + ".output_path")),
        el("div", { class: "field check" }, skip, el("label", { for: skip.id, text: "Skip" })),
        el("button", { type: "button", class: "secondary", "aria-label": `Remove disk ${i + 1}`, onclick: () => {
          list.splice(i, 1);
          if (list.length) setPath(doc, path, list); else delPath(doc, path);
          structureChanged();
        } }, "Remove")));
    });
    box.append(el("button", { type: "button", class: "secondary", onclick: () => {
      setPath(doc, path, [...list, { id: "" }]);
      structureChanged();
    } }, "Add disk"), errorSlot(path));
    return box;
  }

  // fromSchema completes a pipeline field with the schema's choices and
  // default.
  // topSpec is spec for a top-level manifest field (retry.backoff).
  function topSpec(p) {
    let n = { properties: schema.properties || {} };
    let def;
    for (const k of p.split(".")) {
      n = node((n.properties || {})[k]);
      if (n.default !== undefined) def = n.default;
    }
    return { options: n.enum || [], def };
  }

  function fromSchema(f, top) {
    const s = top ? topSpec(f.p) : spec(f.p);
    if (f.type !== "select" || f.choices) return { ...f, options: f.choices, def: f.choices ? "" : s.def };
    if (!f.unset) return { ...f, options: s.options, def: s.def };
    const name = f.unset(s.def);
    return { ...f, options: ["", ...s.options], names: { "": name }, def: "" };
  }

  // group is one fieldset; path is the section's own path (for problems
  // about the section as a whole), base the prefix of its fields' paths.
  function group(legend, path, base, fields) {
    const fs = el("fieldset", { "data-path": path, id: idOf(path) }, el("legend", { text: legend }));
    const grid = el("div", { class: "grid" });
    fs.append(grid);
    for (const f of fields) {
      if (f.type === "disks") fs.append(disksEditor(f, base + f.p));
      else if (f.type === "list") grid.append(listField(f, base + f.p));
      else grid.append(field(f.p.startsWith("resources.") ? f : fromSchema(f, fields === WHEN), base + f.p));
    }
    fs.append(errorSlot(path));
    return fs;
  }

  // listField is a comma-separated text field for an array of strings
  // (placement); empty leaves the field out.
  function listField(f, path) {
    const id = idOf(path);
    const hint = f.hint ? el("span", { class: "hint", id: "h-" + id.slice(2), text: f.hint }) : null;
    const input = el("input", { id, "data-path": path, type: "text", placeholder: f.placeholder || "", spellcheck: "false", autocomplete: "off",
      "aria-describedby": ["e-" + id.slice(2), hint && hint.id].filter(Boolean).join(" ") });
    const cur = getPath(doc, path);
    input.value = Array.isArray(cur) ? cur.join(", ") : "";
    input.addEventListener("input", () => {
      const l = input.value.split(",").map((x) => x.trim()).filter(Boolean);
      write({}, path, l.length ? l : undefined);
    });
    return el("div", { class: "field" }, el("label", { for: id, text: f.label }), input, hint, errorSlot(path));
  }

  function pipelineGroups(prefix) {
    const out = [];
    for (const [key, legend, fields] of PIPELINE) out.push(group(legend, `${prefix}pipeline.${key}`, prefix + "pipeline.", fields));
    out.push(group("Resource limits", `${prefix}resources`, prefix, RESOURCES));
    return out;
  }

  function render() {
    const root = $("form-fields");
    const top = el("fieldset", { "data-path": "", id: "f-top" }, el("legend", { text: "Manifest" }));
    const grid = el("div", { class: "grid" },
      el("div", { class: "field" }, el("span", { text: "Version" }), el("strong", { text: String(doc.version ?? version()) })),
      field({ label: doc.batch ? "Batch name (optional)" : "VM name", type: "text", hint: "Letters, digits, . _ -; default: the source file's name." }, "name"),
      field({ label: "Priority", type: "number", hint: "Higher runs first; default 0." }, "priority"));
    const batch = el("input", { type: "checkbox", id: "f-batch", "data-path": "batch" });
    batch.checked = !!doc.batch;
    batch.addEventListener("change", () => toggleBatch(batch.checked));
    grid.append(el("div", { class: "field check" }, batch, el("label", { for: "f-batch", text: "Batch of several VMs" }), errorSlot("batch")));
    if (doc.batch) grid.append(field({ label: "Concurrency", type: "number", min: 1, hint: "VMs of this batch at once; default: the agent's max." }, "concurrency"));
    top.append(grid, errorSlot("version"));
    const parts = [top, group("When and where: window, retries, placement", "schedule", "", WHEN)];
    if (doc.batch) {
      parts.push(group("Resource limits for every VM (a VM's own limits win)", "resources", "", RESOURCES));
      const vms = Array.isArray(doc.vms) ? doc.vms : [];
      vms.forEach((vm, i) => {
        const p = `vms.${i}`;
        const fs = el("fieldset", { "data-path": p, id: idOf(p) },
          el("legend", { text: `VM ${i + 1}${vm && vm.name ? ": " + vm.name : ""}` }),
          el("div", { class: "vm-head" },
            el("div", { class: "grid" },
              field({ label: "VM name", type: "text", keep: true }, p + ".name"),
              field({ label: "Priority", type: "number" }, p + ".priority")),
            el("button", { type: "button", class: "secondary", "aria-label": `Remove VM ${i + 1}`, disabled: vms.length < 2, onclick: () => {
              vms.splice(i, 1);
              structureChanged();
            } }, "Remove VM")),
          ...pipelineGroups(p + "."), errorSlot(p));
        parts.push(fs);
      });
      parts.push(el("div", { class: "actions" }, el("button", { type: "button", class: "secondary", id: "add-vm", onclick: () => {
        vms.push({ name: "", pipeline: newPipeline() });
        doc.vms = vms;
        structureChanged();
      } }, "Add VM"), errorSlot("vms")));
    } else {
      parts.push(...pipelineGroups(""));
    }
    root.replaceChildren(...parts);
  }

  function toggleBatch(on) {
    if (on && !doc.batch) {
      doc.batch = true;
      const vm = { name: doc.name || "", pipeline: doc.pipeline || newPipeline() };
      if (doc.priority !== undefined) vm.priority = doc.priority;
      doc.vms = [vm];
      delete doc.pipeline;
      delete doc.name;
      delete doc.priority;
    } else if (!on && doc.batch) {
      const vm = (doc.vms && doc.vms[0]) || {};
      delete doc.batch;
      delete doc.vms;
      delete doc.concurrency;
      doc.name = vm.name || doc.name || "";
      doc.pipeline = vm.pipeline || newPipeline();
    }
    structureChanged();
  }

  // --- sync ------------------------------------------------------------------

  const pretty = () => JSON.stringify(doc, null, 2);

  function changed() {
    const ta = $("json-editor");
    if (document.activeElement !== ta) ta.value = pretty();
    $("json-error").textContent = "";
    ta.removeAttribute("aria-invalid");
    scheduleValidate();
  }

  function structureChanged() {
    render();
    changed();
  }

  function onJSONInput() {
    const ta = $("json-editor");
    let v;
    try {
      v = JSON.parse(ta.value);
    } catch (e) {
      $("json-error").textContent = "Not valid JSON: " + e.message;
      ta.setAttribute("aria-invalid", "true");
      setValidity("JSON syntax error", false);
      return;
    }
    if (v === null || typeof v !== "object" || Array.isArray(v)) {
      $("json-error").textContent = "A manifest is a JSON object.";
      ta.setAttribute("aria-invalid", "true");
      return;
    }
    $("json-error").textContent = "";
    ta.removeAttribute("aria-invalid");
    doc = v;
    render();
    scheduleValidate();
  }

  function setMode(json) {
    if (!json && $("json-error").textContent) {
      setValidity("Fix the JSON before going back to the form", false);
      $("json-editor").focus();
      return;
    }
    jsonMode = json;
    $("mode-form").setAttribute("aria-pressed", String(!json));
    $("mode-json").setAttribute("aria-pressed", String(json));
    $("form-fields").hidden = json;
    $("json-pane").hidden = !json;
    if (json) $("json-editor").value = pretty();
  }

  // --- validation ------------------------------------------------------------

  function setValidity(text, ok) {
    const v = $("validity");
    v.textContent = text;
    v.className = "validity " + (ok == null ? "pending" : ok ? "ok" : "bad");
  }

  function scheduleValidate() {
    clearTimeout(validateTimer);
    validateTimer = setTimeout(validate, 300);
  }

  function clearErrors() {
    for (const e of document.querySelectorAll("#manifest-form [data-error-for]")) e.textContent = "";
    for (const e of document.querySelectorAll("#manifest-form [aria-invalid]")) if (e.id !== "json-editor") e.removeAttribute("aria-invalid");
    $("general-errors").replaceChildren();
  }

  // revealed says whether a problem at slot path p may be shown.
  function revealed(p) {
    if (revealAll) return true;
    if (p === "") return false;
    for (const t of touched) if (t === p || t.startsWith(p + ".")) return true;
    return false;
  }

  // showProblems puts each problem at the closest field the form has for
  // its path, and the rest in a list under the form; problems at fields the
  // user has not touched wait (see touched). It returns how many it showed.
  function showProblems(problems) {
    clearErrors();
    lastProblems = problems;
    let shown = 0;
    const general = [];
    for (const pr of problems) {
      const path = normPath(pr.path);
      let slot = null;
      let target = null;
      for (let p = path; ; p = p.includes(".") ? p.replace(/\.[^.]*$/, "") : "") {
        slot = document.querySelector(`#manifest-form [data-error-for="${CSS.escape(p)}"]`);
        target = document.querySelector(`#manifest-form [data-path="${CSS.escape(p)}"]`);
        if (slot && p !== "") break;
        if (p === "") { slot = null; break; }
      }
      if (!revealed(slot && !jsonMode ? slot.dataset.errorFor : "")) continue;
      shown++;
      if (slot && !jsonMode) {
        slot.textContent = (slot.textContent ? slot.textContent + " " : "") +
          (normPath(slot.dataset.errorFor) === path ? pr.message : `${pr.path}: ${pr.message}`);
        if (target) target.setAttribute("aria-invalid", "true");
      } else {
        general.push(pr.path ? `${pr.path}: ${pr.message}` : pr.message);
      }
    }
    if (general.length) {
      $("general-errors").append(el("ul", {}, ...general.map((t) => el("li", { text: t }))));
    }
    return shown;
  }

  async function validate() {
    const seq = ++validateSeq;
    let r;
    try {
      r = await H2K.api("POST", "/api/workflow/manifest/validate", JSON.stringify(doc));
    } catch (e) {
      setValidity("cannot validate: " + e.message, false);
      return;
    }
    if (seq !== validateSeq) return; // an older answer
    if (r.status !== 200) {
      clearErrors();
      setValidity("cannot validate: " + H2K.errText(r), false);
      return;
    }
    const probs = r.body.problems || (r.body.errors || []).map((m) => ({ path: "", message: m }));
    const shown = showProblems(probs);
    if (r.body.valid) setValidity("Valid manifest", true);
    else if (shown) setValidity(`${probs.length} problem${probs.length === 1 ? "" : "s"}`, false);
    else setValidity("Not complete yet: fill in the fields, then Validate", null);
    $("validity").dataset.checked = String(validateSeq);
  }

  // validateNow shows every problem, touched or not (the Validate button).
  function validateNow() {
    revealAll = true;
    clearTimeout(validateTimer);
    return validate();
  }

  // --- actions -----------------------------------------------------------------

  function download() {
    const blob = new Blob([pretty() + "\n"], { type: "application/json" });
    const a = el("a", { href: URL.createObjectURL(blob), download: (doc.name || (doc.vms && doc.vms[0] && doc.vms[0].name) || "manifest") + ".json" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  async function submit(ev) {
    ev.preventDefault();
    const out = $("submit-result");
    if ($("json-error").textContent) { out.textContent = "Fix the JSON first."; return; }
    out.textContent = "Submitting…";
    $("submit").disabled = true;
    revealAll = true;
    try {
      const r = await H2K.api("POST", "/api/workflow/manifest/submit", JSON.stringify(doc), true);
      if (r.status === 202) {
        out.replaceChildren(`Submitted: job ${r.body.job_ids.join(", ")} `,
          el("button", { type: "button", class: "secondary", id: "submitted-details", onclick: () => H2K.showJob(r.body.job_id) }, "Show job"));
        H2K.selectTab("pending");
        H2K.refreshAll();
      } else if (r.status === 422 && r.body && r.body.problems) {
        // Validation said yes, the agent said no: the badge must not stay
        // green beside the refusal.
        ++validateSeq;
        showProblems(r.body.problems);
        setValidity(`Not accepted: ${r.body.problems.length} problem${r.body.problems.length === 1 ? "" : "s"}`, false);
        out.replaceChildren("The agent refused the manifest:",
          el("ul", {}, ...r.body.problems.map((p) => el("li", { text: p.path ? `${p.path}: ${p.message}` : p.message }))));
      } else {
        ++validateSeq;
        setValidity("Not submitted", false);
        out.textContent = "Cannot submit: " + H2K.errText(r);
      }
    } catch (e) {
      ++validateSeq;
      setValidity("Not submitted", false);
      out.textContent = "Cannot submit: " + e.message;
    } finally {
      $("submit").disabled = false;
    }
  }

  // --- source picker -----------------------------------------------------
  // Browses a source's inventory (GET /api/workflow/sources/{name}/vms) and
  // turns the checked VMs into the manifest: one VM a single manifest, more
  // a batch, each keeping the form's other pipeline settings.

  let pickSources = [];
  let pickPath = "/";
  const picked = new Map(); // inventory path -> entry

  async function pickLoad() {
    const r = await H2K.api("GET", "/api/workflow/sources", undefined, true);
    const sel = $("pick-source");
    if (r.status !== 200) {
      $("pick-status").textContent = "Cannot list sources: " + H2K.errText(r);
      return;
    }
    pickSources = (r.body.sources || []).filter((s) => !s.error);
    sel.replaceChildren(...pickSources.map((s) => el("option", { value: s.name, text: `${s.name} (${s.url})` })));
    if (!pickSources.length) $("pick-status").textContent = "No sources: an administrator adds them in /etc/hyper2kvm/sources.d.";
    else pickBrowse("/");
  }

  async function pickBrowse(p) {
    const name = $("pick-source").value;
    if (!name) return;
    $("pick-status").textContent = "Reading " + p + " …";
    const r = await H2K.api("GET", `/api/workflow/sources/${encodeURIComponent(name)}/vms?path=${encodeURIComponent(p)}`, undefined, true);
    if (r.status !== 200) {
      $("pick-status").textContent = "Cannot browse: " + H2K.errText(r);
      return;
    }
    pickPath = p;
    $("pick-path").textContent = p;
    $("pick-status").textContent = `${picked.size} VM(s) selected`;
    const items = (r.body.entries || []).map((e, i) => {
      if (e.kind !== "vm") {
        return el("li", {}, el("button", { type: "button", class: "link", id: "pick-open-" + i, onclick: () => pickBrowse(e.path) }, e.name + "/"));
      }
      const box = el("input", { type: "checkbox", id: "pick-vm-" + i, "data-vm": e.path });
      box.checked = picked.has(e.path);
      box.addEventListener("change", () => {
        if (box.checked) picked.set(e.path, e); else picked.delete(e.path);
        $("pick-status").textContent = `${picked.size} VM(s) selected`;
      });
      const disks = (e.disks || []).length;
      return el("li", {}, box, el("label", { for: box.id, text: `${e.name} — ${e.power_state || "?"}, ${e.cpus || 0} CPU, ${e.memory_mb || 0} MiB, ${disks} disk(s)` }));
    });
    $("pick-list").replaceChildren(...items);
  }

  function pickUse() {
    const src = pickSources.find((s) => s.name === $("pick-source").value);
    if (!src || !picked.size) {
      $("pick-status").textContent = "Select at least one VM.";
      return;
    }
    const base = (doc.batch ? ((doc.vms || [])[0] || {}).pipeline : doc.pipeline) || {};
    const pipelineFor = (e) => {
      const p = JSON.parse(JSON.stringify(base));
      p.load = { source_type: src.type, source: src.name, vm: e.path };
      if ($("pick-snapshot").checked) p.load.snapshot = true;
      return p;
    };
    const vms = [...picked.values()];
    if (vms.length === 1) {
      doc = { version: version(), name: vms[0].name, pipeline: pipelineFor(vms[0]) };
    } else {
      doc = { version: version(), batch: true, vms: vms.map((e) => ({ name: e.name, pipeline: pipelineFor(e) })) };
    }
    structureChanged();
    $("pick-status").textContent = `The manifest now reads ${vms.length} VM(s) from ${src.name}.`;
  }

  // --- templates ---------------------------------------------------------------

  // The templates library (GET /api/workflow/templates): picking one
  // replaces the manifest by the template's partial manifest; its required
  // parameters (the source path) are then filled in the form as usual.
  let templates = [];

  async function loadTemplates() {
    try {
      const r = await H2K.api("GET", "/api/workflow/templates");
      if (r.status !== 200 || !r.body || !Array.isArray(r.body.templates)) return;
      templates = r.body.templates.filter((t) => !(t.problems && t.problems.length) && !t.unavailable);
      const sel = $("template-select");
      for (const t of templates) sel.append(el("option", { value: t.name, title: t.description || "", text: t.name }));
    } catch (e) {
      // The builder works without templates.
    }
  }

  function fromTemplate(name) {
    const t = templates.find((x) => x.name === name);
    touched.clear();
    revealAll = false;
    doc = t ? JSON.parse(JSON.stringify(t.manifest)) : fresh();
    if (t && doc.version === undefined) doc = { version: version(), ...doc };
    if (t && !doc.name) doc.name = "";
    structureChanged();
  }

  // --- images the agent can see ------------------------------------------

  let images = [];

  // loadImages fills the picker with GET /api/workflow/images: the disk
  // images under the agent's import_dirs, with format and size.
  async function loadImages() {
    const sel = $("image-select"), note = $("image-note");
    let r;
    try {
      r = await H2K.api("GET", "/api/workflow/images");
    } catch (e) {
      r = { status: 0, body: null };
    }
    images = r.status === 200 && r.body && Array.isArray(r.body.images) ? r.body.images : [];
    const first = r.status === 200 ? (images.length ? `(pick one of ${images.length} image${images.length === 1 ? "" : "s"}, or type a path below)` : "(no images found)")
      : r.status === 401 ? "(sign in with an API token to list the images)" : "(cannot list the images)";
    sel.replaceChildren(el("option", { value: "", text: first }),
      ...images.map((im, i) => el("option", { value: String(i), text: `${im.path} · ${im.format} · ${H2K.iec(im.size)}` })));
    const dirs = r.status === 200 && r.body && Array.isArray(r.body.dirs) ? r.body.dirs : [];
    note.textContent = r.status === 200
      ? (dirs.length ? "Looked in " + dirs.join(", ") + "." : "No import directories: set import_dirs in /etc/hyper2kvm/agent.yaml.")
      : r.status === 401 ? "The image list names files on the agent's host: it needs the API token over TCP." : H2K.errText(r);
  }

  // pickImage puts the chosen image into the manifest as its source: path,
  // type from its bytes, and its name when the manifest has none yet.
  function pickImage() {
    const im = images[Number($("image-select").value)];
    if (!im || $("image-select").value === "") return;
    const m = im.manifest || {};
    const load = { source_type: im.format, source_path: im.path };
    let prefix = "";
    if (doc.batch && Array.isArray(doc.vms) && doc.vms.length) {
      const vm = doc.vms[0];
      vm.pipeline = vm.pipeline || newPipeline();
      vm.pipeline.load = Object.assign({}, vm.pipeline.load, load);
      if (!vm.name && m.name) vm.name = m.name;
      prefix = "vms[0].";
    } else {
      doc.pipeline = doc.pipeline || newPipeline();
      doc.pipeline.load = Object.assign({}, doc.pipeline.load, load);
      if (!doc.name && m.name) { doc.name = m.name; touched.add("name"); }
    }
    touched.add(prefix + "pipeline.load.source_path");
    touched.add(prefix + "pipeline.load.source_type");
    structureChanged();
  }

  async function init() {
    try {
      const r = await H2K.api("GET", "/api/workflow/schema");
      if (r.status === 200 && r.body && typeof r.body === "object") schema = r.body;
      else setValidity("cannot load the manifest schema: " + H2K.errText(r), false);
    } catch (e) {
      setValidity("cannot load the manifest schema: " + e.message, false);
    }
    doc = fresh();
    render();
    changed();
    $("mode-form").addEventListener("click", () => setMode(false));
    $("mode-json").addEventListener("click", () => setMode(true));
    $("json-editor").addEventListener("input", () => { revealAll = true; onJSONInput(); });
    // Any edit in the form marks its field touched (before the validation
    // it schedules runs).
    for (const type of ["input", "change"]) {
      $("form-fields").addEventListener(type, (ev) => {
        const f = ev.target.closest && ev.target.closest("[data-path]");
        if (f && f.dataset.path) touched.add(f.dataset.path);
      });
    }
    $("validate").addEventListener("click", validateNow);
    $("json-editor").addEventListener("blur", () => { if (!$("json-error").textContent) $("json-editor").value = pretty(); });
    $("download").addEventListener("click", download);
    $("reset").addEventListener("click", () => {
      touched.clear();
      revealAll = false;
      doc = fresh();
      structureChanged();
      $("submit-result").textContent = "";
    });
    $("manifest-form").addEventListener("submit", submit);
    $("picker").addEventListener("toggle", () => { if ($("picker").open && !pickSources.length) pickLoad(); });
    $("pick-source").addEventListener("change", () => { picked.clear(); pickBrowse("/"); });
    $("pick-up").addEventListener("click", () => pickBrowse(pickPath.replace(/\/[^/]*$/, "") || "/"));
    $("pick-use").addEventListener("click", pickUse);
    $("template-select").addEventListener("change", (ev) => fromTemplate(ev.target.value));
    await loadTemplates();
    $("image-select").addEventListener("change", pickImage);
    $("image-refresh").addEventListener("click", loadImages);
    loadImages();
  }

  document.addEventListener("DOMContentLoaded", init);
  window.H2KBuilder = { get doc() { return doc; }, validate, validateNow, normPath, get problems() { return lastProblems; } };
})();
