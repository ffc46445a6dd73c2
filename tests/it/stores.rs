//! Issue 9 for the stores and the host: etcd with TLS client certificates and with its own user
//! auth (token expiry included), invalid jobs written into etcd by hand, MongoDB through
//! `mongo.uri_file`, and the modes of everything under `data_dir`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::etcd::{EtcdSecurity, EtcdServer, EtcdTlsFiles};
use crate::support::{start_failing, wait_until, Node};

fn every_second(name: &str) -> Value {
    json!({ "name": name, "command": "echo tick", "cron_expr": "@every 1s" })
}

fn succeeded(run: &Value) -> bool {
    run["status"] == "succeeded"
}

fn scheduled_at(run: &Value) -> Option<DateTime<Utc>> {
    run["scheduled_at"].as_str()?.parse().ok()
}

fn etcd_node_config(etcd: &EtcdServer, etcd_extra: &str) -> String {
    format!(
        "[executor]\nshell = \"/bin/sh\"\n[etcd]\nendpoints = {}\nsession_ttl_secs = 3\n{etcd_extra}",
        etcd.endpoints_toml()
    )
}

fn tls_keys(tls: &EtcdTlsFiles, with_client_cert: bool) -> String {
    let mut keys = format!("tls_ca_file = \"{}\"\n", tls.ca.display());
    if with_client_cert {
        keys += &format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            tls.client_cert.display(),
            tls.client_key.display()
        );
    }
    keys
}

#[test]
fn etcd_with_client_certificates_schedules_and_a_node_without_one_is_refused_at_start() {
    let certs = tempfile::tempdir().expect("tempdir");
    let tls = EtcdTlsFiles::generate(certs.path());
    let etcd = EtcdServer::start_secured(EtcdSecurity { tls: Some(tls.clone()), ..EtcdSecurity::default() });
    assert!(etcd.endpoints()[0].starts_with("https://"));

    let node = Node::start(&etcd_node_config(&etcd, &tls_keys(&tls, true)));
    node.create_job(every_second("over-tls"));
    assert!(
        node.wait_run("over-tls", Duration::from_secs(20), succeeded).is_some(),
        "a node with the client certificate schedules:\n{}",
        node.log()
    );
    // The job is in etcd, read back over TLS by the test's own client.
    let stored = etcd.client().get("/cron/jobs/over-tls").expect("job in etcd");
    assert!(stored.contains("echo tick"), "{stored}");

    // Without a client certificate: a one-line start-up error naming the TLS keys.
    let (status, output) = start_failing(&etcd_node_config(&etcd, &tls_keys(&tls, false)));
    assert!(!status.success(), "{output}");
    let last = output.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("distcron: ") && last.contains("TLS") && last.contains("etcd.tls_cert_file"), "{output}");

    // Plain http:// to the TLS listener: refused as well, not retried forever.
    let plain = etcd_node_config(&etcd, "").replace("https://", "http://");
    let (status, output) = start_failing(&plain);
    assert!(!status.success(), "{output}");
    assert!(output.contains("refused access"), "{output}");

    // A CA file that holds no certificate.
    let bogus = certs.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").expect("write");
    let keys = tls_keys(&tls, true).replace(&tls.ca.display().to_string(), &bogus.display().to_string());
    let (status, output) = start_failing(&etcd_node_config(&etcd, &keys));
    assert!(!status.success() && output.contains("etcd.tls_ca_file"), "{output}");
}

#[test]
fn etcd_with_user_auth_schedules_through_token_expiry_and_a_wrong_password_is_refused() {
    // Tokens live 2 s: a run of 20 s outlives ten of them.
    let etcd = EtcdServer::start_secured(EtcdSecurity { auth_token_ttl_secs: Some(2), ..EtcdSecurity::default() });
    etcd.enable_auth("root-secret", "distcron", "cron-secret", "/cron/");
    let secrets = tempfile::tempdir().expect("tempdir");
    let good = secrets.path().join("good");
    let bad = secrets.path().join("bad");
    std::fs::write(&good, "cron-secret\n").expect("write");
    std::fs::write(&bad, "wrong\n").expect("write");
    let auth = |file: &Path| format!("user = \"distcron\"\npassword_file = \"{}\"\n", file.display());

    let node = Node::start(&etcd_node_config(&etcd, &auth(&good)));
    node.create_job(every_second("with-auth"));
    let first = node.wait_run("with-auth", Duration::from_secs(20), succeeded).expect("first run");
    let first_at = scheduled_at(&first).expect("scheduled_at");
    // Runs keep coming long after the first token expired (session, watch and claims renew it).
    let late = node.wait_run("with-auth", Duration::from_secs(40), |r| {
        succeeded(r) && scheduled_at(r).is_some_and(|t| t > first_at + chrono::Duration::seconds(20))
    });
    assert!(late.is_some(), "runs stopped after the auth token expired:\n{}", node.log());
    // A job changed now still reaches the scheduler through the watch.
    let r = node.put(
        "/api/v1/jobs/with-auth",
        &json!({ "command": "echo changed", "cron_expr": "@every 1s", "version": 1 }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let changed_at = Utc::now();
    assert!(
        node.wait_run("with-auth", Duration::from_secs(20), |r| succeeded(r)
            && scheduled_at(r).is_some_and(|t| t > changed_at + chrono::Duration::seconds(1)))
            .is_some(),
        "{}",
        node.log()
    );
    let stored = etcd.client_as("root", "root-secret").get("/cron/jobs/with-auth").expect("job in etcd");
    assert!(stored.contains("echo changed"), "{stored}");

    let (status, output) = start_failing(&etcd_node_config(&etcd, &auth(&bad)));
    assert!(!status.success(), "{output}");
    let last = output.trim().lines().last().unwrap_or_default();
    assert!(last.contains("user name or password") && last.contains("etcd.password_file"), "{output}");
    assert!(!output.contains("wrong"), "the password is never printed: {output}");

    let (status, output) = start_failing(&etcd_node_config(&etcd, ""));
    assert!(!status.success() && output.contains("etcd requires authentication"), "{output}");
}

/// The reason readiness gives for `job`, if it lists it as invalid.
fn invalid_reason(node: &Node, job: &str) -> Option<String> {
    let ready = node.get("/api/v1/health/ready").body;
    let listed = ready["invalid_jobs"].as_array()?.iter().find(|j| j["name"] == job)?.clone();
    listed["reason"].as_str().map(str::to_owned)
}

#[test]
fn invalid_jobs_written_into_etcd_are_not_planned_reported_and_planned_again_once_fixed() {
    let etcd = EtcdServer::start();
    let node = Node::start(&etcd_node_config(&etcd, ""));
    let mut client = etcd.client();
    node.create_job(every_second("flip"));
    assert!(node.wait_run("flip", Duration::from_secs(20), succeeded).is_some(), "{}", node.log());

    let bad = [
        (
            "huge-timeout",
            r#"{"name":"huge-timeout","command":"echo x","cron_expr":"@every 1s","timeout_secs":1e19}"#,
            "timeout_secs",
        ),
        (
            "huge-integer",
            r#"{"name":"huge-integer","command":"echo x","cron_expr":"@every 1s","timeout_secs":10000000000000000000}"#,
            "timeout_secs",
        ),
        (
            "unknown-field",
            r#"{"name":"unknown-field","command":"echo x","cron_expr":"@every 1s","bogus":true}"#,
            "bogus",
        ),
        ("broken-cron", r#"{"name":"broken-cron","command":"echo x","cron_expr":"61 25 * * * * * *"}"#, "cron_expr"),
    ];
    for (name, doc, _) in bad {
        client.put(&format!("/cron/jobs/{name}"), doc);
    }
    let huge = format!(r#"{{"name":"huge-command","command":"{}","cron_expr":"@every 1s"}}"#, "x".repeat(500_000));
    client.put("/cron/jobs/huge-command", &huge);
    // The running job becomes invalid: its previous definition must stop too.
    client.put("/cron/jobs/flip", r#"{"name":"flip","command":"echo tick","cron_expr":"not a cron"}"#);

    for (name, _, needle) in bad.iter().chain([("huge-command", "", "command"), ("flip", "", "cron_expr")].iter()) {
        let reason = wait_until(Duration::from_secs(10), || invalid_reason(&node, name));
        let reason = reason.unwrap_or_else(|| panic!("{name} not reported invalid in readiness:\n{}", node.log()));
        assert!(reason.contains(needle), "{name}: {reason}");
        assert!(reason.len() < 1024, "{name}: the reason is bounded");
    }
    let list = node.get("/api/v1/jobs");
    assert_eq!(list.status, 200, "{}", list.text);
    let listed: Vec<&str> =
        list.body["invalid_jobs"].as_array().expect("invalid_jobs").iter().filter_map(|j| j["name"].as_str()).collect();
    for name in ["huge-timeout", "huge-integer", "unknown-field", "broken-cron", "huge-command", "flip"] {
        assert!(listed.contains(&name), "{name} missing from the job list's invalid_jobs: {}", list.text);
    }
    assert!(list.body["invalid_jobs"][0]["invalid"].is_string(), "{}", list.text);
    // Reading one of them names the problem (409), never a 500.
    let one = node.get("/api/v1/jobs/unknown-field");
    assert_eq!(one.status, 409, "{}", one.text);
    assert_eq!(one.body["error"]["code"], "stored_job_invalid", "{}", one.text);

    // Not planned: no run of any of them; flip's runs stop (one may be finishing).
    let stopped_at = Utc::now() + chrono::Duration::seconds(2);
    std::thread::sleep(Duration::from_secs(4));
    for name in ["huge-timeout", "huge-integer", "unknown-field", "broken-cron", "huge-command"] {
        assert!(node.runs(name).is_empty(), "{name} ran");
    }
    let late: Vec<Value> =
        node.runs("flip").into_iter().filter(|r| scheduled_at(r).is_some_and(|t| t > stopped_at)).collect();
    assert!(late.is_empty(), "flip kept running after it became invalid: {late:?}");
    // Logged once each, not on every event or resync.
    let log = node.log();
    assert_eq!(log.matches("A stored job is invalid").count(), 6, "{log}");

    // Fixing it in etcd plans it again.
    client.put("/cron/jobs/broken-cron", r#"{"name":"broken-cron","command":"echo fixed","cron_expr":"@every 1s"}"#);
    assert!(node.wait_run("broken-cron", Duration::from_secs(20), succeeded).is_some(), "{}", node.log());
    assert!(invalid_reason(&node, "broken-cron").is_none());
    assert!(node.get("/api/v1/health/live").status == 200, "the node is alive (no panic)");
}

fn modes_under(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).expect("stat");
        out.push((p.display().to_string(), meta.mode() & 0o7777, meta.is_dir()));
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).expect("read_dir").map(|e| e.expect("entry").path()));
        }
    }
    out
}

#[test]
fn everything_under_data_dir_is_private_and_an_existing_open_file_is_tightened() {
    let mut node = Node::start("[executor]\nshell = \"/bin/sh\"\n");
    node.create_job(every_second("writes"));
    assert!(node.wait_run("writes", Duration::from_secs(20), succeeded).is_some(), "{}", node.log());
    let data = node.path("data");
    let modes = modes_under(&data);
    assert!(modes.len() >= 3, "{modes:?}");
    for (path, mode, is_dir) in &modes {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{path} is {mode:04o}");
    }

    node.signal_and_wait("TERM", Duration::from_secs(30)).expect("stopped");
    let open = data.join("left-by-an-operator.txt");
    std::fs::write(&open, "x").expect("write");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    node.restart();
    assert_eq!(std::fs::metadata(&open).expect("stat").mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&data).expect("stat").mode() & 0o777, 0o700);
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("Tightened") && l.contains("left-by-an-operator.txt") && l.contains("from=0644")),
        "{log}"
    );
}

#[test]
fn mongo_uri_file_keeps_the_uri_out_of_argv_and_config() {
    let mongo = crate::support::ferretdb::FerretDb::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let uri_file = secrets.path().join("mongo-uri");
    std::fs::write(&uri_file, format!("{}\n", mongo.uri())).expect("write");
    let node =
        Node::start(&format!("[executor]\nshell = \"/bin/sh\"\n[mongo]\nuri_file = \"{}\"\n", uri_file.display()));
    let ready = node.get("/api/v1/health/ready").body;
    assert_eq!(ready["backends"]["logs"]["kind"], "MongoDB", "{ready}");
    node.create_job(every_second("to-mongo"));
    assert!(node.wait_run("to-mongo", Duration::from_secs(30), succeeded).is_some(), "{}", node.log());
    assert!(!node.log().contains(&mongo.uri()), "the URI is never logged");

    std::fs::write(&uri_file, "postgres://nope\n").expect("write");
    let (status, output) = start_failing(&format!("[mongo]\nuri_file = \"{}\"\n", uri_file.display()));
    assert!(!status.success() && output.contains("mongo.uri_file"), "{output}");
    assert!(!output.contains("postgres://nope"), "the file's content is never echoed: {output}");
}

#[test]
fn mongodb_over_tls_with_a_client_certificate_through_the_uri() {
    let certs = tempfile::tempdir().expect("tempdir");
    let tls = EtcdTlsFiles::generate(certs.path());
    let mongo =
        crate::support::ferretdb::FerretDb::start_tls(tls.ca.clone(), tls.server_cert.clone(), tls.server_key.clone());
    let port = mongo.tls_port().expect("TLS port");
    // tlsCertificateKeyFile: the client certificate and its key in one PEM file.
    let client_pem = certs.path().join("client-with-key.pem");
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(&tls.client_cert).expect("cert"),
        std::fs::read_to_string(&tls.client_key).expect("key")
    );
    std::fs::write(&client_pem, pem).expect("write");
    let uri = format!(
        "mongodb://127.0.0.1:{port}/?tls=true&tlsCAFile={}&tlsCertificateKeyFile={}",
        tls.ca.display(),
        client_pem.display()
    );
    let uri_file = certs.path().join("mongo-uri");
    std::fs::write(&uri_file, format!("{uri}\n")).expect("write");
    let node =
        Node::start(&format!("[executor]\nshell = \"/bin/sh\"\n[mongo]\nuri_file = \"{}\"\n", uri_file.display()));
    node.create_job(every_second("over-mongo-tls"));
    let run = node.wait_run("over-mongo-tls", Duration::from_secs(30), succeeded);
    assert!(run.is_some(), "{}\n---- ferretdb ----\n{}", node.log(), mongo.log());
    let ready = node.get("/api/v1/health/ready").body;
    assert_eq!(ready["backends"]["logs"]["ok"], true, "{ready}");
}
