//! The audit log's records: who changed which job, how, when and from where.
//!
//! Owns: [`AuditAction`], [`AuditContext`] (what the HTTP layer knows about a change before the
//! store makes it), [`AuditEntry`] (what is kept, with the job before and after for the diff),
//! [`AuditQuery`]/[`AuditPage`] (newest first, cursor pagination) and the entry id format
//! `<13-digit ms since the epoch>-<uuid v7>`, which sorts in time order and lets a store purge
//! by range.
//! Leaves to others: where entries are kept and in which transaction (the job store adapters),
//! who the actor is (`http/auth.rs`) and how long entries live (`audit.retention_days`).

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::job::{Job, JobName};

/// Largest page of `GET /api/v1/audit`.
pub const MAX_AUDIT_PAGE: u32 = 500;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A new job.
    Create,
    /// An existing job replaced.
    Replace,
    /// A job deleted.
    Delete,
    /// A job enabled.
    Enable,
    /// A job disabled.
    Disable,
    /// Run now requested.
    Run,
    /// Kill of a job's runs (or of one run) requested.
    Kill,
    /// The seed's `/job/save` (create or replace in the seed's dialect).
    SeedSave,
    /// The seed's `/job/delete`.
    SeedDelete,
    /// The seed's `/job/kill`.
    SeedKill,
}

impl AuditAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Replace => "replace",
            Self::Delete => "delete",
            Self::Enable => "enable",
            Self::Disable => "disable",
            Self::Run => "run",
            Self::Kill => "kill",
            Self::SeedSave => "seed_save",
            Self::SeedDelete => "seed_delete",
            Self::SeedKill => "seed_kill",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller of a store write knows about the change: who, from where, what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// The token's name, or `"anonymous"`.
    pub actor: String,
    /// The client's address (`ip` or `ip:port`), when known.
    pub client: Option<String>,
    /// The action asked for. A `Replace` that finds no job is recorded as `Create`.
    pub action: AuditAction,
    /// Extra detail: the run-now request id, the run a kill names.
    pub detail: Option<String>,
}

impl AuditContext {
    /// A context for `action` by `actor` from `client`.
    pub fn new(actor: impl Into<String>, client: Option<String>, action: AuditAction) -> Self {
        Self { actor: actor.into(), client, action, detail: None }
    }

    /// The same context with `detail`.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The entry recording a change of `job` from `before` to `after`, at `at`.
    ///
    /// Versions come from the definitions; a signal (no definition change) passes the current
    /// job as both. A `Replace` without a `before` is a `Create`.
    pub fn entry(&self, job: &JobName, before: Option<&Job>, after: Option<&Job>, at: DateTime<Utc>) -> AuditEntry {
        let action = match (self.action, before) {
            (AuditAction::Replace, None) => AuditAction::Create,
            (action, _) => action,
        };
        AuditEntry {
            id: entry_id(at),
            at,
            actor: self.actor.clone(),
            action,
            job: job.clone(),
            version_before: before.map(|j| j.version),
            version_after: after.map(|j| j.version),
            client: self.client.clone(),
            detail: self.detail.clone(),
            before: before.cloned(),
            after: after.cloned(),
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// `<13-digit ms>-<uuid v7>`: unique, sorts in time order; the pagination cursor.
    pub id: String,
    /// When the change was made.
    pub at: DateTime<Utc>,
    /// Token name, or `"anonymous"`.
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// The job.
    pub job: JobName,
    /// Version before the change (none: the job did not exist).
    pub version_before: Option<u64>,
    /// Version after the change (none: the job is gone, or a kill of a job that no longer exists).
    pub version_after: Option<u64>,
    /// Client address.
    pub client: Option<String>,
    /// Run-now request id or the run a kill names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The definition before (for the diff).
    pub before: Option<Job>,
    /// The definition after.
    pub after: Option<Job>,
}

/// A fresh entry id for time `at`: `<13-digit ms>-<uuid v7>`.
pub fn entry_id(at: DateTime<Utc>) -> String {
    format!("{:013}-{}", at.timestamp_millis().max(0), uuid::Uuid::now_v7())
}

/// The smallest id of an entry at or after `at`: ids below it are older (a purge bound).
pub fn id_bound(at: DateTime<Utc>) -> String {
    format!("{:013}-", at.timestamp_millis().max(0))
}

/// Whether `raw` has the shape of an entry id (cursors are checked before they reach a store).
pub fn is_entry_id(raw: &str) -> bool {
    let Some((ms, rest)) = raw.split_once('-') else { return false };
    ms.len() == 13
        && ms.bytes().all(|b| b.is_ascii_digit())
        && !rest.is_empty()
        && rest.len() <= 64
        && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The time an entry id was made, when it parses.
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let ms: i64 = id.split_once('-')?.0.parse().ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

/// Which entries to read: newest first, older than `before` (the cursor) when set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    /// Only this job.
    pub job: Option<JobName>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only entries with an id below this one (the previous page's `next_cursor`).
    pub before: Option<String>,
    /// Page size (1..=[`MAX_AUDIT_PAGE`]).
    pub limit: u32,
}

impl AuditQuery {
    /// Whether `entry` passes the filters (not the cursor).
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.job.as_ref().is_none_or(|j| *j == entry.job) && self.actor.as_ref().is_none_or(|a| *a == entry.actor)
    }
}

/// One page of entries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; none when this is the last one.
    pub next_cursor: Option<String>,
}

impl AuditPage {
    /// A page from up to `limit + 1` matching entries, newest first: the extra one only says
    /// that there is a next page.
    pub fn from_overfetch(mut entries: Vec<AuditEntry>, limit: u32) -> Self {
        let limit = limit as usize;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = if more { entries.last().map(|e| e.id.clone()) } else { None };
        Self { entries, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(version: u64) -> Job {
        let mut job = crate::domain::JobSpec {
            name: Some("a".into()),
            command: "true".into(),
            cron_expr: "@daily".into(),
            ..Default::default()
        }
        .into_job(None)
        .expect("valid");
        job.version = version;
        job
    }

    #[test]
    fn a_replace_of_nothing_is_recorded_as_a_create() {
        let ctx = AuditContext::new("ops", Some("127.0.0.1".into()), AuditAction::Replace);
        let name = JobName::parse("a").expect("name");
        let e = ctx.entry(&name, None, Some(&job(1)), Utc::now());
        assert_eq!((e.action, e.version_before, e.version_after), (AuditAction::Create, None, Some(1)));
        let e = ctx.entry(&name, Some(&job(1)), Some(&job(2)), Utc::now());
        assert_eq!((e.action, e.version_before, e.version_after), (AuditAction::Replace, Some(1), Some(2)));
        let e = AuditContext::new("ops", None, AuditAction::Delete).entry(&name, Some(&job(2)), None, Utc::now());
        assert_eq!((e.action, e.version_before, e.version_after), (AuditAction::Delete, Some(2), None));
    }

    #[test]
    fn ids_sort_in_time_order_and_parse_back() {
        let t1 = Utc.timestamp_millis_opt(1_000).single().expect("t");
        let t2 = Utc.timestamp_millis_opt(2_000).single().expect("t");
        let (a, b, c) = (entry_id(t1), entry_id(t1), entry_id(t2));
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(is_entry_id(&a) && is_entry_id(&c));
        assert_eq!(id_time(&c), Some(t2));
        assert!(id_bound(t2) > b && id_bound(t2) < c);
        assert!(!is_entry_id("x") && !is_entry_id("123-abc") && !is_entry_id("0000000001000-../x"));
    }

    #[test]
    fn a_page_says_whether_there_is_more() {
        let name = JobName::parse("a").expect("name");
        let ctx = AuditContext::new("ops", None, AuditAction::Run);
        let entries: Vec<AuditEntry> = (0..3).map(|_| ctx.entry(&name, None, None, Utc::now())).collect();
        let page = AuditPage::from_overfetch(entries.clone(), 2);
        assert_eq!(page.entries.len(), 2);
        assert_eq!(page.next_cursor.as_deref(), Some(entries[1].id.as_str()));
        assert_eq!(AuditPage::from_overfetch(entries, 3).next_cursor, None);
        let q = AuditQuery { actor: Some("ops".into()), ..Default::default() };
        assert!(q.matches(&ctx.entry(&name, None, None, Utc::now())));
        let q = AuditQuery { actor: Some("other".into()), ..Default::default() };
        assert!(!q.matches(&ctx.entry(&name, None, None, Utc::now())));
    }
}
