//! Jobs as code (README "Jobs as code"): the plan that turns the jobs stored now into the jobs a
//! file declares.
//!
//! Owns: reading a plan request (`managed_by`, `prune`, the file's jobs in the API's job shape)
//! into validated jobs, the plan itself (create / update with a field-by-field diff / delete,
//! prune limited to the file's own `managed_by` label, each with the version it was planned
//! against) and the DST warnings of a schedule (which coming clock changes move, skip or repeat
//! its fire times). Pure: no I/O, the caller passes the stored jobs and the time.
//! Leaves to others: reading the store and serving the plan (`http/jobs.rs`), applying it with
//! version checks (the CLI through the job routes, whose store writes are compare-and-set), and
//! the DST rule itself (`schedule`).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::job::{validate_managed_by, InvalidJob, Job, JobName, JobSpec};
use super::schedule::Schedule;

/// Most jobs one plan request may declare.
pub const MAX_PLAN_JOBS: usize = 10_000;

/// Job fields the store sets, never compared or sent back: a plan ignores them.
pub const STORE_FIELDS: [&str; 3] = ["version", "created_at", "updated_at"];

/// `POST /api/v1/jobs:plan` body: a jobs file, converted to JSON by the CLI.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// The file's owner label, stored on every job it declares (a job's own `managed_by` wins).
    #[serde(default)]
    pub managed_by: Option<String>,
    /// Also plan deleting the stored jobs labelled `managed_by` that the file no longer declares.
    #[serde(default)]
    pub prune: bool,
    /// The declared jobs, each in the API's job shape (`POST /api/v1/jobs`).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub jobs: Vec<Value>,
}

/// A plan request that cannot be planned: the offending field (`jobs[2].cron_expr`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PlanError {
    /// Path of the offending value in the request.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Whether the problem is the cron expression (served as `invalid_cron_expr`).
    pub cron: bool,
}

impl PlanError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into(), cron: false }
    }
}

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The job is not stored: create it.
    Create,
    /// The job is stored and differs: replace it at the planned version.
    Update,
    /// The job is labelled with the file's `managed_by`, not in the file, and `prune` is set.
    Delete,
}

/// One field that differs, by its path (`cron_expr`, `env.PATH`, `limits.nice`); `null` = absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDiff {
    /// Dotted path of the field.
    pub field: String,
    /// The stored value (null when absent or on create).
    pub before: Value,
    /// The declared value (null when absent or on delete).
    pub after: Value,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// What to do.
    pub action: Action,
    /// Which job.
    pub name: JobName,
    /// The stored version the change was planned against (update, delete); applying it anywhere
    /// else is a conflict. `None` on create, and on an update of a stored document that is not a
    /// valid job (it has no version to check).
    pub version: Option<u64>,
    /// The job to write (create, update): the API's job shape, without the store's fields.
    pub job: Option<Value>,
    /// Field-by-field difference (every declared field on create, none on delete).
    pub diff: Vec<FieldDiff>,
    /// What an operator should know before applying (ownership, invalid stored documents).
    pub warnings: Vec<String>,
}

/// The plan: changes in file order (creates and updates), then deletes by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The file's label.
    pub managed_by: Option<String>,
    /// Whether deletes were planned.
    pub prune: bool,
    /// What applying the plan does.
    pub changes: Vec<Change>,
    /// Declared jobs that already match what is stored.
    pub unchanged: Vec<JobName>,
}

impl Plan {
    /// How many changes of `action`.
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }
}

/// Validates the request: the label, and every job exactly as `POST /api/v1/jobs` would (its
/// field named by index, `jobs[1].tz`); a name declared twice is refused. The file's label is
/// set on each job that does not name its own.
///
/// # Errors
/// The first [`PlanError`].
pub fn desired_jobs(request: &PlanRequest) -> Result<Vec<Job>, PlanError> {
    if let Some(label) = &request.managed_by {
        validate_managed_by(label).map_err(|m| PlanError::new("managed_by", m))?;
    }
    if request.prune && request.managed_by.is_none() {
        return Err(PlanError::new(
            "managed_by",
            "prune deletes only the jobs labelled with the file's managed_by; set managed_by at the top of the file",
        ));
    }
    if request.jobs.len() > MAX_PLAN_JOBS {
        return Err(PlanError::new("jobs", format!("{} jobs; the limit is {MAX_PLAN_JOBS}", request.jobs.len())));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(request.jobs.len());
    for (i, raw) in request.jobs.iter().enumerate() {
        let at = |field: &str| format!("jobs[{i}].{field}");
        let mut spec: JobSpec = serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let field = super_field(&path, &inner);
            PlanError::new(if field.is_empty() { format!("jobs[{i}]") } else { at(&field) }, inner)
        })?;
        if spec.version.is_some() {
            return Err(PlanError::new(at("version"), "a jobs file holds no versions: the plan takes the stored ones"));
        }
        if spec.managed_by.as_deref().is_none_or(str::is_empty) {
            spec.managed_by.clone_from(&request.managed_by);
        }
        let job = spec
            .into_job(None)
            .map_err(|e| PlanError { cron: e.field == "cron_expr", ..PlanError::new(at(e.field), e.message) })?;
        if !seen.insert(job.name.clone()) {
            return Err(PlanError::new(at("name"), format!("job {} is declared twice", job.name)));
        }
        out.push(job);
    }
    Ok(out)
}

/// The field serde names in an error: the path, or the field of an unknown/missing-field message.
fn super_field(path: &str, message: &str) -> String {
    if !path.is_empty() && path != "." {
        return path.to_owned();
    }
    for prefix in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(end) = rest.find('`') {
                return rest[..end].to_owned();
            }
        }
    }
    String::new()
}

/// A job in the API's job shape without the store's fields: what a plan writes and compares,
/// and what `distcron export` prints.
pub fn spec_value(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        for key in STORE_FIELDS {
            obj.remove(key);
        }
        obj.retain(|_, value| !value.is_null());
    }
    v
}

/// Field-by-field difference from `before` to `after` (store fields ignored; nested objects
/// compared key by key; an absent field equals null).
pub fn diff(before: &Job, after: &Job) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    diff_values("", &spec_value(before), &spec_value(after), &mut out);
    out
}

fn diff_values(path: &str, before: &Value, after: &Value, out: &mut Vec<FieldDiff>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                let sub = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                diff_values(&sub, b.get(key).unwrap_or(&Value::Null), a.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Object(b), Value::Null) if !path.is_empty() => {
            diff_values(path, &Value::Object(b.clone()), &Value::Object(Default::default()), out);
        }
        (Value::Null, Value::Object(a)) if !path.is_empty() => {
            diff_values(path, &Value::Object(Default::default()), &Value::Object(a.clone()), out);
        }
        (b, a) if b != a => out.push(FieldDiff { field: path.to_owned(), before: b.clone(), after: a.clone() }),
        _ => {}
    }
}

/// Plans `desired` against the store's `current` jobs and `invalid` documents. With `prune`, the
/// stored jobs labelled `managed_by` that `desired` does not declare are deleted; jobs with
/// another label or none are never touched by a prune.
pub fn plan(desired: Vec<Job>, current: &[Job], invalid: &[InvalidJob], managed_by: Option<&str>, prune: bool) -> Plan {
    let stored: HashMap<&JobName, &Job> = current.iter().map(|j| (&j.name, j)).collect();
    let broken: HashMap<&JobName, &InvalidJob> = invalid.iter().map(|j| (&j.name, j)).collect();
    let declared: HashSet<JobName> = desired.iter().map(|j| j.name.clone()).collect();
    let mut changes = Vec::new();
    let mut unchanged = Vec::new();
    for job in desired {
        match stored.get(&job.name) {
            Some(now) => {
                let d = diff(now, &job);
                if d.is_empty() {
                    unchanged.push(job.name);
                    continue;
                }
                let mut warnings = Vec::new();
                if now.managed_by != job.managed_by {
                    let from = now
                        .managed_by
                        .as_deref()
                        .map_or("no label (made by hand)".to_owned(), |l| format!("managed_by {l:?}"));
                    let to = job.managed_by.as_deref().map_or("no label".to_owned(), |l| format!("managed_by {l:?}"));
                    warnings.push(format!("ownership changes: from {from} to {to}"));
                }
                changes.push(Change {
                    action: Action::Update,
                    version: Some(now.version),
                    job: Some(spec_value(&job)),
                    name: job.name,
                    diff: d,
                    warnings,
                });
            }
            None => {
                let (action, warnings) = match broken.get(&job.name) {
                    Some(bad) => (
                        Action::Update,
                        vec![format!(
                            "the stored document is not a valid job ({}); applying replaces it without a version check",
                            bad.reason
                        )],
                    ),
                    None => (Action::Create, Vec::new()),
                };
                let after = spec_value(&job);
                let mut d = Vec::new();
                diff_values("", &Value::Object(Default::default()), &after, &mut d);
                changes.push(Change { action, name: job.name, version: None, job: Some(after), diff: d, warnings });
            }
        }
    }
    if let (true, Some(label)) = (prune, managed_by) {
        let mut doomed: Vec<&Job> =
            current.iter().filter(|j| j.managed_by.as_deref() == Some(label) && !declared.contains(&j.name)).collect();
        doomed.sort_by(|a, b| a.name.cmp(&b.name));
        for job in doomed {
            let mut d = Vec::new();
            diff_values("", &spec_value(job), &Value::Object(Default::default()), &mut d);
            changes.push(Change {
                action: Action::Delete,
                name: job.name.clone(),
                version: Some(job.version),
                job: None,
                diff: d,
                warnings: Vec::new(),
            });
        }
    }
    Plan { managed_by: managed_by.map(str::to_owned), prune, changes, unchanged }
}

/// A change of a zone's UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetChange {
    /// The instant it changes.
    pub at: DateTime<Utc>,
    /// Offset before, seconds east of UTC.
    pub before_secs: i32,
    /// Offset after.
    pub after_secs: i32,
}

/// Every offset change of `tz` in `[from, to)`, in order (a day-by-day walk with bisection to
/// the second; no zone changes its offset twice in a day).
pub fn offset_changes(tz: chrono_tz::Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<OffsetChange> {
    let offset = |secs: i64| -> Option<i32> {
        let utc = DateTime::from_timestamp(secs, 0)?.naive_utc();
        Some(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc())
    };
    let mut out = Vec::new();
    let (mut t, end) = (from.timestamp(), to.timestamp());
    while t < end {
        let next = (t + 86_400).min(end);
        let (Some(before), Some(after)) = (offset(t), offset(next)) else { break };
        if before != after {
            let (mut lo, mut hi) = (t, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset(mid) == Some(before) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            if let (Some(at), Some(after_secs)) = (DateTime::from_timestamp(hi, 0), offset(hi)) {
                out.push(OffsetChange { at, before_secs: before, after_secs });
            }
        }
        t = next;
    }
    out
}

/// How the next year's clock changes in `tz` (from `changes`, see [`offset_changes`]) affect
/// `schedule`, one sentence each, per ARCHITECTURE.md's DST rule: in a spring-forward gap a
/// fixed-time job runs once at the end of the gap and a wildcard job skips the missing times; in
/// a fall-back overlap a fixed-time job runs once, at the first pass, and a wildcard job fires in
/// both. `@every` schedules ignore the wall clock and get none.
pub fn dst_warnings(schedule: &Schedule, tz: chrono_tz::Tz, changes: &[OffsetChange]) -> Vec<String> {
    if schedule.fields().get("kind").and_then(Value::as_str) == Some("every") {
        return Vec::new();
    }
    let wildcard = schedule.is_wildcard();
    let mut out = Vec::new();
    for change in changes {
        let wall = |off: i32| -> NaiveDateTime { change.at.naive_utc() + Duration::seconds(i64::from(off)) };
        let (before, after) = (wall(change.before_secs), wall(change.after_secs));
        let forward = change.after_secs > change.before_secs;
        // The wall-clock window the change skips (forward) or repeats (back), read in UTC so the
        // schedule's fields are matched against the bare wall clock.
        let (start, end) = if forward { (before, after) } else { (after, before) };
        let Some(hit) = schedule.next_after(start.and_utc() - Duration::seconds(1), chrono_tz::UTC) else {
            continue;
        };
        if hit.naive_utc() >= end {
            continue;
        }
        let (day, from, to, at) =
            (start.format("%Y-%m-%d"), start.format("%H:%M"), end.format("%H:%M"), hit.naive_utc().format("%H:%M:%S"));
        let zone = tz.name();
        out.push(match (forward, wildcard) {
            (true, false) => {
                format!("DST: on {day} {zone} skips {from}-{to}; the {at} fire time runs once at {to} instead")
            }
            (true, true) => {
                format!("DST: on {day} {zone} skips {from}-{to}; fire times in that hour (from {at}) do not happen")
            }
            (false, false) => {
                format!("DST: on {day} {zone} repeats {from}-{to}; the {at} fire time runs once, in the first pass")
            }
            (false, true) => format!(
                "DST: on {day} {zone} repeats {from}-{to}; fire times in that hour (from {at}) run in both passes"
            ),
        });
    }
    out
}

/// [`dst_warnings`] for each job's zone over the year from `now`, the offset changes of each zone
/// computed once.
pub struct DstAdvisor {
    now: DateTime<Utc>,
    zones: BTreeMap<&'static str, Vec<OffsetChange>>,
}

impl DstAdvisor {
    /// Warnings for the year after `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self { now, zones: BTreeMap::new() }
    }

    /// The DST warnings of `schedule` read in `tz`.
    pub fn warnings(&mut self, schedule: &Schedule, tz: chrono_tz::Tz) -> Vec<String> {
        let now = self.now;
        let changes = self.zones.entry(tz.name()).or_insert_with(|| offset_changes(tz, now, now + Duration::days(366)));
        dst_warnings(schedule, tz, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Dialect;

    fn job(json: Value) -> Job {
        let spec: JobSpec = serde_json::from_value(json).expect("spec");
        spec.into_job(None).expect("valid job")
    }

    fn stored(json: Value, version: u64) -> Job {
        Job { version, ..job(json) }
    }

    fn request(json: Value) -> PlanRequest {
        serde_json::from_value(json).expect("request")
    }

    fn names(plan: &Plan, action: Action) -> Vec<&str> {
        plan.changes.iter().filter(|c| c.action == action).map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn new_jobs_are_created_with_the_files_label_and_every_field_in_the_diff() {
        let req = request(serde_json::json!({
            "managed_by": "team-a",
            "jobs": [{"name": "a", "command": "true", "cron_expr": "* * * * *"}, {"name": "b", "command": "true", "cron_expr": "0 3 * * *", "managed_by": "other"}]
        }));
        let desired = desired_jobs(&req).expect("valid");
        assert_eq!(desired[0].managed_by.as_deref(), Some("team-a"));
        assert_eq!(desired[1].managed_by.as_deref(), Some("other"), "a job's own label wins");
        let plan = plan(desired, &[], &[], Some("team-a"), false);
        assert_eq!(names(&plan, Action::Create), ["a", "b"]);
        let create = &plan.changes[0];
        assert_eq!(create.version, None);
        let job = create.job.as_ref().expect("job to write");
        assert!(job.get("version").is_none() && job.get("created_at").is_none(), "no store fields: {job}");
        assert!(create.diff.iter().any(|d| d.field == "cron_expr" && d.before.is_null() && d.after == "* * * * *"));
    }

    #[test]
    fn an_identical_job_is_unchanged_and_a_changed_one_is_an_update_at_its_version() {
        let now = vec![
            stored(
                serde_json::json!({"name": "same", "command": "true", "cron_expr": "* * * * *", "managed_by": "t"}),
                4,
            ),
            stored(
                serde_json::json!({"name": "edit", "command": "true", "cron_expr": "* * * * *", "env": {"A": "1", "B": "2"}, "managed_by": "t"}),
                7,
            ),
        ];
        let req = request(serde_json::json!({"managed_by": "t", "jobs": [
            {"name": "same", "command": "true", "cron_expr": "* * * * *"},
            {"name": "edit", "command": "true", "cron_expr": "*/5 * * * *", "env": {"A": "1", "C": "3"}},
        ]}));
        let plan = plan(desired_jobs(&req).expect("valid"), &now, &[], Some("t"), false);
        assert_eq!(plan.unchanged.iter().map(JobName::as_str).collect::<Vec<_>>(), ["same"]);
        assert_eq!(names(&plan, Action::Update), ["edit"]);
        let update = &plan.changes[0];
        assert_eq!(update.version, Some(7));
        let fields: Vec<(&str, &Value, &Value)> =
            update.diff.iter().map(|d| (d.field.as_str(), &d.before, &d.after)).collect();
        assert_eq!(
            fields,
            [
                ("cron_expr", &Value::from("* * * * *"), &Value::from("*/5 * * * *")),
                ("env.B", &Value::from("2"), &Value::Null),
                ("env.C", &Value::Null, &Value::from("3")),
            ]
        );
        assert!(update.warnings.is_empty(), "{:?}", update.warnings);
    }

    #[test]
    fn prune_deletes_only_jobs_with_the_files_label() {
        let now = vec![
            stored(
                serde_json::json!({"name": "mine-kept", "command": "true", "cron_expr": "* * * * *", "managed_by": "t"}),
                1,
            ),
            stored(
                serde_json::json!({"name": "mine-dropped", "command": "true", "cron_expr": "* * * * *", "managed_by": "t"}),
                3,
            ),
            stored(
                serde_json::json!({"name": "theirs", "command": "true", "cron_expr": "* * * * *", "managed_by": "u"}),
                1,
            ),
            stored(serde_json::json!({"name": "by-hand", "command": "true", "cron_expr": "* * * * *"}), 1),
        ];
        let req = request(serde_json::json!({"managed_by": "t", "prune": true, "jobs": [
            {"name": "mine-kept", "command": "true", "cron_expr": "* * * * *"},
        ]}));
        let desired = desired_jobs(&req).expect("valid");
        let pruned = plan(desired.clone(), &now, &[], Some("t"), true);
        assert_eq!(names(&pruned, Action::Delete), ["mine-dropped"]);
        assert_eq!(pruned.changes[0].version, Some(3));
        assert_eq!(pruned.changes.len(), 1);
        let kept = plan(desired, &now, &[], Some("t"), false);
        assert!(kept.changes.is_empty(), "without prune nothing is deleted: {:?}", kept.changes);
    }

    #[test]
    fn exported_jobs_plan_as_unchanged() {
        let now = vec![
            stored(
                serde_json::json!({"name": "seedish", "command": "echo", "cron_expr": "*/5 * * * * *", "dialect": "seed"}),
                0,
            ),
            stored(
                serde_json::json!({"name": "full", "command": "x", "cron_expr": "0 3 * * *", "tz": "Europe/Berlin", "enabled": false,
                    "timeout_secs": 60, "env": {"A": "b"}, "limits": {"nice": 5}, "retention_days": 3, "managed_by": "t",
                    "selector": {"zone": "b"}}),
                9,
            ),
        ];
        let exported: Vec<Value> = now.iter().map(spec_value).collect();
        let req = PlanRequest { managed_by: None, prune: false, jobs: exported };
        let plan = plan(desired_jobs(&req).expect("valid"), &now, &[], None, false);
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);
        assert_eq!(plan.unchanged.len(), 2);
    }

    #[test]
    fn taking_over_a_job_and_replacing_an_invalid_document_warn() {
        let now = vec![stored(serde_json::json!({"name": "hand", "command": "true", "cron_expr": "* * * * *"}), 2)];
        let invalid =
            vec![InvalidJob { name: JobName::parse("broken").expect("name"), reason: "bogus: unknown field".into() }];
        let req = request(serde_json::json!({"managed_by": "t", "jobs": [
            {"name": "hand", "command": "true", "cron_expr": "* * * * *"},
            {"name": "broken", "command": "true", "cron_expr": "* * * * *"},
        ]}));
        let plan = plan(desired_jobs(&req).expect("valid"), &now, &invalid, Some("t"), false);
        assert_eq!(plan.changes[0].diff.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(), ["managed_by"]);
        assert!(plan.changes[0].warnings[0].contains("ownership changes"), "{:?}", plan.changes[0].warnings);
        assert_eq!((plan.changes[1].action, plan.changes[1].version), (Action::Update, None));
        assert!(plan.changes[1].warnings[0].contains("not a valid job"));
    }

    #[test]
    fn bad_requests_name_the_job_and_field() {
        let field = |json: Value| desired_jobs(&request(json)).expect_err("invalid").field;
        assert_eq!(
            field(
                serde_json::json!({"jobs": [{"name": "a", "command": "x", "cron_expr": "* * * * *"}, {"name": "b", "command": "x", "cron_expr": "61 * * * *"}]})
            ),
            "jobs[1].cron_expr"
        );
        assert_eq!(
            field(serde_json::json!({"jobs": [{"name": "a", "command": "x", "cron_expr": "* * * * *", "bogus": 1}]})),
            "jobs[0].bogus"
        );
        assert_eq!(field(serde_json::json!({"jobs": [{"name": "a", "command": "x"}]})), "jobs[0].cron_expr");
        assert_eq!(
            field(
                serde_json::json!({"jobs": [{"name": "a", "command": "x", "cron_expr": "* * * * *", "timeout_secs": "x"}]})
            ),
            "jobs[0].timeout_secs"
        );
        assert_eq!(
            field(serde_json::json!({"jobs": [{"name": "a", "command": "x", "cron_expr": "* * * * *", "version": 3}]})),
            "jobs[0].version"
        );
        let twice = serde_json::json!({"name": "a", "command": "x", "cron_expr": "* * * * *"});
        assert_eq!(field(serde_json::json!({"jobs": [twice.clone(), twice]})), "jobs[1].name");
        assert_eq!(field(serde_json::json!({"prune": true, "jobs": []})), "managed_by");
        assert_eq!(field(serde_json::json!({"managed_by": "a b", "jobs": []})), "managed_by");
        assert!(
            desired_jobs(&request(serde_json::json!({"jobs": [{"name": "a", "command": "x", "cron_expr": "bad"}]})))
                .expect_err("cron")
                .cron
        );
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339")
    }

    #[test]
    fn offset_changes_of_a_year_in_berlin_are_the_two_dst_switches() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().expect("zone");
        let changes = offset_changes(berlin, utc("2027-01-01T00:00:00Z"), utc("2028-01-01T00:00:00Z"));
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].at, utc("2027-03-28T01:00:00Z"));
        assert_eq!((changes[0].before_secs, changes[0].after_secs), (3600, 7200));
        assert_eq!(changes[1].at, utc("2027-10-31T01:00:00Z"));
        assert!(offset_changes(chrono_tz::UTC, utc("2027-01-01T00:00:00Z"), utc("2028-01-01T00:00:00Z")).is_empty());
    }

    #[test]
    fn dst_warnings_follow_the_rule_for_fixed_time_and_wildcard_jobs() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().expect("zone");
        let changes = offset_changes(berlin, utc("2027-01-01T00:00:00Z"), utc("2028-01-01T00:00:00Z"));
        let warn =
            |expr: &str| dst_warnings(&Schedule::parse(expr, Dialect::Distcron).expect("expr"), berlin, &changes);
        let fixed = warn("30 2 * * *");
        assert_eq!(fixed.len(), 2, "{fixed:?}");
        assert!(
            fixed[0].contains("2027-03-28")
                && fixed[0].contains("skips 02:00-03:00")
                && fixed[0].contains("runs once at 03:00"),
            "{}",
            fixed[0]
        );
        assert!(
            fixed[1].contains("2027-10-31")
                && fixed[1].contains("repeats 02:00-03:00")
                && fixed[1].contains("first pass"),
            "{}",
            fixed[1]
        );
        let wild = warn("*/15 * * * *");
        assert!(wild[0].contains("do not happen") && wild[1].contains("both passes"), "{wild:?}");
        assert!(warn("0 4 * * *").is_empty(), "04:00 is never in a changed hour");
        assert!(warn("30 2 * 6 *").is_empty(), "June only");
        assert!(warn("@every 5m").is_empty(), "@every ignores the wall clock");
    }
}
