//! Benchmarks (not timed tests): `cargo bench --bench durability [-- replay|sqlite]`.
//!
//! - replay: a 1 GiB log spool (4,096 final records of 256 KiB output) left by an outage is
//!   replayed by a LogBatchActor into the embedded SQLite run log: time, throughput and the
//!   process's peak RSS (VmHWM), which stays far below the file's size because the spool is
//!   read in chunks on its own thread.
//! - sqlite: what the chosen SQLite durability costs on this disk: job-store puts (one commit
//!   each, `synchronous=FULL`) through `EmbeddedJobStore`, run-log batches through
//!   `SqliteLogStore` (`NORMAL`), and the same raw commits with both settings side by side.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use distcron::actors::log_batch::{LogBatchActor, LogBatchSettings};
use distcron::actors::messages::{GetLogStatus, RecordRun};
use distcron::backend::embedded::{EmbeddedJobStore, SqliteLogStore};
use distcron::backend::{JobStore, LogStore, Precondition, RunFilter};
use distcron::domain::{Fence, Job, JobName, RunRecord, RunStatus, Trigger, WorkerId};

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if want("replay") {
        bench_replay();
    }
    if want("sqlite") {
        bench_sqlite();
    }
}

/// (VmRSS, VmHWM) of this process, MiB.
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn record(i: usize, output: &str) -> RunRecord {
    let mut r = RunRecord::not_run(
        JobName::parse("bench").expect("name"),
        "print a lot".into(),
        RunStatus::Succeeded,
        Trigger::Schedule,
        Utc::now(),
        WorkerId("bench".into()),
        Fence(i as i64),
        String::new(),
    );
    r.output = output.to_owned();
    r.output_bytes = output.len() as u64;
    r
}

fn bench_replay() {
    const RECORDS: usize = 4096;
    const OUTPUT: usize = 256 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool").join("runs.jsonl");
    std::fs::create_dir_all(spool.parent().expect("parent")).expect("spool dir");
    {
        let output = "x".repeat(OUTPUT);
        let mut out = BufWriter::new(std::fs::File::create(&spool).expect("spool"));
        for i in 0..RECORDS {
            serde_json::to_writer(&mut out, &record(i, &output)).expect("encode");
            out.write_all(b"\n").expect("write");
        }
        out.flush().expect("flush");
    }
    let bytes = std::fs::metadata(&spool).expect("meta").len();
    let (rss0, _) = rss_mib();
    let store = Arc::new(SqliteLogStore::open(&dir.path().join("runs.sqlite3")).expect("store"));
    let settings = LogBatchSettings {
        max_records: 500,
        flush: Duration::from_millis(200),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        retention_days: 0,
        max_buffered_bytes: 64 * 1024 * 1024,
        max_batch_bytes: distcron::config::LogBatchConfig::default().max_batch_bytes as usize,
    };
    let t = Instant::now();
    let elapsed = System::new().block_on(async {
        let actor = LogBatchActor::with_spool_file(store.clone(), &spool, u64::MAX, settings).expect("actor").start();
        loop {
            let status = actor.send(GetLogStatus).await.expect("status");
            if status.spool_records == 0 && status.written >= RECORDS as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = t.elapsed();
        // One more record goes straight to the store: the pipeline is back to normal.
        actor.do_send(RecordRun(record(RECORDS, "after")));
        elapsed
    });
    let stored = System::new().block_on(store.count(&RunFilter::default())).expect("count");
    let (rss, hwm) = rss_mib();
    println!(
        "replay: {:.1} MiB spool, {RECORDS} records of {} KiB output -> SQLite run log in {:.1} s ({:.0} MiB/s); stored {stored}; RSS before {rss0} MiB, after {rss} MiB, peak (VmHWM) {hwm} MiB",
        bytes as f64 / (1024.0 * 1024.0),
        OUTPUT / 1024,
        elapsed.as_secs_f64(),
        bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
    );
}

fn bench_sqlite() {
    const PUTS: usize = 500;
    const BATCHES: usize = 50;
    const BATCH: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    System::new().block_on(async {
        let jobs = EmbeddedJobStore::open(&dir.path().join("jobs.sqlite3")).expect("jobs");
        let t = Instant::now();
        for i in 0..PUTS {
            let job: Job = serde_json::from_value(serde_json::json!({
                "name": format!("job-{i}"), "command": "true", "cron_expr": "0 0 1 1 *",
            }))
            .expect("job");
            jobs.put(job, Precondition::Absent).await.expect("put");
        }
        let per_put = t.elapsed() / PUTS as u32;
        println!("sqlite: job store (FULL) put, one commit each: {per_put:?} per put over {PUTS}");

        let logs = SqliteLogStore::open(&dir.path().join("runs.sqlite3")).expect("logs");
        let t = Instant::now();
        for b in 0..BATCHES {
            let batch: Vec<RunRecord> = (0..BATCH).map(|i| record(b * BATCH + i, "some output\n")).collect();
            logs.append_batch(&batch).await.expect("append");
        }
        let per_batch = t.elapsed() / BATCHES as u32;
        println!("sqlite: run log (NORMAL) append_batch of {BATCH}: {per_batch:?} per batch over {BATCHES}");
    });
    for level in ["NORMAL", "FULL"] {
        let path = dir.path().join(format!("raw-{level}.sqlite3"));
        let conn = rusqlite::Connection::open(&path).expect("open");
        let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
        conn.pragma_update(None, "synchronous", level).expect("synchronous");
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", []).expect("table");
        let t = Instant::now();
        for i in 0..PUTS {
            conn.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![i as i64, "a job's JSON"])
                .expect("insert");
        }
        let single = t.elapsed() / PUTS as u32;
        let t = Instant::now();
        for b in 0..BATCHES {
            let tx = conn.unchecked_transaction().expect("tx");
            for i in 0..BATCH {
                let k = (PUTS + b * BATCH + i) as i64;
                tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![k, "a run record"])
                    .expect("insert");
            }
            tx.commit().expect("commit");
        }
        let batch = t.elapsed() / BATCHES as u32;
        println!(
            "sqlite: raw WAL synchronous={level}: {single:?} per single-row commit, {batch:?} per {BATCH}-row commit"
        );
    }
}
