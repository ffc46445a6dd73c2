//! The cron dialect (ARCHITECTURE.md "Scheduling semantics"): parsing an expression into a
//! [`Schedule`] and computing its fire times in an IANA time zone, DST rule included.
//!
//! Owns the dialect only: which jobs fire when. Claiming ticks, the plan heap and job storage
//! belong to the actors and backends. Submodules: `parse` (text to fields), `calendar` (field
//! bitsets and the next matching wall-clock time), `tz` (wall clock to UTC and the DST rule),
//! `describe` (plain-language and JSON readings).
//!
//! The search is exact and bounded: it advances year, month, day, hour, minute and second to
//! the next allowed value (never scanning minute by minute), skips years without a matching day
//! in O(1), and stops after year 9999.

mod calendar;
mod describe;
mod parse;
#[cfg(test)]
mod tests;
mod tz;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use calendar::CronSpec;
use parse::Parsed;

/// How a 6-field expression is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// distcron: 5 fields = standard crontab, 6 = seconds first, 7 = seconds first + year.
    #[default]
    Distcron,
    /// The seed (gorhill/cronexpr): 6 fields = 5 fields + year; 5 and 7 as distcron.
    Seed,
}

/// An invalid expression: which field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.map(|f| format!("{f} field: ")).unwrap_or_default())]
pub struct CronError {
    /// `seconds`, `minutes`, `hours`, `day-of-month`, `month`, `day-of-week`, `year`; `None`
    /// when the expression as a whole is wrong (field count, unknown macro, empty, too long).
    pub field: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The expression as given, trimmed.
    expr: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Cron(CronSpec),
    /// `@every`: fires at every multiple of this many seconds since the Unix epoch.
    Every(u64),
}

impl Schedule {
    /// Parses `expr` in `dialect`. Expressions that can never fire (`0 0 30 2 *`) are rejected;
    /// ones whose years are all past parse and simply have no next fire time.
    ///
    /// # Errors
    /// A [`CronError`] naming the bad field, or with `field: None` when the expression as a
    /// whole is wrong.
    pub fn parse(expr: &str, dialect: Dialect) -> Result<Self, CronError> {
        let kind = match parse::parse(expr, dialect)? {
            Parsed::Cron(spec) => Kind::Cron(spec),
            Parsed::Every(secs) => Kind::Every(secs),
        };
        Ok(Self { expr: expr.trim().to_owned(), kind })
    }

    /// First fire time strictly after `after`, reading the fields in `tz`; `None` when the
    /// schedule never fires again (its years are past, or it would fire after year 9999).
    /// `@every` ticks are multiples of the interval since the Unix epoch, whatever `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        let after = after.timestamp();
        let next = match &self.kind {
            Kind::Every(secs) => {
                let secs = i64::try_from(*secs).ok()?;
                after.div_euclid(secs).checked_add(1)?.checked_mul(secs)?
            }
            Kind::Cron(spec) => tz::next_fire(spec, after, tz)?,
        };
        DateTime::from_timestamp(next, 0)
    }

    /// The next `n` fire times after `after` (fewer when the schedule runs out), strictly
    /// increasing.
    pub fn next_n(&self, after: DateTime<Utc>, tz: chrono_tz::Tz, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n.min(1024));
        let mut cursor = after;
        while out.len() < n {
            let Some(next) = self.next_after(cursor, tz) else { break };
            out.push(next);
            cursor = next;
        }
        out
    }

    /// The shortest time between consecutive fire times, in seconds, measured over the first
    /// 1,000 fire times after 2026-01-01T00:00:00Z in UTC (for `@every`, the interval); `None`
    /// when it fires at most once. A bound for `jitter_secs`: a tick must fire before the next.
    pub fn shortest_interval_secs(&self) -> Option<u64> {
        if let Kind::Every(secs) = self.kind {
            return Some(secs);
        }
        let start = DateTime::from_timestamp(1_767_225_600, 0)?;
        let times = self.next_n(start, chrono_tz::UTC, 1000);
        times.windows(2).filter_map(|w| u64::try_from((w[1] - w[0]).num_seconds()).ok()).min()
    }

    /// Whether DST treats this as a wildcard job (ARCHITECTURE.md): its seconds, minute or hour
    /// field begins with `*`, so it skips wall-clock times lost in a spring-forward gap and
    /// fires in both passes of a fall-back overlap. `@every` counts as wildcard: it ignores the
    /// wall clock altogether.
    pub fn is_wildcard(&self) -> bool {
        match &self.kind {
            Kind::Cron(spec) => spec.wildcard,
            Kind::Every(_) => true,
        }
    }

    /// The expression as given (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// A plain-language reading: "every 5 minutes, Monday to Friday", "at 02:30 every day",
    /// "every 30 seconds".
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Cron(spec) => describe::describe_cron(spec),
            Kind::Every(secs) => describe::describe_every(*secs),
        }
    }

    /// A JSON description of how each field was read (for the preview endpoint and the UI):
    /// `kind` (`"cron"` or `"every"`), `expr`, `wildcard`, `description`, and for cron
    /// expressions `seconds`, `minutes`, `hours`, `day_of_month`, `month`, `day_of_week`
    /// (0 = Sunday), `year` — each `"*"` when every value is allowed, else the sorted values —
    /// and `day_rule` (`"or"` when both day fields are restricted, else `"and"`); for `@every`,
    /// `every_secs`.
    pub fn fields(&self) -> serde_json::Value {
        match &self.kind {
            Kind::Cron(spec) => describe::cron_fields(spec, &self.expr, &self.describe()),
            Kind::Every(secs) => serde_json::json!({
                "kind": "every",
                "expr": self.expr,
                "every_secs": secs,
                "wildcard": true,
                "description": self.describe(),
            }),
        }
    }
}
