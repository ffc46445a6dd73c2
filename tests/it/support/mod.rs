//! Test support: a RAII guard around a real `distcron` process, free ports, polling waits and a
//! small JSON HTTP client.

pub mod etcd;
pub mod ferretdb;
pub mod nemesis;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A free loopback port (bound then released), never one this process handed out before: the
/// kernel may give a just-released port again, and one etcd member once got the same port for
/// its peer and client listeners and exited.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `probe` until it returns `Some` or `deadline` passes.
pub fn wait_until<T>(deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A response: status and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    /// Response headers (lowercase names).
    pub headers: Vec<(String, String)>,
}

impl Resp {
    /// A response header's value.
    #[allow(dead_code)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How to start a node beyond its config: environment, a wrapper command, the log level.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Extra environment variables of the process (its jobs inherit them).
    pub env: Vec<(String, String)>,
    /// A command the binary runs under (e.g. `faketime -f +3s`).
    pub wrapper: Vec<String>,
    /// `log_level` in the config.
    pub log_level: String,
    /// PEM of the CA that signed the node's certificate: the node serves HTTPS
    /// (`http.tls_*` in the extra config) and is reached through a client trusting only this CA.
    pub tls_ca_pem: Option<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self { env: Vec::new(), wrapper: Vec::new(), log_level: "debug".into(), tls_ca_pem: None }
    }
}

/// A ureq agent that trusts only `ca_pem` (rustls, ring).
pub fn agent_trusting(ca_pem: &str) -> ureq::Agent {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    ureq::AgentBuilder::new().tls_config(std::sync::Arc::new(config)).build()
}

/// A running distcron node; killed on drop (its log is printed when the test failed).
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub token: Option<String>,
    extra_config: String,
    options: NodeOptions,
    agent: ureq::Agent,
    /// Where this node's responses are recorded besides `DISTCRON_RECORD_RESPONSES` (see
    /// [`Node::record_into`]).
    recorder: Option<PathBuf>,
}

impl Node {
    /// Starts a node with a fresh temp data dir and `extra_config` TOML appended to the config.
    pub fn start(extra_config: &str) -> Node {
        Self::start_with(extra_config, NodeOptions::default())
    }

    /// [`Node::start`] with [`NodeOptions`].
    pub fn start_with(extra_config: &str, options: NodeOptions) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let agent = options.tls_ca_pem.as_deref().map_or_else(ureq::agent, agent_trusting);
        let mut node = Node {
            agent,
            child: None,
            port: free_port(),
            dir,
            _tmp: Some(tmp),
            token: None,
            extra_config: extra_config.to_owned(),
            options,
            recorder: None,
        };
        node.spawn();
        node
    }

    /// A handle on a node started elsewhere (e.g. in a network namespace, reached through a
    /// forwarder on loopback `port`) with `token`: requests only, nothing is killed on drop;
    /// [`Node::log`] reads `dir/node.log`.
    #[allow(dead_code)]
    pub fn attach(port: u16, dir: PathBuf, token: String) -> Node {
        Node {
            agent: ureq::agent(),
            child: None,
            port,
            dir,
            _tmp: None,
            token: Some(token),
            extra_config: String::new(),
            options: NodeOptions::default(),
            recorder: None,
        }
    }

    /// The node's data dir (for files jobs write).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn spawn(&mut self) {
        let config = format!(
            "listen = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\nlog_level = \"{}\"\n{}",
            self.port,
            self.dir.join("data").display(),
            self.options.log_level,
            self.extra_config
        );
        std::fs::write(self.config_path(), config).expect("write config");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log")).expect("log file");
        let mut cmd = match self.options.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_distcron"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_distcron")),
        };
        let child = cmd
            .envs(self.options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--config")
            .arg(self.config_path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn distcron");
        self.child = Some(child);
        let ok = wait_until(Duration::from_secs(20), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("distcron exited at start with {status}:\n{}", self.log());
                }
            }
            (self.get("/api/v1/health/live").status == 200).then_some(())
        });
        assert!(ok.is_some(), "distcron did not become live:\n{}", self.log());
        // Auth is on by default: without a configured token the node generated one here.
        if self.token.is_none() {
            self.token = std::fs::read_to_string(self.token_file()).ok().map(|t| t.trim().to_owned());
        }
    }

    /// Where a node without a configured token keeps its generated one.
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("data").join("api_token")
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// OS pid of the node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Sends `signal` and waits for the exit status (up to `deadline`).
    pub fn signal_and_wait(&mut self, signal: &str, deadline: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.pid();
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        let child = self.child.as_mut().expect("running");
        let status = wait_until(deadline, || child.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Waits (up to `deadline`) for the node to exit by itself; its exit status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_until(deadline, || child.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGKILLs the node and starts it again on the same port and data dir.
    pub fn crash_and_restart(&mut self) {
        self.signal_and_wait("KILL", Duration::from_secs(10)).expect("node died");
        self.spawn();
    }

    /// Starts the node again after it stopped, with other [`NodeOptions`] from now on.
    pub fn restart_with(&mut self, options: NodeOptions) {
        self.options = options;
        self.restart();
    }

    /// Starts the node again after it stopped.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "node still running");
        self.spawn();
    }

    /// The URL of `path` on this node (https when it serves TLS).
    pub fn url(&self, path: &str) -> String {
        match self.options.tls_ca_pem {
            Some(_) => format!("https://127.0.0.1:{}{path}", self.port),
            None => format!("http://127.0.0.1:{}{path}", self.port),
        }
    }

    fn authorized(&self, req: ureq::Request) -> ureq::Request {
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    fn send(&self, req: ureq::Request, body: Option<&str>) -> Resp {
        let req = self.authorized(req);
        let (method, url) = (req.method().to_owned(), req.url().to_owned());
        let resp = read_response(match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        });
        self.record(&method, &url, resp)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.send(self.agent.get(&self.url(path)), None)
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.send(self.agent.post(&self.url(path)), Some(body))
    }

    pub fn post_empty(&self, path: &str) -> Resp {
        self.send(self.agent.post(&self.url(path)), None)
    }

    pub fn put(&self, path: &str, body: &str) -> Resp {
        self.send(self.agent.put(&self.url(path)), Some(body))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.send(self.agent.delete(&self.url(path)), None)
    }

    /// A raw request with a content type of the caller's choice.
    pub fn raw(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Resp {
        let req = self.authorized(self.agent.request(method, &self.url(path)).set("Content-Type", content_type));
        let resp = read_response(req.send_bytes(body));
        self.record(method, &self.url(path), resp)
    }

    /// A request with extra headers (e.g. `Origin`, `Host`, `Sec-Fetch-Site`), with the node's
    /// token when `with_token`, and an optional `(content type, body)`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
        with_token: bool,
    ) -> Resp {
        let mut req = self.agent.request(method, &self.url(path));
        if with_token {
            req = self.authorized(req);
        }
        for (name, value) in headers {
            req = req.set(name, value);
        }
        let resp = read_response(match body {
            Some((content_type, bytes)) => req.set("Content-Type", content_type).send_bytes(bytes),
            None => req.call(),
        });
        self.record(method, &self.url(path), resp)
    }

    /// A form POST (the seed's routes).
    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let resp = read_response(self.authorized(self.agent.post(&self.url(path))).send_form(fields));
        self.record("POST", &self.url(path), resp)
    }

    /// Also records this node's responses into `path` (JSON lines, see [`record_response`]).
    #[allow(dead_code)]
    pub fn record_into(&mut self, path: &Path) {
        self.recorder = Some(path.to_owned());
    }

    /// Records `resp` to `DISTCRON_RECORD_RESPONSES` and to this node's own recorder, if set.
    fn record(&self, method: &str, url: &str, resp: Resp) -> Resp {
        // A worker's listener is not the API the document describes (it answers 404 there).
        let worker = self.extra_config.lines().any(|l| l.split_whitespace().collect::<String>() == "role=\"worker\"");
        if worker {
            return resp;
        }
        if let Ok(file) = std::env::var(RECORD_ENV) {
            if !file.is_empty() {
                record_response(Path::new(&file), method, url, &resp);
            }
        }
        if let Some(file) = &self.recorder {
            record_response(file, method, url, &resp);
        }
        resp
    }

    /// Creates a job, asserting 201.
    pub fn create_job(&self, job: Value) -> Value {
        let r = self.post("/api/v1/jobs", &job.to_string());
        assert_eq!(r.status, 201, "create {job}: {}", r.text);
        r.body
    }

    /// Runs of `job`, newest first (all pages).
    pub fn runs(&self, job: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/runs?job={job}&limit=1000&cursor={c}"),
                None => format!("/api/v1/runs?job={job}&limit=1000"),
            };
            let r = self.get(&path);
            assert_eq!(r.status, 200, "{}", r.text);
            out.extend(r.body["runs"].as_array().cloned().unwrap_or_default());
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Waits for a run of `job` matching `pred`.
    pub fn wait_run(&self, job: &str, deadline: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        wait_until(deadline, || self.runs(job).into_iter().find(|r| pred(r)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            if wait_until(Duration::from_secs(5), || c.try_wait().ok().flatten()).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: String =
                log.lines().rev().take(200).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            eprintln!("---- distcron log (last 200 lines) ----\n{tail}\n----");
        }
    }
}

/// The variable naming the file every `Node` request's response is appended to (scripts/test.sh
/// sets it; `scripts/openapi_check.py` validates the file against the OpenAPI document).
pub const RECORD_ENV: &str = "DISTCRON_RECORD_RESPONSES";

/// Appends one response as a JSON line `{"method","path","query","status","content_type",
/// "json","body"}` to `file` (`path` without the query string; `body` null unless JSON).
pub fn record_response(file: &Path, method: &str, url: &str, resp: &Resp) {
    use std::io::Write;
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if resp.status == 0 {
        return; // no response (connection refused, ...)
    }
    let after_host = url.splitn(4, '/').nth(3).unwrap_or("");
    let (path, query) = after_host.split_once('?').unwrap_or((after_host, ""));
    let is_json = serde_json::from_str::<Value>(&resp.text).is_ok();
    let line = serde_json::json!({
        "method": method.to_ascii_uppercase(),
        "path": format!("/{path}"),
        "query": query,
        "status": resp.status,
        "content_type": resp.header("content-type").unwrap_or(""),
        "json": is_json,
        "body": if is_json { resp.body.clone() } else { Value::Null },
    });
    let _guard = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        panic!("cannot record a response into {}: {e}", file.display());
    }
}

/// Status and body of a reply, whatever its status (ureq reports 4xx/5xx as errors).
fn read_response(res: Result<ureq::Response, ureq::Error>) -> Resp {
    match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let headers = r
                .headers_names()
                .into_iter()
                .filter_map(|n| r.header(&n).map(|v| (n.to_ascii_lowercase(), v.to_owned())))
                .collect();
            let mut text = String::new();
            let _ = r.into_reader().take(64 * 1024 * 1024).read_to_string(&mut text);
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            Resp { status, body, text, headers }
        }
        Err(e) => Resp { status: 0, body: Value::Null, text: e.to_string(), headers: Vec::new() },
    }
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).is_some_and(|rest| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// (utime+stime in clock ticks, RSS in pages) of a process, from /proc (benchmarks).
#[allow(dead_code)]
pub fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (num(11) + num(12), num(21))
}

/// Reads a pid written by a job into a file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Fails the test with the package to install when a server binary is missing.
#[allow(dead_code)]
pub fn require_binary(env_override: &str, default: &str, package: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_override) {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(default)).find(|p| p.is_file()))
        .unwrap_or(None);
    match found {
        Some(p) => p,
        None => panic!(
            "{default} not found on PATH (or set {env_override}): install {package} (scripts/setup.sh --test does)"
        ),
    }
}

/// Runs the distcron binary with a fresh data dir and `extra_config` (as [`Node::start`] does)
/// when it is expected NOT to start: returns its exit status and its output (the start-up
/// error). Panics when it still runs after 30 s.
pub fn start_failing(extra_config: &str) -> (std::process::ExitStatus, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config_path = tmp.path().join("config.toml");
    let config = format!(
        "listen = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n{extra_config}",
        free_port(),
        tmp.path().join("data").display()
    );
    std::fs::write(&config_path, config).expect("write config");
    let log_path = tmp.path().join("node.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .arg("--config")
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("spawn distcron");
    let status = wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten());
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Some(status) => (status, output),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("distcron was expected to refuse to start, but still runs after 30 s:\n{output}");
        }
    }
}
