//! The CLI's connection to a server: which server, which token, which CA, and the blocking
//! JSON calls (`ureq` over rustls).
//!
//! Owns: the defaults (`--server` / `DISTCRON_SERVER`, else the local config's listen address,
//! else `http://127.0.0.1:8070`; the token from `--token-file`, `DISTCRON_TOKEN`, else what the
//! local server would use: `api_token`, `api_token_file`, `data_dir/api_token`), HTTPS with a CA
//! file, and turning an HTTP answer into a value or a [`CliError`] carrying the API's message.
//! Leaves to others: what the calls mean (the commands) and printing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{CliError, ClientArgs};
use crate::config::{Cli, Config};

/// A connected client (no request is sent until a command asks).
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// For streams: no overall timeout.
    stream_agent: ureq::Agent,
}

/// Longest silence on a followed stream before the CLI gives up on the connection.
const STREAM_SILENCE: Duration = Duration::from_secs(60);

impl Client {
    /// Resolves the server, the token and the TLS trust from `args` and the local config.
    ///
    /// # Errors
    /// [`CliError::Usage`] for a malformed server URL; [`CliError::Failed`] when a token or CA
    /// file cannot be read or the local config is broken.
    pub(crate) fn connect(args: &ClientArgs) -> Result<Self, CliError> {
        let mut local = LocalConfig::new(args);
        let base = match &args.server {
            Some(url) => url.trim().trim_end_matches('/').to_owned(),
            None => local.get()?.map_or_else(|| "http://127.0.0.1:8070".to_owned(), default_server),
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!("--server {base:?} must start with http:// or https://")));
        }
        let token = resolve_token(args, &mut local)?;
        let tls = args.ca_file.as_deref().map(tls_trusting).transpose()?.map(Arc::new);
        let base_builder = || {
            let builder = ureq::AgentBuilder::new().user_agent(concat!("distcron-cli/", env!("CARGO_PKG_VERSION")));
            match &tls {
                Some(tls) => builder.tls_config(Arc::clone(tls)),
                None => builder,
            }
        };
        let agent = base_builder().timeout(Duration::from_secs(args.timeout_secs.max(1))).build();
        // A followed stream lasts as long as the run: no overall timeout, only a bound on
        // silence (the server sends a keep-alive every 15 s).
        let stream_agent = base_builder()
            .timeout_connect(Duration::from_secs(args.timeout_secs.max(1)))
            .timeout_read(STREAM_SILENCE)
            .build();
        Ok(Self { base, token, agent, stream_agent })
    }

    /// Opens a server-sent event stream at `path?query`; `Ok(None)` when the server has no such
    /// route (404 other than `run_not_found`: an older server).
    ///
    /// # Errors
    /// As [`Client::get`].
    pub(crate) fn open_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<Box<dyn std::io::Read + Send + Sync>>, CliError> {
        let mut req = self.stream_agent.get(&format!("{}{path}", self.base)).set("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        for (k, v) in query {
            req = req.query(k, v);
        }
        match req.call() {
            Ok(resp) => Ok(Some(resp.into_reader())),
            Err(ureq::Error::Status(404, resp)) => {
                let err = api_error(404, resp.into_string().unwrap_or_default(), self.token.is_some());
                match &err {
                    CliError::Api { code, .. } if code == "run_not_found" => Err(err),
                    _ => Ok(None),
                }
            }
            Err(ureq::Error::Status(status, resp)) => {
                Err(api_error(status, resp.into_string().unwrap_or_default(), self.token.is_some()))
            }
            Err(ureq::Error::Transport(t)) => Err(CliError::Failed(format!("cannot reach {}: {t}", self.base))),
        }
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `GET path?query`.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub(crate) fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let mut req = self.request("GET", path);
        for (k, v) in query {
            req = req.query(k, v);
        }
        self.finish(req.call())
    }

    /// `method path` with an optional JSON body.
    ///
    /// # Errors
    /// [`CliError::Api`] with the API's message for an error answer; [`CliError::Failed`] when
    /// the server cannot be reached or answers something that is not JSON.
    pub(crate) fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let req = self.request(method, path);
        self.finish(match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    fn finish(&self, result: Result<ureq::Response, ureq::Error>) -> Result<Value, CliError> {
        match result {
            Ok(resp) => {
                let text = resp
                    .into_string()
                    .map_err(|e| CliError::Failed(format!("cannot read the answer of {}: {e}", self.base)))?;
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&text).map_err(|e| {
                    CliError::Failed(format!("{} did not answer JSON ({e}); is it a distcron server?", self.base))
                })
            }
            Err(ureq::Error::Status(status, resp)) => {
                Err(api_error(status, resp.into_string().unwrap_or_default(), self.token.is_some()))
            }
            Err(ureq::Error::Transport(t)) => Err(CliError::Failed(format!("cannot reach {}: {t}", self.base))),
        }
    }
}

/// The error of an HTTP error answer: the API's `{"error":{code,message,field}}`, or the status.
fn api_error(status: u16, body: String, had_token: bool) -> CliError {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let code = error["code"].as_str().unwrap_or("").to_owned();
    let mut message = match error["message"].as_str() {
        Some(m) => m.to_owned(),
        None => format!("the server answered HTTP {status}"),
    };
    if let Some(field) = error["field"].as_str().filter(|f| !message.contains(*f)) {
        message = format!("{field}: {message}");
    }
    if status == 401 && !had_token {
        message.push_str(" (no token found: use --token-file, DISTCRON_TOKEN or --data-dir)");
    }
    CliError::Api { status, code, message }
}

/// A path segment, percent-encoded (job names and run ids are plain, but input is input).
pub(crate) fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The local config, read on first use (only when no flag says what it would).
struct LocalConfig<'a> {
    args: &'a ClientArgs,
    loaded: Option<Option<Config>>,
}

impl<'a> LocalConfig<'a> {
    fn new(args: &'a ClientArgs) -> Self {
        Self { args, loaded: None }
    }

    /// The config this host's server would run with, if a config file or `--data-dir` says
    /// where; `None` when there is none to read.
    fn get(&mut self) -> Result<Option<&Config>, CliError> {
        if self.loaded.is_none() {
            let cli = Cli { config: self.args.config.clone(), data_dir: self.args.data_dir.clone(), ..Cli::default() };
            let config = match Config::load(&cli) {
                Ok(c) => Some(c),
                // An explicit --config must be readable; an absent default is no error.
                Err(e) if self.args.config.is_some() => {
                    return Err(CliError::Failed(format!("cannot read the local config: {e}")));
                }
                Err(_) => None,
            };
            self.loaded = Some(config);
        }
        Ok(self.loaded.as_ref().and_then(Option::as_ref))
    }
}

/// The URL of the server `config` describes, reached over loopback when it listens everywhere.
fn default_server(config: &Config) -> String {
    let scheme = if config.tls_enabled() { "https" } else { "http" };
    match config.listen_addr() {
        Some(addr) if addr.ip().is_unspecified() => {
            let host = if addr.is_ipv4() { "127.0.0.1" } else { "[::1]" };
            format!("{scheme}://{host}:{}", addr.port())
        }
        Some(addr) => format!("{scheme}://{addr}"),
        None => "http://127.0.0.1:8070".to_owned(),
    }
}

/// The token: `--token-file`, `DISTCRON_TOKEN`, then the local server's own (none = send none).
fn resolve_token(args: &ClientArgs, local: &mut LocalConfig<'_>) -> Result<Option<String>, CliError> {
    if let Some(path) = &args.token_file {
        return read_token(path).map(Some);
    }
    if let Some(token) = std::env::var("DISTCRON_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    let Some(config) = local.get()? else { return Ok(None) };
    if !config.api_token.is_empty() {
        return Ok(Some(config.api_token.clone()));
    }
    if !config.api_token_file.as_os_str().is_empty() {
        return read_token(&config.api_token_file).map(Some);
    }
    let generated = config.data_dir.join(crate::api_token::TOKEN_FILE_NAME);
    if generated.exists() {
        return read_token(&generated).map(Some);
    }
    Ok(None)
}

/// A token file's first line, trimmed.
fn read_token(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Failed(format!("cannot read the token file {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(CliError::Failed(format!("the token file {} is empty", path.display())));
    }
    Ok(token)
}

/// A rustls client config trusting only the certificates in the PEM file `ca`.
fn tls_trusting(ca: &Path) -> Result<rustls::ClientConfig, CliError> {
    use rustls_pki_types::pem::PemObject;
    let failed = |what: String| CliError::Failed(format!("CA file {}: {what}", ca.display()));
    let pem = std::fs::read(ca).map_err(|e| failed(format!("cannot read it: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| failed(format!("not PEM: {e}")))?;
        roots.add(cert).map_err(|e| failed(format!("not a usable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(failed("holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_the_servers_message_and_field() {
        let e = api_error(
            400,
            r#"{"error":{"code":"invalid_job","message":"unknown time zone","field":"tz"}}"#.into(),
            true,
        );
        assert_eq!(e.to_string(), "tz: unknown time zone");
        assert_eq!(e.exit_code(), 1);
        let e = api_error(
            404,
            r#"{"error":{"code":"job_not_found","message":"job x not found","field":"name"}}"#.into(),
            true,
        );
        assert_eq!((e.to_string().as_str(), e.exit_code()), ("name: job x not found", 4));
        let e = api_error(502, "<html>bad gateway</html>".into(), true);
        assert_eq!(e.to_string(), "the server answered HTTP 502");
        assert!(api_error(401, String::new(), false).to_string().contains("--token-file"));
    }

    #[test]
    fn the_default_server_is_the_local_listen_address_over_loopback() {
        let mut config = Config { listen: "0.0.0.0:9000".into(), ..Config::default() };
        assert_eq!(default_server(&config), "http://127.0.0.1:9000");
        config.listen = "127.0.0.1:8070".into();
        assert_eq!(default_server(&config), "http://127.0.0.1:8070");
        config.http.tls_cert_file = "/c.pem".into();
        config.http.tls_key_file = "/k.pem".into();
        assert_eq!(default_server(&config), "https://127.0.0.1:8070");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("a.b-c_d"), "a.b-c_d");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
