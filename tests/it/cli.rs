//! The CLI (README "CLI", "Jobs as code"): the built binary run as a client against a real node,
//! checked by its output, its exit code and what the server then holds.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{wait_until, Node, NodeOptions};

/// What one CLI invocation did.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `distcron ARGS` against `node` (its URL and token file), from the node's directory.
fn cli(node: &Node, args: &[&str]) -> Out {
    cli_with(node, args, &["--server", &node.url(""), "--token-file", &node.token_file().display().to_string()])
}

fn cli_with(node: &Node, args: &[&str], connection: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .args(args)
        .args(connection)
        .current_dir(&node.dir)
        .env_remove("DISTCRON_SERVER")
        .env_remove("DISTCRON_TOKEN")
        .env_remove("DISTCRON_TOKEN_FILE")
        .env_remove("DISTCRON_CA_FILE")
        .output()
        .expect("run the distcron binary");
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ distcron {}\n-> exit {}\n{}{}", args.join(" "), out.code, out.stdout, out.stderr);
    out
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

fn job(node: &Node, name: &str) -> Value {
    let r = node.get(&format!("/api/v1/jobs/{name}"));
    assert_eq!(r.status, 200, "{name}: {}", r.text);
    r.body
}

fn job_names(node: &Node) -> Vec<String> {
    let r = node.get("/api/v1/jobs");
    r.body["jobs"].as_array().expect("jobs").iter().map(|j| j["name"].as_str().expect("name").to_owned()).collect()
}

const THREE_JOBS: &str = r#"managed_by = "team-a"

[[jobs]]
name = "backup"
command = "echo backup"
cron_expr = "30 2 * * *"
tz = "Europe/Berlin"
selector = { zone = "b" }

[[jobs]]
name = "report"
command = "echo report"
cron_expr = "0 6 * * 1-5"
[jobs.env]
FORMAT = "pdf"

[[jobs]]
name = "cleanup"
command = "echo cleanup"
cron_expr = "@daily"
"#;

/// `report` moved to 07:00 and `cleanup` dropped.
const TWO_JOBS: &str = r#"managed_by = "team-a"

[[jobs]]
name = "backup"
command = "echo backup"
cron_expr = "30 2 * * *"
tz = "Europe/Berlin"
selector = { zone = "b" }

[[jobs]]
name = "report"
command = "echo report"
cron_expr = "0 7 * * 1-5"
[jobs.env]
FORMAT = "pdf"
"#;

#[test]
fn apply_creates_then_prunes_exactly_the_planned_changes_and_export_applies_as_a_no_op() {
    let node = Node::start("");
    let dir = node.dir.clone();
    let three = write(&dir, "three.toml", THREE_JOBS);
    let two = write(&dir, "two.toml", TWO_JOBS);
    // A job made by hand: no label, so no prune may touch it.
    node.create_job(json!({"name": "by-hand", "command": "true", "cron_expr": "@yearly"}));

    // Dry run: the plan shows three creates and nothing changes.
    let dry = cli(&node, &["apply", "-f", &three, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    for name in ["backup", "report", "cleanup"] {
        assert!(dry.stdout.contains(&format!("  + create job \"{name}\"")), "{}", dry.stdout);
    }
    assert!(dry.stdout.contains("Plan: 3 to create, 0 to update, 0 to delete; 0 unchanged."), "{}", dry.stdout);
    assert!(dry.stdout.contains("! DST: on "), "backup at 02:30 Berlin time gets DST warnings: {}", dry.stdout);
    assert_eq!(job_names(&node), ["by-hand"], "a dry run changes nothing");

    // Apply: three jobs created, labelled with the file's managed_by.
    let applied = cli(&node, &["apply", "-f", &three]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(applied.stdout.contains("Apply complete: 3 created, 0 updated, 0 deleted."), "{}", applied.stdout);
    assert_eq!(job_names(&node), ["backup", "by-hand", "cleanup", "report"]);
    for name in ["backup", "report", "cleanup"] {
        let stored = job(&node, name);
        assert_eq!((stored["managed_by"].as_str(), stored["version"].as_u64()), (Some("team-a"), Some(1)), "{stored}");
    }
    assert_eq!(job(&node, "report")["env"]["FORMAT"], "pdf");
    assert_eq!(job(&node, "backup")["selector"], json!({"zone": "b"}), "the worker selector is applied");

    // Change one, drop one, with --prune: the plan shows exactly that (and --dry-run changes nothing).
    let plan = cli(&node, &["apply", "-f", &two, "--prune", "--dry-run", "--json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan = plan.json();
    let changes: Vec<(String, String, Option<u64>)> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (c["action"].as_str().unwrap().to_owned(), c["name"].as_str().unwrap().to_owned(), c["version"].as_u64())
        })
        .collect();
    assert_eq!(
        changes,
        [("update".into(), "report".into(), Some(1)), ("delete".into(), "cleanup".into(), Some(1))],
        "{plan}"
    );
    assert_eq!(
        plan["changes"][0]["diff"],
        json!([{"field": "cron_expr", "before": "0 6 * * 1-5", "after": "0 7 * * 1-5"}]),
        "only the changed field"
    );
    assert_eq!(plan["unchanged"], json!(["backup"]));
    assert_eq!(plan["summary"], json!({"create": 0, "update": 1, "delete": 1, "unchanged": 1}));
    let human = cli(&node, &["apply", "-f", &two, "--prune", "--dry-run"]);
    assert!(
        human.stdout.contains(
            "  ~ update job \"report\" (version 1)\n      ~ cron_expr = \"0 6 * * 1-5\" -> \"0 7 * * 1-5\"\n"
        ),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("  - delete job \"cleanup\" (version 1)\n"), "{}", human.stdout);
    assert!(!human.stdout.contains("by-hand"), "{}", human.stdout);
    assert_eq!(job(&node, "report")["cron_expr"], "0 6 * * 1-5", "a dry run changes nothing");
    assert_eq!(job_names(&node), ["backup", "by-hand", "cleanup", "report"]);

    // Without --prune nothing is deleted.
    let no_prune = cli(&node, &["apply", "-f", &two, "--dry-run", "--json"]).json();
    assert_eq!(no_prune["summary"], json!({"create": 0, "update": 1, "delete": 0, "unchanged": 1}));

    let pruned = cli(&node, &["apply", "-f", &two, "--prune"]);
    assert_eq!(pruned.code, 0, "{}", pruned.stderr);
    assert!(pruned.stdout.contains("Apply complete: 0 created, 1 updated, 1 deleted."), "{}", pruned.stdout);
    assert_eq!(job_names(&node), ["backup", "by-hand", "report"]);
    let report = job(&node, "report");
    assert_eq!((report["cron_expr"].as_str(), report["version"].as_u64()), (Some("0 7 * * 1-5"), Some(2)));

    // Applying the same file again is a no-op.
    let again = cli(&node, &["apply", "-f", &two, "--prune"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("No changes (managed_by = \"team-a\"): the 2 declared jobs match the server."),
        "{}",
        again.stdout
    );

    // export -> apply is a no-op: the label's jobs, and every job (mixed labels).
    let exported = dir.join("exported.toml").display().to_string();
    let export = cli(&node, &["export", "--managed-by", "team-a", "-o", &exported]);
    assert_eq!(export.code, 0, "{}", export.stderr);
    let round = cli(&node, &["apply", "-f", &exported, "--prune", "--dry-run", "--json"]).json();
    assert_eq!(round["changes"], json!([]), "{round}");
    assert_eq!(round["unchanged"], json!(["backup", "report"]));
    let all = cli(&node, &["export"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert!(all.stdout.contains("name = \"by-hand\""), "{}", all.stdout);
    let everything = write(&dir, "everything.toml", &all.stdout);
    let round = cli(&node, &["apply", "-f", &everything]);
    assert_eq!(round.code, 0, "{}", round.stderr);
    assert!(round.stdout.starts_with("No changes: the 3 declared jobs match the server."), "{}", round.stdout);
    assert_eq!(job(&node, "report")["version"], 2, "nothing was written");
}

#[test]
fn a_job_edited_between_plan_and_apply_is_a_conflict_with_exit_3_and_nothing_of_it_is_applied() {
    let node = Node::start("");
    let dir = node.dir.clone();
    let three = write(&dir, "three.toml", THREE_JOBS);
    let two = write(&dir, "two.toml", TWO_JOBS);
    assert_eq!(cli(&node, &["apply", "-f", &three]).code, 0);

    // Plan (saved), then somebody edits `report` through the API.
    let saved = dir.join("plan.json").display().to_string();
    let plan = cli(&node, &["apply", "-f", &two, "--prune", "--dry-run", "-o", &saved]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let edit = json!({"command": "echo edited", "cron_expr": "0 8 * * *", "managed_by": "team-a", "version": 1});
    let r = node.put("/api/v1/jobs/report", &edit.to_string());
    assert_eq!(r.status, 200, "{}", r.text);

    // Applying the saved plan: the stale job is refused whole, exit 3.
    let applied = cli(&node, &["apply", "--plan", &saved]);
    assert_eq!(applied.code, 3, "a conflict exits 3: {}", applied.stderr);
    assert!(applied.stderr.contains("job report changed on the server since the plan"), "{}", applied.stderr);
    assert_eq!(applied.stderr.lines().count(), 1, "one line: {}", applied.stderr);
    let report = job(&node, "report");
    assert_eq!(
        (report["command"].as_str(), report["cron_expr"].as_str(), report["version"].as_u64()),
        (Some("echo edited"), Some("0 8 * * *"), Some(2)),
        "the concurrent edit stands, nothing of the plan was written to it"
    );
    assert!(job_names(&node).contains(&"cleanup".to_owned()), "the apply stopped at the conflict");

    // Planning again shows the edit as the thing to revert, and applies cleanly.
    let replanned = cli(&node, &["apply", "-f", &two, "--prune"]);
    assert_eq!(replanned.code, 0, "{}", replanned.stderr);
    let reverted = replanned.stdout.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words == ["~", "command", "=", "\"echo", "edited\"", "->", "\"echo", "report\""]
    });
    assert!(reverted, "the edit is the change to revert: {}", replanned.stdout);
    assert_eq!(job(&node, "report")["cron_expr"], "0 7 * * 1-5");

    // A job deleted since the plan, and one created since, are conflicts too.
    let stale = dir.join("stale.json").display().to_string();
    let three_again = cli(&node, &["apply", "-f", &three, "--dry-run", "-o", &stale]);
    assert_eq!(three_again.code, 0, "{}", three_again.stderr);
    node.create_job(json!({"name": "cleanup", "command": "echo mine", "cron_expr": "@hourly"}));
    let applied = cli(&node, &["apply", "--plan", &stale]);
    assert_eq!(applied.code, 3, "{}", applied.stderr);
    assert_eq!(job(&node, "cleanup")["command"], "echo mine");
}

#[test]
fn exit_codes_for_not_found_usage_and_errors() {
    let node = Node::start("");
    let code = |args: &[&str]| cli(&node, args).code;
    assert_eq!(code(&["jobs", "get", "nope"]), 4, "not found");
    assert_eq!(code(&["jobs", "delete", "nope"]), 4);
    assert_eq!(code(&["jobs", "enable", "nope"]), 4);
    assert_eq!(code(&["runs", "get", "0190f2d4-0000-7000-8000-000000000000"]), 4);
    assert_eq!(code(&["runs", "tail", "--job", "nope"]), 4);
    assert_eq!(code(&["jobs"]), 2, "usage: no subcommand");
    assert_eq!(code(&["jobs", "get"]), 2, "usage: no name");
    assert_eq!(code(&["apply"]), 2, "usage: no file");
    assert_eq!(code(&["jobs", "frobnicate"]), 2);
    let bad = cli(&node, &["preview", "61 * * * *"]);
    assert_eq!(bad.code, 1, "a bad expression is an error");
    assert!(bad.stderr.starts_with("distcron: expr: minutes field"), "{}", bad.stderr);
    assert_eq!(bad.stderr.lines().count(), 1);
    let bad_file = write(
        &node.dir,
        "bad.toml",
        "[[jobs]]\nname = \"x\"\ncommand = \"true\"\ncron_expr = \"* * * * *\"\ntz = \"Mars/Base\"\n",
    );
    let bad = cli(&node, &["apply", "-f", &bad_file]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("jobs[0].tz"), "{}", bad.stderr);
    // A wrong token: 401, exit 1, one line.
    let wrong = write(&node.dir, "wrong-token", "not-the-token\n");
    let denied = cli_with(&node, &["jobs", "list"], &["--server", &node.url(""), "--token-file", &wrong]);
    assert_eq!(denied.code, 1, "{}", denied.stderr);
    // Nobody listening: exit 1.
    let unreachable = cli_with(&node, &["jobs", "list"], &["--server", "http://127.0.0.1:9", "--token-file", &wrong]);
    assert_eq!(unreachable.code, 1);
    assert!(unreachable.stderr.contains("cannot reach http://127.0.0.1:9"), "{}", unreachable.stderr);
    // A stale version on delete: conflict.
    node.create_job(json!({"name": "kept", "command": "true", "cron_expr": "@yearly"}));
    assert_eq!(code(&["jobs", "delete", "kept", "--version", "7"]), 3);
}

#[test]
fn jobs_runs_and_preview_commands_drive_a_node() {
    let node = Node::start("");
    node.create_job(json!({"name": "hello", "command": "echo hello; sleep 1; echo world", "cron_expr": "@yearly"}));
    let list = cli(&node, &["jobs", "list"]);
    assert_eq!(list.code, 0);
    assert!(list.stdout.starts_with("NAME "), "{}", list.stdout);
    assert!(list.stdout.lines().any(|l| l.starts_with("hello ") && l.contains("@yearly")), "{}", list.stdout);
    let got = cli(&node, &["jobs", "get", "hello", "--json"]).json();
    assert_eq!(got["command"], "echo hello; sleep 1; echo world");
    let details = cli(&node, &["jobs", "get", "hello"]);
    assert!(details.stdout.starts_with("name:"), "{}", details.stdout);

    assert_eq!(cli(&node, &["jobs", "disable", "hello"]).code, 0);
    assert_eq!(job(&node, "hello")["enabled"], false);
    assert_eq!(cli(&node, &["jobs", "enable", "hello"]).code, 0);
    assert_eq!(job(&node, "hello")["enabled"], true);

    let run = cli(&node, &["jobs", "run", "hello"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("Run of job hello requested"), "{}", run.stdout);
    let id = wait_until(Duration::from_secs(10), || {
        node.runs("hello").first().and_then(|r| r["id"].as_str().map(str::to_owned))
    })
    .expect("the run is recorded");
    // Follow it to its end: all of its output, exit 0 because it succeeded.
    let tail = cli(&node, &["runs", "tail", "--job", "hello", "--follow"]);
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    assert!(tail.stdout.contains("hello\nworld\n"), "{}", tail.stdout);
    assert!(tail.stderr.contains(&format!("Run {id} of job hello: succeeded (exit 0)")), "{}", tail.stderr);
    let runs = cli(&node, &["runs", "list", "--job", "hello"]);
    assert!(
        runs.stdout.lines().any(|l| l.starts_with(&id) && l.contains("succeeded") && l.contains("manual")),
        "{}",
        runs.stdout
    );
    let one = cli(&node, &["runs", "get", &id]);
    assert!(one.stdout.contains("--- output (12 bytes) ---\nhello\nworld\n"), "{}", one.stdout);
    assert_eq!(cli(&node, &["runs", "get", &id, "--json"]).json()["status"], "succeeded");
    assert_eq!(cli(&node, &["jobs", "kill", "hello"]).code, 0);

    // A failing run followed to its end exits 1.
    node.create_job(json!({"name": "fails", "command": "echo oops; exit 3", "cron_expr": "@yearly"}));
    assert_eq!(cli(&node, &["jobs", "run", "fails"]).code, 0);
    let failing_id = wait_until(Duration::from_secs(10), || {
        node.runs("fails").first().and_then(|r| r["id"].as_str().map(str::to_owned))
    })
    .expect("the run is recorded");
    let tail = cli(&node, &["runs", "tail", &failing_id, "-f"]);
    assert_eq!(tail.code, 1, "{}", tail.stderr);
    assert!(tail.stdout.contains("oops"), "{}", tail.stdout);
    assert!(tail.stderr.contains("ended failed (exit 3)"), "{}", tail.stderr);

    let preview = cli(
        &node,
        &["preview", "30 2 * * *", "--tz", "Europe/Berlin", "--count", "2", "--after", "2027-03-27T00:00:00Z"],
    );
    assert_eq!(preview.code, 0, "{}", preview.stderr);
    assert!(preview.stdout.contains("2027-03-27 02:30:00 CET"), "{}", preview.stdout);
    assert!(
        preview.stdout.contains("2027-03-28 03:00:00 CEST  DST day: clocks go forward 1 h at 02:00 (to 03:00)"),
        "{}",
        preview.stdout
    );
    let json = cli(&node, &["preview", "@hourly", "--count", "3", "--json"]).json();
    assert_eq!(json["next"].as_array().map(Vec::len), Some(3));

    // Deleting through the CLI.
    assert_eq!(cli(&node, &["jobs", "delete", "fails"]).code, 0);
    assert_eq!(node.get("/api/v1/jobs/fails").status, 404);
}

#[test]
fn the_token_comes_from_the_local_data_dir_and_https_needs_the_ca() {
    // From the node's own config file: its listen address and data_dir/api_token.
    let node = Node::start("");
    let config = node.dir.join("config.toml").display().to_string();
    let local = cli_with(&node, &["jobs", "list"], &["--config", &config]);
    assert_eq!(local.code, 0, "server and token found through the config: {}", local.stderr);
    // DISTCRON_TOKEN.
    let out = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .args(["jobs", "list", "--server", &node.url("")])
        .env("DISTCRON_TOKEN", node.token.as_deref().expect("token"))
        .env_remove("DISTCRON_TOKEN_FILE")
        .current_dir(&node.dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, tls) = make_certificate(dir.path());
    let secure = Node::start_with(&tls, NodeOptions { tls_ca_pem: Some(ca.clone()), ..NodeOptions::default() });
    let token = secure.token_file().display().to_string();
    let ca_file = write(dir.path(), "ca.pem", &ca);
    let trusted = cli_with(
        &secure,
        &["jobs", "list"],
        &["--server", &secure.url(""), "--token-file", &token, "--ca-file", &ca_file],
    );
    assert_eq!(trusted.code, 0, "{}", trusted.stderr);
    let untrusted = cli_with(&secure, &["jobs", "list"], &["--server", &secure.url(""), "--token-file", &token]);
    assert_eq!(untrusted.code, 1, "a certificate the client does not trust is refused");
}

/// A CA and a certificate for 127.0.0.1 signed by it; the node's `[http]` TLS config.
fn make_certificate(dir: &Path) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "distcron CLI test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    let config =
        format!("[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", cert_path.display(), key_path.display());
    (ca_cert.pem(), config)
}
