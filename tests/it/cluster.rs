//! Cluster mode on a real etcd: masters and workers as real processes, counting what every
//! command appended (`$DISTCRON_JOB $DISTCRON_SCHEDULED_AT $NODE_TAG`) to a shared file.
//!
//! Each test starts its own etcd (one member, or three) and its own nodes in temp dirs. Nodes
//! use short cluster timings (session TTL 3 s, failover grace 1 s, heartbeat 1 s) so failures
//! show within seconds; `NODE_TAG` in a node's environment (inherited by its jobs) tells which
//! worker ran a line. Run logs stay embedded per node (see [`log_store_toml`]), so a run's record
//! is read from the node that wrote it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::etcd::EtcdServer;
use crate::support::{process_alive, read_pid, wait_until, Node, NodeOptions};

/// The run log of cluster nodes: each node's embedded SQLite store. FerretDB 1.x replaces a
/// document in 20–40 ms (README "Benchmarks"), far too slow for 150 runs/s, so these tests read
/// run records from the node that ran them; the shared MongoDB path is tested in
/// `backends_mongo` and `master_and_worker_share_runs_through_mongodb` below.
fn log_store_toml() -> String {
    "allow_local_run_log = true\n".to_owned()
}

/// A node's config for `role` over `etcd`; `etcd_extra` goes into `[etcd]` (e.g. a longer
/// session TTL).
fn config(etcd: &EtcdServer, role: &str, etcd_extra: &str) -> String {
    config_with(etcd, role, "", etcd_extra)
}

/// [`config`] with `scheduler_extra` in `[scheduler]`.
fn config_with(etcd: &EtcdServer, role: &str, scheduler_extra: &str, etcd_extra: &str) -> String {
    let ttl = if etcd_extra.contains("session_ttl_secs") { String::new() } else { "session_ttl_secs = 3\n".to_owned() };
    format!(
        "role = \"{role}\"\n{}\n[scheduler]\nheartbeat_secs = 1\nfailover_grace_ms = 1000\nshutdown_grace_secs = 2\n{scheduler_extra}\
         [executor]\nshell = \"/bin/sh\"\nkill_grace_ms = 500\n[etcd]\nendpoints = {}\n{ttl}{etcd_extra}",
        log_store_toml(),
        etcd.endpoints_toml()
    )
}

fn tagged(tag: &str) -> NodeOptions {
    NodeOptions { env: vec![("NODE_TAG".into(), tag.into())], ..NodeOptions::default() }
}

/// The line every test job appends.
fn append_line(file: &Path) -> String {
    format!("echo \"$DISTCRON_JOB $DISTCRON_SCHEDULED_AT $NODE_TAG\" >> {}", file.display())
}

/// One appended line: job, tick, worker tag.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    job: String,
    tick: DateTime<Utc>,
    tag: String,
}

fn lines(file: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let job = parts.next()?.to_owned();
            let tick = DateTime::parse_from_rfc3339(parts.next()?).ok()?.with_timezone(&Utc);
            Some(Line { job, tick, tag: parts.next().unwrap_or("").to_owned() })
        })
        .collect()
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("time in range")
}

/// Waits until `node` (an API node) lists `n` live workers.
fn wait_workers(node: &Node, n: usize) {
    let ok = wait_until(Duration::from_secs(20), || {
        let r = node.get("/api/v1/workers");
        (r.body["workers"].as_array().map_or(0, Vec::len) == n).then_some(())
    });
    assert!(ok.is_some(), "{n} workers never became live: {}", node.get("/api/v1/workers").text);
}

/// Sleeps until `t` (a fixed window of the test, not a wait for a condition).
fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        std::thread::sleep(d);
    }
}

/// Per (job, tick) in `[from, to)` every `step_secs`: how many lines each has.
fn tally(
    lines: &[Line],
    jobs: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step_secs: i64,
) -> (Vec<String>, Vec<String>) {
    let mut count: HashMap<(&str, DateTime<Utc>), usize> = HashMap::new();
    for l in lines {
        *count.entry((l.job.as_str(), l.tick)).or_default() += 1;
    }
    let (mut duplicates, mut missed) = (Vec::new(), Vec::new());
    for job in jobs {
        let mut t = from;
        while t < to {
            match count.get(&(job.as_str(), t)).copied().unwrap_or(0) {
                0 => missed.push(format!("{job}@{t}")),
                1 => {}
                n => duplicates.push(format!("{job}@{t} x{n}")),
            }
            t += chrono::Duration::seconds(step_secs);
        }
    }
    (duplicates, missed)
}

/// Kills the processes whose pids the test's jobs wrote into `dir` (`pid-*` files).
fn kill_job_processes(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("pid-") {
            if let Some(pid) = read_pid(&entry.path()) {
                let _ = std::process::Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

/// Kills the test's job processes when the test ends, however it ends.
struct JobProcesses(PathBuf);

impl Drop for JobProcesses {
    fn drop(&mut self) {
        kill_job_processes(&self.0);
    }
}

fn runs_with(node: &Node, job: &str, status: &str) -> Vec<Value> {
    node.runs(job).into_iter().filter(|r| r["status"] == status).collect()
}

#[test]
fn three_workers_run_fifty_every_second_jobs_exactly_once_and_evenly() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let file = shared.path().join("ticks.log");
    let quiet = |tag: &str| NodeOptions { log_level: "info".into(), ..tagged(tag) };
    let workers: Vec<Node> =
        ["w0", "w1", "w2"].iter().map(|t| Node::start_with(&config(&etcd, "worker", ""), quiet(t))).collect();
    let master = Node::start_with(&config(&etcd, "master", ""), quiet("master"));
    wait_workers(&master, 3);
    let jobs: Vec<String> = (0..50).map(|i| format!("job-{i:02}")).collect();
    for job in &jobs {
        master.create_job(
            json!({ "name": job, "cron_expr": "* * * * * *", "concurrency": "allow", "command": append_line(&file) }),
        );
    }
    let from = whole_second(Utc::now()) + chrono::Duration::seconds(3);
    let to = from + chrono::Duration::seconds(60);
    sleep_until(to);
    // The last ticks of the window may still be starting.
    wait_until(Duration::from_secs(10), || {
        let seen: HashSet<String> =
            lines(&file).into_iter().filter(|l| l.tick >= to - chrono::Duration::seconds(1)).map(|l| l.job).collect();
        (seen.len() == jobs.len()).then_some(())
    });
    let all: Vec<Line> = lines(&file).into_iter().filter(|l| l.tick >= from && l.tick < to).collect();
    let (duplicates, missed) = tally(&all, &jobs, from, to, 1);
    assert!(duplicates.is_empty(), "{} ticks ran more than once: {duplicates:?}", duplicates.len());
    assert!(missed.is_empty(), "{} ticks never ran: {missed:?}", missed.len());
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &all {
        *per_worker.entry(l.tag.as_str()).or_default() += 1;
    }
    assert_eq!(all.len(), 3000);
    for tag in ["w0", "w1", "w2"] {
        let share = per_worker.get(tag).copied().unwrap_or(0) as f64 / all.len() as f64;
        assert!((0.10..=0.60).contains(&share), "worker {tag} ran {:.0} % of the runs: {per_worker:?}", share * 100.0);
    }
    drop(workers);
}

#[test]
fn a_killed_worker_s_runs_become_lost_once_and_its_ticks_run_elsewhere() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let _cleanup = JobProcesses(shared.path().to_owned());
    let file = shared.path().join("ticks.log");
    let mut nodes: Vec<Node> =
        ["n0", "n1", "n2"].iter().map(|t| Node::start_with(&config(&etcd, "all", ""), tagged(t))).collect();
    wait_workers(&nodes[0], 3);
    let command =
        format!("{}; echo $$ > {}/pid-$DISTCRON_RUN_ID; exec sleep 30", append_line(&file), shared.path().display());
    nodes[0].create_job(
        json!({ "name": "sleeper", "cron_expr": "*/2 * * * * *", "concurrency": "allow", "command": command }),
    );
    // The owner: two ticks in a row on one worker (the first tick may go elsewhere while the
    // workers' views of each other settle), so there is more than one run to lose.
    let owner_tag = wait_until(Duration::from_secs(20), || {
        let l = lines(&file);
        let n = l.len();
        (n >= 2 && l[n - 1].tag == l[n - 2].tag).then(|| l[n - 1].tag.clone())
    })
    .expect("the job ran twice in a row on one worker");
    let owner: usize = owner_tag.trim_start_matches('n').parse().expect("a node tag");
    let running: Vec<String> = wait_until(Duration::from_secs(5), || {
        let ids: Vec<String> = runs_with(&nodes[owner], "sleeper", "running")
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        (ids.len() >= 2).then_some(ids)
    })
    .unwrap_or_else(|| {
        panic!(
            "the owner {owner_tag} records its running runs: lines {:?}, runs {:?}",
            lines(&file),
            nodes[owner].runs("sleeper")
        )
    });
    let killed_at = Utc::now();
    let started = Instant::now();
    nodes[owner].signal_and_wait("KILL", Duration::from_secs(5)).expect("worker killed");

    // Lost within TTL (3 s) + grace, recorded once among the survivors.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let lost = wait_until(Duration::from_secs(15), || {
        let found: Vec<Value> = survivors.iter().flat_map(|i| runs_with(&nodes[*i], "sleeper", "lost")).collect();
        running.iter().all(|id| found.iter().any(|r| r["id"] == id.as_str())).then_some(found)
    })
    .unwrap_or_else(|| panic!("runs {running:?} were not recorded lost"));
    assert!(started.elapsed() < Duration::from_secs(10), "lost after {:?}", started.elapsed());
    for id in &running {
        let records: Vec<&Value> = lost.iter().filter(|r| r["id"] == id.as_str()).collect();
        assert_eq!(records.len(), 1, "run {id} recorded lost exactly once: {records:?}");
        assert_eq!(records[0]["worker"].as_str().map(|w| w.is_empty()), Some(false));
        assert!(records[0]["err"].as_str().unwrap_or("").contains("lost"), "{:?}", records[0]);
    }

    // Every tick after the kill runs once, on a survivor.
    let from = whole_second(killed_at) + chrono::Duration::seconds(2 - whole_second(killed_at).timestamp() % 2);
    let to = from + chrono::Duration::seconds(10);
    sleep_until(to + chrono::Duration::seconds(2));
    let after: Vec<Line> = lines(&file).into_iter().filter(|l| l.tick >= from && l.tick < to).collect();
    let (duplicates, missed) = tally(&after, &["sleeper".to_owned()], from, to, 2);
    assert!(duplicates.is_empty() && missed.is_empty(), "duplicates {duplicates:?}, missed {missed:?}");
    assert!(after.iter().all(|l| l.tag != owner_tag), "a tick ran on the dead worker: {after:?}");
    nodes.remove(owner);
}

#[test]
fn workers_with_clocks_three_seconds_apart_never_run_a_tick_twice() {
    let lib = faketime_lib();
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let file = shared.path().join("ticks.log");
    let skewed = |tag: &str, offset: &str| {
        let mut options = NodeOptions { log_level: "info".into(), ..tagged(tag) };
        options.env.push(("DISTCRON_NODE_ID".into(), tag.into()));
        if !offset.is_empty() {
            options.env.push(("LD_PRELOAD".into(), lib.display().to_string()));
            options.env.push(("FAKETIME".into(), offset.into()));
            options.env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
        }
        Node::start_with(&config(&etcd, "worker", ""), options)
    };
    let workers = [skewed("ahead", "+3s"), skewed("behind", "-3s"), skewed("exact", "")];
    let master = Node::start_with(
        &config(&etcd, "master", ""),
        NodeOptions { log_level: "info".into(), ..NodeOptions::default() },
    );
    wait_workers(&master, 3);
    // The skew is real: each worker publishes its heartbeat time from its own clock.
    let listed = master.get("/api/v1/workers").body;
    let heartbeat = |id: &str| -> DateTime<Utc> {
        let w = listed["workers"].as_array().and_then(|ws| ws.iter().find(|w| w["id"] == id)).expect("listed");
        DateTime::parse_from_rfc3339(w["last_heartbeat"].as_str().expect("time")).expect("RFC 3339").with_timezone(&Utc)
    };
    let now = Utc::now();
    assert!(heartbeat("ahead") > now + chrono::Duration::milliseconds(1500), "{listed}");
    assert!(heartbeat("behind") < now - chrono::Duration::seconds(2), "{listed}");
    let jobs: Vec<String> = (0..20).map(|i| format!("skew-{i:02}")).collect();
    for job in &jobs {
        master.create_job(
            json!({ "name": job, "cron_expr": "* * * * * *", "concurrency": "allow", "command": append_line(&file) }),
        );
    }
    let from = whole_second(Utc::now()) + chrono::Duration::seconds(6);
    let to = from + chrono::Duration::seconds(20);
    sleep_until(to + chrono::Duration::seconds(5));
    let all: Vec<Line> = lines(&file).into_iter().filter(|l| l.tick >= from && l.tick < to).collect();
    let (duplicates, missed) = tally(&all, &jobs, from, to, 1);
    assert!(duplicates.is_empty(), "{} ticks ran more than once under skew: {duplicates:?}", duplicates.len());
    assert!(missed.is_empty(), "{} ticks never ran under skew: {missed:?}", missed.len());
    let tags: HashSet<&str> = all.iter().map(|l| l.tag.as_str()).collect();
    assert!(tags.contains("ahead"), "the skewed workers took part: {tags:?}");
    drop(workers);
}

/// libfaketime from the Debian `faketime` package (or `DISTCRON_TEST_FAKETIME_LIB`).
fn faketime_lib() -> PathBuf {
    if let Ok(p) = std::env::var("DISTCRON_TEST_FAKETIME_LIB") {
        return PathBuf::from(p);
    }
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
        "/usr/local/lib/faketime",
    ];
    candidates
        .iter()
        .map(|d| Path::new(d).join("libfaketimeMT.so.1"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libfaketimeMT.so.1 not found (or set DISTCRON_TEST_FAKETIME_LIB): install faketime (scripts/setup.sh --test does)"))
}

#[test]
fn scheduling_continues_while_a_member_of_a_three_member_etcd_is_down_and_after_it_returns() {
    let mut etcd = EtcdServer::cluster(3);
    let shared = tempfile::tempdir().expect("tempdir");
    let file = shared.path().join("ticks.log");
    let nodes: Vec<Node> = ["a", "b"].iter().map(|t| Node::start_with(&config(&etcd, "all", ""), tagged(t))).collect();
    wait_workers(&nodes[0], 2);
    let jobs: Vec<String> = (0..10).map(|i| format!("quorum-{i}")).collect();
    for job in &jobs {
        nodes[0].create_job(
            json!({ "name": job, "cron_expr": "* * * * * *", "concurrency": "allow", "command": append_line(&file) }),
        );
    }
    let from = whole_second(Utc::now()) + chrono::Duration::seconds(3);
    sleep_until(from + chrono::Duration::seconds(3));
    etcd.kill_member(0);
    let down_at = whole_second(Utc::now());
    std::thread::sleep(Duration::from_secs(6));
    etcd.restart_member(0);
    let up_at = whole_second(Utc::now());
    let to = up_at + chrono::Duration::seconds(6);
    sleep_until(to + chrono::Duration::seconds(3));
    let all: Vec<Line> = lines(&file).into_iter().filter(|l| l.tick >= from && l.tick < to).collect();
    let (duplicates, missed) = tally(&all, &jobs, from, to, 1);
    assert!(duplicates.is_empty(), "ticks ran twice: {duplicates:?}");
    assert!(missed.is_empty(), "ticks never ran (member down {down_at}..{up_at}): {missed:?}");
}

#[test]
fn a_worker_whose_watch_broke_during_a_compaction_resyncs_and_applies_every_change() {
    let mut etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let file = shared.path().join("ticks.log");
    let mut node = Node::start(&config(&etcd, "all", "session_ttl_secs = 30\n"));
    let command = |word: &str| format!("echo \"$DISTCRON_JOB $DISTCRON_SCHEDULED_AT {word}\" >> {}", file.display());
    for (name, word) in [("stays", "v1"), ("changes", "v1"), ("goes", "v1")] {
        node.create_job(
            json!({ "name": name, "cron_expr": "* * * * * *", "concurrency": "allow", "command": command(word) }),
        );
    }
    wait_until(Duration::from_secs(10), || {
        let jobs: HashSet<String> = lines(&file).into_iter().map(|l| l.job).collect();
        (jobs.len() == 3).then_some(())
    })
    .expect("every job ran");

    // Freeze the worker, restart etcd under it (its watch connection dies), change the jobs
    // and compact the history it would resume from; then let it go on.
    let _ = std::process::Command::new("kill").arg("-STOP").arg(node.pid().to_string()).status();
    etcd.kill_member(0);
    etcd.restart_member(0);
    let mut client = etcd.client();
    let seed_job = |name: &str, word: &str| {
        json!({ "name": name, "command": command(word), "cron_expr": "* * * * * * *" }).to_string()
    };
    client.put("/cron/jobs/changes", &seed_job("changes", "v2"));
    client.put("/cron/jobs/arrives", &seed_job("arrives", "v1"));
    client.delete("/cron/jobs/goes");
    client.compact_now();
    let resumed = Utc::now();
    let _ = std::process::Command::new("kill").arg("-CONT").arg(node.pid().to_string()).status();

    let check = || {
        let recent: Vec<Line> =
            lines(&file).into_iter().filter(|l| l.tick > resumed + chrono::Duration::seconds(2)).collect();
        let has = |job: &str, word: &str| recent.iter().any(|l| l.job == job && l.tag == word);
        (has("arrives", "v1") && has("changes", "v2") && has("stays", "v1")).then_some(recent)
    };
    let recent = wait_until(Duration::from_secs(20), check).expect("the created and changed jobs run after the resync");
    assert!(!recent.iter().any(|l| l.job == "goes"), "a job deleted while the watch was down still runs");
    assert!(
        !recent.iter().any(|l| l.job == "changes" && l.tag == "v1"),
        "a job changed while the watch was down runs its old command"
    );
    assert!(node.log().contains("resync"), "the worker says it resynced");
    node.signal_and_wait("TERM", Duration::from_secs(10));
}

#[test]
fn a_master_kills_a_run_on_another_worker_and_run_now_runs_once() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let _cleanup = JobProcesses(shared.path().to_owned());
    let master = Node::start(&config(&etcd, "master", ""));
    let workers: Vec<Node> =
        ["a", "b"].iter().map(|t| Node::start_with(&config(&etcd, "all", ""), tagged(t))).collect();
    wait_workers(&master, 2);
    let pid_dir = shared.path().join("pids");
    std::fs::create_dir_all(&pid_dir).expect("pid dir");
    let command = format!("echo $$ > {}/pid-$DISTCRON_RUN_ID; exec sleep 60", pid_dir.display());
    master
        .create_job(json!({ "name": "victim", "cron_expr": "0 0 1 1 *", "concurrency": "allow", "command": command }));
    let pids = || -> Vec<u32> {
        std::fs::read_dir(&pid_dir).into_iter().flatten().flatten().filter_map(|e| read_pid(&e.path())).collect()
    };
    // Settle: both workers have the job.
    std::thread::sleep(Duration::from_secs(1));

    // Run now through the master: one run, on one worker.
    assert_eq!(master.post_empty("/api/v1/jobs/victim/run").status, 202);
    let pid = wait_until(Duration::from_secs(10), || pids().first().copied()).expect("the run started");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pids().len(), 1, "run now ran once");
    let runner = wait_until(Duration::from_secs(5), || {
        workers.iter().position(|w| !runs_with(w, "victim", "running").is_empty())
    })
    .expect("a worker records the run");

    // Kill through the master's API: the run on the other process dies within a second or so.
    let asked = Instant::now();
    assert_eq!(master.post_empty("/api/v1/jobs/victim/kill").status, 202);
    assert!(
        wait_until(Duration::from_secs(3), || (!process_alive(pid)).then_some(())).is_some(),
        "the run was not killed"
    );
    assert!(asked.elapsed() < Duration::from_secs(2), "kill took {:?}", asked.elapsed());
    let killed =
        wait_until(Duration::from_secs(5), || runs_with(&workers[runner], "victim", "killed").into_iter().next())
            .expect("the run is recorded killed");
    assert_eq!(killed["err"], "killed by request");

    // The seed's master kills the same way: an empty value at /cron/killer/<name> on a 1 s lease.
    assert_eq!(master.post_empty("/api/v1/jobs/victim/run").status, 202);
    let second = wait_until(Duration::from_secs(10), || pids().into_iter().find(|p| *p != pid && process_alive(*p)))
        .expect("second run");
    let mut client = etcd.client();
    client.run(|mut c| async move {
        let lease = c.lease_grant(1, None).await.expect("lease");
        c.put("/cron/killer/victim", "", Some(etcd_client::PutOptions::new().with_lease(lease.id())))
            .await
            .expect("put");
    });
    assert!(
        wait_until(Duration::from_secs(3), || (!process_alive(second)).then_some(())).is_some(),
        "the seed's kill key did not kill"
    );
}

#[test]
fn forbid_skips_a_tick_on_another_worker_while_the_run_is_alive_there() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let _cleanup = JobProcesses(shared.path().to_owned());
    let file = shared.path().join("ticks.log");
    // A long session: the frozen owner keeps its marks alive.
    let nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|t| Node::start_with(&config(&etcd, "all", "session_ttl_secs = 30\n"), tagged(t)))
        .collect();
    wait_workers(&nodes[0], 2);
    let command =
        format!("{}; echo $$ > {}/pid-$DISTCRON_RUN_ID; exec sleep 8", append_line(&file), shared.path().display());
    nodes[0].create_job(json!({ "name": "long", "cron_expr": "*/2 * * * * *", "command": command }));
    let first = wait_until(Duration::from_secs(10), || lines(&file).into_iter().next()).expect("first run");
    let owner = if first.tag == "a" { 0 } else { 1 };
    let other = 1 - owner;
    // Freeze the owner (its run goes on): the next ticks fall to the other worker, which must
    // see the run alive on the owner and skip.
    let _ = std::process::Command::new("kill").arg("-STOP").arg(nodes[owner].pid().to_string()).status();
    let skipped = wait_until(Duration::from_secs(8), || runs_with(&nodes[other], "long", "skipped").into_iter().next());
    let _ = std::process::Command::new("kill").arg("-CONT").arg(nodes[owner].pid().to_string()).status();
    let skipped = skipped.expect("the other worker skipped a tick");
    assert!(skipped["err"].as_str().unwrap_or("").contains("still running on worker"), "{skipped}");
    let runs = lines(&file);
    let starts: Vec<DateTime<Utc>> = runs.iter().map(|l| l.tick).collect();
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= chrono::Duration::seconds(8), "a run started while another was alive: {runs:?}");
    }
}

#[test]
fn a_worker_that_loses_its_session_kills_its_runs_when_told_to_and_claims_again_with_a_new_one() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let _cleanup = JobProcesses(shared.path().to_owned());
    let file = shared.path().join("ticks.log");
    let options = NodeOptions { env: vec![("DISTCRON_NODE_ID".into(), "keeper".into())], ..tagged("k") };
    let node = Node::start_with(
        &config_with(&etcd, "all", "on_session_loss = \"kill\"\n", "session_ttl_secs = 30\n"),
        options,
    );
    let command =
        format!("{}; echo $$ > {}/pid-$DISTCRON_RUN_ID; exec sleep 60", append_line(&file), shared.path().display());
    node.create_job(json!({ "name": "held", "cron_expr": "*/2 * * * * *", "command": command }));
    let pid_file = || {
        std::fs::read_dir(shared.path())
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("pid-"))
    };
    let pid =
        wait_until(Duration::from_secs(10), || pid_file().and_then(|e| read_pid(&e.path()))).expect("the run started");

    // The session's lease disappears (expired while the worker was cut off, or revoked).
    let mut client = etcd.client();
    client.run(|mut c| async move {
        let resp = c.get("/cron/workers/keeper", None).await.expect("get");
        c.lease_revoke(resp.kvs()[0].lease()).await.expect("revoke");
    });
    let revoked = Utc::now();
    assert!(
        wait_until(Duration::from_secs(5), || (!process_alive(pid)).then_some(())).is_some(),
        "the run survived the lost session"
    );
    let killed = wait_until(Duration::from_secs(10), || runs_with(&node, "held", "killed").into_iter().next())
        .unwrap_or_else(|| panic!("recorded killed: {:?}", node.runs("held")));
    assert!(killed["err"].as_str().unwrap_or("").contains("lost its etcd session"), "{killed}");
    // A new session: registered again, and the job's next ticks run.
    assert!(
        wait_until(Duration::from_secs(5), || client.get("/cron/workers/keeper")).is_some(),
        "the worker registered again"
    );
    let again = wait_until(Duration::from_secs(10), || {
        lines(&file).into_iter().find(|l| l.tick > revoked + chrono::Duration::seconds(1))
    });
    assert!(again.is_some(), "the worker claims again on its new session:\n{}", node.log());
    assert_eq!(node.log().matches("etcd session lost").count(), 1, "one warning for the lost session");
}

#[test]
fn an_etcd_outage_is_one_warning_claims_nothing_and_records_the_missed_ticks_when_etcd_returns() {
    let mut etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let file = shared.path().join("ticks.log");
    // Ticks more than 2 s late are not run but recorded missed.
    let node = Node::start(&config_with(&etcd, "all", "misfire_grace_ms = 2000\n", "session_ttl_secs = 30\n"));
    node.create_job(
        json!({ "name": "steady", "cron_expr": "* * * * * *", "concurrency": "allow", "command": append_line(&file) }),
    );
    wait_until(Duration::from_secs(10), || (!lines(&file).is_empty()).then_some(())).expect("the job runs");
    etcd.kill_member(0);
    let down = Utc::now();
    std::thread::sleep(Duration::from_secs(4));
    let ran_during: Vec<Line> =
        lines(&file).into_iter().filter(|l| l.tick > down + chrono::Duration::seconds(1)).collect();
    assert!(ran_during.is_empty(), "ticks ran without etcd: {ran_during:?}");
    etcd.restart_member(0);
    let up = Utc::now();
    let resumed = wait_until(Duration::from_secs(15), || {
        lines(&file).into_iter().find(|l| l.tick > up + chrono::Duration::seconds(1))
    });
    assert!(resumed.is_some(), "scheduling did not resume after the outage:\n{}", node.log());
    let missed = wait_until(Duration::from_secs(10), || {
        let m = runs_with(&node, "steady", "missed");
        (!m.is_empty()).then_some(m)
    })
    .expect("the ticks of the outage are recorded missed");
    assert!(missed[0]["err"].as_str().unwrap_or("").contains("missed"), "{:?}", missed[0]);
    let warnings = node.log().matches("Cannot claim ticks").count();
    assert_eq!(warnings, 1, "one warning per outage, not one per tick");
    // Nothing ran twice and every tick is a run or inside a missed range.
    let all = lines(&file);
    let ticks: HashSet<DateTime<Utc>> = all.iter().map(|l| l.tick).collect();
    assert_eq!(ticks.len(), all.len(), "a tick ran twice");
}

#[test]
fn roles_and_the_seed_s_keys_over_etcd() {
    let etcd = EtcdServer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let file = shared.path().join("ticks.log");
    let worker = Node::start_with(&config(&etcd, "worker", ""), tagged("w"));
    let master = Node::start(&config(&etcd, "master", ""));
    wait_workers(&master, 1);

    // A worker's listener serves health only; a master serves the API but runs nothing.
    assert_eq!(worker.get("/api/v1/health/live").status, 200);
    assert_eq!(worker.get("/api/v1/health").body["role"], "worker");
    assert_eq!(worker.get("/api/v1/jobs").status, 404);
    let health = master.get("/api/v1/health");
    assert_eq!(
        (health.body["role"].as_str(), health.body["scheduler"].is_null()),
        (Some("master"), true),
        "{}",
        health.text
    );
    assert_eq!(health.body["backends"]["jobs"]["kind"], "etcd");

    // Golden: the seed's master writes /cron/jobs/<name> with its exact JSON; a 7-field
    // expression (seconds first, year last) means every second in both readings.
    let mut client = etcd.client();
    let job = json!({ "name": "from-seed", "command": append_line(&file), "cron_expr": "* * * * * * *" });
    client.put("/cron/jobs/from-seed", &job.to_string());
    let ran = wait_until(Duration::from_secs(10), || lines(&file).into_iter().find(|l| l.job == "from-seed"));
    assert_eq!(ran.map(|l| l.tag), Some("w".to_owned()), "the worker picked up the seed's job");
    let listed = master.get("/job/list");
    assert!(
        listed.body["data"].as_array().is_some_and(|a| a.iter().any(|j| j["name"] == "from-seed")),
        "{}",
        listed.text
    );

    // The seed's workers register with an empty value at /cron/workers/<ip>: /worker/list shows
    // every worker's address.
    client.put("/cron/workers/10.9.8.7", "");
    let workers = master.get("/worker/list");
    let addresses = workers.body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(addresses.len(), 2, "{}", workers.text);
    assert!(addresses.iter().any(|a| a == "10.9.8.7"));
    assert!(client
        .list("/cron/workers/")
        .iter()
        .any(|(k, v)| k != "/cron/workers/10.9.8.7" && v.contains("\"capacity\"")));
    drop(worker);
}

/// Starts `distcron --role <role> <args>` without the given variables and returns its one-line
/// refusal, asserting it failed.
fn refusal(role: &str, args: &[&str], env_remove: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_distcron"));
    cmd.args(["--role", role]).args(args).arg("--data-dir").arg(dir.path().join("d")).current_dir(dir.path());
    for var in env_remove {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run distcron");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "role {role} {args:?} started");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn master_and_worker_roles_refuse_the_embedded_stores() {
    for role in ["master", "worker"] {
        let err = refusal(role, &[], &["DISTCRON_ETCD_ENDPOINTS"]);
        assert!(err.contains(&format!("role {role} needs etcd")) && err.contains("etcd.endpoints"), "{err}");
    }
}

#[test]
fn master_and_worker_roles_refuse_to_run_without_a_shared_run_log() {
    for role in ["master", "worker"] {
        let err = refusal(
            role,
            &["--etcd-endpoints", "http://127.0.0.1:1"],
            &["DISTCRON_MONGO_URI", "DISTCRON_ALLOW_LOCAL_RUN_LOG"],
        );
        assert!(err.contains(&format!("role {role} needs MongoDB")) && err.contains("mongo.uri"), "{err}");
    }
}

#[test]
fn master_and_worker_share_runs_through_mongodb() {
    let etcd = EtcdServer::start();
    let mongo = crate::support::ferretdb::FerretDb::start();
    let shared = format!("[mongo]\nuri = \"{}\"\n", mongo.uri());
    let worker = Node::start_with(&format!("{}\n{shared}", config(&etcd, "worker", "")), tagged("w"));
    let master = Node::start(&format!("{}\n{shared}", config(&etcd, "master", "")));
    wait_workers(&master, 1);
    let worker_id = worker.get("/api/v1/health").body["node_id"].as_str().expect("worker id").to_owned();
    master.create_job(json!({"name": "shared", "command": "echo from-the-worker", "cron_expr": "0 0 1 1 *"}));
    assert_eq!(master.post_empty("/api/v1/jobs/shared/run").status, 202);
    // The worker ran it; the master, which runs nothing, serves its record from MongoDB.
    let run = master.wait_run("shared", Duration::from_secs(20), |r| r["status"] == "succeeded").expect("run recorded");
    assert_eq!(run["worker"], worker_id.as_str());
    let full = master.get(&format!("/api/v1/runs/{}", run["id"].as_str().expect("id"))).body;
    assert_eq!(full["output"], "from-the-worker\n");
    let log = master.get("/job/log?name=shared").body;
    assert_eq!(log["data"][0]["output"], "from-the-worker\n", "{log}");
    assert_eq!(master.get("/api/v1/health").body["backends"]["logs"]["kind"], "MongoDB");
    drop(worker);
}
