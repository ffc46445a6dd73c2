// distcron admin console: the shell (navigation, login, health, notices, confirmations) and the
// hash router that mounts one view at a time. Every string from the server is rendered as text
// (textContent / text nodes), never parsed as HTML. The API token, when the server needs one, is
// kept in sessionStorage: for this tab only.

import { api, describe, token, setToken, clearToken, setUnauthorizedHandler, Unauthorized, setWhoami } from "./api.js";
import { h, byId, replace, every } from "./dom.js";
import { mountJobs } from "./jobs.js";
import { mountEditor } from "./editor.js";
import { mountRuns, mountRun } from "./runs.js";
import { mountWorkers } from "./workers.js";
import { mountHistory } from "./history.js";
import { mountAlerts } from "./alerts.js";
import { mountCharts, mountFleet } from "./charts.js";

// ---- notices ----------------------------------------------------------------------------------
const errors = new Map();
function renderBanner() {
  const banner = byId("banner");
  replace(banner, [...errors.entries()].map(([source, message]) => h("div", { class: "banner-item" },
    h("span", {}, message),
    h("button", { type: "button", class: "icon", "aria-label": "Dismiss this message", onclick: () => { errors.delete(source); renderBanner(); } }, "✕"))));
  banner.hidden = errors.size === 0;
}

let toastTimer = null;
const ctx = {
  /** A short confirmation in the status line. */
  notify(message) {
    const toast = byId("toast");
    toast.textContent = message;
    toast.classList.add("shown");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.classList.remove("shown"); toast.textContent = ""; }, 4000);
  },
  /** Shows (or with null, clears) the error of one source in the banner. */
  error(source, message) {
    if (message) errors.set(source, message);
    else if (!errors.delete(source)) return;
    renderBanner();
  },
  /** Asks in a modal dialog; resolves true when confirmed. */
  confirm({ title, message, confirmLabel = "OK", cancelLabel = "Cancel", danger = false }) {
    const dialog = byId("confirm");
    byId("confirm-title").textContent = title;
    byId("confirm-message").textContent = message;
    byId("confirm-cancel").textContent = cancelLabel;
    const ok = byId("confirm-ok");
    ok.textContent = confirmLabel;
    ok.className = danger ? "danger" : "primary";
    return new Promise((resolve) => {
      const done = (value) => {
        ok.removeEventListener("click", onOk);
        byId("confirm-cancel").removeEventListener("click", onCancel);
        dialog.removeEventListener("close", onClose);
        if (dialog.open) dialog.close();
        resolve(value);
      };
      const onOk = () => done(true);
      const onCancel = () => done(false);
      const onClose = () => done(false);
      ok.addEventListener("click", onOk);
      byId("confirm-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("close", onClose);
      dialog.showModal();
      byId("confirm-cancel").focus();
    });
  },
  navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  /**
   * Lets the mounted view hold the user back: `dirty()` true means leaving would discard
   * unsaved changes, so leaving the view in the app asks first and closing or reloading the tab
   * gets the browser's warning. Cleared when the next view mounts.
   */
  guardLeave(dirty) {
    leaveGuard = dirty;
  },
};

// ---- unsaved changes ----------------------------------------------------------------------------
/** The mounted view's "has unsaved changes" check (ctx.guardLeave), or null. */
let leaveGuard = null;
/** The hash of the mounted view, to go back to when leaving it is cancelled. */
let currentHash = location.hash;
/** The open "discard changes?" question, so a second attempt to leave does not ask twice. */
let asking = null;

const hasUnsaved = () => Boolean(leaveGuard && leaveGuard());

/** Resolves true when the mounted view may be left: nothing unsaved, or the user discards it. */
function mayLeave() {
  if (!hasUnsaved()) return Promise.resolve(true);
  if (!asking) {
    asking = ctx.confirm({
      title: "Discard unsaved changes?",
      message: "This job has changes that are not saved. Leaving the editor discards them.",
      confirmLabel: "Discard changes", cancelLabel: "Keep editing", danger: true,
    }).then((ok) => {
      asking = null;
      if (ok) leaveGuard = null;
      return ok;
    });
  }
  return asking;
}

/** In-app links (#/...) ask before they leave a view with unsaved changes. */
function onLinkClick(ev) {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const link = ev.target instanceof Element ? ev.target.closest("a[href^='#/']") : null;
  if (!link || !hasUnsaved()) return;
  ev.preventDefault();
  const target = link.getAttribute("href");
  mayLeave().then((ok) => { if (ok) ctx.navigate(target); });
}

/** Closing or reloading the tab with unsaved changes gets the browser's own warning. */
function onBeforeUnload(ev) {
  if (!hasUnsaved()) return;
  ev.preventDefault();
  ev.returnValue = "";
}

/** Back/forward or a typed address: the hash has changed already; put it back while asking. */
function onHashChange() {
  if (!(location.hash.startsWith("#/") || !location.hash)) return;
  if (location.hash !== currentHash && hasUnsaved()) {
    const target = location.hash;
    history.replaceState(history.state, "", currentHash || "#/jobs");
    mayLeave().then((ok) => { if (ok) ctx.navigate(target); });
    return;
  }
  route(true);
}

// ---- routing ----------------------------------------------------------------------------------
let unmount = null;

function parse() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(1) : "/jobs";
  const [path, query] = raw.split("?");
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch (_) {
    parts = ["?"];
  }
  return { parts, params: new URLSearchParams(query || "") };
}

function route(focus = false) {
  if (!byId("login").hidden) return;
  if (unmount) unmount();
  unmount = null;
  leaveGuard = null;
  currentHash = location.hash;
  errors.clear();
  renderBanner();
  const { parts, params } = parse();
  const [view = "jobs", arg, action] = parts;
  for (const a of byId("nav").querySelectorAll("a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = byId("content");
  const root = h("div", { class: `view view-${view}` });
  main.replaceChildren(root);
  if (view === "jobs" && !arg) unmount = mountJobs(root, ctx);
  else if (view === "jobs" && arg === "new" && !action) unmount = mountEditor(root, ctx, null);
  else if (view === "jobs" && action === "edit") unmount = mountEditor(root, ctx, arg);
  else if (view === "jobs" && action === "history") unmount = mountHistory(root, ctx, arg);
  else if (view === "runs" && !arg) unmount = mountRuns(root, ctx, params);
  else if (view === "runs") unmount = mountRun(root, ctx, arg);
  else if (view === "workers") unmount = mountWorkers(root, ctx);
  else if (view === "alerts") unmount = mountAlerts(root, ctx);
  else if (view === "jobs" && action === "charts") unmount = mountCharts(root, ctx, arg);
  else if (view === "fleet") unmount = mountFleet(root, ctx);
  else {
    replace(root, h("h1", { tabindex: "-1" }, "Not found"),
      h("div", { class: "empty" }, h("p", {}, "This page does not exist."), h("a", { href: "#/jobs", class: "button" }, "Go to the jobs")));
  }
  document.title = `distcron — ${view[0].toUpperCase()}${view.slice(1)}`;
  if (focus) {
    const heading = root.querySelector("h1");
    if (heading && !root.contains(document.activeElement)) heading.focus({ preventScroll: true });
  }
}

// ---- login ------------------------------------------------------------------------------------
function showLogin(message, isError) {
  if (unmount) unmount();
  unmount = null;
  leaveGuard = null;
  stopHealth();
  errors.clear();
  renderBanner();
  byId("content").hidden = true;
  byId("content").replaceChildren();
  byId("nav").hidden = true;
  byId("health").textContent = "";
  byId("logout").hidden = true;
  byId("whoami").hidden = true;
  const err = byId("login-error");
  err.textContent = message || "";
  err.classList.toggle("is-error", Boolean(isError));
  byId("login").hidden = false;
  byId("token").value = "";
  byId("token").setAttribute("aria-invalid", isError ? "true" : "false");
  byId("token").focus();
}

/** Asks the server who the token is, shows it, and lets the views hide what the role cannot do. */
async function loadWhoami() {
  try {
    const me = await api("GET", "/whoami");
    setWhoami(me);
    const el = byId("whoami");
    el.textContent = `${me.name} · ${me.role}`;
    el.title = `Signed in as ${me.name} (role ${me.role})`;
    el.hidden = false;
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
  }
}

async function showConsole() {
  await loadWhoami();
  byId("login").hidden = true;
  byId("content").hidden = false;
  byId("nav").hidden = false;
  byId("logout").hidden = !token();
  startHealth();
  route();
}

setUnauthorizedHandler((_err, hadToken) => {
  clearToken();
  showLogin(hadToken
    ? "The server refused this token. Check data_dir/api_token on the server (or its api_token / api_token_file setting) and try again."
    : "This server needs its API token.", hadToken);
});

// ---- health -----------------------------------------------------------------------------------
let stopHealthPoll = null;
async function health() {
  const el = byId("health");
  try {
    const h = await api("GET", "/health/ready");
    const broken = Object.entries(h.backends || {}).filter(([, b]) => b && b.ok === false).map(([k, b]) => `${k}: ${b.error || "failing"}`);
    el.textContent = `${h.status} · ${h.role}`;
    el.className = `health health-${h.status === "ready" ? "ok" : h.status === "degraded" ? "warn" : "bad"}`;
    el.title = [`node ${h.node_id}, version ${h.version}`, ...broken].join("\n");
    return h;
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    el.textContent = "unreachable";
    el.className = "health health-bad";
    el.title = describe(e);
    return null;
  }
}
function startHealth() {
  stopHealth();
  stopHealthPoll = every(10000, () => health().catch(() => {}));
}
function stopHealth() {
  if (stopHealthPoll) stopHealthPoll();
  stopHealthPoll = null;
}

// ---- start ------------------------------------------------------------------------------------
async function start() {
  byId("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = byId("token").value.trim();
    if (!value) {
      byId("login-error").textContent = "Enter the token.";
      return;
    }
    const button = byId("login-submit");
    button.disabled = true;
    button.textContent = "Checking…";
    setToken(value);
    try {
      await health();
      await showConsole();
    } catch (_) {
      // a refused token shows the login screen again with the reason
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
  });
  byId("logout").addEventListener("click", async () => {
    if (!(await mayLeave())) return;
    clearToken();
    showLogin("You are logged out. The token was removed from this tab.", false);
  });
  byId("skip").addEventListener("click", (ev) => {
    ev.preventDefault();
    const heading = byId("content").querySelector("h1");
    (heading || byId("content")).focus();
  });
  window.addEventListener("hashchange", onHashChange);
  window.addEventListener("beforeunload", onBeforeUnload);
  document.addEventListener("click", onLinkClick);
  try {
    await health();
    await showConsole();
  } catch (_) {
    // 401: the login screen is up
  }
}

start();
