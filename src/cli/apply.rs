//! Jobs as code on the client side (README "Jobs as code"): `distcron apply` and `distcron
//! export`.
//!
//! Owns: reading a jobs file (TOML: top-level `managed_by`, `[[jobs]]` tables in the API's job
//! shape), asking the server for the plan (`POST /api/v1/jobs:plan`), printing it like
//! `terraform plan`, saving and loading a plan (`--out`, `--plan`), applying it change by change
//! with each job's planned version (a job changed since the plan stops the apply with exit 3;
//! the store's compare-and-set means nothing of that job is written), and writing the server's
//! jobs back as a file that plans as a no-op.
//! Leaves to others: the plan itself and validation (the server, `domain::jobs_as_code`).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value};

use super::client::{segment, Client};
use super::output::{local, text};
use super::{ApplyArgs, CliError, ExportArgs};

/// Top-level keys a jobs file may hold.
const FILE_KEYS: [&str; 2] = ["managed_by", "jobs"];

/// What the server computes per job and `export` leaves out (the store's fields and the views).
const COMPUTED_KEYS: [&str; 9] = [
    "version",
    "created_at",
    "updated_at",
    "next_run_at",
    "effective_tz",
    "schedule_description",
    "last_run",
    "invalid",
    "jitter_offset_secs",
];

/// Job keys written first by `export`, in this order; the rest follow alphabetically.
const EXPORT_KEY_ORDER: [&str; 9] =
    ["name", "description", "cron_expr", "dialect", "tz", "command", "enabled", "concurrency", "timeout_secs"];

/// Reads a jobs file into the plan route's body.
///
/// # Errors
/// [`CliError::Failed`] naming the file: unreadable, not TOML, an unknown top-level key, or
/// `managed_by`/`jobs` of the wrong type.
pub(crate) fn read_jobs_file(path: &Path, prune: bool) -> Result<Value, CliError> {
    let failed = |what: String| CliError::Failed(format!("{}: {what}", path.display()));
    let raw = std::fs::read_to_string(path).map_err(|e| failed(format!("cannot read it: {e}")))?;
    parse_jobs_file(&raw, prune).map_err(failed)
}

/// [`read_jobs_file`] on the text.
fn parse_jobs_file(raw: &str, prune: bool) -> Result<Value, String> {
    let table: toml::Table =
        toml::from_str(raw).map_err(|e| format!("not a jobs file: {}", super::output::one_line(&e.to_string())))?;
    if let Some(bad) = table.keys().find(|k| !FILE_KEYS.contains(&k.as_str())) {
        return Err(format!("unknown top-level key {bad:?}; a jobs file holds managed_by and [[jobs]] tables"));
    }
    let managed_by = match table.get("managed_by") {
        None => Value::Null,
        Some(toml::Value::String(s)) => Value::String(s.clone()),
        Some(_) => return Err("managed_by must be a string".into()),
    };
    let jobs = match table.get("jobs") {
        None => Value::Array(Vec::new()),
        Some(toml::Value::Array(items)) if items.iter().all(toml::Value::is_table) => {
            serde_json::to_value(items).map_err(|e| format!("jobs: {e}"))?
        }
        Some(_) => return Err("jobs must be [[jobs]] tables".into()),
    };
    Ok(serde_json::json!({ "managed_by": managed_by, "prune": prune, "jobs": jobs }))
}

/// A saved plan (`--out`): the server it was made against and the plan.
fn saved_plan(server: &str, plan: &Value) -> Value {
    serde_json::json!({ "distcron_plan": 1, "server": server, "plan": plan })
}

/// `distcron apply`.
pub(crate) fn apply(args: &ApplyArgs) -> Result<(), CliError> {
    let client = Client::connect(&args.client)?;
    let plan = match (&args.file, &args.plan) {
        (Some(file), _) => {
            let body = read_jobs_file(file, args.prune)?;
            client.send("POST", "/api/v1/jobs:plan", Some(&body))?
        }
        (None, Some(saved)) => load_plan(saved, client.base())?,
        (None, None) => return Err(CliError::Usage("apply needs -f FILE or --plan FILE".into())),
    };
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&saved_plan(client.base(), &plan)).unwrap_or_default();
        std::fs::write(out, text + "\n")
            .map_err(|e| CliError::Failed(format!("cannot write the plan to {}: {e}", out.display())))?;
    }
    if args.client.json && args.dry_run {
        super::print_json(&plan);
    } else if !args.client.json {
        print!("{}", render_plan(&plan));
    }
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    if args.dry_run {
        if !args.client.json {
            println!("\nDry run: nothing was changed.");
        }
        return Ok(());
    }
    let outcome = apply_changes(&client, &changes, !args.client.json);
    if args.client.json {
        super::print_json(&serde_json::json!({ "plan": plan, "applied": outcome.applied, "failed": outcome.failed }));
    }
    match outcome.error {
        None => {
            if !args.client.json && !changes.is_empty() {
                println!("\nApply complete: {}.", summary_line(&outcome.applied));
            }
            Ok(())
        }
        Some(e) => Err(e),
    }
}

/// Reads a plan saved with `--out`, refusing one made against another server.
fn load_plan(path: &Path, server: &str) -> Result<Value, CliError> {
    let failed = |what: String| CliError::Failed(format!("{}: {what}", path.display()));
    let raw = std::fs::read_to_string(path).map_err(|e| failed(format!("cannot read it: {e}")))?;
    let saved: Value = serde_json::from_str(&raw).map_err(|e| failed(format!("not a saved plan: {e}")))?;
    if saved["distcron_plan"] != 1 || !saved["plan"]["changes"].is_array() {
        return Err(failed("not a plan saved by distcron apply --out".into()));
    }
    if saved["server"].as_str() != Some(server) {
        return Err(CliError::Usage(format!(
            "the plan in {} was made against {}, not {server}; pass --server {}",
            path.display(),
            text(&saved["server"]),
            text(&saved["server"])
        )));
    }
    Ok(saved["plan"].clone())
}

/// What an apply did.
struct Outcome {
    applied: Vec<Value>,
    failed: Option<Value>,
    error: Option<CliError>,
}

/// Applies `changes` in order, each at its planned version, stopping at the first failure.
fn apply_changes(client: &Client, changes: &[Value], print: bool) -> Outcome {
    let mut outcome = Outcome { applied: Vec::new(), failed: None, error: None };
    for change in changes {
        let (action, name) = (text(&change["action"]), text(&change["name"]));
        let path = format!("/api/v1/jobs/{}", segment(&name));
        let version = change["version"].as_u64();
        let result = match action.as_str() {
            "create" => client.send("POST", "/api/v1/jobs", Some(&change["job"])),
            "update" => {
                let mut body = change["job"].clone();
                if let (Some(obj), Some(v)) = (body.as_object_mut(), version) {
                    obj.insert("version".into(), v.into());
                }
                client.send("PUT", &path, Some(&body))
            }
            "delete" => {
                let query = version.map(|v| format!("?version={v}")).unwrap_or_default();
                client.send("DELETE", &format!("{path}{query}"), None)
            }
            other => Err(CliError::Failed(format!("the plan holds an unknown action {other:?} for job {name}"))),
        };
        match result {
            Ok(body) => {
                let now = if action == "delete" { &body["deleted"]["version"] } else { &body["version"] };
                if print {
                    let verb = match action.as_str() {
                        "create" => "Created",
                        "update" => "Updated",
                        _ => "Deleted",
                    };
                    let at = if action == "delete" { "was at version" } else { "now at version" };
                    println!("{verb} job {name} ({at} {}).", text(now));
                }
                outcome.applied.push(serde_json::json!({ "action": action, "name": name, "version": now }));
            }
            Err(e) => {
                // 409 (changed or created since) and 404 (deleted since) both mean the plan is stale
                // for this job; its write was refused whole by the store's compare-and-set.
                let stale = matches!(e, CliError::Api { status: 404 | 409, .. });
                let message = if stale {
                    format!(
                        "job {name} changed on the server since the plan ({e}); nothing of it was applied. Applied before it: {}. Plan again and re-apply.",
                        summary_line(&outcome.applied)
                    )
                } else {
                    format!(
                        "{action} of job {name} failed ({e}); applied before it: {}",
                        summary_line(&outcome.applied)
                    )
                };
                outcome.failed = Some(serde_json::json!({ "action": action, "name": name, "error": e.to_string() }));
                outcome.error = Some(if stale { CliError::Conflict(message) } else { CliError::Failed(message) });
                break;
            }
        }
    }
    outcome
}

/// `1 created, 2 updated, 0 deleted` (or `nothing`).
fn summary_line(applied: &[Value]) -> String {
    if applied.is_empty() {
        return "nothing".into();
    }
    let n = |a: &str| applied.iter().filter(|c| c["action"] == a).count();
    format!("{} created, {} updated, {} deleted", n("create"), n("update"), n("delete"))
}

/// A plan as `terraform plan` prints one.
pub(crate) fn render_plan(plan: &Value) -> String {
    let mut out = String::new();
    let changes = plan["changes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let unchanged = plan["unchanged"].as_array().map_or(0, Vec::len);
    let label = plan["managed_by"].as_str().map(|l| format!(" (managed_by = {l:?})")).unwrap_or_default();
    if changes.is_empty() {
        let _ = writeln!(out, "No changes{label}: the {unchanged} declared jobs match the server.");
        return out;
    }
    let _ = writeln!(out, "distcron will perform these actions{label}:");
    for change in changes {
        out.push('\n');
        let name = text(&change["name"]);
        let version = change["version"].as_u64().map(|v| format!(" (version {v})")).unwrap_or_default();
        let tz = text(&change["effective_tz"]);
        match change["action"].as_str() {
            Some("create") => {
                let _ = writeln!(out, "  + create job {name:?}");
                let diff = change["diff"].as_array().map(Vec::as_slice).unwrap_or_default();
                let width = diff.iter().map(|d| text(&d["field"]).len()).max().unwrap_or(0);
                for d in diff {
                    let _ = writeln!(out, "      + {:<width$} = {}", text(&d["field"]), shown(&d["after"]));
                }
            }
            Some("update") => {
                let _ = writeln!(out, "  ~ update job {name:?}{version}");
                let diff = change["diff"].as_array().map(Vec::as_slice).unwrap_or_default();
                let width = diff.iter().map(|d| text(&d["field"]).len()).max().unwrap_or(0);
                for d in diff {
                    let field = text(&d["field"]);
                    let line = match (d["before"].is_null(), d["after"].is_null()) {
                        (true, _) => format!("+ {field:<width$} = {}", shown(&d["after"])),
                        (_, true) => format!("- {field:<width$} = {}", shown(&d["before"])),
                        _ => format!("~ {field:<width$} = {} -> {}", shown(&d["before"]), shown(&d["after"])),
                    };
                    let _ = writeln!(out, "      {line}");
                }
            }
            _ => {
                let _ = writeln!(out, "  - delete job {name:?}{version}");
            }
        }
        if let Some(next) = change["next"].as_array().filter(|n| !n.is_empty()) {
            let times: Vec<String> = next.iter().map(|t| local(t, &tz)).collect();
            let _ = writeln!(out, "        next: {}", times.join(", "));
        }
        for (t, dst) in
            change["next"].as_array().into_iter().flatten().zip(change["dst"].as_array().into_iter().flatten())
        {
            if !dst.is_null() {
                let _ = writeln!(out, "        ! {}: {}", local(t, &tz), super::output::dst_change(dst));
            }
        }
        for warning in change["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "        ! {}", text(warning));
        }
    }
    let count = |a: &str| changes.iter().filter(|c| c["action"] == a).count();
    let _ = writeln!(
        out,
        "\nPlan: {} to create, {} to update, {} to delete; {unchanged} unchanged.",
        count("create"),
        count("update"),
        count("delete")
    );
    out
}

/// A value in a plan: strings quoted, tables and lists as compact JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

/// `distcron export`.
pub(crate) fn export(args: &ExportArgs) -> Result<(), CliError> {
    let client = Client::connect(&args.client)?;
    let body = client.get("/api/v1/jobs", &[])?;
    for bad in body["invalid_jobs"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: stored job {} is not a valid job and is not exported: {}",
            text(&bad["name"]),
            text(&bad["invalid"])
        );
    }
    let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
    let file = export_file(&jobs, args.managed_by.as_deref(), client.base())?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, file).map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?
        }
        None => print!("{file}"),
    }
    Ok(())
}

/// The jobs file for `jobs` (as `GET /api/v1/jobs` lists them): with `managed_by`, only the jobs
/// with that label; the label is written once at the top when every exported job shares it.
fn export_file(jobs: &[Value], managed_by: Option<&str>, server: &str) -> Result<String, CliError> {
    let jobs: Vec<&Value> =
        jobs.iter().filter(|j| managed_by.is_none_or(|m| j["managed_by"].as_str() == Some(m))).collect();
    let labels: std::collections::BTreeSet<Option<&str>> = jobs.iter().map(|j| j["managed_by"].as_str()).collect();
    let shared = match (managed_by, labels.len()) {
        (Some(m), _) => Some(m),
        (None, 1) => labels.into_iter().next().flatten(),
        _ => None,
    };
    let mut out = format!("# distcron jobs file, exported from {server}. Apply with: distcron apply -f FILE\n");
    if let Some(label) = shared {
        let _ = writeln!(out, "managed_by = {}", toml_value(&Value::from(label))?);
    }
    for job in jobs {
        let Some(obj) = job.as_object() else { continue };
        let mut fields: Vec<(&String, &Value)> = obj
            .iter()
            .filter(|(k, v)| !COMPUTED_KEYS.contains(&k.as_str()) && !v.is_null())
            .filter(|(k, _)| !(shared.is_some() && k.as_str() == "managed_by"))
            .collect();
        fields.sort_by_key(|(k, _)| {
            (EXPORT_KEY_ORDER.iter().position(|o| o == k).unwrap_or(EXPORT_KEY_ORDER.len()), k.as_str())
        });
        out.push_str("\n[[jobs]]\n");
        for (key, value) in fields {
            let _ = writeln!(out, "{} = {}", toml_key(key), toml_value(&strip_nulls(value))?);
        }
    }
    Ok(out)
}

/// `value` without null members (TOML has no null).
fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(obj) => Value::Object(
            obj.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// A bare TOML key when it may be one, else a quoted one.
fn toml_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_owned()
    } else {
        toml::Value::String(key.to_owned()).to_string()
    }
}

/// A JSON value as an inline TOML value (tables as `{ K = "v" }`).
fn toml_value(value: &Value) -> Result<String, CliError> {
    let v = toml::Value::try_from(value).map_err(|e| CliError::Failed(format!("cannot write {value} as TOML: {e}")))?;
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_file_becomes_the_plan_body() {
        let body = parse_jobs_file(
            "managed_by = \"team-a\"\n[[jobs]]\nname = \"a\"\ncommand = \"true\"\ncron_expr = \"* * * * *\"\n[jobs.env]\nX = \"1\"\n",
            true,
        )
        .expect("valid");
        assert_eq!(
            body,
            serde_json::json!({"managed_by": "team-a", "prune": true, "jobs": [{"name": "a", "command": "true", "cron_expr": "* * * * *", "env": {"X": "1"}}]})
        );
        assert!(parse_jobs_file("bogus = 1\n", false).expect_err("unknown key").contains("bogus"));
        assert!(parse_jobs_file("jobs = 3\n", false).expect_err("jobs type").contains("[[jobs]]"));
        assert!(parse_jobs_file("managed_by = 3\n", false).expect_err("label type").contains("managed_by"));
        assert!(parse_jobs_file("[[jobs]\n", false).expect_err("syntax").starts_with("not a jobs file"));
        assert_eq!(parse_jobs_file("", false).expect("empty file")["jobs"], serde_json::json!([]));
    }

    #[test]
    fn export_writes_a_file_that_reads_back_to_the_same_jobs() {
        let jobs = vec![
            serde_json::json!({"name": "b", "command": "echo \"hi\"\nexit 0", "cron_expr": "0 3 * * *", "enabled": true, "version": 4,
                "created_at": "2026-01-01T00:00:00Z", "next_run_at": null, "effective_tz": "UTC", "last_run": null,
                "env": {"A": "1"}, "limits": {"nice": 5}, "managed_by": "t", "dialect": "distcron", "selector": {"zone": "b", "gpu": "true"}}),
            serde_json::json!({"name": "a", "command": "true", "cron_expr": "* * * * *", "managed_by": "t", "dialect": "seed"}),
        ];
        let file = export_file(&jobs, None, "http://x").expect("export");
        assert!(file.contains("\nmanaged_by = \"t\"\n"), "{file}");
        assert!(
            file.contains("[[jobs]]\nname = \"b\"\ncron_expr = \"0 3 * * *\"\ndialect = \"distcron\"\ncommand = "),
            "{file}"
        );
        let body = parse_jobs_file(&file, false).expect("reads back");
        assert_eq!(body["managed_by"], "t");
        let first = &body["jobs"][0];
        assert_eq!(first["command"], "echo \"hi\"\nexit 0");
        assert_eq!(first["env"], serde_json::json!({"A": "1"}));
        assert_eq!(first["limits"], serde_json::json!({"nice": 5}));
        assert_eq!(first["selector"], serde_json::json!({"zone": "b", "gpu": "true"}));
        for computed in ["version", "created_at", "next_run_at", "effective_tz", "last_run", "managed_by"] {
            assert!(first.get(computed).is_none(), "{computed} exported");
        }
        let mixed = vec![
            serde_json::json!({"name": "a", "command": "x", "cron_expr": "* * * * *", "managed_by": "t"}),
            serde_json::json!({"name": "b", "command": "x", "cron_expr": "* * * * *"}),
        ];
        let file = export_file(&mixed, None, "http://x").expect("export");
        let body = parse_jobs_file(&file, false).expect("reads back");
        assert_eq!(
            (body["managed_by"].clone(), body["jobs"][0]["managed_by"].clone()),
            (Value::Null, Value::from("t"))
        );
        let only = export_file(&mixed, Some("t"), "http://x").expect("export");
        assert_eq!(parse_jobs_file(&only, false).expect("reads back")["jobs"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn plans_print_like_terraform() {
        let plan = serde_json::json!({
            "managed_by": "t",
            "changes": [
                {"action": "create", "name": "a", "version": null, "effective_tz": "UTC",
                 "diff": [{"field": "cron_expr", "before": null, "after": "0 3 * * *"}], "next": ["2026-12-03T03:00:00Z"], "dst": [null], "warnings": []},
                {"action": "update", "name": "b", "version": 3, "effective_tz": "UTC",
                 "diff": [{"field": "cron_expr", "before": "0 6 * * *", "after": "0 7 * * *"}, {"field": "env.X", "before": "1", "after": null}],
                 "next": [], "dst": [], "warnings": ["DST: something"]},
                {"action": "delete", "name": "c", "version": 2, "diff": []},
            ],
            "unchanged": ["d"],
        });
        let out = render_plan(&plan);
        for expected in [
            "distcron will perform these actions (managed_by = \"t\"):",
            "  + create job \"a\"\n      + cron_expr = \"0 3 * * *\"\n        next: 2026-12-03 03:00:00 UTC\n",
            "  ~ update job \"b\" (version 3)\n      ~ cron_expr = \"0 6 * * *\" -> \"0 7 * * *\"\n      - env.X     = \"1\"\n        ! DST: something\n",
            "  - delete job \"c\" (version 2)\n",
            "Plan: 1 to create, 1 to update, 1 to delete; 1 unchanged.",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
        }
        let none = render_plan(&serde_json::json!({"managed_by": null, "changes": [], "unchanged": ["a", "b"]}));
        assert_eq!(none, "No changes: the 2 declared jobs match the server.\n");
    }
}
