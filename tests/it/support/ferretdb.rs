//! FerretDb: a real MongoDB-wire server (FerretDB 1.24, SQLite backend, telemetry off) on a free
//! loopback port in its own temp dir, killed on drop; its log is printed when the test failed.
//!
//! Binary: `$DISTCRON_TEST_FERRETDB_BIN`, else `ferretdb` on PATH, else `$(go env GOPATH)/bin`
//! (where `scripts/setup.sh --test` builds it).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

/// A running FerretDB; stop/start keep its port and data.
pub struct FerretDb {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// TLS listener: its port and the CA, certificate and key files (`--listen-tls*`).
    tls: Option<(u16, [PathBuf; 3])>,
}

/// The FerretDB binary (`DISTCRON_TEST_FERRETDB_BIN`, PATH, or `$(go env GOPATH)/bin`).
pub fn binary() -> PathBuf {
    const ENV: &str = "DISTCRON_TEST_FERRETDB_BIN";
    if let Ok(p) = std::env::var(ENV) {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("ferretdb")).find(|p| p.is_file()));
    if let Some(p) = on_path {
        return p;
    }
    let gopath = Command::new("go")
        .args(["env", "GOPATH"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/go")));
    match gopath.map(|g| PathBuf::from(g).join("bin").join("ferretdb")).filter(|p| p.is_file()) {
        Some(p) => p,
        None => panic!("ferretdb not found on PATH, in $(go env GOPATH)/bin or {ENV}: install FerretDB v1.24.2 (scripts/setup.sh --test does)"),
    }
}

impl FerretDb {
    /// Starts a fresh server and waits until it accepts connections.
    pub fn start() -> FerretDb {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let mut db = FerretDb { child: None, port: free_port(), dir, bin: binary(), tls: None };
        db.spawn();
        db
    }

    /// [`FerretDb::start`] with a TLS listener too, on [`FerretDb::tls_port`], with this server
    /// certificate and key; clients must present a certificate signed by `ca`.
    pub fn start_tls(ca: PathBuf, cert: PathBuf, key: PathBuf) -> FerretDb {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let tls = Some((free_port(), [ca, cert, key]));
        let mut db = FerretDb { child: None, port: free_port(), dir, bin: binary(), tls };
        db.spawn();
        db
    }

    /// The TLS listener's port (after [`FerretDb::start_tls`]).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|(port, _)| *port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let mut tls_args = Vec::new();
        if let Some((port, [ca, cert, key])) = &self.tls {
            tls_args.push(format!("--listen-tls=127.0.0.1:{port}"));
            tls_args.push(format!("--listen-tls-cert-file={}", cert.display()));
            tls_args.push(format!("--listen-tls-key-file={}", key.display()));
            tls_args.push(format!("--listen-tls-ca-file={}", ca.display()));
        }
        let child = Command::new(&self.bin)
            .args(&tls_args)
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", self.dir.path().join("data").display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg(format!("--state-dir={}", self.dir.path().display()))
            .arg("--telemetry=disable")
            .arg("--debug-addr=-")
            .arg("--log-level=WARN")
            .env_remove("FERRETDB_TELEMETRY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let port = self.port;
        let up = wait_until(Duration::from_secs(20), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("ferretdb exited at start with {status}:\n{}", self.log());
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        assert!(up.is_some(), "ferretdb did not listen on {port}:\n{}", self.log());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("ferretdb.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `mongodb://127.0.0.1:<port>/`.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// OS pid of the server (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("ferretdb running")
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "ferretdb still running");
        self.spawn();
    }
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- ferretdb log (last 60 lines) ----\n{}\n----",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}
