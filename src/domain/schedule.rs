//! The cron dialect (ARCHITECTURE.md "Scheduling semantics"): parsing and next-fire computation.
//!
//! STUB: the full implementation is being written; the public API below is the contract.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a 6-field expression is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
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
    expr: String,
}

impl Schedule {
    /// Parses `expr` in `dialect`.
    ///
    /// # Errors
    /// A [`CronError`] naming the bad field.
    pub fn parse(expr: &str, _dialect: Dialect) -> Result<Self, CronError> {
        if expr.split_whitespace().count() < 5 && !expr.trim_start().starts_with('@') {
            return Err(CronError { field: None, message: "expected 5, 6 or 7 fields".into() });
        }
        Ok(Self { expr: expr.to_owned() })
    }

    /// First fire time strictly after `after`, reading the fields in `tz`; `None` when the
    /// schedule never fires again.
    pub fn next_after(&self, after: DateTime<Utc>, _tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        let secs = after.timestamp() + 1;
        DateTime::from_timestamp(secs, 0)
    }

    /// A JSON description of how each field was read (for the preview endpoint and the UI).
    pub fn fields(&self) -> serde_json::Value {
        serde_json::json!({ "expr": self.expr })
    }
}
