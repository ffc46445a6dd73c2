//! Benchmarks (not timed tests): `cargo bench --bench engine [-- plan|dispatch]`.
//!
//! - plan: plan operations with 100,000 jobs (insert, replan churn, pop of one due second,
//!   next-fire computations).
//! - dispatch: a real release `distcron` node with 1,000 jobs firing every second running
//!   `true` for 30 s: runs/s, lateness (actual start − scheduled tick) p50/p99/max, RSS and CPU.
//! - spawn: the cost of one run's process start, 500 `true` runs each: plain (std's
//!   posix_spawn path), with the pre-exec hook (limits + death signal: std forks), and the
//!   extra exec a launcher subcommand (`distcron __exec ...`) would add per run.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod support;

use distcron::actors::plan::Plan;
use distcron::domain::{Dialect, JobName, Schedule};

use support::{free_port, proc_stat};

/// Clock ticks per second of /proc CPU times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;
/// The bench node's bearer token (auth is always on; a bench may put it in its config file).
const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if want("plan") {
        bench_plan();
    }
    if want("dispatch") {
        bench_dispatch();
    }
    if want("spawn") {
        bench_spawn();
    }
}

fn bench_spawn() {
    use distcron::actors::process::{run_command, ProcessSpec};
    use distcron::domain::JobLimits;
    const N: u32 = 500;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let spec = |hook: bool| ProcessSpec {
        shell: "/bin/true".into(),
        command: String::new(),
        env: Default::default(),
        working_dir: None,
        timeout: None,
        kill_grace: Duration::from_millis(100),
        max_output_bytes: 4096,
        job: "bench".into(),
        run_id: "bench".into(),
        scheduled_at: "2026-01-01T00:00:00Z".into(),
        attempt: 1,
        fence: 1,
        limits: hook.then(|| JobLimits {
            max_open_files: Some(1024),
            max_cpu_secs: Some(3600),
            ..JobLimits::default()
        }),
        run_as_user: None,
        run_as_group: None,
        allowed_users: Vec::new(),
        death_signal: hook,
        live: None,
    };
    // Some resident memory, as a running node has: fork copies its page tables.
    let ballast: Vec<u8> =
        vec![1; std::env::var("BALLAST_MB").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(64) << 20];
    for (name, hook) in [("plain (no pre-exec hook)", false), ("pre-exec hook: limits + death signal", true)] {
        let s = spec(hook);
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..N {
                let (_tx, rx) = tokio::sync::oneshot::channel();
                let out = run_command(&s, rx).await;
                assert_eq!(out.exit_code, Some(0), "{:?}", out.spawn_error);
            }
        });
        println!("spawn {name}: {:.2} ms/run", t.elapsed().as_secs_f64() * 1000.0 / f64::from(N));
    }
    let exe = env!("CARGO_BIN_EXE_distcron");
    let t = Instant::now();
    for _ in 0..N {
        let st = Command::new(exe).arg("--version").stdout(Stdio::null()).status().expect("run distcron");
        assert!(st.success());
    }
    println!(
        "spawn: the extra exec of a launcher (distcron --version): {:.2} ms/run",
        t.elapsed().as_secs_f64() * 1000.0 / f64::from(N)
    );
    drop(ballast);
}

fn bench_plan() {
    const N: usize = 100_000;
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid time");
    let exprs = ["0 * * * *", "*/5 * * * *", "30 2 * * 1-5", "0 0 1 * *", "15 */2 * * *", "0 9-17 * * MON-FRI"];
    let names: Vec<JobName> = (0..N).map(|i| JobName::parse(&format!("job-{i}")).expect("name")).collect();
    let schedules: Vec<Schedule> =
        (0..N).map(|i| Schedule::parse(exprs[i % exprs.len()], Dialect::Distcron).expect("expr")).collect();
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().expect("tz");

    let t = Instant::now();
    let mut plan = Plan::default();
    for (n, s) in names.iter().zip(&schedules) {
        plan.upsert(n.clone(), s.clone(), tz, start);
    }
    let insert = t.elapsed();

    let t = Instant::now();
    for (n, s) in names.iter().zip(&schedules).take(N / 2) {
        plan.upsert(n.clone(), s.clone(), tz, start + chrono::Duration::seconds(1));
    }
    let churn = t.elapsed();

    let t = Instant::now();
    let mut popped = 0;
    let mut now = start;
    for _ in 0..24 {
        now += chrono::Duration::hours(1);
        popped += plan.pop_due(now, chrono::Duration::hours(2)).len();
    }
    let pop = t.elapsed();

    let t = Instant::now();
    let mut x = start;
    for s in schedules.iter().take(N) {
        x = s.next_after(x, tz).unwrap_or(x);
    }
    let next = t.elapsed();
    std::hint::black_box(x);

    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e9 / n as f64;
    println!("plan with {N} jobs (Europe/Berlin, 6 expression shapes):");
    println!("  insert          {:>8.1} ms total  {:>7.0} ns/job", insert.as_secs_f64() * 1e3, per(insert, N));
    println!("  replan (churn)  {:>8.1} ms total  {:>7.0} ns/job", churn.as_secs_f64() * 1e3, per(churn, N / 2));
    println!(
        "  pop due, 24 h   {:>8.1} ms total  {:>7.0} ns/tick ({popped} ticks)",
        pop.as_secs_f64() * 1e3,
        per(pop, popped.max(1))
    );
    println!("  next_after      {:>8.1} ms total  {:>7.0} ns/call", next.as_secs_f64() * 1e3, per(next, N));
}

fn bench_dispatch() {
    const JOBS: usize = 1_000;
    const SECS: u64 = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nlog_level = \"warn\"\napi_token = \"{TOKEN}\"\n[executor]\npool_size = 256\n[log_batch]\nmax_records = 1000\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn distcron");
    let live = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        ureq::get(&format!("{base}/api/v1/health/live")).call().is_ok()
    });
    assert!(live, "distcron did not start");
    for i in 0..JOBS {
        let body = format!(r#"{{"name":"b{i}","command":"true","cron_expr":"* * * * * *","concurrency":"allow"}}"#);
        ureq::post(&format!("{base}/api/v1/jobs"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .set("Content-Type", "application/json")
            .send_string(&body)
            .expect("create job");
    }
    // let the plan settle, then measure a window
    std::thread::sleep(Duration::from_secs(2));
    let pid = child.id();
    let (cpu0, _) = proc_stat(pid);
    let from = Utc::now();
    let t0 = Instant::now();
    let mut rss_max = 0;
    while t0.elapsed() < Duration::from_secs(SECS) {
        std::thread::sleep(Duration::from_millis(500));
        rss_max = rss_max.max(proc_stat(pid).1);
    }
    let to = Utc::now();
    let (cpu1, _) = proc_stat(pid);
    let wall = t0.elapsed().as_secs_f64();
    for i in 0..JOBS {
        let _ = ureq::post(&format!("{base}/api/v1/jobs/b{i}/disable"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call();
    }
    std::thread::sleep(Duration::from_secs(3));
    // gather runs started in the window
    let mut lateness: Vec<f64> = Vec::new();
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    let mut cursor = String::new();
    loop {
        let mut url = format!(
            "{base}/api/v1/runs?limit=1000&from={}&to={}",
            from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        if !cursor.is_empty() {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let mut text = String::new();
        ureq::get(&url)
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .expect("runs")
            .into_reader()
            .read_to_string(&mut text)
            .expect("read");
        let page: serde_json::Value = serde_json::from_str(&text).expect("json");
        for r in page["runs"].as_array().cloned().unwrap_or_default() {
            *statuses.entry(r["status"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
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
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = child.wait();
    lateness.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lateness.get(((lateness.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN)
    };
    let ticks = USER_HZ;
    let page_kb = 4;
    println!("dispatch: {JOBS} jobs every second running `true`, {SECS} s window, pool 256:");
    println!("  runs started    {} ({:.0} runs/s)", lateness.len(), lateness.len() as f64 / wall);
    println!("  statuses        {statuses:?}");
    println!(
        "  lateness ms     p50 {:.1}  p99 {:.1}  max {:.1}",
        pct(0.50),
        pct(0.99),
        lateness.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  distcron CPU    {:.0}% of one core (children not included)",
        (cpu1 - cpu0) as f64 / ticks / wall * 100.0
    );
    println!("  distcron RSS    max {} MiB", rss_max * page_kb / 1024);
}
