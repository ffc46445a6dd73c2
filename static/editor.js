// The job editor: every job field, the cron expression checked live against the preview
// endpoint (next 5 fire times, DST days flagged), the API's field errors shown next to their
// field, and optimistic version conflicts explained with "reload" and "overwrite". Leaving it with
// unsaved edits asks first (ctx.guardLeave).

import { api, describe, seg, Unauthorized } from "./api.js";
import { h, replace, debounce, every } from "./dom.js";
import { fmtTime, fmtOffset, fmtWallClock, viewerZone } from "./format.js";

/** Fields the API can name in an error, in form order. */
const FIELDS = ["name", "command", "cron_expr", "tz", "dialect", "enabled", "concurrency", "timeout_secs",
  "description", "env", "working_dir", "limits", "run_as_user", "run_as_group", "jitter_secs", "retry", "alerts", "selector"];

/** Job fields the form has no control for: kept as loaded, so a save does not drop them. */
const KEPT = ["retention_days", "managed_by"];

/** The job's `limits` keys, their labels and input bounds (README "Resource limits"). */
const LIMITS = [
  ["max_memory_bytes", "Memory (bytes, RLIMIT_AS)", "16777216"],
  ["max_cpu_secs", "CPU time (seconds)", "1"],
  ["max_open_files", "Open files", "16"],
  ["nice", "Nice (-20 to 19)", "-20"],
];

const LABELS = {
  name: "name", command: "command", cron_expr: "cron expression", tz: "time zone", dialect: "dialect",
  enabled: "enabled", concurrency: "concurrency", timeout_secs: "timeout", description: "description",
  env: "environment", working_dir: "working directory", limits: "limits", run_as_user: "run as user",
  run_as_group: "run as group", jitter_secs: "jitter", retry: "retries", alerts: "alert rules", selector: "worker selector",
};

/** Label name and value rules (README "Worker labels"), as the server checks them. */
const LABEL_NAME = /^[A-Za-z0-9._/-]{1,63}$/;
const LABEL_VALUE = /^[A-Za-z0-9._-]{0,63}$/;

/** Parses a selector's comma form (`zone=b, gpu=true`) into a map; throws a message when bad. */
export function parseSelector(text) {
  const out = {};
  for (const raw of text.split(",")) {
    const entry = raw.trim();
    if (!entry) continue;
    const eq = entry.indexOf("=");
    if (eq < 0) throw new Error(`"${entry}" is not name=value.`);
    const k = entry.slice(0, eq).trim();
    const v = entry.slice(eq + 1).trim();
    if (!LABEL_NAME.test(k)) throw new Error(`Label name "${k}": 1 to 63 letters, digits, '.', '_', '/' or '-'.`);
    if (!LABEL_VALUE.test(v)) throw new Error(`Value "${v}" of ${k}: up to 63 letters, digits, '.', '_' or '-'.`);
    if (Object.hasOwn(out, k)) throw new Error(`Label "${k}" is given twice.`);
    out[k] = v;
  }
  if (Object.keys(out).length > 32) throw new Error("At most 32 labels.");
  return out;
}

/** The comma form of a selector map. */
function formatSelector(selector) {
  return Object.entries(selector || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

/** Whether a worker's labels satisfy every entry of `selector`. */
function matchesSelector(selector, labels) {
  return Object.entries(selector).every(([k, v]) => Object.hasOwn(labels || {}, k) && labels[k] === v);
}

let zones = null;
function zoneList() {
  if (!zones) {
    try {
      zones = Intl.supportedValuesOf("timeZone");
      if (!zones.includes("UTC")) zones.unshift("UTC");
    } catch (_) {
      zones = ["UTC"];
    }
  }
  return zones;
}

/** Mounts the editor for job `name` (null: a new job); returns the unmount function. */
export function mountEditor(root, ctx, name) {
  const isNew = name == null;
  let alive = true;
  let original = null; // the job as last loaded from the server (version, conflict diff)
  let previewSeq = 0;

  // ---- controls ---------------------------------------------------------------------------
  const c = {
    name: h("input", { id: "f-name", type: "text", required: true, autocomplete: "off", spellcheck: "false",
      pattern: "[A-Za-z0-9._\\-]+", maxlength: "128", readonly: !isNew }),
    command: h("textarea", { id: "f-command", rows: "3", required: true, spellcheck: "false", class: "mono" }),
    cron_expr: h("input", { id: "f-cron_expr", type: "text", required: true, autocomplete: "off", spellcheck: "false", class: "mono" }),
    tz: h("input", { id: "f-tz", type: "text", list: "zones", autocomplete: "off", spellcheck: "false", placeholder: "server default" }),
    dialect: h("select", { id: "f-dialect" },
      h("option", { value: "distcron" }, "distcron"),
      h("option", { value: "seed" }, "seed (Go system)")),
    enabled: h("input", { id: "f-enabled", type: "checkbox", role: "switch", checked: true }),
    concurrency: h("select", { id: "f-concurrency" },
      h("option", { value: "forbid" }, "forbid: skip the tick"),
      h("option", { value: "allow" }, "allow: run both"),
      h("option", { value: "replace" }, "replace: kill the old run")),
    timeout_secs: h("input", { id: "f-timeout_secs", type: "number", min: "0", step: "1", inputmode: "numeric", value: "0" }),
    jitter_secs: h("input", { id: "f-jitter_secs", type: "number", min: "0", max: "3600", step: "1", inputmode: "numeric", value: "0" }),
    description: h("textarea", { id: "f-description", rows: "2" }),
    working_dir: h("input", { id: "f-working_dir", type: "text", spellcheck: "false", placeholder: "the worker's", class: "mono" }),
    run_as_user: h("input", { id: "f-run_as_user", type: "text", autocomplete: "off", spellcheck: "false", placeholder: "the worker's user", class: "mono" }),
    run_as_group: h("input", { id: "f-run_as_group", type: "text", autocomplete: "off", spellcheck: "false", placeholder: "the user's group", class: "mono" }),
    retry: h("textarea", { id: "f-retry", rows: "2", spellcheck: "false", class: "mono", placeholder: "no retries" }),
    alerts: h("textarea", { id: "f-alerts", rows: "3", spellcheck: "false", class: "mono", placeholder: "the defaults of alerts.rules" }),
    selector: h("input", { id: "f-selector", type: "text", autocomplete: "off", spellcheck: "false", class: "mono", placeholder: "every worker, e.g. zone=b, gpu=true" }),
  };
  /** Which live workers match the selector being typed (README "Worker labels"). */
  const selectorMatch = h("div", { class: "selector-match", id: "selector-match", "aria-live": "polite" });
  /** The live workers (null until loaded), for the selector's live matching. */
  let liveWorkers = null;
  const limitInputs = Object.fromEntries(LIMITS.map(([key, , min]) => [key,
    h("input", { id: `f-limit-${key}`, type: "number", step: "1", min, inputmode: "numeric", placeholder: "no limit" })]));
  const envRows = h("div", { class: "env-rows", id: "f-env", tabindex: "-1" });
  const errors = Object.fromEntries(FIELDS.map((f) => [f, h("p", { class: "field-error", id: `err-${f}`, "aria-live": "polite" })]));
  const formError = h("div", { class: "form-error", role: "alert", hidden: true });
  const conflict = h("div", { class: "conflict", id: "conflict", role: "alert", hidden: true });
  const preview = h("section", { class: "preview", id: "preview", "aria-live": "polite", "aria-label": "Schedule preview" });
  const saveButton = h("button", { type: "submit", class: "primary", id: "save" }, isNew ? "Create job" : "Save changes");

  function field(key, label, control, help, extraClass = "") {
    const helpEl = help ? h("p", { class: "help", id: `help-${key}` }, help) : null;
    control.setAttribute("aria-describedby", [helpEl ? `help-${key}` : null, `err-${key}`].filter(Boolean).join(" "));
    return h("div", { class: `field ${extraClass}`, dataset: { field: key } },
      h("label", { for: control.id }, label), control, helpEl, errors[key]);
  }

  const form = h("form", { id: "job-form", class: "editor", novalidate: true, onsubmit: (ev) => { ev.preventDefault(); save(null); } },
    formError,
    conflict,
    h("div", { class: "editor-grid" },
      h("div", { class: "editor-main" },
        field("name", "Name", c.name, isNew ? "Letters, digits, '.', '_' and '-'. The name is the job's key." : "Names cannot change; create a new job to rename."),
        field("command", "Command", c.command, "Run as <shell> -c <command> on one worker."),
        field("cron_expr", "Schedule (cron expression)", c.cron_expr, "e.g. */5 * * * 1-5, 0 30 2 * * * (with seconds), @daily, @every 10m"),
        h("div", { class: "row2" },
          field("tz", "Time zone", c.tz, "IANA name, e.g. Europe/Berlin. Empty: the server's default_tz."),
          field("dialect", "Dialect", c.dialect, "distcron: 5 fields, 6 with seconds first, 7 with years. seed: 6 fields are 5 + year.")),
        field("jitter_secs", "Jitter (seconds)", c.jitter_secs, "Each tick fires a stable 0 to N-1 s late (a hash of the name), the same on every worker; 0 = on the tick. Below the schedule's interval, at most 3600."),
        preview,
        field("selector", "Worker selector", c.selector, "Only live workers carrying every one of these labels run the job, e.g. zone=b, gpu=true; empty = any worker. With none matching, ticks are recorded skipped (no_eligible_worker)."),
        selectorMatch,
        h("div", { class: "row2" },
          field("concurrency", "When the previous run is still running", c.concurrency, "forbid records the tick as skipped; replace kills the running run and starts the new one."),
          field("timeout_secs", "Timeout (seconds)", c.timeout_secs, "Killed after this long; 0 = no timeout.")),
        field("description", "Description", c.description, "Free text for operators."),
        h("fieldset", { class: "field env", dataset: { field: "env" } },
          h("legend", {}, "Environment variables"),
          envRows,
          h("button", { type: "button", id: "env-add", onclick: () => { addEnvRow("", "", true); } }, "Add variable"),
          errors.env),
        field("working_dir", "Working directory", c.working_dir, "Absolute path; empty = the worker's own."),
        h("div", { class: "row2" },
          field("run_as_user", "Run as user", c.run_as_user, "Root workers only, and only users in executor.allowed_users; empty = the worker's user."),
          field("run_as_group", "Run as group", c.run_as_group, "Empty = the user's primary group.")),
        h("fieldset", { class: "field limits", dataset: { field: "limits" } },
          h("legend", {}, "Resource limits (per process; empty = none)"),
          h("div", { class: "row2" },
            LIMITS.map(([key, label]) => h("div", { class: "field" }, h("label", { for: `f-limit-${key}` }, label), limitInputs[key]))),
          errors.limits),
        field("retry", "Retries (JSON)", c.retry, "Attempts of a failed tick, e.g. {\"max_attempts\": 3, \"initial_delay_secs\": 10, \"factor\": 2, \"on\": [\"failed\", \"timeout\", \"lost\"]}; empty = a failed tick stays failed. See README \"Retries\"."),
        field("alerts", "Alert rules (JSON)", c.alerts, "A list of rules, e.g. [{\"on\": [\"failed\", \"recovered\"], \"after_consecutive\": 2, \"channels\": [\"ops\"]}]; empty = the defaults of alerts.rules, [] = no alerts. See the Alerts view for the channels."),
        h("div", { class: "field switch-field", dataset: { field: "enabled" } },
          h("label", { class: "switch", for: "f-enabled" }, c.enabled, h("span", { class: "switch-track", "aria-hidden": "true" }), h("span", {}, "Enabled (fires on its schedule)")),
          errors.enabled))),
    h("div", { class: "form-actions" },
      saveButton,
      h("a", { href: "#/jobs", class: "button", id: "cancel" }, "Cancel")));

  replace(root,
    h("div", { class: "view-head" },
      h("h1", { tabindex: "-1" }, isNew ? "New job" : `Edit ${name}`),
      isNew ? null : h("a", { href: `#/runs?job=${seg(name)}`, class: "button" }, "Runs of this job")),
    h("datalist", { id: "zones" }, zoneList().map((z) => h("option", { value: z }))),
    form);

  // ---- env rows -----------------------------------------------------------------------------
  let envCounter = 0;
  function addEnvRow(key, value, focus) {
    const n = ++envCounter;
    const k = h("input", { type: "text", class: "env-key mono", value: key, spellcheck: "false", autocomplete: "off",
      "aria-label": `Variable ${n} name`, placeholder: "NAME", "aria-describedby": "err-env" });
    const v = h("input", { type: "text", class: "env-value mono", value, spellcheck: "false", autocomplete: "off",
      "aria-label": `Variable ${n} value`, placeholder: "value" });
    const rowEl = h("div", { class: "env-row" }, k, h("span", { "aria-hidden": "true" }, "="), v,
      h("button", { type: "button", class: "icon", "aria-label": `Remove variable ${n}`, onclick: () => { rowEl.remove(); } }, "✕"));
    envRows.append(rowEl);
    if (focus) k.focus();
  }

  function readEnv() {
    const env = {};
    for (const rowEl of envRows.querySelectorAll(".env-row")) {
      const k = rowEl.querySelector(".env-key").value.trim();
      const v = rowEl.querySelector(".env-value").value;
      if (!k && !v) continue;
      if (!k) throw fieldError("env", "A variable with a value needs a name.");
      if (Object.prototype.hasOwnProperty.call(env, k)) throw fieldError("env", `Variable ${k} is listed twice.`);
      env[k] = v;
    }
    return env;
  }

  // ---- errors -------------------------------------------------------------------------------
  function fieldError(field, message) {
    const e = new Error(message);
    e.field = field;
    return e;
  }

  function control(field) {
    return field === "env" ? envRows : c[field];
  }

  function setError(field, message) {
    const el = errors[field];
    if (!el) return false;
    el.textContent = message || "";
    const ctl = control(field);
    if (ctl) {
      if (message) ctl.setAttribute("aria-invalid", "true");
      else ctl.removeAttribute("aria-invalid");
    }
    return true;
  }

  function clearErrors() {
    for (const f of FIELDS) setError(f, "");
    formError.hidden = true;
    formError.replaceChildren();
  }

  function showFormError(message) {
    replace(formError, h("p", {}, message));
    formError.hidden = false;
    formError.scrollIntoView({ block: "nearest" });
  }

  // ---- filling and reading ------------------------------------------------------------------
  /** The loaded job's values of the fields in KEPT. */
  let kept = {};

  function fill(job) {
    c.name.value = job.name || "";
    c.command.value = job.command || "";
    c.cron_expr.value = job.cron_expr || "";
    c.tz.value = job.tz || "";
    c.dialect.value = job.dialect || "distcron";
    c.enabled.checked = job.enabled !== false;
    c.concurrency.value = job.concurrency || "forbid";
    c.timeout_secs.value = String(job.timeout_secs ?? 0);
    c.jitter_secs.value = String(job.jitter_secs ?? 0);
    c.description.value = job.description || "";
    c.working_dir.value = job.working_dir || "";
    c.run_as_user.value = job.run_as_user || "";
    c.run_as_group.value = job.run_as_group || "";
    for (const [key] of LIMITS) limitInputs[key].value = job.limits?.[key] ?? "";
    c.alerts.value = job.alerts ? JSON.stringify(job.alerts) : "";
    c.retry.value = job.retry ? JSON.stringify(job.retry) : "";
    c.selector.value = formatSelector(job.selector);
    renderSelectorMatch();
    kept = Object.fromEntries(KEPT.filter((k) => job[k] !== undefined).map((k) => [k, job[k]]));
    envRows.replaceChildren();
    for (const [k, v] of Object.entries(job.env || {})) addEnvRow(k, v, false);
    if (!envRows.children.length) addEnvRow("", "", false);
  }

  function read() {
    const timeout = c.timeout_secs.value.trim();
    if (timeout !== "" && !/^\d+$/.test(timeout)) throw fieldError("timeout_secs", "The timeout is a whole number of seconds (0 = none).");
    const body = {
      name: c.name.value.trim(),
      command: c.command.value,
      cron_expr: c.cron_expr.value.trim(),
      enabled: c.enabled.checked,
      concurrency: c.concurrency.value,
      timeout_secs: timeout === "" ? 0 : Number(timeout),
      description: c.description.value,
      env: readEnv(),
      dialect: c.dialect.value,
    };
    const tz = c.tz.value.trim();
    if (tz) body.tz = tz;
    const wd = c.working_dir.value.trim();
    if (wd) body.working_dir = wd;
    const user = c.run_as_user.value.trim();
    if (user) body.run_as_user = user;
    const group = c.run_as_group.value.trim();
    if (group) body.run_as_group = group;
    const limits = {};
    for (const [key, label] of LIMITS) {
      const v = limitInputs[key].value.trim();
      if (v === "") continue;
      if (!/^-?\d+$/.test(v)) throw fieldError("limits", `${label}: a whole number, or empty for no limit.`);
      limits[key] = Number(v);
    }
    if (Object.keys(limits).length) body.limits = limits;
    const rules = c.alerts.value.trim();
    if (rules) {
      try {
        body.alerts = JSON.parse(rules);
      } catch (_) {
        throw fieldError("alerts", "Alert rules are a JSON list of rules, or empty for the defaults.");
      }
    }
    const retry = c.retry.value.trim();
    if (retry) {
      try {
        body.retry = JSON.parse(retry);
      } catch (_) {
        throw fieldError("retry", "Retries are a JSON object such as {\"max_attempts\": 3}, or empty for none.");
      }
    }
    let selector;
    try {
      selector = parseSelector(c.selector.value);
    } catch (e) {
      throw fieldError("selector", e.message);
    }
    if (Object.keys(selector).length) body.selector = selector;
    Object.assign(body, kept);
    const jitter = c.jitter_secs.value.trim();
    if (jitter !== "" && !/^\d+$/.test(jitter)) throw fieldError("jitter_secs", "Jitter is a whole number of seconds (0 = none).");
    if (jitter !== "" && jitter !== "0") body.jitter_secs = Number(jitter);
    return body;
  }

  // ---- selector matching --------------------------------------------------------------------
  function renderSelectorMatch() {
    let selector;
    try {
      selector = parseSelector(c.selector.value);
    } catch (e) {
      replace(selectorMatch, h("p", { class: "warning", id: "selector-invalid" }, e.message));
      return;
    }
    if (liveWorkers === null) {
      replace(selectorMatch, h("p", { class: "muted" }, "Loading the live workers…"));
      return;
    }
    const matching = liveWorkers.filter((w) => matchesSelector(selector, w.labels));
    const total = liveWorkers.length;
    if (!Object.keys(selector).length) {
      replace(selectorMatch, h("p", { class: "muted", id: "selector-count" }, `Any of the ${total} live worker${total === 1 ? "" : "s"} may run it.`));
      return;
    }
    if (!matching.length) {
      replace(selectorMatch, h("p", { class: "warning", id: "selector-none" },
        `No live worker matches (of ${total}): its ticks would be recorded skipped (no_eligible_worker) until one does.`));
      return;
    }
    replace(selectorMatch,
      h("p", { class: "muted", id: "selector-count" }, `Matches ${matching.length} of ${total} live worker${total === 1 ? "" : "s"}:`),
      h("ul", { class: "labels", id: "selector-workers" }, matching.map((w) => h("li", { dataset: { worker: w.id } }, h("code", {}, w.id)))));
  }

  async function loadWorkers() {
    try {
      const body = await api("GET", "/workers");
      if (!alive) return;
      liveWorkers = (body.workers || []).filter((w) => w.capacity > 0);
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      liveWorkers = liveWorkers || [];
      replace(selectorMatch, h("p", { class: "muted" }, `Could not load the live workers: ${describe(e)}`));
      return;
    }
    renderSelectorMatch();
  }

  c.selector.addEventListener("input", () => { setError("selector", ""); renderSelectorMatch(); });

  // ---- live preview -------------------------------------------------------------------------
  async function runPreview() {
    const seq = ++previewSeq;
    const expr = c.cron_expr.value.trim();
    if (!expr) {
      setError("cron_expr", "");
      replace(preview, h("p", { class: "muted" }, "Enter a cron expression to see when it fires."));
      return;
    }
    const q = new URLSearchParams({ expr, count: "5", dialect: c.dialect.value });
    if (c.tz.value.trim()) q.set("tz", c.tz.value.trim());
    // Jitter: the preview lists the real fire times (tick + the name's offset).
    const jitter = c.jitter_secs.value.trim();
    if (/^\d+$/.test(jitter) && jitter !== "0" && c.name.value.trim()) {
      q.set("jitter_secs", jitter);
      q.set("name", c.name.value.trim());
    }
    preview.setAttribute("aria-busy", "true");
    try {
      const p = await api("GET", `/cron/preview?${q}`);
      if (!alive || seq !== previewSeq) return;
      setError("cron_expr", "");
      setError("tz", "");
      renderPreview(p);
    } catch (e) {
      if (!alive || seq !== previewSeq || e instanceof Unauthorized) return;
      const field = e.field === "expr" ? "cron_expr" : e.field === "name" ? "jitter_secs" : e.field;
      if (field === "cron_expr" || field === "tz") {
        setError(field, e.message);
        if (field === "cron_expr") setError("tz", "");
        replace(preview, h("p", { class: "muted" }, field === "tz" ? "Fix the time zone to see the fire times." : "Fix the expression to see the fire times."));
      } else {
        replace(preview, h("p", { class: "warning" }, `Preview unavailable: ${describe(e)}`));
      }
    } finally {
      preview.removeAttribute("aria-busy");
    }
  }
  const schedulePreview = debounce(runPreview, 250);

  function renderPreview(p) {
    const tz = p.tz;
    // With jitter, the times the ticks really fire at.
    const next = (p.jitter_offset_secs ? p.fire_at : p.next) || [];
    const dst = p.dst || [];
    const zoneNote = c.tz.value.trim() ? tz : `${tz} (server default)`;
    const anyDst = dst.some(Boolean);
    replace(preview,
      h("h2", {}, "When it fires"),
      p.description ? h("p", { class: "reading", id: "preview-reading" }, p.description) : null,
      next.length === 0
        ? h("p", { class: "warning" }, "This schedule never fires again.")
        : [
          h("p", { class: "muted" }, `Next ${next.length} in ${zoneNote}`, tz === viewerZone ? "" : `, and in your zone (${viewerZone})`,
            p.jitter_offset_secs ? h("span", { id: "jitter-note" }, `, each ${p.jitter_offset_secs} s after its tick (jitter)`) : "", ":"),
          h("ol", { class: "fire-times", id: "fire-times" }, next.map((t, i) => h("li", { class: dst[i] ? "dst-day" : null },
            h("time", { datetime: t }, fmtTime(t, tz)),
            tz === viewerZone ? null : h("span", { class: "muted" }, ` — yours: ${fmtTime(t, viewerZone)}`),
            dst[i] ? h("div", { class: "dst-warning" }, "⚠ ", dstText(dst[i], tz)) : null))),
        ],
      anyDst
        ? h("p", { class: "warning", id: "dst-warning" },
          "Daylight-saving change on a day above. distcron follows the cron rule: a fixed time in the skipped hour runs when the hour ends; "
          + "a fixed time in the repeated hour runs once; wildcard schedules skip the missing hour and run in both passes of the repeated one.")
        : null);
  }

  function dstText(change, tz) {
    const forward = change.offset_after_secs > change.offset_before_secs;
    const shift = Math.abs(change.offset_after_secs - change.offset_before_secs) / 60;
    const amount = shift % 60 === 0 ? `${shift / 60} h` : `${shift} min`;
    return `DST day in ${tz}: clocks go ${forward ? "forward" : "back"} ${amount} at ${fmtWallClock(change.local_before)}`
      + ` (to ${fmtWallClock(change.local_after)}; ${fmtOffset(change.offset_before_secs)} → ${fmtOffset(change.offset_after_secs)}).`;
  }

  for (const key of ["cron_expr", "tz", "jitter_secs"]) c[key].addEventListener("input", () => { setError(key, ""); schedulePreview(); });
  c.dialect.addEventListener("change", () => runPreview());
  for (const key of FIELDS) {
    const ctl = c[key];
    if (ctl && key !== "cron_expr" && key !== "tz") ctl.addEventListener("input", () => setError(key, ""));
  }
  envRows.addEventListener("input", () => setError("env", ""));

  // ---- unsaved changes ----------------------------------------------------------------------
  /** Every value the form holds, as one string; empty environment rows do not count. */
  function snapshot() {
    const env = [...envRows.querySelectorAll(".env-row")]
      .map((r) => [r.querySelector(".env-key").value, r.querySelector(".env-value").value])
      .filter(([k, v]) => k || v);
    return JSON.stringify([Object.entries(c).map(([k, el]) => (k === "enabled" ? el.checked : el.value)),
      LIMITS.map(([key]) => limitInputs[key].value), env]);
  }
  /** The form as filled from the server (or the defaults); null while an edited job loads. */
  let baseline = null;
  const markClean = () => { baseline = snapshot(); };
  const dirty = () => alive && baseline !== null && snapshot() !== baseline;
  ctx.guardLeave(dirty);

  // ---- saving and conflicts -----------------------------------------------------------------
  async function save(overwriteVersion) {
    clearErrors();
    let body;
    try {
      body = read();
    } catch (e) {
      setError(e.field, e.message);
      focusField(e.field);
      return;
    }
    if (!isNew) {
      delete body.name;
      // overwriteVersion: null = the version we started from; a number = that fresh version;
      // "any" = create or replace whatever is there.
      const version = overwriteVersion === null ? original?.version : overwriteVersion;
      if (typeof version === "number") body.version = version;
      // Jobs as code: a hand edit keeps the job's owner label, so the next plan shows it as a diff.
      if (original?.managed_by) body.managed_by = original.managed_by;
    }
    saveButton.disabled = true;
    saveButton.textContent = "Saving…";
    try {
      const saved = isNew
        ? await api("POST", "/jobs", body)
        : await api("PUT", `/jobs/${seg(name)}`, body);
      if (!alive) return;
      markClean();
      ctx.notify(isNew ? `Job ${saved.name} created.` : `Job ${saved.name} saved (version ${saved.version}).`);
      ctx.navigate("#/jobs");
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      if (e.code === "version_conflict") {
        await showConflict();
      } else if (e.code === "job_exists") {
        setError("name", `A job named ${body.name} exists already; choose another name or edit that job.`);
        focusField("name");
      } else if (e.code === "job_not_found" && !isNew) {
        await showConflict();
      } else if (e.field && errors[e.field === "expr" ? "cron_expr" : e.field]) {
        const f = e.field === "expr" ? "cron_expr" : e.field;
        setError(f, e.message);
        focusField(f);
        showFormError(`Not saved: fix the ${LABELS[f] || f}.`);
      } else {
        showFormError(`Not saved: ${describe(e)}`);
      }
    } finally {
      if (alive) {
        saveButton.disabled = false;
        saveButton.textContent = isNew ? "Create job" : "Save changes";
      }
    }
  }

  function focusField(field) {
    const ctl = control(field);
    if (ctl) ctl.focus();
  }

  /** What someone else changed between `before` and `after`, as field labels. */
  function changedFields(before, after) {
    if (!before || !after) return [];
    return FIELDS.filter((f) => f !== "name" && JSON.stringify(before[f] ?? null) !== JSON.stringify(after[f] ?? null))
      .map((f) => LABELS[f]);
  }

  async function showConflict() {
    let fresh = null;
    try {
      fresh = await api("GET", `/jobs/${seg(name)}`);
    } catch (e) {
      if (e instanceof Unauthorized) return;
      if (e.code !== "job_not_found") {
        showFormError(`Not saved: the job changed and could not be read again: ${describe(e)}`);
        return;
      }
    }
    if (!alive) return;
    const theirs = changedFields(original, fresh);
    replace(conflict,
      h("h2", {}, "Changed by someone else — reload or overwrite"),
      fresh
        ? h("p", {}, `While you were editing, ${name} was saved by someone else: you started from version ${original?.version ?? "?"}, `
          + `it is now version ${fresh.version}.`, theirs.length ? ` Their changes: ${theirs.join(", ")}.` : "")
        : h("p", {}, `While you were editing, ${name} was deleted by someone else.`),
      h("p", {}, fresh
        ? "Reload discards your edits and shows their version. Overwrite saves your version over theirs."
        : "Reload goes back to the job list. Overwrite creates the job again with your version."),
      h("div", { class: "form-actions" },
        h("button", { type: "button", id: "conflict-reload", onclick: () => reload(fresh) }, "Reload"),
        h("button", { type: "button", class: "danger", id: "conflict-overwrite", onclick: () => overwrite(fresh) }, "Overwrite")));
    conflict.hidden = false;
    conflict.scrollIntoView({ block: "nearest" });
    conflict.querySelector("#conflict-reload").focus();
  }

  function reload(fresh) {
    conflict.hidden = true;
    if (!fresh) {
      markClean();
      ctx.navigate("#/jobs");
      return;
    }
    original = fresh;
    fill(fresh);
    markClean();
    clearErrors();
    runPreview();
    ctx.notify(`Reloaded ${name} (version ${fresh.version}).`);
    c.command.focus();
  }

  function overwrite(fresh) {
    conflict.hidden = true;
    if (fresh) original = { ...original, version: fresh.version };
    save(fresh ? fresh.version : "any");
  }

  // ---- start --------------------------------------------------------------------------------
  async function start() {
    if (isNew) {
      fill({ enabled: true, concurrency: "forbid", timeout_secs: 0, dialect: "distcron", env: {} });
      markClean();
      runPreview();
      c.name.focus();
      return;
    }
    replace(preview, h("p", { class: "loading" }, "Loading…"));
    form.setAttribute("aria-busy", "true");
    saveButton.disabled = true;
    try {
      original = await api("GET", `/jobs/${seg(name)}`);
      if (!alive) return;
      fill(original);
      markClean();
      form.removeAttribute("aria-busy");
      saveButton.disabled = false;
      runPreview();
    } catch (e) {
      if (!alive || e instanceof Unauthorized) return;
      form.removeAttribute("aria-busy");
      replace(root,
        h("div", { class: "view-head" }, h("h1", { tabindex: "-1" }, `Edit ${name}`)),
        h("div", { class: "empty" }, h("p", {}, e.code === "job_not_found" ? `There is no job named ${name}.` : `Could not load ${name}: ${describe(e)}`),
          h("a", { href: "#/jobs", class: "button" }, "Back to jobs")));
    }
  }

  start();
  loadWorkers();
  const stopWorkers = every(10000, loadWorkers);
  return () => { alive = false; schedulePreview.cancel(); stopWorkers(); };
}
