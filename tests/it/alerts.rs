//! Alerts (issue 11, item 3) on real processes: a local webhook receiver (a test HTTP server on
//! 127.0.0.1) counts what it is sent and checks every HMAC-SHA256 signature; jobs fail every
//! 2 s; the cluster case runs three workers on a real etcd with a shared MongoDB-wire run log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::etcd::EtcdServer;
use crate::support::ferretdb::FerretDb;
use crate::support::{free_port, wait_until, Node};

const SECRET: &str = "s3cret-for-tests";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    signature: Option<String>,
    alert_id: Option<String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("alert JSON body")
    }
}

/// A webhook receiver on 127.0.0.1:`port` that answers 200 to every POST; stopped on drop.
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (Arc::clone(&got), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(r) = serve(stream) {
                            g.lock().unwrap().push(r);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Receiver { got, stop, thread: Some(thread) }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn kinds(&self) -> Vec<String> {
        self.received().iter().map(|r| r.json()["kind"].as_str().unwrap_or("").to_owned()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let (mut len, mut signature, mut alert_id) = (0usize, None, None);
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':')?;
        let value = value.trim().to_owned();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.parse().ok()?,
            "x-distcron-signature-256" => signature = Some(value),
            "x-distcron-alert-id" => alert_id = Some(value),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut out = stream;
    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").ok()?;
    Some(Received { signature, alert_id, body })
}

/// HMAC-SHA256 as the receiver computes it (RFC 2104 over SHA-256).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg.iter().copied()).collect();
    let inner_hash = Sha256::digest(&inner);
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner_hash.iter().copied()).collect();
    let mac = Sha256::digest(&outer);
    format!("sha256={}", mac.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn assert_signed(r: &Received) {
    assert_eq!(r.signature.as_deref(), Some(hmac_sha256(SECRET.as_bytes(), &r.body).as_str()), "HMAC verifies");
    assert_eq!(r.alert_id.as_deref(), r.json()["id"].as_str(), "the id header is the alert's id");
}

/// `[alerts]` with one signed webhook channel `hook` to `port`, retrying every ~1 s.
fn alerts_toml(dir: &std::path::Path, port: u16, extra: &str) -> String {
    let secret = dir.join("hook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret file");
    format!(
        "[alerts]\npoll_ms = 500\n{extra}\n[alerts.channels.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         secret_file = \"{}\"\ntimeout_ms = 2000\nmax_attempts = 30\nretry_initial_ms = 1000\nretry_max_ms = 2000\n",
        secret.display()
    )
}

fn secret_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn failing_job(name: &str, flag: &std::path::Path, rules: Value) -> Value {
    json!({
        "name": name,
        "command": format!("[ -f {} ]", flag.display()),
        "cron_expr": "*/2 * * * * *",
        "alerts": rules,
    })
}

fn count_runs(node: &Node, job: &str, status: &str) -> usize {
    node.runs(job).iter().filter(|r| r["status"] == status).count()
}

/// The three-failures-then-fixed scenario on `api` (a node serving the API), checked at
/// `receiver`: one `failed` alert at the second failure, none after, one `recovered`.
fn failing_then_fixed(api: &Node, receiver: &Receiver, flag: &std::path::Path, job: &str) {
    let rules = json!([{ "on": ["failed", "recovered"], "after_consecutive": 2, "channels": ["hook"] }]);
    api.create_job(failing_job(job, flag, rules));
    let failed = wait_until(Duration::from_secs(30), || receiver.received().into_iter().next());
    let failed = failed.unwrap_or_else(|| panic!("a failed alert arrives; runs: {:?}", api.runs(job)));
    let body = failed.json();
    assert_eq!(body["kind"], "failed");
    assert_eq!(body["job"], job);
    assert_eq!(body["consecutive"], 2);
    assert_signed(&failed);
    // The streak goes on: at least two more failures, and no more alerts.
    let before = count_runs(api, job, "failed");
    assert!(before >= 2, "alerted at the second failure");
    wait_until(Duration::from_secs(30), || (count_runs(api, job, "failed") >= before + 2).then_some(()))
        .expect("the job keeps failing");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.kinds(), ["failed"], "no alert for the next failures of the same streak");
    // Fixed: one recovered, and nothing for the next successes.
    std::fs::write(flag, "").expect("fix the job");
    wait_until(Duration::from_secs(30), || (receiver.received().len() >= 2).then_some(()))
        .unwrap_or_else(|| panic!("a recovered alert arrives; got {:?}", receiver.kinds()));
    wait_until(Duration::from_secs(30), || (count_runs(api, job, "succeeded") >= 3).then_some(()))
        .expect("the job keeps succeeding");
    std::thread::sleep(Duration::from_secs(2));
    let got = receiver.received();
    assert_eq!(receiver.kinds(), ["failed", "recovered"], "exactly one failed and one recovered");
    assert_signed(&got[1]);
    let ids: std::collections::HashSet<_> = got.iter().map(|r| r.alert_id.clone()).collect();
    assert_eq!(ids.len(), 2, "each alert delivered once");
    // The history: both records delivered, each attempt recorded.
    let listed = api.get(&format!("/api/v1/alerts?job={job}")).body;
    let alerts = listed["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 2, "{listed}");
    for a in alerts {
        assert_eq!(a["state"], "delivered", "{a}");
        assert_eq!(a["deliveries"][0]["attempts"].as_array().map(Vec::len), Some(1), "{a}");
    }
    assert_eq!(alerts[0]["alert"]["kind"], "recovered", "newest first");
    let state = api.get(&format!("/api/v1/jobs/{job}/alerts")).body;
    assert_eq!(state["state"], "ok", "{state}");
    assert_eq!(state["rules_source"], "job");
}

#[test]
fn webhook_alerts_once_after_the_nth_failure_and_once_on_recovery_signed() {
    let port = free_port();
    let receiver = Receiver::start(port);
    let dir = secret_dir();
    let node = Node::start(&alerts_toml(dir.path(), port, ""));
    failing_then_fixed(&node, &receiver, &node.path("fixed"), "flaky");
}

#[test]
fn an_alert_waits_for_a_receiver_down_ten_seconds_and_arrives_once() {
    let port = free_port();
    let dir = secret_dir();
    let node = Node::start(&alerts_toml(dir.path(), port, ""));
    let rules = json!([{ "on": ["failed"], "channels": ["hook"] }]);
    node.create_job(failing_job("down", &node.path("never"), rules));
    // Attempts fail while nothing listens, and each one is recorded.
    let pending = wait_until(Duration::from_secs(20), || {
        let body = node.get("/api/v1/alerts?job=down").body;
        let a = body["alerts"].as_array()?.first()?.clone();
        (a["deliveries"][0]["attempts"].as_array()?.len() >= 2).then_some(a)
    })
    .expect("failed attempts are recorded while the receiver is down");
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(pending["deliveries"][0]["attempts"][0]["ok"], false);
    std::thread::sleep(Duration::from_secs(8));
    let receiver = Receiver::start(port);
    let delivered = wait_until(Duration::from_secs(20), || {
        let body = node.get("/api/v1/alerts?job=down").body;
        let a = body["alerts"].as_array()?.first()?.clone();
        (a["state"] == "delivered").then_some(a)
    })
    .expect("delivered once the receiver is back");
    std::thread::sleep(Duration::from_secs(3));
    let got = receiver.received();
    assert_eq!(got.len(), 1, "one delivery: {:?}", receiver.kinds());
    assert_signed(&got[0]);
    assert_eq!(got[0].json()["id"], delivered["alert"]["id"]);
    let attempts = delivered["deliveries"][0]["attempts"].as_array().expect("attempts");
    assert!(attempts.len() >= 3, "every attempt recorded: {delivered}");
    assert_eq!(attempts.last().expect("last")["ok"], true);
    // Other failures of the same streak raise nothing more.
    let alerts = node.get("/api/v1/alerts?job=down").body["alerts"].as_array().map(Vec::len);
    assert_eq!(alerts, Some(1));
}

#[test]
fn a_dead_man_rule_on_a_disabled_job_alerts_once() {
    let port = free_port();
    let receiver = Receiver::start(port);
    let dir = secret_dir();
    let node = Node::start(&alerts_toml(dir.path(), port, ""));
    node.create_job(json!({
        "name": "quiet",
        "command": "true",
        "cron_expr": "*/2 * * * * *",
        "enabled": false,
        "alerts": [{ "on": ["recovered"], "expect_success_within_secs": 5, "channels": ["hook"] }],
    }));
    let got = wait_until(Duration::from_secs(20), || receiver.received().into_iter().next()).expect("dead-man alert");
    assert_eq!(got.json()["kind"], "dead_man");
    assert_signed(&got);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(receiver.kinds(), ["dead_man"], "once");
    assert_eq!(node.get("/api/v1/jobs/quiet/alerts").body["state"], "alerting");
}

#[test]
fn alert_api_validates_channels_and_sends_test_alerts() {
    let port = free_port();
    let receiver = Receiver::start(port);
    let dir = secret_dir();
    let node = Node::start(&alerts_toml(dir.path(), port, "rules = [{ channels = [\"hook\"] }]"));
    let bad = node.post(
        "/api/v1/jobs",
        &json!({"name": "x", "command": "true", "cron_expr": "@daily", "alerts": [{"channels": ["pager"]}]})
            .to_string(),
    );
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(bad.body["error"]["field"], "alerts");
    let bad = node.post(
        "/api/v1/jobs",
        &json!({"name": "x", "command": "true", "cron_expr": "@daily", "alerts": [{"on": ["late"], "channels": ["hook"]}]})
            .to_string(),
    );
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let channels = node.get("/api/v1/alert-channels").body;
    assert_eq!(channels["channels"][0]["name"], "hook");
    assert_eq!(channels["channels"][0]["signed"], true);
    assert!(!channels.to_string().contains("127.0.0.1"), "no URL shown: {channels}");
    assert_eq!(channels["default_rules"][0]["channels"][0], "hook");
    assert_eq!(node.post_empty("/api/v1/alert-channels/nope/test").body["error"]["code"], "alert_channel_not_found");
    let sent = node.post_empty("/api/v1/alert-channels/hook/test");
    assert_eq!(sent.status, 200, "{:?}", sent.body);
    assert_eq!(sent.body["state"], "delivered");
    assert_eq!(receiver.kinds(), ["test"]);
    assert_signed(&receiver.received()[0]);
    let listed = node.get("/api/v1/alerts?kind=test").body;
    assert_eq!(listed["alerts"][0]["alert"]["id"], sent.body["alert"]["id"]);
    assert_eq!(node.get("/api/v1/alerts?limit=0").status, 400);
}

/// A node's config on `etcd` with the shared run log at `mongo`.
fn cluster_toml(etcd: &EtcdServer, mongo: &FerretDb, role: &str, alerts: &str) -> String {
    format!(
        "role = \"{role}\"\nallow_local_run_log = true\n[mongo]\nuri = \"{}\"\n[scheduler]\nheartbeat_secs = 1\nfailover_grace_ms = 1000\n\
         shutdown_grace_secs = 2\n[executor]\nshell = \"/bin/sh\"\n[etcd]\nendpoints = {}\nsession_ttl_secs = 3\n{alerts}",
        mongo.uri(),
        etcd.endpoints_toml()
    )
}

#[test]
fn three_workers_on_etcd_deliver_each_alert_once() {
    let etcd = EtcdServer::start();
    let mongo = FerretDb::start();
    let port = free_port();
    let receiver = Receiver::start(port);
    let dir = secret_dir();
    let flag = dir.path().join("fixed");
    // Every worker evaluates every job, so all three race for each alert.
    let alerts = alerts_toml(dir.path(), port, "evaluators_per_job = 3");
    let workers: Vec<Node> = (0..3).map(|_| Node::start(&cluster_toml(&etcd, &mongo, "worker", &alerts))).collect();
    let master = Node::start(&cluster_toml(&etcd, &mongo, "master", &alerts));
    wait_until(Duration::from_secs(20), || {
        (master.get("/api/v1/workers").body["workers"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .expect("three live workers");
    failing_then_fixed(&master, &receiver, &flag, "clustered");
    let claimed_by: Vec<String> = master.get("/api/v1/alerts?job=clustered").body["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| a["owner"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(claimed_by.len(), 2);
    drop(workers);
}
