//! Live output (README "Live output"): `GET /api/v1/runs/{id}/output` as server-sent events on a
//! real node, resumed, truncated, limited, and proxied by a master to the worker running it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::etcd::EtcdServer;
use crate::support::ferretdb::FerretDb;
use crate::support::{agent_trusting, wait_until, Node, NodeOptions};

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// A server-sent event stream being read.
pub struct Sse {
    reader: BufReader<Box<dyn Read + Send + Sync>>,
}

impl Sse {
    /// Opens `path` on `node` with its token (and `extra` headers); panics unless 200.
    pub fn open(node: &Node, path: &str, extra: &[(&str, &str)]) -> Sse {
        Self::open_with(&ureq::agent(), node, path, extra)
    }

    /// [`Sse::open`] through `agent` (e.g. one trusting a test CA).
    pub fn open_with(agent: &ureq::Agent, node: &Node, path: &str, extra: &[(&str, &str)]) -> Sse {
        let mut req = agent.get(&node.url(path)).timeout(Duration::from_secs(60));
        if let Some(t) = &node.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        for (k, v) in extra {
            req = req.set(k, v);
        }
        let resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.content_type(), "text/event-stream");
        Sse { reader: BufReader::new(resp.into_reader()) }
    }

    /// The next event; `None` at the end of the stream.
    pub fn next(&mut self) -> Option<Event> {
        let (mut event, mut id, mut data) = (String::new(), None, String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if event.is_empty() && data.is_empty() {
                    continue; // after a comment
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Event { event, id, data });
            }
            if line.starts_with(':') {
                continue;
            }
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }

    /// Every event up to and including `end` (or the end of the stream).
    pub fn rest(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next() {
            let end = e.event == "end";
            out.push(e);
            if end {
                break;
            }
        }
        out
    }
}

/// The text of the `output` events, checking their offsets are contiguous from `start`.
fn text_of(events: &[Event], start: u64) -> String {
    let mut offset = start;
    let mut text = String::new();
    for e in events.iter().filter(|e| e.event == "output") {
        assert_eq!(e.data["offset"].as_u64(), Some(offset), "contiguous offsets: {e:?}");
        offset += e.data["bytes"].as_u64().expect("bytes");
        assert_eq!(e.id.as_deref(), Some(offset.to_string().as_str()), "id = offset after the chunk");
        text.push_str(e.data["text"].as_str().expect("text"));
    }
    text
}

fn release_command(release: &Path, lines: u32) -> String {
    format!(
        "for i in $(seq 1 {lines}); do echo line-$i; sleep 0.2; done; while [ ! -e {r} ]; do sleep 0.1; done; echo done",
        r = release.display()
    )
}

fn started_run(node: &Node, job: &str) -> String {
    assert_eq!(node.post_empty(&format!("/api/v1/jobs/{job}/run")).status, 202);
    let run = node.wait_run(job, Duration::from_secs(15), |r| r["status"] == "running").expect("the run starts");
    run["id"].as_str().expect("id").to_owned()
}

#[test]
fn a_running_run_streams_its_lines_live_then_its_end_and_resumes_from_an_offset() {
    let node = Node::start("[executor]\nshell = \"/bin/sh\"\n[http]\nmax_output_followers = 1\n");
    let release = node.dir.join("release");
    node.create_job(json!({"name": "ticker", "command": release_command(&release, 15), "cron_expr": "@yearly"}));
    let id = started_run(&node, "ticker");
    let path = format!("/api/v1/runs/{id}/output?follow=1");
    let mut sse = Sse::open(&node, &path, &[]);

    // Lines arrive in order while the run is still running (it cannot end before `release`).
    let mut seen = Vec::new();
    while seen.iter().filter(|e: &&Event| e.event == "output").count() < 3 {
        seen.push(sse.next().expect("an event"));
    }
    assert!(seen.iter().all(|e| e.event == "output"), "{seen:?}");
    assert!(text_of(&seen, 0).starts_with("line-1\n"), "{seen:?}");
    assert_eq!(node.get(&format!("/api/v1/runs/{id}")).body["status"], "running");

    // One follower at most on this node; a one-shot read is not a follower.
    let second = node.get(&path);
    assert_eq!(second.status, 429, "{}", second.text);
    assert_eq!(second.body["error"]["code"], "too_many_requests");
    let once = node.get(&format!("/api/v1/runs/{id}/output"));
    assert_eq!(once.status, 200);
    assert!(!once.text.contains("event: end"), "a running run has no end yet: {}", once.text);
    // Auth as everywhere.
    let anonymous = ureq::get(&node.url(&path)).call();
    assert!(matches!(anonymous, Err(ureq::Error::Status(401, _))), "{anonymous:?}");

    std::fs::write(&release, "").expect("release the job");
    seen.extend(sse.rest());
    let end = seen.last().expect("events");
    assert_eq!(end.event, "end", "{seen:?}");
    assert_eq!(end.data["status"], "succeeded");
    assert_eq!(end.data["exit_code"], 0);
    let expected: String = (1..=15).map(|i| format!("line-{i}\n")).collect::<String>() + "done\n";
    assert_eq!(text_of(&seen, 0), expected);
    assert_eq!(end.data["output_bytes"].as_u64(), Some(expected.len() as u64));
    assert!(sse.next().is_none(), "the stream closes after end");

    // Finished: the stored output and end at once; resumed by ?offset= or Last-Event-ID.
    let stored = node
        .wait_run("ticker", Duration::from_secs(10), |r| r["id"] == id.as_str() && r["status"] == "succeeded")
        .expect("recorded");
    assert_eq!(stored["output_bytes"].as_u64(), Some(expected.len() as u64));
    let all = Sse::open(&node, &path, &[]).rest();
    assert_eq!(text_of(&all, 0), expected);
    assert_eq!(all.last().map(|e| e.event.as_str()), Some("end"));
    let cut = "line-1\nline-2\n".len() as u64;
    let resumed = Sse::open(&node, &format!("{path}&offset={cut}"), &[]).rest();
    assert_eq!(text_of(&resumed, cut), &expected[cut as usize..]);
    let by_header = Sse::open(&node, &path, &[("Last-Event-ID", &cut.to_string())]).rest();
    assert_eq!(text_of(&by_header, cut), &expected[cut as usize..]);
    let bad = node.get(&format!("/api/v1/runs/{id}/output?offset=-1"));
    assert_eq!((bad.status, bad.body["error"]["field"].as_str()), (400, Some("offset")));
}

#[test]
fn output_beyond_the_cap_shows_the_gap_consistent_with_the_stored_head_and_tail() {
    let node = Node::start("[executor]\nshell = \"/bin/sh\"\nmax_output_bytes = 1024\n");
    let release = node.dir.join("release");
    let command = format!("seq 1 3000; while [ ! -e {r} ]; do sleep 0.1; done; echo last-line", r = release.display());
    node.create_job(json!({"name": "chatty", "command": command, "cron_expr": "@yearly"}));
    let id = started_run(&node, "chatty");
    let mut sse = Sse::open(&node, &format!("/api/v1/runs/{id}/output?follow=1"), &[]);
    let mut events = Vec::new();
    while !events.iter().any(|e: &Event| e.event == "truncated") {
        events.push(sse.next().expect("an event"));
    }
    std::fs::write(&release, "").expect("release the job");
    events.extend(sse.rest());

    let gap = events.iter().find(|e| e.event == "truncated").expect("a gap");
    let (from, to) = (gap.data["from"].as_u64().expect("from"), gap.data["to"].as_u64().expect("to"));
    assert_eq!(gap.data["bytes"].as_u64(), Some(to - from));
    let split = events.iter().position(|e| e.event == "truncated").expect("gap");
    let head = text_of(&events[..split], 0);
    assert_eq!(head.len() as u64, from);
    let end = events.last().expect("end");
    assert_eq!(end.event, "end");
    assert_eq!(end.data["output_truncated"], true);
    let total = end.data["output_bytes"].as_u64().expect("output_bytes");
    // The tail seen live may start later than `to` (the capture moved on while we read): what
    // counts is that it ends where the output ends and matches the stored tail.
    let tail = events[split + 1..].iter().filter(|e| e.event == "output").collect::<Vec<_>>();
    let first_tail = tail.first().map(|e| e.data["offset"].as_u64().expect("offset")).expect("tail events");
    let tail_events: Vec<Event> = tail.into_iter().cloned().collect();
    let tail_text = text_of(&tail_events, first_tail);
    assert_eq!(first_tail + tail_text.len() as u64, total);
    assert!(tail_text.ends_with("3000\nlast-line\n"), "{tail_text}");

    node.wait_run("chatty", Duration::from_secs(10), |r| r["id"] == id.as_str() && r["status"] == "succeeded")
        .expect("recorded");
    let stored = node.get(&format!("/api/v1/runs/{id}")).body;
    let output = stored["output"].as_str().expect("output");
    let (stored_head, rest) = output.split_once("\n… [").expect("marker");
    let stored_tail = rest.split_once("truncated] …\n").expect("marker").1;
    assert_eq!(head, stored_head);
    assert!(stored_tail.ends_with(&tail_text) || tail_text.ends_with(stored_tail), "{stored_tail} / {tail_text}");

    // The finished run streams exactly the stored head, gap and tail.
    let again = Sse::open(&node, &format!("/api/v1/runs/{id}/output"), &[]).rest();
    let split = again.iter().position(|e| e.event == "truncated").expect("gap");
    assert_eq!(text_of(&again[..split], 0), stored_head);
    let to = again[split].data["to"].as_u64().expect("to");
    assert_eq!(text_of(&again[split + 1..], to), stored_tail);
    assert_eq!(to + stored_tail.len() as u64, total);
}

const CLUSTER_TOKEN: &str = "live-output-cluster-token-0123456789abcdef";

/// A node of `role` over `etcd` and `mongo` with the cluster's shared token; `http_extra` goes
/// into `[http]`.
fn cluster_node(etcd: &EtcdServer, mongo: &FerretDb, role: &str, http_extra: &str, options: NodeOptions) -> Node {
    let config = format!(
        "role = \"{role}\"\napi_token = \"{CLUSTER_TOKEN}\"\n[scheduler]\nheartbeat_secs = 1\n[executor]\nshell = \"/bin/sh\"\n\
         [etcd]\nendpoints = {}\nsession_ttl_secs = 3\n[mongo]\nuri = \"{}\"\n[http]\n{http_extra}",
        etcd.endpoints_toml(),
        mongo.uri()
    );
    let mut node = Node::start_with(&config, options);
    node.token = Some(CLUSTER_TOKEN.to_owned());
    node
}

fn wait_for_a_worker(master: &Node) {
    wait_until(Duration::from_secs(20), || {
        let workers = master.get("/api/v1/workers").body;
        workers["workers"].as_array().filter(|w| !w.is_empty()).map(|_| ())
    })
    .expect("the worker joins");
}

#[test]
fn a_master_proxies_the_live_output_of_a_worker_serving_https() {
    let etcd = EtcdServer::start();
    let mongo = FerretDb::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, tls) = crate::security::make_certificate(dir.path());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("CA file");
    let tls = tls.replacen("[http]\n", "", 1);
    let options = NodeOptions { tls_ca_pem: Some(ca.clone()), ..NodeOptions::default() };
    let worker = cluster_node(&etcd, &mongo, "worker", &tls, options);
    let master = cluster_node(
        &etcd,
        &mongo,
        "master",
        &format!("peer_ca_file = \"{}\"\n", ca_file.display()),
        NodeOptions::default(),
    );
    wait_for_a_worker(&master);
    let listed = master.get("/api/v1/workers").body.to_string();
    assert!(listed.contains(&format!("\"api_addr\":\"https://127.0.0.1:{}\"", worker.port)), "{listed}");
    let release = worker.dir.join("release");
    master.create_job(json!({"name": "secure", "command": release_command(&release, 3), "cron_expr": "@yearly"}));
    let id = started_run(&master, "secure");
    let mut sse = Sse::open(&master, &format!("/api/v1/runs/{id}/output?follow=1"), &[]);
    let first = sse.next().expect("an event through the master over HTTPS");
    assert_eq!(first.event, "output");
    assert!(first.data["text"].as_str().is_some_and(|t| t.starts_with("line-1\n")), "{first:?}");
    std::fs::write(&release, "").expect("release the job");
    let mut events = vec![first];
    events.extend(sse.rest());
    assert_eq!(text_of(&events, 0), "line-1\nline-2\nline-3\ndone\n");
    // Straight to the worker, trusting its CA.
    let direct = Sse::open_with(&agent_trusting(&ca), &worker, &format!("/api/v1/runs/{id}/output"), &[]).rest();
    assert_eq!(text_of(&direct, 0), "line-1\nline-2\nline-3\ndone\n");
}

#[test]
fn a_master_proxies_the_live_output_of_a_run_on_a_worker() {
    let etcd = EtcdServer::start();
    let mongo = FerretDb::start();
    let mut worker = cluster_node(&etcd, &mongo, "worker", "", NodeOptions::default());
    let master = cluster_node(&etcd, &mongo, "master", "", NodeOptions::default());
    wait_for_a_worker(&master);
    let listed = master.get("/api/v1/workers").body.to_string();
    assert!(listed.contains(&format!("\"api_addr\":\"http://127.0.0.1:{}\"", worker.port)), "{listed}");

    let release = worker.dir.join("release");
    master.create_job(json!({"name": "remote", "command": release_command(&release, 5), "cron_expr": "@yearly"}));
    let id = started_run(&master, "remote");
    let mut sse = Sse::open(&master, &format!("/api/v1/runs/{id}/output?follow=1"), &[]);
    let mut events = Vec::new();
    while events.iter().filter(|e: &&Event| e.event == "output").count() < 2 {
        events.push(sse.next().expect("an event through the master"));
    }
    assert_eq!(master.get(&format!("/api/v1/runs/{id}")).body["status"], "running");
    std::fs::write(&release, "").expect("release the job");
    events.extend(sse.rest());
    let expected: String = (1..=5).map(|i| format!("line-{i}\n")).collect::<String>() + "done\n";
    assert_eq!(text_of(&events, 0), expected);
    assert_eq!(events.last().map(|e| (e.event.as_str(), e.data["status"].clone())), Some(("end", json!("succeeded"))));

    // The worker's listener serves the route with the same auth; other API routes stay off it.
    let anonymous = ureq::get(&worker.url(&format!("/api/v1/runs/{id}/output"))).call();
    assert!(matches!(anonymous, Err(ureq::Error::Status(401, _))), "{anonymous:?}");
    assert_eq!(worker.get(&format!("/api/v1/runs/{id}/output")).status, 200);
    assert_eq!(worker.get("/api/v1/jobs").status, 404);

    // A run whose worker is gone: 502 naming it, not a hang.
    let id2 = {
        std::fs::remove_file(&release).expect("re-arm");
        started_run(&master, "remote")
    };
    worker.signal_and_wait("KILL", Duration::from_secs(5));
    let gone = master.get(&format!("/api/v1/runs/{id2}/output?follow=1"));
    assert!(
        gone.status == 502 && gone.body["error"]["code"] == "worker_unreachable"
            || gone.status == 200 && gone.text.contains("event: end"),
        "{} {}",
        gone.status,
        gone.text
    );
}

#[test]
fn cli_runs_tail_follow_prints_lines_while_the_run_runs_then_its_end() {
    let node = Node::start("[executor]\nshell = \"/bin/sh\"\n");
    let release = node.dir.join("release");
    node.create_job(json!({"name": "tailed", "command": release_command(&release, 3), "cron_expr": "@yearly"}));
    let id = started_run(&node, "tailed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_distcron"))
        .args(["runs", "tail", &id, "-f", "--server", &node.url(""), "--token-file"])
        .arg(node.token_file())
        .env_remove("DISTCRON_SERVER")
        .env_remove("DISTCRON_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the CLI");
    // The stored record holds no output while the run runs: these lines come from the stream.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    while !printed.contains("line-3\n") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).expect("read") > 0, "CLI ended early: {printed}");
        printed.push_str(&line);
    }
    assert_eq!(printed, "line-1\nline-2\nline-3\n");
    assert_eq!(node.get(&format!("/api/v1/runs/{id}")).body["status"], "running");
    std::fs::write(&release, "").expect("release the job");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read the rest");
    let out = child.wait_with_output().expect("the CLI ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(rest, "done\n");
    assert!(stderr.contains(&format!("Run {id} of job tailed: succeeded (exit 0)")), "{stderr}");
}
