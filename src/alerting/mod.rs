//! Alert channels: sending one alert to one channel, once (issue 11, item 3).
//!
//! Owns: the channels built from `[alerts.channels]` (secret files read at start), the wire
//! format of each kind — `webhook`: the alert JSON POSTed with `X-Distcron-Signature-256:
//! sha256=<hex HMAC-SHA256 of the body>`; `slack`: an incoming-webhook `{"text"}` payload;
//! `command`: `<shell> -c <command>` with the alert JSON on stdin — and one attempt's outcome.
//! HTTP requests run on the blocking pool (ureq), commands as child processes: never on an
//! actor's thread. Errors name what failed, never a URL (Slack's holds its token), a secret
//! or command output.
//!
//! Leaves to others: which alerts to send and retrying (`actors/alerts.rs`, with
//! [`Backoff`]), recording attempts (the claims port).

pub mod config;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

pub use config::{AlertsConfig, ChannelConfig, ChannelKind};

use crate::domain::{Alert, Backoff};
use crate::error::StartupError;

/// Header holding the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Distcron-Signature-256";
/// Header holding the alert id (receivers may dedupe on it).
pub const ALERT_ID_HEADER: &str = "X-Distcron-Alert-Id";
/// Header holding the attempt number.
pub const ATTEMPT_HEADER: &str = "X-Distcron-Attempt";

/// One configured channel, ready to send.
#[derive(Debug)]
pub struct Channel {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: ChannelKind,
    target: Target,
    timeout: Duration,
    /// Attempts before giving up.
    pub max_attempts: u32,
    retry_initial: Duration,
    retry_max: Duration,
}

enum Target {
    Webhook { url: String, secret: Option<Vec<u8>> },
    Slack { url: String },
    Command { shell: String, command: String },
}

impl std::fmt::Debug for Target {
    // Never prints URLs or secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Webhook { secret, .. } => write!(f, "Webhook {{ signed: {} }}", secret.is_some()),
            Self::Slack { .. } => f.write_str("Slack"),
            Self::Command { .. } => f.write_str("Command"),
        }
    }
}

/// What a channel is, as the API shows it (no URL, no secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Name.
    pub name: String,
    /// `webhook`, `slack` or `command`.
    pub kind: &'static str,
    /// Webhook bodies are signed.
    pub signed: bool,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// One attempt's limit, ms.
    pub timeout_ms: u64,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Accepted.
    pub ok: bool,
    /// HTTP status or exit code.
    pub code: Option<i32>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// Every configured channel by name.
#[derive(Debug, Default)]
pub struct Channels {
    by_name: BTreeMap<String, Arc<Channel>>,
}

impl Channels {
    /// Builds the channels of `config`, reading webhook secret files; commands run with `shell`.
    ///
    /// # Errors
    /// A secret file that cannot be read or is empty.
    pub fn from_config(config: &AlertsConfig, shell: &str) -> Result<Self, StartupError> {
        let mut by_name = BTreeMap::new();
        for (name, c) in &config.channels {
            let target = match c.kind {
                ChannelKind::Webhook => {
                    let secret = if c.secret_file.is_empty() { None } else { Some(read_secret(name, &c.secret_file)?) };
                    Target::Webhook { url: c.url.clone(), secret }
                }
                ChannelKind::Slack => Target::Slack { url: c.url.clone() },
                ChannelKind::Command => Target::Command { shell: shell.to_owned(), command: c.command.clone() },
            };
            let channel = Channel {
                name: name.clone(),
                kind: c.kind,
                target,
                timeout: Duration::from_millis(c.timeout_ms),
                max_attempts: c.max_attempts,
                retry_initial: Duration::from_millis(c.retry_initial_ms),
                retry_max: Duration::from_millis(c.retry_max_ms),
            };
            by_name.insert(name.clone(), Arc::new(channel));
        }
        Ok(Self { by_name })
    }

    /// The channel named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Channel>> {
        self.by_name.get(name).cloned()
    }

    /// Every channel, by name.
    pub fn describe(&self) -> Vec<ChannelInfo> {
        self.by_name.values().map(|c| c.info()).collect()
    }

    /// True when no channel is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn read_secret(name: &str, path: &str) -> Result<Vec<u8>, StartupError> {
    let context = format!("cannot read secret_file of alert channel {name:?} ({path})");
    let text = std::fs::read_to_string(Path::new(path)).map_err(|source| StartupError::Io { context, source })?;
    let secret = text.lines().next().unwrap_or("").trim().as_bytes().to_vec();
    if secret.is_empty() {
        return Err(StartupError::Io {
            context: format!("secret_file of alert channel {name:?} ({path}) is empty"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "empty secret"),
        });
    }
    Ok(secret)
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`): the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The Slack incoming-webhook payload of `alert`.
pub fn slack_payload(alert: &Alert) -> serde_json::Value {
    let icon = match alert.kind {
        crate::domain::AlertKind::Recovered => ":white_check_mark:",
        crate::domain::AlertKind::Test => ":information_source:",
        _ => ":rotating_light:",
    };
    let mut text = format!("{icon} *distcron* `{}`: {}", alert.kind, alert.message);
    if let Some(run) = &alert.run {
        text.push_str(&format!("\nrun `{run}`"));
    }
    serde_json::json!({ "text": text })
}

impl Channel {
    /// What the API shows.
    pub fn info(&self) -> ChannelInfo {
        ChannelInfo {
            name: self.name.clone(),
            kind: self.kind.as_str(),
            signed: matches!(self.target, Target::Webhook { secret: Some(_), .. }),
            max_attempts: self.max_attempts,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The delay schedule between attempts.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.retry_initial, self.retry_max)
    }

    /// One attempt to deliver `alert` (attempt number `attempt`, from 1).
    pub async fn send(&self, alert: &Alert, attempt: u32) -> Outcome {
        let started = Instant::now();
        let body = match serde_json::to_vec(alert) {
            Ok(b) => b,
            Err(e) => return failure(None, format!("cannot serialize the alert: {e}"), started),
        };
        match &self.target {
            Target::Webhook { url, secret } => {
                let mut headers = vec![(ALERT_ID_HEADER, alert.id.clone()), (ATTEMPT_HEADER, attempt.to_string())];
                if let Some(secret) = secret {
                    headers.push((SIGNATURE_HEADER, signature(secret, &body)));
                }
                post(url.clone(), body, headers, self.timeout, started).await
            }
            Target::Slack { url } => {
                let payload = slack_payload(alert).to_string().into_bytes();
                post(url.clone(), payload, Vec::new(), self.timeout, started).await
            }
            Target::Command { shell, command } => {
                run_command(shell, command, alert, &body, self.timeout, started).await
            }
        }
    }
}

fn failure(code: Option<i32>, error: String, started: Instant) -> Outcome {
    Outcome { ok: false, code, error: Some(error), duration: started.elapsed() }
}

/// POSTs `body` as JSON on the blocking pool; 2xx is success, anything else (redirects too) a
/// failure named without the URL.
async fn post(
    url: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    timeout: Duration,
    started: Instant,
) -> Outcome {
    let sent = tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new().timeout(timeout).redirects(0).build();
        let mut request = agent
            .post(&url)
            .set("Content-Type", "application/json")
            .set("User-Agent", concat!("distcron/", env!("CARGO_PKG_VERSION")));
        for (name, value) in &headers {
            request = request.set(name, value);
        }
        match request.send_bytes(&body) {
            Ok(resp) => Ok(resp.status()),
            Err(ureq::Error::Status(code, _)) => Err((Some(i32::from(code)), format!("HTTP status {code}"))),
            Err(ureq::Error::Transport(t)) => {
                // `Transport`'s Display names the URL; its kind and message do not.
                let detail = t.message().map(|m| format!(": {m}")).unwrap_or_default();
                Err((None, format!("{}{detail}", t.kind())))
            }
        }
    })
    .await;
    match sent {
        Ok(Ok(code)) if (200..300).contains(&code) => {
            Outcome { ok: true, code: Some(i32::from(code)), error: None, duration: started.elapsed() }
        }
        Ok(Ok(code)) => failure(Some(i32::from(code)), format!("HTTP status {code}"), started),
        Ok(Err((code, error))) => failure(code, error, started),
        Err(e) => failure(None, format!("delivery task failed: {e}"), started),
    }
}

/// Runs the command with the alert JSON on stdin (and `DISTCRON_ALERT_*` in its environment);
/// exit 0 is success. Its output is discarded, its process group killed at the timeout.
async fn run_command(
    shell: &str,
    command: &str,
    alert: &Alert,
    body: &[u8],
    timeout: Duration,
    started: Instant,
) -> Outcome {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(shell);
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("DISTCRON_ALERT_ID", &alert.id)
        .env("DISTCRON_ALERT_KIND", alert.kind.as_str())
        .env("DISTCRON_ALERT_JOB", alert.job.as_ref().map_or("", |j| j.as_str()))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failure(None, format!("cannot start the command: {e}"), started),
    };
    let pid = child.id();
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin is fine.
            let _ = stdin.write_all(body).await;
            drop(stdin);
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) if status.success() => {
            Outcome { ok: true, code: Some(0), error: None, duration: started.elapsed() }
        }
        Ok(Ok(status)) => match status.code() {
            Some(code) => failure(Some(code), format!("command exited with code {code}"), started),
            None => failure(None, "command ended by a signal".into(), started),
        },
        Ok(Err(e)) => failure(None, format!("cannot wait for the command: {e}"), started),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            failure(None, format!("command did not finish within {} ms", timeout.as_millis()), started)
        }
    }
}

/// A test alert to `channel`.
pub fn test_alert(channel: &str) -> Alert {
    Alert {
        id: crate::domain::alert::test_alert_id(channel),
        job: None,
        kind: crate::domain::AlertKind::Test,
        message: format!("Test alert from distcron to channel {channel}."),
        raised_at: Utc::now(),
        rule: None,
        run: None,
        run_status: None,
        scheduled_at: None,
        worker: None,
        consecutive: None,
        last_success_at: None,
        channels: vec![channel.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_rfc_4231_vector() {
        // RFC 4231, test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[tokio::test]
    async fn a_command_channel_gets_the_alert_on_stdin_and_its_exit_code_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("alert.json");
        let mut config = AlertsConfig::default();
        let command = format!("cat > {} && [ \"$DISTCRON_ALERT_KIND\" = test ]", out.display());
        config.channels.insert(
            "mail".into(),
            ChannelConfig {
                kind: ChannelKind::Command,
                url: String::new(),
                secret_file: String::new(),
                command,
                timeout_ms: 5000,
                max_attempts: 1,
                retry_initial_ms: 10,
                retry_max_ms: 10,
            },
        );
        let channels = Channels::from_config(&config, "/bin/sh").expect("channels");
        let channel = channels.get("mail").expect("channel");
        let alert = test_alert("mail");
        let outcome = channel.send(&alert, 1).await;
        assert!(outcome.ok, "{outcome:?}");
        let got: Alert = serde_json::from_slice(&std::fs::read(&out).expect("written")).expect("alert json");
        assert_eq!(got, alert);
        let failing = Channel {
            target: Target::Command { shell: "/bin/sh".into(), command: "exit 3".into() },
            ..clone_of(&channel)
        };
        let outcome = failing.send(&alert, 1).await;
        assert_eq!((outcome.ok, outcome.code), (false, Some(3)));
        let slow = Channel {
            target: Target::Command { shell: "/bin/sh".into(), command: "sleep 5".into() },
            timeout: Duration::from_millis(200),
            ..clone_of(&channel)
        };
        let outcome = slow.send(&alert, 1).await;
        assert!(!outcome.ok && outcome.error.as_deref().is_some_and(|e| e.contains("did not finish")), "{outcome:?}");
    }

    fn clone_of(c: &Channel) -> Channel {
        Channel {
            name: c.name.clone(),
            kind: c.kind,
            target: Target::Slack { url: String::new() },
            timeout: c.timeout,
            max_attempts: c.max_attempts,
            retry_initial: c.retry_initial,
            retry_max: c.retry_max,
        }
    }

    #[test]
    fn channel_info_and_debug_never_show_urls_or_secrets() {
        let ch = Channel {
            name: "s".into(),
            kind: ChannelKind::Webhook,
            target: Target::Webhook { url: "https://hooks.example.com/T0K3N".into(), secret: Some(b"hush".to_vec()) },
            timeout: Duration::from_secs(1),
            max_attempts: 3,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(2),
        };
        let shown = format!("{ch:?} {:?}", ch.info());
        assert!(!shown.contains("T0K3N") && !shown.contains("hush"), "{shown}");
        assert!(ch.info().signed);
    }
}
