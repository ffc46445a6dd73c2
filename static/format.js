// Formatting of times, durations and sizes for the page (Intl, in the viewer's locale).

/** The viewer's time zone. */
export const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

const formatters = new Map();
function formatter(tz, withZone, withYear, withSeconds) {
  const key = `${tz}|${withZone}|${withYear}|${withSeconds}`;
  if (!formatters.has(key)) {
    try {
      formatters.set(key, new Intl.DateTimeFormat(undefined, {
        year: withYear ? "numeric" : undefined, month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: withSeconds ? "2-digit" : undefined, hourCycle: "h23",
        timeZone: tz, timeZoneName: withZone ? "short" : undefined,
      }));
    } catch (_) {
      formatters.set(key, formatter("UTC", withZone, withYear, withSeconds));
    }
  }
  return formatters.get(key);
}

/**
 * `iso` as a date and time in `tz` (default: the viewer's), with the zone's abbreviation; the
 * year only when it is not this year, seconds only when not zero.
 */
export function fmtTime(iso, tz = viewerZone, withZone = true) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const withYear = d.getFullYear() !== new Date().getFullYear();
  const withSeconds = d.getTime() % 60000 !== 0;
  return formatter(tz, withZone, withYear, withSeconds).format(d);
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** "in 5 minutes", "3 seconds ago". */
export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return "";
  const secs = Math.round((new Date(iso).getTime() - now) / 1000);
  if (isNaN(secs)) return "";
  const abs = Math.abs(secs);
  if (abs < 60) return relative.format(secs, "second");
  if (abs < 3600) return relative.format(Math.round(secs / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(secs / 3600), "hour");
  return relative.format(Math.round(secs / 86400), "day");
}

/** Milliseconds as "850 ms", "12.3 s", "4 min 5 s", "2 h 3 min". */
export function fmtDuration(ms) {
  if (ms == null || isNaN(ms)) return "—";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Bytes as "512 B", "1.5 KiB", "3.0 MiB". */
export function fmtBytes(n) {
  if (n == null || isNaN(n)) return "—";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(1)} ${units[i]}`;
}

/** A UTC offset in seconds as "UTC−05:00". */
export function fmtOffset(secs) {
  const sign = secs < 0 ? "−" : "+";
  const abs = Math.abs(secs);
  const hh = String(Math.floor(abs / 3600)).padStart(2, "0");
  const mm = String(Math.floor((abs % 3600) / 60)).padStart(2, "0");
  return `UTC${sign}${hh}:${mm}`;
}

/** A naive wall-clock "2026-03-08T02:00:00" as "02:00". */
export function fmtWallClock(naive) {
  const m = /T(\d\d:\d\d)(:\d\d)?/.exec(String(naive || ""));
  if (!m) return String(naive || "");
  return m[2] && m[2] !== ":00" ? m[1] + m[2] : m[1];
}

/** An ISO time as the value of an <input type="datetime-local"> in the viewer's zone. */
export function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** The value of an <input type="datetime-local"> (viewer's zone) as an ISO UTC time, or "". */
export function fromLocalInput(value) {
  if (!value) return "";
  const d = new Date(value);
  return isNaN(d) ? "" : d.toISOString();
}

const shortFormatters = new Map();
/** A compact time for tables: "14:03:05" today, "Mar 8, 14:03:05" otherwise (viewer's zone). */
export function fmtShort(iso, now = new Date()) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const sameDay = d.toDateString() === now.toDateString();
  const key = sameDay ? "day" : "date";
  if (!shortFormatters.has(key)) {
    shortFormatters.set(key, new Intl.DateTimeFormat(undefined, sameDay
      ? { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }
      : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }));
  }
  return shortFormatters.get(key).format(d);
}
