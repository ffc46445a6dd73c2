//! Benchmark (not a timed test): reads that must not scale with output size.
//! `cargo bench --bench reads`; `READS_BIN=<distcron binary>` measures another build (e.g. an
//! older release, for before/after figures); `READS_JOBS`, `READS_BIG_RUNS` and
//! `READS_OUTPUT_BYTES` size the data (defaults 10,000 jobs, 1,000 runs printing 1 MiB).
//!
//! The data directory is written before distcron starts, in the run-log layout of the release
//! before outputs were stored apart (one row per run, output inside its JSON): a newer binary
//! migrates it at open (the migration time is reported), an older one reads it as is. Every
//! job has one small run; the `READS_BIG_RUNS` newest runs (of as many jobs) printed
//! `READS_OUTPUT_BYTES` each. Measured per request (three times, median time): wall time,
//! response bytes, bytes distcron read through system calls (`rchar` of `/proc/<pid>/io`,
//! page-cache hits included) and its RSS growth (max sampled VmRSS over the one before).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use distcron::backend::embedded::EmbeddedJobStore;
use distcron::backend::{JobStore, Precondition};
use distcron::domain::JobSpec;

const TOKEN: &str = "reads-bench-token";

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// `rchar` of `/proc/<pid>/io`: bytes read through read-like system calls.
fn read_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("rchar:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

/// VmRSS in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn main() {
    let jobs = env_usize("READS_JOBS", 10_000);
    let big_runs = env_usize("READS_BIG_RUNS", 1_000).min(jobs);
    let output_bytes = env_usize("READS_OUTPUT_BYTES", 1024 * 1024);
    let bin = std::env::var("READS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_distcron").to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");

    let t = Instant::now();
    write_jobs(&data, jobs);
    write_runs(&data, jobs, big_runs, output_bytes);
    println!(
        "reads: {jobs} jobs, {big_runs} runs printing {} KiB each (+ {} small), written in {:.1} s; binary {bin}",
        output_bytes / 1024,
        jobs - big_runs,
        t.elapsed().as_secs_f64()
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\napi_token = \"{TOKEN}\"\nlog_level = \"warn\"\n",
            data.display()
        ),
    )
    .expect("config");
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn distcron");
    let live = (0..2400).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        ureq::get(&format!("{base}/api/v1/health/live")).call().is_ok()
    });
    if !live {
        stop(&mut child);
        panic!("distcron did not start");
    }
    println!("  start (open, migrate)  {:.1} s", started.elapsed().as_secs_f64());
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(2));
    for (label, path) in [
        ("/api/v1/runs?limit=1000", "/api/v1/runs?limit=1000".to_owned()),
        ("GET /api/v1/jobs (job list)", "/api/v1/jobs".to_owned()),
        ("/job/log?limit=100", "/job/log?limit=100".to_owned()),
    ] {
        measure(label, &format!("{base}{path}"), pid);
    }
    stop(&mut child);
}

/// Writes `n` jobs (yearly, so none fires during the bench) through the embedded job store.
fn write_jobs(data: &std::path::Path, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let store = EmbeddedJobStore::open(&data.join("jobs.sqlite3")).expect("job store");
    rt.block_on(async {
        for i in 0..n {
            let spec = JobSpec {
                name: Some(format!("j{i}")),
                command: "true".into(),
                cron_expr: "0 0 1 1 *".into(),
                ..JobSpec::default()
            };
            let job = spec.into_job(None).expect("valid job");
            store.put(job, Precondition::Any).await.expect("put job");
        }
    });
}

/// Writes the run log in the layout before outputs were stored apart.
fn write_runs(data: &std::path::Path, jobs: usize, big: usize, output_bytes: usize) {
    let conn = rusqlite::Connection::open(data.join("runs.sqlite3")).expect("runs db");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
         CREATE TABLE runs (id TEXT PRIMARY KEY, job TEXT NOT NULL, status TEXT NOT NULL, worker TEXT NOT NULL,
             start_ms INTEGER NOT NULL, json TEXT NOT NULL);
         CREATE INDEX runs_job_start ON runs (job, start_ms DESC, id DESC);
         CREATE INDEX runs_status_start ON runs (status, start_ms DESC, id DESC);
         CREATE INDEX runs_start ON runs (start_ms DESC, id DESC);
         BEGIN;",
    )
    .expect("schema");
    let line = "x".repeat(79) + "\n";
    let big_output: String = line.repeat(output_bytes / line.len() + 1)[..output_bytes].to_owned();
    let base = Utc::now() - chrono::Duration::days(1);
    let mut stmt = conn
        .prepare(
            "INSERT INTO runs (id, job, status, worker, start_ms, json) VALUES (?1, ?2, 'succeeded', 'bench', ?3, ?4)",
        )
        .expect("insert");
    // Small runs first (older), then the big ones (newest), so the newest 1,000 are the big ones.
    for i in 0..jobs {
        let (job, start, output) = if i < jobs - big {
            (format!("j{}", i + big), base + chrono::Duration::milliseconds(i as i64), "ok\n")
        } else {
            let k = i - (jobs - big);
            (
                format!("j{k}"),
                base + chrono::Duration::seconds(3600) + chrono::Duration::milliseconds(k as i64),
                big_output.as_str(),
            )
        };
        let id = uuid::Uuid::now_v7().to_string();
        let record = serde_json::json!({
            "id": id, "job": job, "command": "print", "status": "succeeded", "trigger": "schedule",
            "scheduled_at": start, "dispatched_at": start, "started_at": start,
            "ended_at": start + chrono::Duration::milliseconds(5), "duration_ms": 5, "exit_code": 0,
            "signal": null, "err": "", "output": output, "output_bytes": output.len(), "output_truncated": false,
            "worker": "bench", "attempt": 1, "fence": 1,
        });
        stmt.execute(rusqlite::params![id, job, start.timestamp_millis(), record.to_string()]).expect("insert run");
    }
    drop(stmt);
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);").expect("commit");
}

/// Three GETs of `url`: median time, response bytes, bytes read, RSS growth.
fn measure(label: &str, url: &str, pid: u32) {
    let mut times = Vec::new();
    let mut size = 0;
    let mut read = 0;
    let rss_before = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(rss_before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for _ in 0..3 {
        let r0 = read_bytes(pid);
        let t = Instant::now();
        let mut body = Vec::new();
        match ureq::get(url).set("Authorization", &format!("Bearer {TOKEN}")).call() {
            Ok(resp) => {
                resp.into_reader().read_to_end(&mut body).expect("read body");
            }
            Err(e) => println!("  {label}: request failed: {e}"),
        }
        times.push(t.elapsed());
        size = body.len();
        read = read_bytes(pid) - r0;
    }
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    times.sort();
    println!(
        "  {label:<30} {:>8.1} ms  response {:>9.1} KiB  read {:>9.1} MiB  RSS +{:.1} MiB (at {:.1} MiB)",
        times[1].as_secs_f64() * 1e3,
        size as f64 / 1024.0,
        read as f64 / 1048576.0,
        peak.load(Ordering::Relaxed).saturating_sub(rss_before) as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    );
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}
