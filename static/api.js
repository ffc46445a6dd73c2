// The JSON API client: adds the token, turns every failure into an ApiError with a message an
// operator can read, and reports refused tokens to the app (which then shows the login screen).

const TOKEN_KEY = "distcron.token";

/** A failed API call. `status` 0 means the server could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

/** The server refused the token (or wanted one). */
export class Unauthorized extends ApiError {}

let onUnauthorized = () => {};

/** Registers what happens when the server answers 401. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** The token kept for this tab (sessionStorage: gone when the tab closes). */
export const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
export const setToken = (t) => sessionStorage.setItem(TOKEN_KEY, t);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** What a code means, for messages. */
const CODE_TEXT = {
  invalid_request: "Invalid request",
  invalid_job: "Invalid job",
  invalid_cron_expr: "Invalid cron expression",
  job_not_found: "No such job",
  run_not_found: "No such run",
  not_found: "Not found",
  job_exists: "A job with this name exists",
  version_conflict: "Changed by someone else",
  run_not_running: "The run is not running any more",
  forbidden: "Not allowed for this token's role",
  too_many_requests: "Too many failed sign-ins from this address",
  payload_too_large: "Too large",
  backend_unavailable: "A store cannot be reached",
  internal: "The server hit an internal error (its log has the cause)",
};

/** A readable one-line message for any error thrown by `api`. */
export function describe(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  if (err.status === 0) return err.message;
  if (err.code === "internal") return CODE_TEXT.internal + ".";
  const prefix = CODE_TEXT[err.code];
  return prefix && !err.message.toLowerCase().startsWith(prefix.toLowerCase()) ? `${prefix}: ${err.message}` : err.message;
}

/** Who is signed in ({name, role}); anonymous admin until the server says otherwise. */
let me = { name: "anonymous", role: "admin" };
const RANK = { viewer: 0, operator: 1, admin: 2 };
export const whoami = () => me;
export const setWhoami = (w) => { me = w && RANK[w.role] !== undefined ? w : me; };
/** Whether the signed-in token's role reaches `role` (viewer < operator < admin). */
export const may = (role) => RANK[me.role] >= RANK[role];

/** Encodes a path segment. */
export const seg = (s) => encodeURIComponent(s);

/**
 * Calls `/api/v1<path>`. Resolves with the parsed JSON body; rejects with an ApiError (an
 * Unauthorized for 401, after telling the app).
 */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (_) {
    throw new ApiError(0, "network", "Cannot reach the distcron server; it may be restarting. Retrying…");
  }
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    data = null;
  }
  if (res.status === 401) {
    const err = new Unauthorized(401, "unauthorized", data?.error?.message || "unauthorized");
    onUnauthorized(err, Boolean(t));
    throw err;
  }
  if (!res.ok && !(res.status === 503 && path.startsWith("/health"))) {
    const e = data && data.error;
    if (e) throw new ApiError(res.status, e.code, e.message, e.field);
    throw new ApiError(res.status, "http", `The server answered HTTP ${res.status}.`);
  }
  return data;
}
