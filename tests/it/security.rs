//! The perimeter against real `distcron` processes (README "Security"): the attack table (each
//! case asserting that nothing was saved, changed or run: the job store read back through the
//! API and a marker file the would-be command writes), the generated token of a fresh start,
//! `insecure_no_auth` and short tokens beyond loopback, response headers, and HTTPS with a
//! certificate made in the test.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{free_port, Node, NodeOptions, Resp};

const EVIL: &str = "https://evil.example";

/// The exact drive-by payload, writing `marker`.
fn drive_by_job(marker: &std::path::Path) -> String {
    json!({"name": "x", "command": format!("id > {}", marker.display()), "cron_expr": "@yearly"}).to_string()
}

fn code(r: &Resp) -> &str {
    r.body["error"]["code"].as_str().unwrap_or("")
}

/// Asserts the store holds exactly the untouched `victim`, that it never ran, and that no
/// command of the attacker ran; then proves the node does run `victim` for a legitimate caller.
fn assert_nothing_happened(node: &Node, victim: &Value, marker: &std::path::Path, victim_marker: &std::path::Path) {
    let jobs = node.get("/api/v1/jobs");
    assert_eq!(jobs.status, 200, "{}", jobs.text);
    let names: Vec<&str> =
        jobs.body["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(names, ["victim"], "nothing saved, nothing deleted");
    let stored = &jobs.body["jobs"][0];
    assert_eq!(stored["version"], victim["version"], "victim not changed");
    assert_eq!(stored["enabled"], true, "victim not disabled");
    assert!(node.runs("victim").is_empty(), "victim not run");
    assert!(!marker.exists(), "the attacker's command did not run");
    assert!(!victim_marker.exists(), "the victim's command did not run");
    // Control: the refusals above were the perimeter, not a node that cannot run anything.
    assert_eq!(node.post_empty("/api/v1/jobs/victim/run").status, 202);
    assert!(
        crate::support::wait_until(Duration::from_secs(15), || victim_marker.exists().then_some(())).is_some(),
        "the legitimate run-now ran:\n{}",
        node.log()
    );
}

fn victim(node: &Node) -> Value {
    let marker = node.path("victim-ran");
    node.create_job(json!({"name": "victim", "command": format!("touch {}", marker.display()), "cron_expr": "@yearly"}))
}

#[test]
fn attack_table_with_auth_on_changes_nothing() {
    let node = Node::start("");
    let victim = victim(&node);
    let marker = node.path("x-ran");
    let job = drive_by_job(&marker);
    let cross = [("Origin", EVIL), ("Sec-Fetch-Site", "cross-site")];
    let query = format!("/job/save?job={}", urlencode(&job));
    let other_port = format!("http://127.0.0.1:{}", free_port());
    let form = format!("job={}", urlencode(&job));
    // (what, response, expected status, expected code or "" for the seed's shape)
    let cases: Vec<(&str, Resp, u16, &str)> = vec![
        ("issue's GET /job/save, no token", node.request("GET", &query, &cross, None, false), 401, ""),
        // Even a request that somehow carries the token: GET never changes anything.
        ("issue's GET /job/save, with token", node.request("GET", &query, &cross, None, true), 405, ""),
        (
            "body-less cross-site run-now, no token",
            node.request("POST", "/api/v1/jobs/victim/run", &cross, None, false),
            403,
            "cross_origin_refused",
        ),
        (
            "body-less cross-site run-now, with token",
            node.request("POST", "/api/v1/jobs/victim/run", &cross, None, true),
            403,
            "cross_origin_refused",
        ),
        (
            "form POST from another loopback origin",
            node.request(
                "POST",
                "/job/save",
                &[("Origin", other_port.as_str()), ("Sec-Fetch-Site", "same-site")],
                Some(("application/x-www-form-urlencoded", form.as_bytes())),
                true,
            ),
            403,
            "cross_origin_refused",
        ),
        (
            "form POST from another origin, Origin only",
            node.request(
                "POST",
                "/job/save",
                &[("Origin", EVIL)],
                Some(("application/x-www-form-urlencoded", form.as_bytes())),
                true,
            ),
            403,
            "cross_origin_refused",
        ),
        (
            "DNS rebinding: Host evil.example",
            node.request("POST", "/api/v1/jobs/victim/disable", &[("Host", "evil.example")], None, true),
            421,
            "host_not_allowed",
        ),
        (
            "DNS rebinding read: Host rebind.evil.example",
            node.request("GET", "/api/v1/jobs", &[("Host", "rebind.evil.example:8070")], None, true),
            421,
            "host_not_allowed",
        ),
        ("no token", node.request("POST", "/api/v1/jobs/victim/run", &[], None, false), 401, "unauthorized"),
        (
            "wrong token",
            node.request("DELETE", "/api/v1/jobs/victim", &[("Authorization", "Bearer not-the-token")], None, false),
            401,
            "unauthorized",
        ),
        (
            "no token, create",
            node.request("POST", "/api/v1/jobs", &[], Some(("application/json", job.as_bytes())), false),
            401,
            "unauthorized",
        ),
    ];
    for (what, r, status, expected) in &cases {
        assert_eq!(r.status, *status, "{what}: {}", r.text);
        if expected.is_empty() {
            assert_eq!(r.body["errno"], -1, "{what}: the seed's shape: {}", r.text);
        } else {
            assert_eq!(code(r), *expected, "{what}: {}", r.text);
        }
    }
    assert!(!node.log().contains(node.token.as_deref().expect("token")), "the token is never logged");
    assert_nothing_happened(&node, &victim, &marker, &node.path("victim-ran"));
}

#[test]
fn attack_table_with_auth_off_is_held_by_the_perimeter_alone() {
    let mut node = Node::start("insecure_no_auth = true\n");
    assert!(node.token.is_none() && !node.token_file().exists(), "auth off: no token generated");
    assert!(node.log().contains("Authentication is OFF"), "warned at start");
    node.token = None;
    let _ = victim(&node);
    let marker = node.path("x-ran");
    let job = drive_by_job(&marker);
    let cross = [("Origin", EVIL), ("Sec-Fetch-Site", "cross-site")];
    // The two requests, exactly.
    let save = node.request("GET", &format!("/job/save?job={}", urlencode(&job)), &cross, None, false);
    assert_eq!(save.status, 405, "GET never saves: {}", save.text);
    let run = node.request("POST", "/api/v1/jobs/victim/run", &cross, None, false);
    assert_eq!((run.status, code(&run)), (403, "cross_origin_refused"), "{}", run.text);
    let run_x = node.request("POST", "/api/v1/jobs/x/run", &cross, None, false);
    assert_eq!(run_x.status, 403);
    let form = format!("job={}", urlencode(&job));
    let r = node.request(
        "POST",
        "/job/save",
        &[("Origin", EVIL)],
        Some(("application/x-www-form-urlencoded", form.as_bytes())),
        false,
    );
    assert_eq!((r.status, code(&r)), (403, "cross_origin_refused"), "{}", r.text);
    let r = node.request("DELETE", "/api/v1/jobs/victim", &[("Sec-Fetch-Site", "cross-site")], None, false);
    assert_eq!(r.status, 403);
    let r = node.request("GET", "/api/v1/jobs", &[("Host", "evil.example")], None, false);
    assert_eq!((r.status, code(&r)), (421, "host_not_allowed"), "rebinding cannot read either");
    // The same-origin page (and curl, which sends no Origin) still works.
    let own = format!("http://127.0.0.1:{}", node.port);
    let r = node.request("POST", "/api/v1/jobs/victim/disable", &[("Origin", own.as_str())], None, false);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = node.request("POST", "/api/v1/jobs/victim/enable", &[("Sec-Fetch-Site", "same-origin")], None, false);
    assert_eq!(r.status, 200, "{}", r.text);
    let victim = node.get("/api/v1/jobs/victim").body;
    assert_nothing_happened(&node, &victim, &marker, &node.path("victim-ran"));
}

#[test]
fn allowed_hosts_extend_the_host_names() {
    let node = Node::start("[http]\nallowed_hosts = [\"cron.example.com\"]\n");
    assert_eq!(node.request("GET", "/api/v1/jobs", &[("Host", "cron.example.com:8070")], None, true).status, 200);
    assert_eq!(node.request("GET", "/api/v1/jobs", &[("Host", "localhost")], None, true).status, 200);
    assert_eq!(node.request("GET", "/api/v1/jobs", &[("Host", "other.example.com")], None, true).status, 421);
}

#[test]
fn fresh_start_generates_a_0600_token_and_requires_it() {
    let node = Node::start("");
    let path = node.token_file();
    let mode = std::fs::metadata(&path).expect("data_dir/api_token exists").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = node.token.clone().expect("read from the file");
    assert_eq!(token.len(), 64, "256 bits in hex");
    let denied = node.request("GET", "/api/v1/jobs", &[], None, false);
    assert_eq!((denied.status, code(&denied)), (401, "unauthorized"));
    let bearer = format!("Bearer {token}");
    let ok = node.request("GET", "/api/v1/jobs", &[("Authorization", bearer.as_str())], None, false);
    assert_eq!(ok.status, 200, "{}", ok.text);
    let log = node.log();
    assert!(log.contains(&path.display().to_string()), "the log says where the token is");
    assert!(!log.contains(&token), "and never the token");
}

#[test]
fn every_response_carries_the_security_headers() {
    let node = Node::start("");
    for r in [
        node.get("/api/v1/jobs"),
        node.get("/api/v1/nothing"),
        node.get("/job/list"),
        node.post_form("/job/save", &[("job", "{")]),
        node.request("GET", "/api/v1/jobs", &[], None, false),
        node.request("GET", "/api/v1/jobs", &[("Host", "evil.example")], None, true),
    ] {
        assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
        assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()), "{r:?}");
        assert!(r.header("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    }
    let page = node.get("/");
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("default-src 'self'")));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
}

fn distcron(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_distcron"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run distcron")
}

/// Runs distcron with `config` and expects it to refuse to start with one line containing `needle`.
fn refuses(config: &str, extra: &[&str], needle: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n{config}", dir.path().join("d").display())).expect("write");
    let mut args = vec!["--config", cfg.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    let out = distcron(&args, dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{config} should be refused: {err}");
    let last = err.trim().lines().last().unwrap_or("");
    assert!(last.starts_with("distcron: ") && last.contains(needle), "{config}: {err}");
}

#[test]
fn insecure_no_auth_and_short_tokens_are_refused_beyond_loopback() {
    let listen = format!("listen = \"0.0.0.0:{}\"\n", free_port());
    refuses(&format!("{listen}insecure_no_auth = true\n"), &[], "loopback");
    refuses(&format!("{listen}api_token = \"short-token\"\n"), &[], "shorter than 32");
    refuses("api_token = \"a\"\napi_token_file = \"/x\"\n", &[], "api_token_file");
    refuses("api_token_file = \"/nonexistent/token\"\n", &[], "/nonexistent/token");
    refuses(
        "[http]\ntls_cert_file = \"/nonexistent/cert.pem\"\ntls_key_file = \"/nonexistent/key.pem\"\n",
        &[],
        "http.tls_cert_file",
    );
}

#[test]
fn token_file_and_secret_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "file-token-0123456789abcdef0123456789\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut node = Node::start(&format!("api_token_file = \"{}\"\n", file.display()));
    assert!(!node.token_file().exists(), "no token generated when a file is configured");
    assert_eq!(node.request("GET", "/api/v1/jobs", &[], None, false).status, 401);
    node.token = Some("file-token-0123456789abcdef0123456789".into());
    assert_eq!(node.get("/api/v1/jobs").status, 200);
    // A token on the command line works, with a warning to use the file instead.
    let port = free_port();
    let data = dir.path().join("d2");
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .args(["--listen", &listen, "--data-dir", data.to_str().expect("utf8"), "--api-token", "flag-token-value"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("flag.log")).expect("log"))
        .spawn()
        .expect("spawn");
    let warned = crate::support::wait_until(Duration::from_secs(20), || {
        let log = std::fs::read_to_string(dir.path().join("flag.log")).unwrap_or_default();
        (log.contains("flag=--api-token") && log.contains("distcron started")).then_some(log)
    });
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let log = warned.expect("warning about --api-token");
    assert!(!log.contains("flag-token-value"), "the token is never logged");
}

/// A CA and a certificate for localhost/127.0.0.1 signed by it, written to `dir`: the CA's PEM
/// and the `[http]` TLS config lines.
pub(crate) fn make_certificate(dir: &std::path::Path) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "distcron test CA");
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

#[test]
fn https_with_a_generated_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, config) = make_certificate(dir.path());
    let node = Node::start_with(&config, NodeOptions { tls_ca_pem: Some(ca), ..NodeOptions::default() });
    assert!(node.url("/").starts_with("https://"));
    let r = node.get("/api/v1/jobs");
    assert_eq!(r.status, 200, "a client verifying the certificate gets the API: {}", r.text);
    assert_eq!(r.header("strict-transport-security"), Some("max-age=31536000"));
    assert_eq!(node.create_job(json!({"name": "tls", "command": "true", "cron_expr": "@yearly"}))["name"], "tls");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = ureq::get(&format!("http://127.0.0.1:{}/api/v1/health/live", node.port)).call();
    assert!(!matches!(plain, Ok(_) | Err(ureq::Error::Status(..))), "plain HTTP must fail: {plain:?}");
    // A client that does not trust the CA is refused by TLS.
    let untrusting = ureq::get(&format!("https://127.0.0.1:{}/api/v1/health/live", node.port)).call();
    assert!(untrusting.is_err(), "an unverified certificate must not be accepted");
}

#[test]
fn a_workers_health_listener_serves_https_and_guards_its_host() {
    let etcd = crate::support::etcd::EtcdServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, tls) = make_certificate(dir.path());
    let config = format!(
        "role = \"worker\"\nallow_local_run_log = true\n[etcd]\nendpoints = [\"{}\"]\n{tls}",
        etcd.endpoints()[0]
    );
    let worker = Node::start_with(&config, NodeOptions { tls_ca_pem: Some(ca), ..NodeOptions::default() });
    let ready = worker.get("/api/v1/health");
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["role"], "worker");
    assert_eq!(ready.header("strict-transport-security"), Some("max-age=31536000"));
    assert_eq!(worker.request("GET", "/api/v1/health", &[], None, false).status, 401, "its token is required");
    let r = worker.request("GET", "/api/v1/health", &[("Host", "evil.example")], None, true);
    assert_eq!((r.status, code(&r)), (421, "host_not_allowed"));
    let plain = ureq::get(&format!("http://127.0.0.1:{}/api/v1/health/live", worker.port)).call();
    assert!(!matches!(plain, Ok(_) | Err(ureq::Error::Status(..))), "plain HTTP must fail: {plain:?}");
}

/// Percent-encodes everything but unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
