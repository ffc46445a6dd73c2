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
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
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
}

impl EtcdServer {
    /// A single-member etcd, ready to serve.
    pub fn start() -> EtcdServer {
        Self::cluster(1)
    }

    /// A cluster of `n` members on loopback, ready to serve (it has a leader).
    pub fn cluster(n: usize) -> EtcdServer {
        let bin = require_binary("DISTCRON_TEST_ETCD_BIN", "etcd", "etcd-server");
        let shm = PathBuf::from("/dev/shm");
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let dir =
                    if shm.is_dir() { tempfile::tempdir_in(&shm) } else { tempfile::tempdir() }.expect("etcd temp dir");
                Member { name: format!("m{i}"), client_port: free_port(), peer_port: free_port(), dir, child: None }
            })
            .collect();
        let token = format!("distcron-test-{}", uuid::Uuid::now_v7().simple());
        let mut server = EtcdServer { bin, token, members };
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
        let child = Command::new(&self.bin)
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
        let url = format!("{}/health", self.members[i].client_url());
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

    /// A client of this server, with a runtime to drive it.
    pub fn client(&self) -> EtcdClient {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let client = rt.block_on(etcd_client::Client::connect(self.endpoints(), None)).expect("etcd client");
        EtcdClient { rt, client }
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
