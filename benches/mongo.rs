//! Benchmarks of the MongoDB log store (not timed tests): `cargo bench --bench mongo [-- write|memory]`.
//! Each starts its own FerretDB 1.24 (SQLite backend) on a free loopback port in a temp dir
//! (binary: `$DISTCRON_BENCH_FERRETDB_BIN`, `ferretdb` on PATH, or `$(go env GOPATH)/bin`).
//!
//! - write: records/s written by the LogBatchActor into FerretDB vs a plain `insert_many` loop of
//!   the same documents with the same driver, at `max_records` / chunk sizes 1, 100 and 1000
//!   (fresh indexed collections each); plus the realistic shape, each run's `running` record
//!   then its final record (an insert, then a replacement upsert).
//! - memory: peak RSS of a release `distcron` node (MongoDB log store) running a job that
//!   prints 10 MB, 1,000 times.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use distcron::actors::log_batch::{LogBatchActor, LogBatchSettings};
use distcron::actors::messages::{GetLogStatus, RecordRun};
use distcron::backend::conformance::sample_run;
use distcron::backend::mongo::logs::to_document;
use distcron::backend::mongo::{MongoLogStore, MongoSettings};
use distcron::domain::{JobName, RunRecord, RunStatus};
use mongodb::bson::Document;

/// The bench node's bearer token (auth is always on; a bench may put it in its config file).
const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";
const RECORDS: usize = 2_000;

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let ferret = Ferret::start();
    if want("write") {
        System::new().block_on(bench_write(&ferret));
    }
    if want("memory") {
        bench_memory(&ferret);
    }
}

struct Ferret {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Ferret {
    fn start() -> Ferret {
        let bin = std::env::var("DISTCRON_BENCH_FERRETDB_BIN").map(PathBuf::from).unwrap_or_else(|_| {
            let on_path = std::env::var_os("PATH")
                .and_then(|p| std::env::split_paths(&p).map(|d| d.join("ferretdb")).find(|p| p.is_file()));
            on_path.unwrap_or_else(|| {
                let out = Command::new("go")
                    .args(["env", "GOPATH"])
                    .output()
                    .expect("go env GOPATH (install Go or set DISTCRON_BENCH_FERRETDB_BIN)");
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/ferretdb")
            })
        });
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let child = Command::new(&bin)
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", dir.path().join("data").display()))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .arg(format!("--state-dir={}", dir.path().display()))
            .args(["--telemetry=disable", "--debug-addr=-", "--log-level=ERROR"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "ferretdb did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ferret { child, port, _dir: dir }
    }

    fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Ferret {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn records(job: &str, status: RunStatus, n: usize) -> Vec<RunRecord> {
    let job = JobName::parse(job).expect("name");
    (0..n).map(|_| sample_run(&job, status, "bench-worker", Utc::now(), Some(5))).collect()
}

async fn store(ferret: &Ferret, collection: &str) -> MongoLogStore {
    let settings =
        MongoSettings { uri: ferret.uri(), database: "bench".into(), collection: collection.into(), retention_days: 0 };
    MongoLogStore::start(&settings).await.expect("store")
}

/// Sends `records` to a LogBatchActor and waits until it wrote them all; seconds.
async fn through_actor(store: MongoLogStore, batch: usize, records: Vec<RunRecord>, dir: &std::path::Path) -> f64 {
    let settings = LogBatchSettings {
        max_records: batch,
        flush: Duration::from_millis(50),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        retention_days: 0,
        max_buffered_bytes: 64 * 1024 * 1024,
        max_batch_bytes: distcron::config::LogBatchConfig::default().max_batch_bytes as usize,
    };
    let spool = dir.join(format!("spool-{batch}-{}.jsonl", uuid::Uuid::now_v7().simple()));
    let actor = LogBatchActor::with_spool_file(Arc::new(store), &spool, u64::MAX, settings).expect("actor").start();
    let n = records.len() as u64;
    let t = Instant::now();
    for r in records {
        actor.do_send(RecordRun(r));
    }
    loop {
        let s = actor.send(GetLogStatus).await.expect("status");
        // A write slower than 30 s spools its batch and the actor goes on with smaller ones.
        if s.written >= n && s.spool_records == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t.elapsed().as_secs_f64()
}

async fn bench_write(ferret: &Ferret) {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("write: {RECORDS} final run records (small output) into FerretDB 1.24 / SQLite, records/s");
    println!("| batch | plain insert_many loop | LogBatchActor | ratio | running then final (runs/s) |");
    println!("| --- | --- | --- | --- | --- |");
    for batch in [1usize, 100, 1000] {
        // Plain loop: the same documents, same driver, same indexes, chunks of `batch`.
        let plain_store = store(ferret, &format!("plain_{batch}")).await;
        let coll = mongodb::Client::with_uri_str(ferret.uri())
            .await
            .expect("client")
            .database("bench")
            .collection::<Document>(&format!("plain_{batch}"));
        drop(plain_store);
        let docs: Vec<Document> =
            records("bench", RunStatus::Succeeded, RECORDS).iter().map(|r| to_document(r, None)).collect();
        let t = Instant::now();
        for chunk in docs.chunks(batch) {
            coll.insert_many(chunk).await.expect("insert_many");
        }
        let plain = RECORDS as f64 / t.elapsed().as_secs_f64();

        let actor_secs = through_actor(
            store(ferret, &format!("actor_{batch}")).await,
            batch,
            records("bench", RunStatus::Succeeded, RECORDS),
            dir.path(),
        )
        .await;
        let actor = RECORDS as f64 / actor_secs;

        // Realistic: every run's `running` record, then its final record.
        let running = records("bench", RunStatus::Running, RECORDS);
        let finals: Vec<RunRecord> = running
            .iter()
            .map(|r| {
                let mut f = r.clone();
                f.status = RunStatus::Succeeded;
                f.ended_at = Some(Utc::now());
                f
            })
            .collect();
        let s = store(ferret, &format!("pairs_{batch}")).await;
        let first = through_actor(s.clone(), batch, running, dir.path()).await;
        let second = through_actor(s, batch, finals, dir.path()).await;
        let pairs = RECORDS as f64 / (first + second);
        println!("| {batch} | {plain:.0} | {actor:.0} | {:.2} | {pairs:.0} |", actor / plain);
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn bench_memory(ferret: &Ferret) {
    const RUNS: usize = 1_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nlog_level = \"warn\"\napi_token = \"{TOKEN}\"\n[executor]\npool_size = 16\n[mongo]\nuri = \"{}\"\ndatabase = \"membench\"\n",
            dir.path().join("data").display(),
            ferret.uri()
        ),
    )
    .expect("config");
    let bin = env!("CARGO_BIN_EXE_distcron");
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("distcron");
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while ureq::get(&format!("{base}/api/v1/health/live")).call().is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "distcron did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let idle = rss_kib(pid, "VmRSS:");
    let job = serde_json::json!({"name": "big", "cron_expr": "0 0 1 1 *", "enabled": false, "concurrency": "allow",
        "command": "head -c 10485760 /dev/zero | tr '\\0' x"});
    ureq::post(&format!("{base}/api/v1/jobs"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_json(job)
        .expect("create job");
    let t = Instant::now();
    for _ in 0..RUNS {
        ureq::post(&format!("{base}/api/v1/jobs/big/run"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .expect("run now");
    }
    let mut peak = 0;
    let stored = loop {
        peak = peak.max(rss_kib(pid, "VmRSS:"));
        let s: serde_json::Value = ureq::get(&format!("{base}/api/v1/jobs/big/stats?window=1h"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .expect("stats")
            .into_json()
            .expect("json");
        let done = s["succeeded"].as_u64().unwrap_or(0);
        if done >= RUNS as u64 {
            break done;
        }
        assert!(t.elapsed() < Duration::from_secs(900), "runs did not finish: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = t.elapsed();
    let hwm = rss_kib(pid, "VmHWM:");
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = child.wait();
    println!("memory: {RUNS} runs printing 10 MiB each (max_output_bytes 256 KiB, pool 16), MongoDB log store");
    println!("| idle RSS | peak RSS (sampled) | VmHWM | runs stored | wall time |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {} MiB | {} MiB | {} MiB | {stored} | {:.1} s |",
        idle / 1024,
        peak / 1024,
        hwm / 1024,
        took.as_secs_f64()
    );
}
