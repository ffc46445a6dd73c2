//! Issue 12, item 2 against a real node: `/api/v1/openapi.json` is served to any valid token,
//! passes an independent validator (PyPI openapi-spec-validator, through
//! `scripts/openapi_check.py`), and the responses of a scripted tour of every route (successes
//! and the usual refusals) validate against their documented schemas, every documented operation
//! answering at least once with a 2xx.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::Node;

const ROOT: &str = "root-token-openapi-0123456789abcdef0123456789";
const VIEWER: &str = "viewer-token-openapi-0123456789abcdef01234567";

fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A node with the root token and a viewer token.
fn node_with_viewer() -> Node {
    // One alert channel (a command, nothing leaves the machine) so its routes answer 2xx.
    let config = format!(
        "api_token = \"{ROOT}\"\n[[auth.tokens]]\nname = \"vera\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [alerts.channels.ops]\nkind = \"command\"\ncommand = \"cat > /dev/null\"\n",
        sha(VIEWER)
    );
    let mut node = Node::start(&config);
    node.token = Some(ROOT.into());
    node
}

/// The Python of the venv `scripts/setup.sh --test` installs openapi-spec-validator into.
fn checker_python() -> PathBuf {
    let venv = std::env::var("DISTCRON_OPENAPI_VENV").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/distcron/openapi-venv")
    });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} not found: run scripts/setup.sh --test (installs PyPI openapi-spec-validator into {})",
        python.display(),
        venv.display()
    );
    python
}

/// Runs `scripts/openapi_check.py` with `args`; panics with its output unless it passes.
fn openapi_check(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/openapi_check.py");
    let out = Command::new(checker_python()).arg(script).args(args).output().expect("run openapi_check.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openapi_check.py {args:?} failed:\n{text}");
    text
}

/// Fetches the document with the node's token and writes it to `dir/openapi.json`.
fn save_document(node: &Node, dir: &Path) -> (Value, PathBuf) {
    let r = node.get("/api/v1/openapi.json");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{:?}", r.headers);
    let file = dir.join("openapi.json");
    std::fs::write(&file, &r.text).expect("write the document");
    (r.body, file)
}

#[test]
fn the_document_is_served_to_any_token_and_passes_an_independent_validator() {
    let mut node = node_with_viewer();
    let tmp = tempfile::tempdir().expect("tempdir");

    let anonymous = node.request("GET", "/api/v1/openapi.json", &[], None, false);
    assert_eq!(anonymous.status, 401, "the document is served like the API: {}", anonymous.text);
    node.token = Some(VIEWER.into());
    let (doc, file) = save_document(&node, tmp.path());
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "distcron");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"], json!({"type": "http", "scheme": "bearer"}));
    for (path, method) in [
        ("/api/v1/jobs", "post"),
        ("/api/v1/jobs/{name}", "put"),
        ("/api/v1/runs", "get"),
        ("/api/v1/health/live", "get"),
        ("/job/save", "post"),
        ("/job/list", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is documented");
    }
    let out = openapi_check(&["--doc", file.to_str().expect("utf-8 path")]);
    assert!(out.contains("document ok=True"), "{out}");
}

#[test]
fn responses_of_every_route_validate_against_the_document() {
    let mut node = node_with_viewer();
    let tmp = tempfile::tempdir().expect("tempdir");
    let records = tmp.path().join("responses.jsonl");
    node.record_into(&records);
    let (_, doc) = save_document(&node, tmp.path());
    let expect = |r: crate::support::Resp, status: u16| -> Value {
        assert_eq!(r.status, status, "{}", r.text);
        r.body
    };

    // Jobs: create, conflicts, validation, read, replace, enable/disable, stats.
    let job = json!({"name": "tour", "command": "true", "cron_expr": "0 3 * * *", "tz": "Europe/Berlin"});
    expect(node.post("/api/v1/jobs", &job.to_string()), 201);
    expect(node.post("/api/v1/jobs", &job.to_string()), 409);
    expect(
        node.post("/api/v1/jobs", &json!({"name": "bad", "command": "true", "cron_expr": "61 * * * *"}).to_string()),
        400,
    );
    expect(
        node.post(
            "/api/v1/jobs",
            &json!({"name": "bad", "command": "true", "cron_expr": "@daily", "bogus": 1}).to_string(),
        ),
        400,
    );
    expect(node.raw("POST", "/api/v1/jobs", "text/plain", b"name=x"), 415);
    let got = expect(node.get("/api/v1/jobs/tour"), 200);
    expect(node.get("/api/v1/jobs/absent"), 404);
    expect(node.get("/api/v1/jobs/bad%20name"), 400);
    let mut replaced = job.clone();
    replaced["version"] = got["version"].clone();
    replaced["description"] = "toured".into();
    expect(node.put("/api/v1/jobs/tour", &replaced.to_string()), 200);
    expect(node.put("/api/v1/jobs/tour", &replaced.to_string()), 409);
    expect(node.post_empty("/api/v1/jobs/tour/disable"), 200);
    expect(node.post_empty("/api/v1/jobs/tour/enable"), 200);
    expect(node.post_empty("/api/v1/jobs/absent/enable"), 404);
    expect(node.get("/api/v1/jobs?q=to"), 200);
    expect(node.get("/api/v1/jobs/tour/stats?window=7d"), 200);
    expect(node.get("/api/v1/jobs/tour/stats?window=1w"), 400);
    // Pictures (README "Pictures"): timeline, durations, sparklines, fleet.
    expect(node.get("/api/v1/jobs/tour/timeline?window=7d"), 200);
    expect(node.get("/api/v1/jobs/tour/timeline?window=1w"), 400);
    expect(node.get("/api/v1/jobs/absent/timeline"), 404);
    expect(node.get("/api/v1/jobs/tour/durations"), 200);
    expect(node.get("/api/v1/sparklines?count=5"), 200);
    expect(node.get("/api/v1/sparklines?count=0"), 400);
    expect(node.get("/api/v1/fleet/forecast?hours=2"), 200);
    expect(node.get("/api/v1/fleet/forecast?hours=49"), 400);
    expect(node.get("/api/v1/fleet/load"), 200);

    // Runs: run now, read it while it runs, kill it, read it ended; list with filters.
    let sleeper = json!({"name": "sleeper", "command": "sleep 30", "cron_expr": "@yearly"});
    expect(node.post("/api/v1/jobs", &sleeper.to_string()), 201);
    expect(node.post_empty("/api/v1/jobs/sleeper/run"), 202);
    let running =
        node.wait_run("sleeper", Duration::from_secs(15), |r| r["status"] == "running").expect("the run starts");
    let id = running["id"].as_str().expect("run id").to_owned();
    expect(node.get(&format!("/api/v1/runs/{id}")), 200);
    expect(node.post_empty(&format!("/api/v1/runs/{id}/kill")), 202);
    node.wait_run("sleeper", Duration::from_secs(15), |r| r["id"] == id.as_str() && r["status"] == "killed")
        .expect("the run is killed");
    expect(node.get(&format!("/api/v1/runs/{id}")), 200);
    expect(node.get(&format!("/api/v1/runs/{id}/output?follow=1")), 200);
    expect(node.get(&format!("/api/v1/runs/{id}/output?offset=nope")), 400);
    expect(node.get("/api/v1/runs/no-such-run/output"), 404);
    expect(node.post_empty(&format!("/api/v1/runs/{id}/kill")), 409);
    expect(node.get("/api/v1/runs/no-such-run"), 404);
    expect(node.get("/api/v1/runs?job=sleeper&limit=1"), 200);
    expect(node.get("/api/v1/runs?status=nope"), 400);
    expect(node.post_empty("/api/v1/jobs/sleeper/kill"), 202);
    // Run now with parameters, and a refused parameter name.
    expect(node.post("/api/v1/jobs/sleeper/run", &json!({"env": {"WHO": "ops"}}).to_string()), 202);
    expect(node.post("/api/v1/jobs/sleeper/run", &json!({"env": {"1BAD": "x"}}).to_string()), 400);
    let with_params =
        node.wait_run("sleeper", Duration::from_secs(15), |r| r["params"]["WHO"] == "ops").expect("the run starts");
    expect(node.get(&format!("/api/v1/runs/{}", with_params["id"].as_str().expect("run id"))), 200);
    expect(node.post_empty("/api/v1/jobs/sleeper/kill"), 202);

    // Backfill of a past range, and a reversed one.
    let now = chrono::Utc::now();
    let range = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        json!({"from": from.to_rfc3339(), "to": to.to_rfc3339()}).to_string()
    };
    let day = chrono::Duration::days(1);
    expect(node.post("/api/v1/jobs/tour/backfill", &range(now - day * 3, now - day)), 202);
    expect(node.post("/api/v1/jobs/tour/backfill", &range(now - day, now - day * 3)), 400);

    // Jobs as code: a plan changes nothing.
    let plan = json!({"managed_by": "tour", "jobs": [{"name": "planned", "command": "true", "cron_expr": "@daily"}]});
    expect(node.post("/api/v1/jobs:plan", &plan.to_string()), 200);
    expect(node.post("/api/v1/jobs:plan", &json!({"jobs": [{"name": "x"}]}).to_string()), 400);

    // Alerts and their channels.
    expect(node.get("/api/v1/alerts"), 200);
    expect(node.get("/api/v1/jobs/tour/alerts"), 200);
    expect(node.get("/api/v1/alert-channels"), 200);
    expect(node.post_empty("/api/v1/alert-channels/ops/test"), 200);
    expect(node.post_empty("/api/v1/alert-channels/nope/test"), 404);

    // Prometheus text (recorded without a body: not JSON).
    expect(node.get("/metrics"), 200);

    // Everything else of /api/v1.
    expect(node.get("/api/v1/workers"), 200);
    expect(node.get("/api/v1/cron/preview?expr=30%202%20*%20*%20*&tz=America/New_York&count=3"), 200);
    expect(node.get("/api/v1/cron/preview?expr=*%20*"), 400);
    expect(node.get("/api/v1/health"), 200);
    expect(node.get("/api/v1/health/ready"), 200);
    expect(node.request("GET", "/api/v1/health/live", &[], None, false), 200);
    expect(node.get("/api/v1/whoami"), 200);
    expect(node.get("/api/v1/audit?job=tour&limit=5"), 200);
    expect(node.get("/api/v1/audit?cursor=nope"), 400);
    expect(node.request("GET", "/api/v1/jobs", &[], None, false), 401);
    node.token = Some(VIEWER.into());
    expect(node.post("/api/v1/jobs", &job.to_string()), 403);
    node.token = Some(ROOT.into());
    expect(node.delete("/api/v1/jobs/tour"), 200);
    expect(node.delete("/api/v1/jobs/tour"), 404);

    // The seed's routes, each method they are documented with.
    let seed_job = r#"{"name":"seed","command":"true","cron_expr":"0 0 1 1 *"}"#;
    let saved = expect(node.post_form("/job/save", &[("job", seed_job)]), 200);
    assert_eq!(saved["errno"], 0, "{saved}");
    let refused = expect(node.post_form("/job/save", &[("job", "{")]), 200);
    assert_eq!(refused["errno"], -1, "{refused}");
    for method in ["GET", "POST"] {
        for path in ["/job/list", "/job/log?name=sleeper&limit=2", "/worker/list"] {
            expect(node.request(method, path, &[], None, true), 200);
        }
    }
    expect(node.post_form("/job/kill", &[("name", "seed")]), 200);
    expect(node.post_form("/job/delete", &[("name", "seed")]), 200);
    expect(node.request("GET", "/job/list", &[], None, false), 401);

    let out = openapi_check(&[
        "--doc",
        doc.to_str().expect("utf-8 path"),
        "--records",
        records.to_str().expect("utf-8 path"),
        "--require-coverage",
    ]);
    assert!(out.contains(" 0 problems"), "{out}");
}
