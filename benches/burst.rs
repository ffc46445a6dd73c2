//! Burst benchmarks (not timed tests): `cargo bench --bench burst [-- floor|node|cluster]`.
//!
//! The "top of the hour" fleet: `BURST_JOBS` jobs (default 10,000) all due in the same second,
//! each appending `<ns since epoch> <job>` to one file through `bash -c` (`echo $(date +%s%N) ...`).
//! - floor: the same N `bash -c` commands started at one instant by this process (std's
//!   `posix_spawn` path, no waiting between them): the fastest any scheduler could start them on
//!   this machine. Every other figure is read next to it.
//! - node: one release node (role `all`, embedded stores, default executor settings but the shell)
//!   with the N jobs written into its job store before it starts: every job started once, none
//!   `missed` with the default grace, lateness p50/p99 and the last start against the floor, peak
//!   RSS, and the API (`GET /api/v1/runs?limit=10`, polled every 100 ms) answering during the
//!   burst.
//! - cluster: the same over 3 workers on one etcd member, the jobs written straight into etcd.
//!
//! Lateness is each line's time minus the scheduled second (floor: minus the instant the first
//! spawn began). `BURST_BIN=/path/to/distcron` runs another build (before/after comparisons);
//! `BURST_EXECUTOR` adds lines to the nodes' `[executor]` section (e.g. `pool_size = 256`).

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Timelike, Utc};
use distcron::backend::embedded::EmbeddedJobStore;
use distcron::backend::{JobStore, Precondition};
use distcron::domain::JobSpec;
use support::etcd::EtcdServer;
use support::{free_port, proc_stat, Node, NodeOptions};

const TOKEN: &str = "burst-bench-token-0123456789abcdef0123456789";
const WORKERS: usize = 3;

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let n = std::env::var("BURST_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000usize);
    if want("floor") {
        floor(n);
    }
    if want("node") {
        floor_then(n, node);
    }
    if want("cluster") {
        floor_then(n, cluster);
    }
}

/// The floor measured right before `bench`, so both run on the same machine state.
fn floor_then(n: usize, bench: fn(usize, &Stats)) {
    let f = floor(n);
    bench(n, &f);
}

/// Extra `[executor]` lines from `BURST_EXECUTOR` (`;` or newlines between them).
fn executor_extra() -> String {
    std::env::var("BURST_EXECUTOR").unwrap_or_default().replace(';', "\n")
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// The command every job (and the floor) runs: one line, `<ns> <name>`.
fn command(file: &Path, name: &str) -> String {
    format!("echo $(date +%s%N) {name} >> {}", file.display())
}

/// Lateness figures of one burst, in ms from its reference instant.
struct Stats {
    started: usize,
    distinct: usize,
    twice: usize,
    p50: f64,
    p99: f64,
    last: f64,
}

impl Stats {
    fn read(file: &Path, reference_ns: i64) -> Stats {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut per_name: HashMap<&str, usize> = HashMap::new();
        let mut late: Vec<f64> = Vec::new();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(ns), Some(name)) = (parts.next().and_then(|s| s.parse::<i64>().ok()), parts.next()) else {
                continue;
            };
            *per_name.entry(name).or_default() += 1;
            late.push((ns - reference_ns) as f64 / 1e6);
        }
        late.sort_by(|a, b| a.total_cmp(b));
        let pct =
            |p: f64| late.get(((late.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
        Stats {
            started: late.len(),
            distinct: per_name.len(),
            twice: per_name.values().filter(|c| **c > 1).count(),
            p50: pct(0.50),
            p99: pct(0.99),
            last: late.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn print(&self, n: usize, floor: Option<&Stats>) {
        println!(
            "  started         {} lines, {} of {n} jobs, {} started more than once",
            self.started, self.distinct, self.twice
        );
        match floor {
            Some(f) => println!(
                "  lateness ms     p50 {:.0}  p99 {:.0} ({:.2}x floor)  last {:.0} ({:.2}x floor)",
                self.p50,
                self.p99,
                self.p99 / f.p99,
                self.last,
                self.last / f.last
            ),
            None => println!("  lateness ms     p50 {:.0}  p99 {:.0}  last {:.0}", self.p50, self.p99, self.last),
        }
    }
}

fn wait_lines(file: &Path, n: usize, deadline: Duration) {
    let t = Instant::now();
    while t.elapsed() < deadline {
        let lines = std::fs::read_to_string(file).map(|s| s.lines().count()).unwrap_or(0);
        if lines >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn floor(n: usize) -> Stats {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("floor.log");
    let t0 = now_ns();
    let children: Vec<Child> = (0..n)
        .filter_map(|i| {
            Command::new("bash")
                .arg("-c")
                .arg(command(&file, &format!("f{i}")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        })
        .collect();
    let spawned = children.len();
    for mut c in children {
        let _ = c.wait();
    }
    let stats = Stats::read(&file, t0);
    println!("floor: {n} `bash -c` commands started at one instant by one process ({spawned} spawned):");
    stats.print(n, None);
    stats
}

/// The second every job is due: far enough ahead for the set-up, as a 6-field cron in UTC.
fn due_second(lead_secs: i64) -> (DateTime<Utc>, String) {
    let at = Utc::now() + chrono::Duration::seconds(lead_secs);
    let at = at.with_nanosecond(0).unwrap_or(at);
    (at, format!("{} {} {} * * *", at.second(), at.minute(), at.hour()))
}

/// Samples max RSS (MiB) of `pids` and the latency of `GET /api/v1/runs?limit=10` on `api`
/// every 100 ms until `stop`.
struct Probe {
    stop: Arc<AtomicBool>,
    rss_mib: Arc<Mutex<Vec<u64>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
    failures: Arc<Mutex<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(pids: Vec<u32>, api: String, token: String) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let rss_mib = Arc::new(Mutex::new(vec![0; pids.len()]));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(0));
        let (s, r, l, f) = (stop.clone(), rss_mib.clone(), latencies.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
            while !s.load(Ordering::Relaxed) {
                for (i, p) in pids.iter().enumerate() {
                    let mib = proc_stat(*p).1 * 4 / 1024;
                    if let Ok(mut v) = r.lock() {
                        v[i] = v[i].max(mib);
                    }
                }
                let t = Instant::now();
                let ok = agent
                    .get(&format!("{api}/api/v1/runs?limit=10"))
                    .set("Authorization", &format!("Bearer {token}"))
                    .call()
                    .is_ok();
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if ok {
                    if let Ok(mut v) = l.lock() {
                        v.push(ms);
                    }
                } else if let Ok(mut v) = f.lock() {
                    *v += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Probe { stop, rss_mib, latencies, failures, thread: Some(thread) }
    }

    fn finish(mut self) -> (Vec<u64>, Vec<f64>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut lat = self.latencies.lock().map(|v| v.clone()).unwrap_or_default();
        lat.sort_by(|a, b| a.total_cmp(b));
        let rss = self.rss_mib.lock().map(|v| v.clone()).unwrap_or_default();
        let failures = self.failures.lock().map(|v| *v).unwrap_or(0);
        (rss, lat, failures)
    }
}

fn print_probe(rss: &[u64], lat: &[f64], failures: usize) {
    let pct = |p: f64| lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
    println!("  peak RSS MiB    {rss:?}");
    println!(
        "  API during it   {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {failures} failed",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}

/// Every run record of a node, counted by status (paged through the API).
fn statuses(get: &dyn Fn(&str) -> serde_json::Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let mut path = "/api/v1/runs?limit=1000".to_owned();
        if !cursor.is_empty() {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = get(&path);
        for r in page["runs"].as_array().cloned().unwrap_or_default() {
            *out.entry(r["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

fn node(n: usize, floor: &Stats) {
    let bin = std::env::var("BURST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_distcron").to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let file = dir.path().join("burst.log");
    // The job store commits each put with an fsync: allow ~2 ms a job, plus the start.
    let (at, cron) = due_second(20 + (n as i64) / 400);
    {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let store = EmbeddedJobStore::open(&data.join("jobs.sqlite3")).expect("job store");
        rt.block_on(async {
            for i in 0..n {
                let name = format!("j{i:05}");
                let spec = JobSpec {
                    name: Some(name.clone()),
                    command: command(&file, &name),
                    cron_expr: cron.clone(),
                    ..JobSpec::default()
                };
                let job = spec.into_job(None).expect("valid job");
                store.put(job, Precondition::Any).await.expect("put job");
            }
        });
    }
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\napi_token = \"{TOKEN}\"\nlog_level = \"warn\"\n[executor]\nshell = \"/bin/bash\"\n{}\n",
            data.display(),
            executor_extra()
        ),
    )
    .expect("config");
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn distcron");
    let get = |path: &str| -> serde_json::Value {
        ureq::get(&format!("{api}{path}"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .ok()
            .and_then(|r| r.into_json().ok())
            .unwrap_or_default()
    };
    let planned = support::wait_until(Duration::from_secs(60), || {
        (get("/api/v1/health")["scheduler"]["planned_jobs"].as_u64() == Some(n as u64)).then_some(())
    });
    let lead = (at - Utc::now()).num_milliseconds();
    println!(
        "node: {n} jobs due at {at} (role all, embedded stores, shell bash; planned {lead} ms ahead; binary {bin}):"
    );
    if planned.is_none() || lead < 1000 {
        println!("  not planned in time (planned: {}); rerun with fewer BURST_JOBS", planned.is_some());
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let _ = child.wait();
        return;
    }
    std::thread::sleep(Duration::from_millis((lead - 1000).max(0) as u64));
    let probe = Probe::start(vec![child.id()], api.clone(), TOKEN.to_owned());
    wait_lines(&file, n, Duration::from_secs(300));
    let (rss, lat, failures) = probe.finish();
    // Let the log batch land, then count the run log.
    std::thread::sleep(Duration::from_secs(3));
    let stats = Stats::read(&file, at.timestamp_nanos_opt().unwrap_or(0));
    stats.print(n, Some(floor));
    println!("  run log         {:?}", statuses(&get));
    print_probe(&rss, &lat, failures);
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn cluster(n: usize, floor: &Stats) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("burst.log");
    let etcd = EtcdServer::start();
    let (at, cron) = due_second(40);
    let mut client = etcd.client();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|i| {
                let name = format!("j{i:05}");
                let job = serde_json::json!({ "name": name, "command": command(&file, &name), "cron_expr": cron, "dialect": "distcron", "concurrency": "allow" });
                etcd_client::TxnOp::put(format!("/cron/jobs/{name}"), job.to_string(), None)
            })
            .collect();
        client.run(|mut c| async move { c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("bulk put") });
    }
    let wrapper = match std::env::var("BURST_BIN") {
        Ok(bin) if !bin.is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), "shift; exec \"$BURST_BIN\" \"$@\"".into(), "sh".into()]
        }
        _ => Vec::new(),
    };
    let options = || NodeOptions { log_level: "warn".into(), wrapper: wrapper.clone(), ..NodeOptions::default() };
    let config = format!(
        "[executor]\nshell = \"/bin/bash\"\n{}\n[etcd]\nendpoints = {}\n",
        executor_extra(),
        etcd.endpoints_toml()
    );
    let workers: Vec<Node> = (0..WORKERS).map(|_| Node::start_with(&config, options())).collect();
    let planned = support::wait_until(Duration::from_secs(60), || {
        workers
            .iter()
            .all(|w| w.get("/api/v1/health").body["scheduler"]["planned_jobs"].as_u64() == Some(n as u64))
            .then_some(())
    });
    let lead = (at - Utc::now()).num_milliseconds();
    println!("cluster: {n} jobs due at {at} on {WORKERS} workers, one etcd member (planned {lead} ms ahead):");
    if planned.is_none() || lead < 1000 {
        println!("  not planned in time (planned: {}); rerun with fewer BURST_JOBS", planned.is_some());
        return;
    }
    std::thread::sleep(Duration::from_millis((lead - 1000).max(0) as u64));
    // The probe's API requests go to the first worker (each node serves the API).
    let token = std::fs::read_to_string(workers[0].token_file()).unwrap_or_default().trim().to_owned();
    let probe = Probe::start(workers.iter().map(Node::pid).collect(), workers[0].url(""), token);
    wait_lines(&file, n, Duration::from_secs(300));
    let (rss, lat, failures) = probe.finish();
    std::thread::sleep(Duration::from_secs(3));
    let stats = Stats::read(&file, at.timestamp_nanos_opt().unwrap_or(0));
    stats.print(n, Some(floor));
    let mut all = BTreeMap::new();
    for w in &workers {
        for (k, v) in statuses(&|p: &str| w.get(p).body) {
            *all.entry(k).or_insert(0) += v;
        }
    }
    println!("  run logs        {all:?}");
    print_probe(&rss, &lat, failures);
}
