//! What the CLI prints for humans: aligned tables, key/value details, times and durations.
//!
//! Owns: turning the API's JSON into text (pure, unit tested). Leaves to others: fetching it
//! (`client`) and `--json`, which prints the server's JSON unchanged.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// `rows` under `headers`, each column as wide as its widest cell, two spaces apart.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A JSON value as plain text: strings unquoted, null as `-`, anything else as JSON.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line: control characters (a newline in a message) become spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// An RFC 3339 time as `2026-12-02 03:00:00Z` (to the second, UTC); `-` when absent.
pub(crate) fn time(v: &Value) -> String {
    match v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
        Some(t) => t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => text(v),
    }
}

/// Milliseconds as `850ms`, `12.3s`, `4m05s`, `2h03m`; `-` when absent.
pub(crate) fn duration_ms(v: &Value) -> String {
    let Some(ms) = v.as_u64() else { return "-".into() };
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// `GET /api/v1/jobs` as a table.
pub(crate) fn jobs_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            let last = &j["last_run"];
            let last = if last.is_null() {
                "-".into()
            } else {
                format!("{} {}", text(&last["status"]), time(&last["started_at"]))
            };
            vec![
                text(&j["name"]),
                text(&j["cron_expr"]),
                text(&j["effective_tz"]),
                if j["enabled"].as_bool() == Some(false) { "no".into() } else { "yes".into() },
                time(&j["next_run_at"]),
                last,
                text(&j["managed_by"]),
            ]
        })
        .collect();
    table(&["NAME", "SCHEDULE", "TZ", "ENABLED", "NEXT RUN", "LAST RUN", "MANAGED BY"], &rows)
}

/// Keys shown first in details, in this order; the rest follow alphabetically.
const JOB_KEY_ORDER: [&str; 16] = [
    "name",
    "description",
    "command",
    "cron_expr",
    "schedule_description",
    "dialect",
    "tz",
    "effective_tz",
    "enabled",
    "concurrency",
    "timeout_secs",
    "next_run_at",
    "managed_by",
    "version",
    "created_at",
    "updated_at",
];

/// An object as `key: value` lines in `order` first; multi-line values indented below their key.
fn details(v: &Value, order: &[&str], skip: &[&str]) -> String {
    let Some(obj) = v.as_object() else { return format!("{}\n", text(v)) };
    let mut keys: Vec<&String> = obj.keys().filter(|k| !skip.contains(&k.as_str())).collect();
    keys.sort_by_key(|k| (order.iter().position(|o| o == k).unwrap_or(order.len()), k.as_str()));
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for key in keys {
        let value = &obj[key.as_str()];
        let shown = if key.ends_with("_at") { time(value) } else { text(value) };
        if shown.contains('\n') {
            let _ = writeln!(out, "{:<width$}", format!("{key}:"));
            for line in shown.lines() {
                let _ = writeln!(out, "    {line}");
            }
        } else {
            let _ = writeln!(out, "{:<width$} {shown}", format!("{key}:"));
        }
    }
    out
}

/// `GET /api/v1/jobs/{name}` as `key: value` lines.
pub(crate) fn job_details(body: &Value) -> String {
    details(body, &JOB_KEY_ORDER, &[])
}

/// `GET /api/v1/runs` as a table.
pub(crate) fn runs_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["id"]),
                text(&r["job"]),
                text(&r["status"]),
                text(&r["trigger"]),
                time(&r["scheduled_at"]),
                time(&r["started_at"]),
                duration_ms(&r["duration_ms"]),
                text(&r["exit_code"]),
                text(&r["worker"]),
            ]
        })
        .collect();
    table(&["ID", "JOB", "STATUS", "TRIGGER", "SCHEDULED", "STARTED", "DURATION", "EXIT", "WORKER"], &rows)
}

/// `GET /api/v1/runs/{id}` as `key: value` lines, then the output.
pub(crate) fn run_details(body: &Value) -> String {
    let order = ["id", "job", "status", "trigger", "attempt", "scheduled_at", "started_at", "ended_at", "duration_ms"];
    let mut out = details(body, &order, &["output"]);
    let output = body["output"].as_str().unwrap_or("");
    let _ = writeln!(
        out,
        "--- output ({} bytes{}) ---",
        text(&body["output_bytes"]),
        if body["output_truncated"] == true { ", head and tail kept" } else { "" }
    );
    out.push_str(output);
    if !output.is_empty() && !output.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A DST change (`/api/v1/cron/preview`'s `dst` entries) in words.
pub(crate) fn dst_change(change: &Value) -> String {
    if change.is_null() {
        return String::new();
    }
    let (before, after) =
        (change["offset_before_secs"].as_i64().unwrap_or(0), change["offset_after_secs"].as_i64().unwrap_or(0));
    let minutes = (after - before).abs() / 60;
    let amount = if minutes % 60 == 0 { format!("{} h", minutes / 60) } else { format!("{minutes} min") };
    let wall = |v: &Value| text(v).get(11..16).unwrap_or_default().to_owned();
    format!(
        "DST day: clocks go {} {amount} at {} (to {})",
        if after > before { "forward" } else { "back" },
        wall(&change["local_before"]),
        wall(&change["local_after"])
    )
}

/// A UTC time also read in `tz` (`2026-12-02 04:00:00 CET`), or just UTC for an unknown zone.
pub(crate) fn local(v: &Value, tz: &str) -> String {
    let parsed = v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    match (parsed, tz.parse::<chrono_tz::Tz>()) {
        (Some(t), Ok(zone)) => t.with_timezone(&zone).format("%Y-%m-%d %H:%M:%S %Z").to_string(),
        _ => time(v),
    }
}

/// `GET /api/v1/cron/preview` as a description line and a table of fire times.
pub(crate) fn preview(body: &Value) -> String {
    let tz = text(&body["tz"]);
    let mut out = format!("{} ({}, read in {tz})\n", text(&body["expr"]), text(&body["description"]));
    let dst = body["dst"].as_array();
    let rows: Vec<Vec<String>> = body["next"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            let change = dst.and_then(|d| d.get(i)).unwrap_or(&Value::Null);
            vec![(i + 1).to_string(), time(t), local(t, &tz), dst_change(change)]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("It never fires again.\n");
    } else {
        out.push_str(&table(&["#", "UTC", "LOCAL", "NOTE"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), String::new()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\nq\n");
    }

    #[test]
    fn times_durations_and_values_read_plainly() {
        assert_eq!(time(&Value::from("2026-12-02T03:00:00.123+01:00")), "2026-12-02 02:00:00Z");
        assert_eq!(time(&Value::Null), "-");
        assert_eq!(local(&Value::from("2026-12-02T03:00:00Z"), "Europe/Berlin"), "2026-12-02 04:00:00 CET");
        let d = |ms: u64| duration_ms(&Value::from(ms));
        assert_eq!(
            (d(850), d(12_345), d(245_000), d(7_380_000)),
            ("850ms".into(), "12.3s".into(), "4m05s".into(), "2h03m".into())
        );
        assert_eq!(
            (text(&Value::from("a")), text(&Value::from(3)), text(&Value::Null)),
            ("a".into(), "3".into(), "-".into())
        );
        assert_eq!(one_line("a\nb"), "a b");
    }

    #[test]
    fn job_details_put_the_name_first_and_indent_multi_line_commands() {
        let body = serde_json::json!({"version": 2, "name": "a", "command": "echo 1\necho 2", "zeta": true});
        let out = job_details(&body);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["name:    a", "command:", "    echo 1", "    echo 2", "version: 2", "zeta:    true"]);
    }

    #[test]
    fn preview_lists_fire_times_with_their_dst_day() {
        let body = serde_json::json!({
            "expr": "30 2 * * *", "tz": "Europe/Berlin", "description": "at 02:30 every day",
            "next": ["2027-03-28T01:00:00Z"],
            "dst": [{"at": "2027-03-28T01:00:00Z", "local_before": "2027-03-28T02:00:00", "local_after": "2027-03-28T03:00:00",
                     "offset_before_secs": 3600, "offset_after_secs": 7200}],
        });
        let out = preview(&body);
        assert!(out.starts_with("30 2 * * * (at 02:30 every day, read in Europe/Berlin)\n"), "{out}");
        assert!(out.contains("2027-03-28 03:00:00 CEST  DST day: clocks go forward 1 h at 02:00 (to 03:00)"), "{out}");
    }

    #[test]
    fn jobs_and_runs_tables_show_the_essentials() {
        let jobs = serde_json::json!({"jobs": [{"name": "a", "cron_expr": "* * * * *", "effective_tz": "UTC", "enabled": false,
            "next_run_at": null, "last_run": {"status": "failed", "started_at": "2026-12-02T00:00:00Z"}}]});
        let out = jobs_table(&jobs);
        assert!(
            out.lines().nth(1).is_some_and(
                |l| l.starts_with("a     * * * * *  UTC  no       -         failed 2026-12-02 00:00:00Z  -")
            ),
            "{out}"
        );
        let runs = serde_json::json!({"runs": [{"id": "r1", "job": "a", "status": "succeeded", "trigger": "manual", "duration_ms": 1500, "exit_code": 0}]});
        assert!(runs_table(&runs).contains("r1  a    succeeded  manual"), "{}", runs_table(&runs));
    }
}
