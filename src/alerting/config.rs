//! `[alerts]` in config: evaluation settings, default rules and the channels.
//!
//! Owns: the raw keys, their defaults and their checks (ranges, URLs, rule channels). Leaves to
//! others: reading secret files and sending ([`super::Channels`]), what rules mean
//! (`domain::alert`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::alert::{valid_channel_name, validate_rules, AlertRule};

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often a node evaluates the jobs it watches, ms.
    pub poll_ms: u64,
    /// How many of the live workers (the first in each job's rendezvous ranking) evaluate a
    /// job; each alert is still delivered once (claimed). More = faster failover, more reads.
    pub evaluators_per_job: u32,
    /// Events older than this are not alerted (a node that starts does not page for last week), s.
    pub lookback_secs: u64,
    /// Newest runs read per job and evaluation.
    pub history_runs: u32,
    /// Alert records are purged this many days after their last change.
    pub retention_days: u32,
    /// Rules of jobs without their own `alerts` field.
    pub rules: Vec<AlertRule>,
    /// Channels by name (`[alerts.channels.<name>]`).
    pub channels: BTreeMap<String, ChannelConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            poll_ms: 2000,
            evaluators_per_job: 2,
            lookback_secs: 3600,
            history_runs: 50,
            retention_days: 30,
            rules: Vec::new(),
            channels: BTreeMap::new(),
        }
    }
}

/// What a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// JSON POST of the alert, signed with HMAC-SHA256 when `secret_file` is set.
    Webhook,
    /// Slack incoming webhook (`{"text": ...}`).
    Slack,
    /// A local command, `<executor.shell> -c <command>`, with the alert JSON on stdin.
    Command,
}

impl ChannelKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Command => "command",
        }
    }
}

/// `[alerts.channels.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// `webhook`, `slack` or `command`.
    pub kind: ChannelKind,
    /// Webhook or Slack URL (`http://` or `https://`).
    #[serde(default)]
    pub url: String,
    /// Webhook only: file holding the HMAC-SHA256 secret (first line, surrounding whitespace
    /// ignored); empty = unsigned.
    #[serde(default)]
    pub secret_file: String,
    /// Command channel: the command line.
    #[serde(default)]
    pub command: String,
    /// One attempt's time limit, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts before the delivery is given up (recorded `failed`).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First delay between attempts, ms (then doubled, with jitter).
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest delay between attempts, ms.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_attempts() -> u32 {
    10
}
fn default_retry_initial_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    60_000
}

impl AlertsConfig {
    /// Every numeric key with its accepted range: (key, value, min, max).
    pub fn ranges(&self) -> Vec<(&'static str, u64, u64, u64)> {
        vec![
            ("alerts.poll_ms", self.poll_ms, 100, 3_600_000),
            ("alerts.evaluators_per_job", u64::from(self.evaluators_per_job), 1, 64),
            ("alerts.lookback_secs", self.lookback_secs, 60, 30 * 86_400),
            ("alerts.history_runs", u64::from(self.history_runs), 10, 1000),
            ("alerts.retention_days", u64::from(self.retention_days), 1, 36_500),
        ]
    }

    /// The channel names.
    pub fn channel_names(&self) -> BTreeSet<String> {
        self.channels.keys().cloned().collect()
    }

    /// Checks channels and default rules.
    ///
    /// # Errors
    /// (dotted key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, ch) in &self.channels {
            let bad = |message: String| Err(("alerts.channels", format!("channel {name:?}: {message}")));
            if !valid_channel_name(name) {
                return bad("a channel name is 1-64 letters, digits, '.', '_' or '-'".into());
            }
            match ch.kind {
                ChannelKind::Webhook | ChannelKind::Slack => {
                    let scheme_ok = ch.url.starts_with("http://") || ch.url.starts_with("https://");
                    if !scheme_ok || ch.url.len() > 4096 || ch.url.chars().any(char::is_whitespace) {
                        return bad("url must be an http:// or https:// URL".into());
                    }
                    if !ch.command.is_empty() {
                        return bad(format!("command is for kind = \"command\", not {}", ch.kind.as_str()));
                    }
                }
                ChannelKind::Command => {
                    if ch.command.trim().is_empty() || ch.command.contains('\0') {
                        return bad("kind = \"command\" needs a command".into());
                    }
                    if !ch.url.is_empty() {
                        return bad("url is for webhook and slack channels".into());
                    }
                }
            }
            if !ch.secret_file.is_empty() && ch.kind != ChannelKind::Webhook {
                return bad("secret_file is for webhook channels".into());
            }
            for (key, value, min, max) in [
                ("timeout_ms", ch.timeout_ms, 100, 600_000),
                ("max_attempts", u64::from(ch.max_attempts), 1, 100),
                ("retry_initial_ms", ch.retry_initial_ms, 10, 3_600_000),
                ("retry_max_ms", ch.retry_max_ms, 10, 86_400_000),
            ] {
                if !(min..=max).contains(&value) {
                    return bad(format!("{key} is {value}; allowed are {min}..={max}"));
                }
            }
            if ch.retry_max_ms < ch.retry_initial_ms {
                return bad("retry_max_ms must be at least retry_initial_ms".into());
            }
        }
        validate_rules(&self.rules, Some(&self.channel_names())).map_err(|e| ("alerts.rules", e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> AlertsConfig {
        toml::from_str(toml_text).expect("alerts config parses")
    }

    #[test]
    fn channels_and_rules_parse_and_validate() {
        let c = parse(
            r#"
            rules = [{ on = ["failed", "recovered"], after_consecutive = 2, channels = ["ops"] }]
            [channels.ops]
            kind = "webhook"
            url = "https://alerts.example.com/hook"
            secret_file = "/etc/distcron/hook-secret"
            [channels.mail]
            kind = "command"
            command = "sendmail ops@example.com"
            "#,
        );
        assert_eq!(c.channels["ops"].max_attempts, 10);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_channels_and_rules_are_named() {
        let msg = |t: &str| parse(t).validate().expect_err("invalid").1;
        assert!(msg("[channels.a]\nkind = \"webhook\"\nurl = \"ftp://x\"").contains("http://"));
        assert!(msg("[channels.a]\nkind = \"command\"").contains("needs a command"));
        assert!(msg("[channels.a]\nkind = \"slack\"\nurl = \"https://x\"\nsecret_file = \"/s\"").contains("webhook"));
        assert!(msg("[channels.a]\nkind = \"slack\"\nurl = \"https://x\"\nmax_attempts = 0").contains("max_attempts"));
        assert!(msg("rules = [{ channels = [\"nope\"] }]").contains("no alert channel named"));
    }
}
