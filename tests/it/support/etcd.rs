#![allow(dead_code)] // the cluster tests use the rest

//! `EtcdServer`: a real etcd (Debian `etcd-server`, or `DISTCRON_TEST_ETCD_BIN`) as a RAII
//! guard: one member or a cluster of several, each member on free loopback ports in its own
//! temp dir (in /dev/shm when there is one, so fsyncs are cheap), killed on drop, its log
//! printed when the test failed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require_binary, wait_until};

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Plain-HTTP `/health` listener (`--listen-metrics-urls`), which works whatever the
    /// client listener's TLS and auth.
    metrics_port: u16,
    /// `https` when the client listener is TLS.
    scheme: &'static str,
}

impl Member {
    fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// One etcd member or a cluster; every member is killed on drop.
pub struct EtcdServer {
    bin: PathBuf,
    token: String,
    members: Vec<Member>,
    security: EtcdSecurity,
}

/// How a test etcd is secured (issue 9: TLS, client certificates, etcd's own auth).
#[derive(Debug, Clone, Default)]
pub struct EtcdSecurity {
    /// Serve clients over TLS with these files and require a client certificate signed by
    /// `ca` (`--client-cert-auth`).
    pub tls: Option<EtcdTlsFiles>,
    /// `--auth-token-ttl` in seconds (etcd's default is 300), for auth enabled later with
    /// [`EtcdServer::enable_auth`].
    pub auth_token_ttl_secs: Option<u64>,
}

/// PEM files of a TLS etcd (server side) and of a client it trusts.
#[derive(Debug, Clone)]
pub struct EtcdTlsFiles {
    /// CA of both the server and the client certificates.
    pub ca: PathBuf,
    /// Server certificate (for 127.0.0.1) and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate and key the server accepts.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdTlsFiles {
    /// A fresh CA, a server certificate for 127.0.0.1 and a client certificate (CN `distcron`),
    /// written as PEM files into `dir` (`rcgen`).
    pub fn generate(dir: &std::path::Path) -> EtcdTlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "distcron test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |cn: &str, sans: Vec<String>, usage: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = usage;
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        // etcd's own gateway dials its client listener with the server certificate: it needs
        // both usages, as etcd's documentation says.
        let (server_cert, server_key) = leaf(
            "127.0.0.1",
            vec!["127.0.0.1".into(), "localhost".into()],
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        );
        let (client_cert, client_key) = leaf("distcron", Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth]);
        EtcdTlsFiles {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
        }
    }
}

impl EtcdServer {
    /// A single-member etcd, ready to serve.
    pub fn start() -> EtcdServer {
        Self::cluster(1)
    }

    /// A cluster of `n` members on loopback, ready to serve (it has a leader).
    pub fn cluster(n: usize) -> EtcdServer {
        Self::build(n, EtcdSecurity::default())
    }

    /// A single-member etcd secured as `security` asks, ready to serve.
    pub fn start_secured(security: EtcdSecurity) -> EtcdServer {
        Self::build(1, security)
    }

    fn build(n: usize, security: EtcdSecurity) -> EtcdServer {
        let scheme = if security.tls.is_some() { "https" } else { "http" };
        let bin = require_binary("DISTCRON_TEST_ETCD_BIN", "etcd", "etcd-server");
        let shm = PathBuf::from("/dev/shm");
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let dir =
                    if shm.is_dir() { tempfile::tempdir_in(&shm) } else { tempfile::tempdir() }.expect("etcd temp dir");
                Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    dir,
                    child: None,
                    metrics_port: free_port(),
                    scheme,
                }
            })
            .collect();
        let token = format!("distcron-test-{}", uuid::Uuid::now_v7().simple());
        let mut server = EtcdServer { bin, token, members, security };
        for i in 0..n {
            server.spawn(i);
        }
        for i in 0..n {
            server.wait_healthy(i);
        }
        server
    }

    fn initial_cluster(&self) -> String {
        self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster();
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(m.log_path()).expect("etcd log file");
        let mut secured = vec!["--listen-metrics-urls".to_owned(), format!("http://127.0.0.1:{}", m.metrics_port)];
        if let Some(tls) = &self.security.tls {
            for (flag, path) in
                [("--trusted-ca-file", &tls.ca), ("--cert-file", &tls.server_cert), ("--key-file", &tls.server_key)]
            {
                secured.extend([flag.to_owned(), path.display().to_string()]);
            }
            secured.push("--client-cert-auth".to_owned());
        }
        if let Some(ttl) = self.security.auth_token_ttl_secs {
            secured.extend(["--auth-token-ttl".to_owned(), ttl.to_string()]);
        }
        let child = Command::new(&self.bin)
            .args(&secured)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(m.dir.path().join("data"))
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        m.child = Some(child);
    }

    fn wait_healthy(&mut self, i: usize) {
        let url = format!("http://127.0.0.1:{}/health", self.members[i].metrics_port);
        let healthy = wait_until(Duration::from_secs(30), || {
            if let Some(child) = self.members[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("etcd member {i} exited with {status}:\n{}", self.members[i].log());
                }
            }
            let body = ureq::get(&url).timeout(Duration::from_secs(1)).call().ok()?.into_string().ok()?;
            body.contains("\"true\"").then_some(())
        });
        assert!(healthy.is_some(), "etcd member {i} did not become healthy:\n{}", self.members[i].log());
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The endpoints as a TOML array, for a distcron config.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its ports and data dir and waits until it serves.
    pub fn restart_member(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} still running");
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to member `i`.
    pub fn signal_member(&self, i: usize, signal: &str) {
        if let Some(child) = &self.members[i].child {
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
        }
    }

    /// A client of this server, with a runtime to drive it (with the trusted client
    /// certificate when the server is TLS).
    pub fn client(&self) -> EtcdClient {
        self.client_with(None)
    }

    /// [`EtcdServer::client`] authenticated as `user` (after [`EtcdServer::enable_auth`]).
    pub fn client_as(&self, user: &str, password: &str) -> EtcdClient {
        self.client_with(Some((user, password)))
    }

    fn client_with(&self, user: Option<(&str, &str)>) -> EtcdClient {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let mut options = etcd_client::ConnectOptions::new();
        if let Some(tls) = &self.security.tls {
            let read = |p: &PathBuf| std::fs::read(p).expect("read PEM");
            options = options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)))
                    .identity(etcd_client::Identity::from_pem(read(&tls.client_cert), read(&tls.client_key))),
            );
        }
        if let Some((name, password)) = user {
            options = options.with_user(name, password);
        }
        let client = rt.block_on(etcd_client::Client::connect(self.endpoints(), Some(options))).expect("etcd client");
        EtcdClient { rt, client }
    }

    /// Turns on etcd's own auth: a `root` user (password `root_password`), and `user` with
    /// `password` and a role that may read and write every key under `prefix` only.
    pub fn enable_auth(&self, root_password: &str, user: &str, password: &str, prefix: &str) {
        let mut client = self.client();
        let (root_password, user, password, prefix) =
            (root_password.to_owned(), user.to_owned(), password.to_owned(), prefix.to_owned());
        client.run(|mut c| async move {
            c.user_add("root", root_password, None).await.expect("add root");
            c.user_grant_role("root", "root").await.expect("grant root");
            c.role_add("distcron").await.expect("add role");
            let permission = etcd_client::Permission::read_write(prefix).with_prefix();
            c.role_grant_permission("distcron", permission).await.expect("grant prefix");
            c.user_add(user.clone(), password, None).await.expect("add user");
            c.user_grant_role(user, "distcron").await.expect("grant role");
            c.auth_enable().await.expect("auth enable");
        });
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        if std::thread::panicking() {
            for m in &self.members {
                let log = m.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                eprintln!("---- etcd {} log (last 40 lines) ----\n{}\n----", m.name, tail.join("\n"));
            }
        }
    }
}

/// A blocking etcd client for tests (what the seed's master would write, compaction, ...).
pub struct EtcdClient {
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl EtcdClient {
    /// Runs `f` with the client on this client's runtime.
    pub fn run<T, F, Fut>(&mut self, f: F) -> T
    where
        F: FnOnce(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let client = self.client.clone();
        self.rt.block_on(f(client))
    }

    /// Puts `key` = `value`.
    pub fn put(&mut self, key: &str, value: &str) -> i64 {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.run(|mut c| async move {
            c.put(key, value, None).await.expect("etcd put").header().map_or(0, |h| h.revision())
        })
    }

    /// The value at `key`, if any.
    pub fn get(&mut self, key: &str) -> Option<String> {
        let key = key.to_owned();
        self.run(|mut c| async move {
            let resp = c.get(key, None).await.expect("etcd get");
            resp.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        })
    }

    /// Every key under `prefix` with its value.
    pub fn list(&mut self, prefix: &str) -> Vec<(String, String)> {
        let prefix = prefix.to_owned();
        self.run(|mut c| async move {
            let resp =
                c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await.expect("etcd get prefix");
            resp.kvs()
                .iter()
                .map(|kv| {
                    (String::from_utf8_lossy(kv.key()).into_owned(), String::from_utf8_lossy(kv.value()).into_owned())
                })
                .collect()
        })
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &str) {
        let key = key.to_owned();
        self.run(|mut c| async move { c.delete(key, None).await.expect("etcd delete") });
    }

    /// The current revision.
    pub fn revision(&mut self) -> i64 {
        self.run(|mut c| async move {
            let resp = c.get("/", Some(etcd_client::GetOptions::new().with_count_only())).await.expect("etcd get");
            resp.header().map_or(0, |h| h.revision())
        })
    }

    /// Compacts history up to the current revision (physically, so it is gone when this returns).
    pub fn compact_now(&mut self) -> i64 {
        let rev = self.revision();
        self.run(|mut c| async move {
            c.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("etcd compact")
        });
        rev
    }
}
