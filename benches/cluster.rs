//! Cluster benchmarks (not timed tests): `cargo bench --bench cluster [-- spread|sync]`.
//!
//! Real release `distcron` processes over a real single-member etcd (Debian `etcd-server`),
//! started with the integration tests' guards:
//! - spread: 3 workers, 1,000 jobs every second running `true` for 30 s: runs/s, lateness
//!   (actual start − scheduled tick) p50/p99/max, share per worker, etcd requests per run (from
//!   etcd's own gRPC counters), CPU and RSS per worker.
//! - sync: 100,000 hourly jobs written straight into etcd, then 3 workers started: time until
//!   each has planned every job, then idle CPU and RSS over 30 s (no job fires meanwhile).
//!
//! `DISTCRON_BENCH_BIN=/path/to/distcron` runs another build of the binary (e.g. main's, for a
//! before/after comparison) under the same harness.

#[allow(dead_code, unreachable_pub, clippy::unwrap_used)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use support::etcd::EtcdServer;
use support::{proc_stat, Node, NodeOptions};

const WORKERS: usize = 3;
const WINDOW_SECS: u64 = 30;

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if want("spread") {
        bench_spread();
    }
    if want("sync") {
        bench_sync();
    }
}

fn worker_config(etcd: &EtcdServer) -> String {
    format!(
        "[scheduler]\nheartbeat_secs = 2\n[executor]\nshell = \"/bin/sh\"\npool_size = 256\n[log_batch]\nmax_records = 1000\n[etcd]\nendpoints = {}\n",
        etcd.endpoints_toml()
    )
}

fn quiet() -> NodeOptions {
    // The guard runs its own binary through `wrapper`: a wrapper that drops that argument and
    // runs `DISTCRON_BENCH_BIN` instead.
    let wrapper = match std::env::var("DISTCRON_BENCH_BIN") {
        Ok(bin) if !bin.is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), "shift; exec \"$DISTCRON_BENCH_BIN\" \"$@\"".into(), "sh".into()]
        }
        _ => Vec::new(),
    };
    NodeOptions { log_level: "warn".into(), wrapper, ..NodeOptions::default() }
}

/// CPU % of one core and max RSS (MiB) of each pid over `secs`.
fn sample(pids: &[u32], secs: u64) -> Vec<(f64, u64)> {
    let before: Vec<u64> = pids.iter().map(|p| proc_stat(*p).0).collect();
    let mut rss = vec![0u64; pids.len()];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(500));
        for (i, p) in pids.iter().enumerate() {
            rss[i] = rss[i].max(proc_stat(*p).1);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    // USER_HZ is 100 on Linux; pages are 4 KiB.
    pids.iter()
        .enumerate()
        .map(|(i, p)| ((proc_stat(*p).0 - before[i]) as f64 / 100.0 / wall * 100.0, rss[i] * 4 / 1024))
        .collect()
}

/// Requests etcd served: unary calls plus messages received on streams (keep-alives, watch
/// requests), from its Prometheus counters.
fn etcd_requests(etcd: &EtcdServer) -> f64 {
    let url = format!("{}/metrics", etcd.endpoints()[0]);
    let text = ureq::get(&url).call().ok().and_then(|r| r.into_string().ok()).unwrap_or_default();
    text.lines()
        .filter(|l| {
            (l.starts_with("grpc_server_handled_total") && l.contains("grpc_type=\"unary\""))
                || (l.starts_with("grpc_server_msg_received_total") && l.contains("stream"))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn bench_spread() {
    const JOBS: usize = 1_000;
    let etcd = EtcdServer::start();
    let workers: Vec<Node> = (0..WORKERS).map(|_| Node::start_with(&worker_config(&etcd), quiet())).collect();
    for i in 0..JOBS {
        let job = serde_json::json!({ "name": format!("b{i:04}"), "command": "true", "cron_expr": "* * * * * *", "concurrency": "allow" });
        // etcd may push back ("too many requests") while it applies a burst: retry.
        let created = (0..50).any(|_| {
            let r = workers[0].post("/api/v1/jobs", &job.to_string());
            if r.status != 201 {
                std::thread::sleep(Duration::from_millis(200));
            }
            r.status == 201
        });
        assert!(created, "job {i} could not be created");
    }
    std::thread::sleep(Duration::from_secs(5));
    let requests0 = etcd_requests(&etcd);
    let from = Utc::now();
    let pids: Vec<u32> = workers.iter().map(Node::pid).collect();
    let usage = sample(&pids, WINDOW_SECS);
    let to = Utc::now();
    let requests1 = etcd_requests(&etcd);
    std::thread::sleep(Duration::from_secs(3));

    let mut lateness: Vec<f64> = Vec::new();
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    // Distinct run ids per (job, tick): a run recorded twice (e.g. `lost` by one node, its real
    // end by its worker, in per-node run logs) is one run.
    let mut ticks: std::collections::HashMap<(String, String), std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    for node in &workers {
        let mut cursor = String::new();
        loop {
            let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut path = format!("/api/v1/runs?limit=1000&from={}&to={}", fmt(from), fmt(to));
            if !cursor.is_empty() {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = node.get(&path).body;
            for r in page["runs"].as_array().cloned().unwrap_or_default() {
                *statuses.entry(r["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
                *per_worker.entry(r["worker"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
                let key =
                    (r["job"].as_str().unwrap_or("").to_owned(), r["scheduled_at"].as_str().unwrap_or("").to_owned());
                ticks.entry(key).or_default().insert(r["id"].as_str().unwrap_or("").to_owned());
                let t = |k: &str| r[k].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok());
                if let (Some(s), Some(p)) = (t("started_at"), t("scheduled_at")) {
                    lateness.push((s - p).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => break,
            }
        }
    }
    lateness.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lateness.get(((lateness.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN)
    };
    let wall = (to - from).num_milliseconds() as f64 / 1000.0;
    let runs = lateness.len().max(1) as f64;
    println!("spread: {WORKERS} workers, {JOBS} jobs every second running `true`, {WINDOW_SECS} s window:");
    println!("  runs started    {} ({:.0} runs/s)", lateness.len(), lateness.len() as f64 / wall);
    println!("  statuses        {statuses:?}");
    println!(
        "  duplicated      {} (job, tick) pairs run more than once",
        ticks.values().filter(|ids| ids.len() > 1).count()
    );
    println!("  per worker      {:?}", per_worker.values().collect::<Vec<_>>());
    println!(
        "  lateness ms     p50 {:.1}  p99 {:.1}  max {:.1}",
        pct(0.50),
        pct(0.99),
        lateness.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  etcd requests   {:.2} per run ({:.0}/s)",
        (requests1 - requests0) / runs,
        (requests1 - requests0) / wall
    );
    for (i, (cpu, rss)) in usage.iter().enumerate() {
        println!("  worker {i}        CPU {cpu:.0}% of one core (children not included), RSS max {rss} MiB");
    }
    for (i, w) in workers.iter().enumerate() {
        let log = w.log();
        // Warnings by kind: the message up to its first '.'.
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for line in log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
            let msg = line.split_once("] ").map_or(line, |(_, m)| m);
            *kinds.entry(msg.split('.').next().unwrap_or(msg).to_owned()).or_default() += 1;
        }
        println!("  worker {i} log    {} warnings/errors {kinds:?}", kinds.values().sum::<usize>());
    }
}

fn bench_sync() {
    const JOBS: usize = 100_000;
    let etcd = EtcdServer::start();
    // Hourly at a minute half an hour away: nothing fires while we measure.
    let minute = (Utc::now().minute() + 30) % 60;
    let mut client = etcd.client();
    let t = Instant::now();
    for chunk in 0..JOBS / 100 {
        let ops: Vec<etcd_client::TxnOp> = (0..100)
            .map(|i| {
                let name = format!("h{:06}", chunk * 100 + i);
                let job = serde_json::json!({ "name": name, "command": "true", "cron_expr": format!("{minute} * * * *"), "dialect": "distcron" });
                etcd_client::TxnOp::put(format!("/cron/jobs/{name}"), job.to_string(), None)
            })
            .collect();
        client.run(|mut c| async move { c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("bulk put") });
    }
    println!("sync: {JOBS} hourly jobs written to etcd in {:.1} s", t.elapsed().as_secs_f64());
    let started = Instant::now();
    let workers: Vec<Node> = (0..WORKERS).map(|_| Node::start_with(&worker_config(&etcd), quiet())).collect();
    let mut synced = [None; WORKERS];
    while synced.iter().any(Option::is_none) && started.elapsed() < Duration::from_secs(300) {
        for (i, w) in workers.iter().enumerate() {
            if synced[i].is_none() {
                let body = w.get("/api/v1/health").body;
                if body["scheduler"]["planned_jobs"].as_u64() == Some(JOBS as u64) {
                    synced[i] = Some(started.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "  workers started together; each planned every job after: {:?}",
        synced.iter().map(|d| d.map(|d| format!("{:.1} s", d.as_secs_f64()))).collect::<Vec<_>>()
    );
    let pids: Vec<u32> = workers.iter().map(Node::pid).collect();
    let usage = sample(&pids, WINDOW_SECS);
    for (i, (cpu, rss)) in usage.iter().enumerate() {
        println!("  worker {i} idle    CPU {cpu:.1}% of one core, RSS max {rss} MiB");
    }
}
