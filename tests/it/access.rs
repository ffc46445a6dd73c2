//! Issue 9 identity and accountability against a real node: named tokens with roles, the
//! failed-authentication limit, whoami, and the audit log after a scripted session.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{wait_until, Node};

const ROOT: &str = "root-token-0123456789abcdef0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef0123456789abcd";
const OPERATOR: &str = "operator-token-0123456789abcdef0123456789ab";
const ALICE: &str = "alice-token-0123456789abcdef0123456789abcdef";

fn sha(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A node with the root token and three named tokens: vera (viewer), otto (operator), alice (admin).
fn node_with_tokens() -> Node {
    let config = format!(
        "api_token = \"{ROOT}\"\n\
         [[auth.tokens]]\nname = \"vera\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [[auth.tokens]]\nname = \"otto\"\nrole = \"operator\"\nsha256 = \"{}\"\n\
         [[auth.tokens]]\nname = \"alice\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
        sha(VIEWER),
        sha(OPERATOR),
        sha(ALICE)
    );
    let mut node = Node::start(&config);
    node.token = Some(ROOT.into());
    node
}

fn job_names(node: &Node) -> Vec<String> {
    let r = node.get("/api/v1/jobs");
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|j| j["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_viewer_cannot_create_and_an_operator_cannot_delete() {
    let mut node = node_with_tokens();
    let job = json!({"name": "v", "command": "true", "cron_expr": "@yearly"});

    node.token = Some(VIEWER.into());
    let who = node.get("/api/v1/whoami");
    assert_eq!((who.status, who.body.clone()), (200, json!({"name": "vera", "role": "viewer"})));
    let r = node.post("/api/v1/jobs", &job.to_string());
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "forbidden");
    assert!(r.body["error"]["message"].as_str().unwrap_or("").contains("admin"), "names the role: {}", r.text);
    let seed = node.post_form("/job/save", &[("job", r#"{"name":"v","command":"true","cron_expr":"@yearly"}"#)]);
    assert_eq!(seed.status, 403, "{}", seed.text);
    assert_eq!(seed.body["errno"], -1);
    assert!(job_names(&node).is_empty(), "nothing saved");

    node.token = Some(ROOT.into());
    node.create_job(job);
    node.token = Some(OPERATOR.into());
    let r = node.delete("/api/v1/jobs/v");
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.body["error"]["message"].as_str().unwrap_or("").contains("admin"), "{}", r.text);
    let r = node.post_form("/job/delete", &[("name", "v")]);
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(job_names(&node), vec!["v".to_owned()], "the job still exists");
    // What an operator may do, it does.
    assert_eq!(node.post_empty("/api/v1/jobs/v/disable").status, 200);
    node.token = Some(VIEWER.into());
    assert_eq!(node.post_empty("/api/v1/jobs/v/enable").status, 403, "a viewer may not enable");
    assert_eq!(node.get("/api/v1/audit").status, 200, "a viewer reads the audit log");
}

#[test]
fn fifty_wrong_tokens_in_a_second_get_429_and_the_right_token_works_after_the_window() {
    let mut node = node_with_tokens();
    let mut statuses = Vec::new();
    node.token = Some("wrong-token".into());
    for _ in 0..50 {
        statuses.push(node.get("/api/v1/jobs").status);
    }
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "past ~10 failures per second the address is limited: {statuses:?}");
    let limited = node.get("/api/v1/jobs");
    if limited.status == 429 {
        assert_eq!(limited.body["error"]["code"], "too_many_requests", "{}", limited.text);
    }
    assert!(node.log().contains("Authentication failed."), "failures are logged");
    assert!(!node.log().contains("wrong-token"), "without the presented value");
    node.token = Some(ROOT.into());
    let ok = wait_until(Duration::from_secs(10), || (node.get("/api/v1/jobs").status == 200).then_some(()));
    assert!(ok.is_some(), "the right token works once the window has passed");
}

/// (action, actor, version_before, version_after) of every entry about `job`, oldest first.
fn history(node: &Node, job: &str) -> Vec<(String, String, Value, Value)> {
    let r = node.get(&format!("/api/v1/audit?job={job}&limit=500"));
    assert_eq!(r.status, 200, "{}", r.text);
    let mut out: Vec<(String, String, Value, Value)> = r.body["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["actor"].as_str().unwrap_or("").to_owned(),
                e["version_before"].clone(),
                e["version_after"].clone(),
            )
        })
        .collect();
    out.reverse();
    out
}

#[test]
fn the_audit_log_is_exactly_what_two_named_tokens_did() {
    let mut node = node_with_tokens();
    node.token = Some(ALICE.into());
    node.create_job(json!({"name": "a", "command": "echo one", "cron_expr": "@yearly"}));
    let r =
        node.put("/api/v1/jobs/a", &json!({"command": "echo two", "cron_expr": "@yearly", "version": 1}).to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    let refused =
        node.put("/api/v1/jobs/a", &json!({"command": "x", "cron_expr": "@yearly", "version": 1}).to_string());
    assert_eq!(refused.status, 409, "a stale replace is refused and not recorded");

    node.token = Some(OPERATOR.into());
    assert_eq!(node.post_empty("/api/v1/jobs/a/disable").status, 200);
    assert_eq!(node.post_empty("/api/v1/jobs/a/enable").status, 200);
    assert_eq!(
        node.post_form("/job/save", &[("job", r#"{"name":"a","command":"x","cron_expr":"@daily"}"#)]).status,
        403
    );
    assert_eq!(node.post_empty("/api/v1/jobs/a/run").status, 202);
    let run = node.wait_run("a", Duration::from_secs(20), |r| r["status"] == "succeeded").expect("the run ran");
    assert_eq!(run["job_version"], 4, "the run records the job version it ran: {run}");
    assert_eq!(node.post_empty("/api/v1/jobs/a/kill").status, 202);

    node.token = Some(ALICE.into());
    let seed = node.post_form("/job/save", &[("job", r#"{"name":"a","command":"echo three","cron_expr":"@daily"}"#)]);
    assert_eq!(seed.body["errno"], 0, "{}", seed.text);
    assert_eq!(node.delete("/api/v1/jobs/a").status, 200);

    let s = |x: &str| x.to_owned();
    let expected = vec![
        (s("create"), s("alice"), Value::Null, json!(1)),
        (s("replace"), s("alice"), json!(1), json!(2)),
        (s("disable"), s("otto"), json!(2), json!(3)),
        (s("enable"), s("otto"), json!(3), json!(4)),
        (s("run"), s("otto"), json!(4), json!(4)),
        (s("kill"), s("otto"), json!(4), json!(4)),
        (s("seed_save"), s("alice"), json!(4), json!(5)),
        (s("delete"), s("alice"), json!(5), Value::Null),
    ];
    assert_eq!(history(&node, "a"), expected);

    // Details: client address, the definitions for the diff, filters and pages.
    node.token = Some(VIEWER.into());
    let r = node.get("/api/v1/audit?job=a&limit=500");
    let replace = &r.body["entries"][6];
    assert_eq!(replace["client"], "127.0.0.1");
    assert_eq!(replace["before"]["command"], "echo one");
    assert_eq!(replace["after"]["command"], "echo two");
    let by_otto = node.get("/api/v1/audit?actor=otto");
    assert_eq!(by_otto.body["entries"].as_array().map(Vec::len), Some(4), "{}", by_otto.text);
    let first = node.get("/api/v1/audit?job=a&limit=5");
    let cursor = first.body["next_cursor"].as_str().expect("a second page").to_owned();
    let second = node.get(&format!("/api/v1/audit?job=a&limit=5&cursor={cursor}"));
    assert_eq!(second.body["entries"].as_array().map(Vec::len), Some(3));
    assert_eq!(second.body["next_cursor"], Value::Null);
    assert_eq!(node.get("/api/v1/audit?cursor=../../x").status, 400);
}
