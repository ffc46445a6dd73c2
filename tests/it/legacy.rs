//! The seed's routes (cloud-org/crontab master), golden shapes from README "Seed compatibility".

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::Node;

fn ok(body: &Value) -> &Value {
    assert_eq!(body["errno"], 0, "{body}");
    assert_eq!(body["msg"], "success", "{body}");
    &body["data"]
}

#[test]
fn seed_save_list_delete_keep_the_seed_shapes() {
    let node = Node::start("");
    let list = node.get("/job/list");
    assert_eq!(list.status, 200);
    assert_eq!(list.body, json!({"errno": 0, "msg": "success", "data": []}));

    let job = r#"{"name":"job1","command":"echo hello","cron_expr":"*/5 * * * * *"}"#;
    let saved = node.post_form("/job/save", &[("job", job)]);
    assert_eq!(saved.status, 200);
    assert_eq!(saved.body, json!({"errno": 0, "msg": "success", "data": null}));

    let again =
        node.post_form("/job/save", &[("job", r#"{"name":"job1","command":"echo v2","cron_expr":"0 * * * *"}"#)]);
    assert_eq!(ok(&again.body), &json!({"name": "job1", "command": "echo hello", "cron_expr": "*/5 * * * * *"}));

    let list = node.get("/job/list");
    assert_eq!(ok(&list.body), &json!([{"name": "job1", "command": "echo v2", "cron_expr": "0 * * * *"}]));

    // a 6-field expression saved through the seed's route keeps the seed's reading (5 fields + year)
    node.post_form("/job/save", &[("job", r#"{"name":"yearly","command":"true","cron_expr":"0 12 1 1 * 2030"}"#)]);
    let api = node.get("/api/v1/jobs/yearly").body;
    assert_eq!(api["dialect"], "seed");
    assert_eq!(api["next_run_at"], "2030-01-01T12:00:00Z");

    let deleted = node.post_form("/job/delete", &[("name", "job1")]);
    assert_eq!(ok(&deleted.body), &json!({"name": "job1", "command": "echo v2", "cron_expr": "0 * * * *"}));
    let missing = node.post_form("/job/delete", &[("name", "job1")]);
    assert_eq!(missing.body, json!({"errno": 0, "msg": "success", "data": null}));
}

#[test]
fn seed_save_rejects_what_the_seed_accepted_and_saves_nothing() {
    let node = Node::start("");
    for bad in [
        r#"{"name":"x","command":"true","cron_expr":"not cron"}"#,
        r#"{"name":"","command":"true","cron_expr":"* * * * *"}"#,
        r#"{"command":"true","cron_expr":"* * * * *"}"#,
        r#"{"name":"x","command":"true""#,
    ] {
        let r = node.post_form("/job/save", &[("job", bad)]);
        assert_eq!(r.status, 200, "{bad}");
        assert_eq!(r.body["errno"], -1, "{bad}: {}", r.text);
        assert!(r.body["msg"].as_str().is_some_and(|m| !m.is_empty() && m != "success"), "{bad}");
        assert_eq!(r.body["data"], Value::Null);
    }
    assert_eq!(node.post_form("/job/save", &[]).body["errno"], -1, "missing job field");
    assert_eq!(ok(&node.get("/job/list").body), &json!([]));
}

#[test]
fn seed_kill_log_and_worker_list() {
    let node = Node::start("[executor]\nkill_grace_ms = 500\n");
    node.post_form(
        "/job/save",
        &[("job", r#"{"name":"s","command":"echo out; echo err >&2; sleep 30","cron_expr":"0 0 1 1 *"}"#)],
    );
    node.post_empty("/api/v1/jobs/s/run");
    node.wait_run("s", Duration::from_secs(10), |r| r["status"] == "running").expect("running");
    let kill = node.post_form("/job/kill", &[("name", "s")]);
    assert_eq!(kill.body, json!({"errno": 0, "msg": "success", "data": "s"}));
    node.wait_run("s", Duration::from_secs(10), |r| r["status"] == "killed").expect("killed");
    std::thread::sleep(Duration::from_millis(500));

    let logs = node.get("/job/log?name=s&skip=0&limit=10");
    let data = ok(&logs.body).as_array().expect("array").clone();
    assert_eq!(data.len(), 1);
    let entry = data[0].as_object().expect("object");
    let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["command", "end_time", "err", "job_name", "output", "plan_time", "schedule_time", "start_time"]);
    assert_eq!(entry["job_name"], "s");
    assert!(entry["output"].as_str().is_some_and(|o| o.contains("out") && o.contains("err")));
    assert!(entry["err"].as_str().is_some_and(|e| !e.is_empty()));
    for t in ["plan_time", "schedule_time", "start_time", "end_time"] {
        assert!(entry[t].as_i64().is_some_and(|ms| ms > 1_700_000_000_000), "{t} is ms since epoch");
    }
    // bad numbers fall back to the defaults, as in the seed
    let fallback = node.get("/job/log?name=s&skip=abc&limit=-4");
    assert_eq!(ok(&fallback.body).as_array().map(Vec::len), Some(1));
    let form = node.post_form("/job/log", &[("name", "s")]);
    assert_eq!(ok(&form.body).as_array().map(Vec::len), Some(1));

    let workers = crate::support::wait_until(Duration::from_secs(10), || {
        let w = node.get("/worker/list").body;
        w["data"].as_array().filter(|a| !a.is_empty()).cloned()
    })
    .expect("worker list");
    assert!(workers.iter().all(Value::is_string), "{workers:?}");
}

#[test]
fn admin_page_is_served_at_root() {
    let node = Node::start("");
    let page = node.get("/");
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("<html") || page.text.contains("<!DOCTYPE") || page.text.contains("<!doctype"),
        "{}",
        page.text
    );
}

#[test]
fn seed_job_log_caps_runs_and_output_per_reply() {
    let node = Node::start("[executor]\nmax_output_bytes = 1048576\n");
    // 11 jobs printing 600 KB every second: over 100 runs and far over 4 MiB of output.
    for i in 0..11 {
        node.create_job(json!({
            "name": format!("big{i}"), "command": "head -c 600000 /dev/zero | tr '\\0' x",
            "cron_expr": "* * * * * *", "concurrency": "allow",
        }));
    }
    // Generous: on a loaded machine the 11 shells a second start late (it returns once there).
    crate::support::wait_until(Duration::from_secs(180), || {
        let runs = node.get("/api/v1/runs?status=succeeded&limit=1000");
        (runs.body["runs"].as_array().map_or(0, Vec::len) > 100).then_some(())
    })
    .expect("over 100 finished runs");
    for i in 0..11 {
        node.post_empty(&format!("/api/v1/jobs/big{i}/disable"));
    }
    crate::support::wait_until(Duration::from_secs(10), || {
        let running = node.get("/api/v1/runs?status=running");
        running.body["runs"].as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .expect("no run left running");

    let all = node.get("/job/log?limit=1000");
    let data = ok(&all.body).as_array().expect("array").clone();
    assert_eq!(data.len(), 100, "a limit over 100 is clamped to 100");
    let outputs: Vec<&str> = data.iter().map(|e| e["output"].as_str().expect("output")).collect();
    let total: usize = outputs.iter().map(|o| o.len()).sum();
    assert!(total <= 4 * 1024 * 1024 + 100 * 200, "outputs share a 4 MiB budget: {total} bytes");
    let shown: usize = outputs.iter().map(|o| o.bytes().filter(|b| *b == b'x').count()).sum();
    assert_eq!(shown, 4 * 1024 * 1024, "the budget is used up by whole outputs, newest first, then a cut one");
    let first_cut = outputs.iter().position(|o| o.contains("bytes not shown")).expect("a cut output");
    assert!(
        outputs[..first_cut].iter().all(|o| o.is_empty() || o.len() == 600_000),
        "outputs before the cut are whole"
    );
    assert!(outputs[first_cut + 1..].iter().all(|o| !o.contains('x')), "after the cut only markers");
    let mut keys: Vec<&str> = data[99].as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["command", "end_time", "err", "job_name", "output", "plan_time", "schedule_time", "start_time"]);

    for bad in ["0", "-5", "abc"] {
        let fallback = node.get(&format!("/job/log?limit={bad}"));
        assert_eq!(ok(&fallback.body).as_array().map(Vec::len), Some(10), "limit={bad} falls back to the default");
    }
    let listed = node.get("/api/v1/runs?limit=1000");
    let runs = listed.body["runs"].as_array().expect("runs");
    assert!(runs.iter().all(|r| r.get("output").is_none() && r["output_bytes"].as_u64().is_some()));
}
