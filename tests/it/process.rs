//! Runs as processes, end to end on a real node: no orphans after distcron is SIGKILLed
//! (`executor.on_restart` terminate and adopt, with a grandchild and a `setsid` escapee), the
//! per-job resource limits and `run_as_user`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::{process_alive, read_pid, wait_until, Node, NodeOptions};

fn status_of(run: &Value) -> &str {
    run["status"].as_str().unwrap_or("")
}

fn err_of(run: &Value) -> &str {
    run["err"].as_str().unwrap_or("")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc)).expect("RFC 3339 time")
}

/// Live processes whose environment carries `DISTCRON_RUN_ID=<run>` (the test runs as root,
/// so every environment is readable), from /proc.
fn processes_of_run(run: &str) -> Vec<u32> {
    let marker = format!("DISTCRON_RUN_ID={run}");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| process_alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect()
}

/// A job whose shell starts a grandchild and a grandchild that leaves the group with `setsid`,
/// writing the three pids to files in the node's dir, then sleeps.
fn orphan_job(node: &Node, name: &str, secs: u32) -> Value {
    let (shell, child, escaped) = (node.path("shell.pid"), node.path("child.pid"), node.path("escaped.pid"));
    json!({
        "name": name, "cron_expr": "0 0 1 1 *",
        "command": format!(
            "sleep {secs} & echo $! > {}; setsid sleep {secs} & echo $! > {}; echo $$ > {}; sleep {secs}",
            child.display(), escaped.display(), shell.display()
        ),
    })
}

fn pids(node: &Node) -> [u32; 3] {
    let read = |f: &str| wait_until(Duration::from_secs(10), || read_pid(&node.path(f))).expect("job wrote its pid");
    [read("shell.pid"), read("child.pid"), read("escaped.pid")]
}

/// Waits until the scheduler has planned every job (a run-now that reaches it before the job
/// itself would be dropped).
fn wait_planned(node: &Node) {
    let jobs = node.get("/api/v1/jobs").body["jobs"].as_array().map_or(0, Vec::len) as u64;
    wait_until(Duration::from_secs(10), || {
        let h = node.get("/api/v1/health");
        (h.body["scheduler"]["synced"] == true && h.body["scheduler"]["planned_jobs"].as_u64() >= Some(jobs))
            .then_some(())
    })
    .expect("the scheduler planned every job");
}

/// Starts `job` by run-now and waits for its `running` record naming its process group.
fn start_and_wait_running(node: &Node, job: &str) -> Value {
    wait_planned(node);
    assert_eq!(node.post_empty(&format!("/api/v1/jobs/{job}/run")).status, 202);
    node.wait_run(job, Duration::from_secs(15), |r| status_of(r) == "running" && r["pgid"].is_i64())
        .expect("running record with its process group reached the store")
}

#[test]
fn sigkilled_node_terminates_leftovers_at_restart_and_forbid_then_runs_exactly_one() {
    let mut node = Node::start("[executor]\nkill_grace_ms = 500\n");
    node.create_job(orphan_job(&node, "orphans", 600));
    let run = start_and_wait_running(&node, "orphans");
    let id = run["id"].as_str().expect("id").to_owned();
    let [shell, child, escaped] = pids(&node);
    assert_eq!(run["pgid"].as_i64(), Some(i64::from(shell)), "the shell leads the run's group");
    assert!(run["proc_start_ticks"].as_u64().is_some_and(|t| t > 0), "{run}");
    for pid in [shell, child, escaped] {
        assert!(process_alive(pid), "{pid} runs before the crash");
    }

    node.signal_and_wait("KILL", Duration::from_secs(10)).expect("node died");
    // The shell had PR_SET_PDEATHSIG (SIGTERM); the grandchildren outlive distcron until it is back.
    assert!(
        wait_until(Duration::from_secs(5), || (!process_alive(shell)).then_some(())).is_some(),
        "shell got its death signal"
    );
    assert!(process_alive(escaped), "the setsid grandchild outlived distcron");
    let restarted = Instant::now();
    node.restart();
    let gone = wait_until(Duration::from_millis(500 + 1000), || processes_of_run(&id).is_empty().then_some(()));
    assert!(
        gone.is_some(),
        "processes of the run left {:?} after restart: {:?}",
        restarted.elapsed(),
        processes_of_run(&id)
    );
    for pid in [shell, child, escaped] {
        assert!(!process_alive(pid), "{pid} survived the restart");
    }
    let lost = wait_until(Duration::from_secs(10), || {
        let r = node.get(&format!("/api/v1/runs/{id}"));
        (status_of(&r.body) == "lost").then_some(r.body)
    })
    .expect("interrupted run recorded lost");
    assert!(err_of(&lost).contains("distcron restarted; leftover processes terminated"), "{lost}");

    // forbid: nothing of the old run is alive, so run-now starts exactly one new run.
    let new = start_and_wait_running(&node, "orphans");
    let new_id = new["id"].as_str().expect("id").to_owned();
    assert_ne!(new_id, id);
    std::thread::sleep(Duration::from_millis(500));
    let runs = node.runs("orphans");
    assert_eq!(runs.len(), 2, "the lost run and one new run: {runs:?}");
    assert_eq!(runs.iter().filter(|r| status_of(r) == "running").count(), 1, "{runs:?}");
    assert!(!processes_of_run(&new_id).is_empty(), "the new run's processes live");
    assert!(processes_of_run(&id).is_empty());
    // Stop everything this test started, whatever the node's stop does with it.
    kill_processes_of_run(&new_id);
}

/// SIGKILLs every process of `run` (test clean-up: nothing the test started outlives it).
fn kill_processes_of_run(run: &str) {
    for pid in processes_of_run(run) {
        let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
}

#[test]
fn adopted_run_stays_live_for_forbid_and_is_recorded_with_its_real_end() {
    let mut node = Node::start("[executor]\nkill_grace_ms = 500\non_restart = \"adopt\"\n");
    node.create_job(orphan_job(&node, "adopted", 10));
    let run = start_and_wait_running(&node, "adopted");
    let id = run["id"].as_str().expect("id").to_owned();
    let [shell, _, escaped] = pids(&node);

    node.signal_and_wait("KILL", Duration::from_secs(10)).expect("node died");
    node.restart();
    assert!(process_alive(shell) || process_alive(escaped), "adopt leaves the run's processes alone");
    let current = node.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(status_of(&current.body), "running", "adopted run stays live: {}", current.text);

    // forbid refuses a second copy while the adopted one lives.
    assert_eq!(node.post_empty("/api/v1/jobs/adopted/run").status, 202);
    let skipped = node
        .wait_run("adopted", Duration::from_secs(10), |r| status_of(r) == "skipped")
        .expect("second run-now skipped by forbid");
    assert!(err_of(&skipped).contains(&id), "skip names the adopted run: {skipped}");

    // When the last process exits, the run is recorded with that end time.
    let mut last_seen_alive = Utc::now();
    let ended = wait_until(Duration::from_secs(30), || {
        if processes_of_run(&id).is_empty() {
            Some(Utc::now())
        } else {
            last_seen_alive = Utc::now();
            None
        }
    })
    .expect("the adopted run's processes exit");
    let lost = wait_until(Duration::from_secs(10), || {
        let r = node.get(&format!("/api/v1/runs/{id}"));
        (status_of(&r.body) == "lost").then_some(r.body)
    })
    .expect("adopted run recorded when it ended");
    assert!(err_of(&lost).contains("adopted"), "{lost}");
    let end = time(&lost["ended_at"]);
    assert!(end >= last_seen_alive, "ended_at {end} is after the run was last seen alive at {last_seen_alive}");
    assert!(end <= ended + chrono::Duration::seconds(3), "ended_at {end} is the real end (seen gone at {ended})");

    // No longer live: forbid lets the next run start.
    let runs_before = node.runs("adopted").len();
    assert_eq!(node.post_empty("/api/v1/jobs/adopted/run").status, 202);
    let next = node
        .wait_run("adopted", Duration::from_secs(10), |r| status_of(r) == "running")
        .expect("a new run starts once the adopted one ended");
    assert_ne!(next["id"], lost["id"]);
    assert_eq!(node.runs("adopted").len(), runs_before + 1);
    kill_processes_of_run(next["id"].as_str().expect("id"));
}

#[test]
fn an_adopted_run_can_be_killed_through_the_api() {
    let mut node = Node::start("[executor]\nkill_grace_ms = 500\non_restart = \"adopt\"\n");
    node.create_job(orphan_job(&node, "adopted-kill", 600));
    let run = start_and_wait_running(&node, "adopted-kill");
    let id = run["id"].as_str().expect("id").to_owned();
    node.signal_and_wait("KILL", Duration::from_secs(10)).expect("node died");
    node.restart();
    assert!(!processes_of_run(&id).is_empty(), "adopted, still alive");
    assert_eq!(node.post_empty("/api/v1/jobs/adopted-kill/kill").status, 202);
    let killed = wait_until(Duration::from_secs(15), || {
        let r = node.get(&format!("/api/v1/runs/{id}"));
        (status_of(&r.body) == "killed").then_some(r.body)
    })
    .expect("adopted run recorded killed");
    assert!(err_of(&killed).contains("adopted"), "{killed}");
    assert!(processes_of_run(&id).is_empty(), "nothing of it is left: {:?}", processes_of_run(&id));
}

fn run_once(node: &Node, job: Value) -> Value {
    let name = job["name"].as_str().expect("name").to_owned();
    node.create_job(job);
    wait_planned(node);
    assert_eq!(node.post_empty(&format!("/api/v1/jobs/{name}/run")).status, 202);
    let ended =
        node.wait_run(&name, Duration::from_secs(60), |r| !matches!(status_of(r), "running" | "")).expect("run ended");
    // The list leaves outputs out; one run's page has it.
    node.get(&format!("/api/v1/runs/{}", ended["id"].as_str().expect("id"))).body
}

#[test]
fn memory_and_cpu_limits_end_runs_with_the_reason() {
    let node = Node::start("");
    // 1 GiB buffered by tail under a 100 MB address-space limit: the allocation fails.
    let mem = run_once(
        &node,
        json!({"name": "hog", "cron_expr": "0 0 1 1 *", "timeout_secs": 120,
               "command": "set -o pipefail; head -c 1073741824 /dev/zero | tail -c 1073741824 > /dev/null",
               "limits": {"max_memory_bytes": 100_000_000}}),
    );
    assert_eq!(status_of(&mem), "failed", "{mem}");
    assert!(err_of(&mem).contains("limit: memory limit of 100000000 bytes"), "{mem}");
    assert!(mem["output"].as_str().is_some_and(|o| o.contains("memory exhausted")), "{mem}");

    let cpu = run_once(
        &node,
        json!({"name": "spin", "cron_expr": "0 0 1 1 *", "timeout_secs": 120,
               "command": "while :; do :; done", "limits": {"max_cpu_secs": 1}}),
    );
    assert_eq!(status_of(&cpu), "failed", "{cpu}");
    assert!(err_of(&cpu).contains("cpu limit of 1 s reached"), "{cpu}");
    assert!(cpu["duration_ms"].as_u64().is_some_and(|d| d >= 900), "a second of CPU at least: {cpu}");

    // The job shape carries the limits; out-of-range values are refused with the field.
    let job = node.get("/api/v1/jobs/spin");
    assert_eq!(job.body["limits"]["max_cpu_secs"], 1, "{}", job.text);
    let bad = node.post(
        "/api/v1/jobs",
        &json!({"name": "bad", "cron_expr": "* * * * *", "command": "true", "limits": {"max_memory_bytes": 1}})
            .to_string(),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.body["error"]["field"], "limits", "{}", bad.text);
}

#[test]
fn run_as_user_runs_as_nobody_on_root_and_a_non_root_node_refuses_it() {
    assert!(nix_is_root(), "these tests run as root (here and in CI)");
    let node = Node::start("[executor]\nallowed_users = [\"nobody\"]\n");
    let run = run_once(
        &node,
        json!({"name": "whoami", "cron_expr": "0 0 1 1 *", "run_as_user": "nobody",
               "command": "id -u; echo \"$USER $LOGNAME\""}),
    );
    assert_eq!(status_of(&run), "succeeded", "{run}");
    assert_eq!(run["output"], "65534\nnobody nobody\n", "{run}");
    // A user not on the allow list is refused when the job is saved.
    let refused = node.post(
        "/api/v1/jobs",
        &json!({"name": "daemon", "cron_expr": "* * * * *", "command": "id", "run_as_user": "daemon"}).to_string(),
    );
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"]["field"], "run_as_user", "{}", refused.text);
    drop(node);

    // The same node run as nobody (setpriv) refuses run_as_user with a clear error.
    let wrapper = [
        "sh",
        "-c",
        "chown -R 65534:65534 \"$(dirname \"$3\")\" && exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"",
        "sh",
    ];
    let options = NodeOptions { wrapper: wrapper.iter().map(|s| (*s).to_owned()).collect(), ..NodeOptions::default() };
    let unprivileged = Node::start_with("[executor]\nallowed_users = [\"nobody\"]\n", options);
    let refused = unprivileged.post(
        "/api/v1/jobs",
        &json!({"name": "whoami", "cron_expr": "* * * * *", "command": "id", "run_as_user": "nobody"}).to_string(),
    );
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"]["field"], "run_as_user", "{}", refused.text);
    assert!(refused.text.contains("root"), "{}", refused.text);
    // Without run_as_user the unprivileged node runs jobs as itself.
    let run = run_once(&unprivileged, json!({"name": "plain", "cron_expr": "0 0 1 1 *", "command": "id -u"}));
    assert_eq!(run["output"], "65534\n", "{run}");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
