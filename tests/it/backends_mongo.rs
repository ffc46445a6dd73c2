//! The MongoDB log store against a real MongoDB-wire server (FerretDB, SQLite backend), each
//! test with its own server: the conformance suite, the seed's documents both ways, a store
//! outage under load, a kill -9 during an outage, and retention.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use distcron::backend::mongo::{MongoLogStore, MongoSettings, TtlSupport};
use distcron::backend::{conformance, LogStore};
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Value};

use crate::support::ferretdb::FerretDb;
use crate::support::{wait_until, Node};

/// Direct access to the collection, as the seed (or an operator) has it.
struct Db {
    rt: tokio::runtime::Runtime,
    coll: mongodb::Collection<Document>,
}

impl Db {
    fn open(server: &FerretDb) -> Db {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let coll = rt.block_on(async {
            let client = mongodb::Client::with_uri_str(server.uri()).await.expect("client");
            client.database("cron").collection::<Document>("log")
        });
        Db { rt, coll }
    }

    fn insert(&self, docs: Vec<Document>) {
        self.rt.block_on(async { self.coll.insert_many(docs).await }).expect("insert");
    }

    /// The seed master's read: filter {jobName}, sort {startTime: -1}, skip, limit.
    fn seed_read(&self, job: &str, skip: u64, limit: i64) -> Vec<Document> {
        self.rt.block_on(async {
            let cursor = self
                .coll
                .find(doc! { "jobName": job })
                .sort(doc! { "startTime": -1 })
                .skip(skip)
                .limit(limit)
                .await
                .expect("find");
            cursor.try_collect().await.expect("read")
        })
    }

    fn find(&self, filter: Document) -> Vec<Document> {
        self.rt.block_on(async { self.coll.find(filter).await.expect("find").try_collect().await.expect("read") })
    }
}

fn node_config(server: &FerretDb, extra: &str) -> String {
    format!("[mongo]\nuri = \"{}\"\n[log_batch]\nretry_initial_ms = 100\nretry_max_ms = 1000\n{extra}", server.uri())
}

fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("")
}

fn id_of(d: &Document) -> String {
    match d.get("_id") {
        Some(Bson::String(s)) => s.clone(),
        Some(Bson::ObjectId(o)) => o.to_hex(),
        other => panic!("unexpected _id {other:?}"),
    }
}

#[test]
fn conformance_suite_passes_against_ferretdb_and_indexes_are_idempotent() {
    let server = FerretDb::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let settings =
            MongoSettings { uri: server.uri(), database: "cron".into(), collection: "log".into(), retention_days: 0 };
        let store = MongoLogStore::start(&settings).await.expect("start");
        assert_eq!(store.ttl_support(), TtlSupport::Unsupported, "FerretDB 1.x has no TTL indexes (README says so)");
        store.ensure_indexes().await.expect("creating the indexes again is a no-op");
        let client = mongodb::Client::with_uri_str(server.uri()).await.expect("client");
        let names: Vec<String> =
            client.database("cron").collection::<Document>("log").list_index_names().await.expect("indexes");
        for name in ["jobName_1_startTime_-1", "status_1_startTime_-1", "startTime_-1__id_-1", "expireAt_1"] {
            assert!(names.iter().any(|n| n == name), "index {name} missing: {names:?}");
        }
        let store = Arc::new(store);
        conformance::log_store_suite(Arc::clone(&store) as Arc<dyn LogStore>).await;
        // FerretDB 1.24 runs the stats `$group` (`$sum`) but lacks `$first`: last runs fall back
        // to one query per job (README "Reads and output size"); MongoDB refuses neither.
        let refusal = store.aggregations_refused().unwrap_or("");
        assert!(refusal.is_empty() || refusal.starts_with("last runs:"), "stats aggregation refused: {refusal}");
    });
}

fn seed_doc(job: &str, start_ms: i64, err: &str, output: &str) -> Document {
    doc! {
        "_id": ObjectId::new(), "jobName": job, "command": "echo seed", "err": err, "output": output,
        "planTime": start_ms - 2, "scheduleTime": start_ms - 1, "startTime": start_ms, "endTime": start_ms + 250,
    }
}

#[test]
fn documents_the_seed_wrote_are_served_by_the_api_and_job_log() {
    let server = FerretDb::start();
    let db = Db::open(&server);
    let node = Node::start(&node_config(&server, ""));
    let now = Utc::now().timestamp_millis();
    db.insert(vec![
        seed_doc("seedjob", now - 30_000, "", "hello\n"),
        seed_doc("seedjob", now - 20_000, "exit status 1", "boom\n"),
        // two seed runs started in the same ms as one of ours: ties are broken by _id
        seed_doc("seedjob", now - 10_000, "", "tie a\n"),
        seed_doc("seedjob", now - 10_000, "", "tie b\n"),
    ]);
    // and distcron's own runs of the same job name
    node.create_job(json!({"name": "seedjob", "command": "echo ours", "cron_expr": "0 0 1 1 *", "enabled": false, "concurrency": "allow"}));
    for _ in 0..2 {
        assert_eq!(node.post_empty("/api/v1/jobs/seedjob/run").status, 202);
    }
    let runs = wait_until(Duration::from_secs(15), || {
        let runs = node.runs("seedjob");
        (runs.iter().filter(|r| status_of(r) == "succeeded" && r["worker"] != "").count() == 2).then_some(runs)
    })
    .unwrap_or_else(|| panic!("our two runs recorded: {:?}", node.runs("seedjob")));
    assert_eq!(runs.len(), 6, "{runs:?}");
    let seed_runs: Vec<&Value> = runs.iter().filter(|r| r["worker"] == "").collect();
    assert_eq!(seed_runs.len(), 4);
    let boom = seed_runs.iter().find(|r| r["err"] == "exit status 1").expect("failed seed run");
    assert_eq!(
        (status_of(boom), boom["trigger"].as_str(), boom["duration_ms"].as_u64()),
        ("failed", Some("schedule"), Some(250))
    );
    assert!(seed_runs.iter().all(|r| r["id"].as_str().is_some_and(|id| id.len() == 24)), "ObjectId hex ids");
    let one = node.get(&format!("/api/v1/runs/{}", boom["id"].as_str().expect("id")));
    assert_eq!((one.status, one.body["output"].as_str()), (200, Some("boom\n")));
    assert_eq!(node.get("/api/v1/runs?job=seedjob&status=failed").body["runs"].as_array().map(Vec::len), Some(1));
    assert_eq!(node.get("/api/v1/runs?job=seedjob&status=succeeded").body["runs"].as_array().map(Vec::len), Some(5));

    // cursor pages of one run each visit every run once, seed and ours mixed
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/runs?job=seedjob&limit=1&cursor={c}"),
            None => "/api/v1/runs?job=seedjob&limit=1".to_owned(),
        };
        let page = node.get(&path);
        assert_eq!(page.status, 200, "{}", page.text);
        seen.extend(page.body["runs"].as_array().cloned().unwrap_or_default().into_iter().map(|r| r["id"].clone()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 10, "pagination does not end: {seen:?}");
    }
    let expected: Vec<Value> = runs.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(seen, expected, "every run once, in the same order");

    // the seed's /job/log, newest first, in its own shape
    let log = node.get("/job/log?name=seedjob&skip=2&limit=3");
    assert_eq!(log.body["errno"], 0, "{}", log.text);
    let entries = log.body["data"].as_array().expect("data");
    assert_eq!(entries.len(), 3);
    let tie = &entries[0];
    let keys: HashSet<&str> = tie.as_object().expect("object").keys().map(String::as_str).collect();
    let seed_keys: HashSet<&str> =
        ["job_name", "command", "err", "output", "plan_time", "schedule_time", "start_time", "end_time"].into();
    assert_eq!(keys, seed_keys);
    assert_eq!(tie["start_time"].as_i64(), Some(now - 10_000));
    assert_eq!(tie["plan_time"].as_i64(), Some(now - 10_002));
    assert_eq!(tie["end_time"].as_i64(), Some(now - 9_750));
    assert_eq!(entries[2]["err"], "exit status 1");
}

/// The seed's `common.JobLog`, decoded as its Go struct does (int64 times, strings).
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct SeedJobLog {
    #[serde(rename = "jobName")]
    job_name: String,
    command: String,
    err: String,
    output: String,
    #[serde(rename = "planTime")]
    plan_time: i64,
    #[serde(rename = "scheduleTime")]
    schedule_time: i64,
    #[serde(rename = "startTime")]
    start_time: i64,
    #[serde(rename = "endTime")]
    end_time: i64,
}

#[test]
fn documents_distcron_writes_satisfy_the_seeds_reader() {
    let server = FerretDb::start();
    let db = Db::open(&server);
    let node = Node::start(&node_config(&server, ""));
    node.create_job(json!({"name": "golden", "command": "echo out; echo err >&2; exit 3", "cron_expr": "0 0 1 1 *", "enabled": false}));
    node.create_job(json!({"name": "golden-ok", "command": "printf ok", "cron_expr": "0 0 1 1 *", "enabled": false, "concurrency": "allow"}));
    for job in ["golden", "golden-ok", "golden-ok", "golden-ok"] {
        assert_eq!(node.post_empty(&format!("/api/v1/jobs/{job}/run")).status, 202);
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until(Duration::from_secs(15), || {
        let done = db.find(doc! { "status": { "$in": ["succeeded", "failed"] } });
        (done.len() == 4).then_some(())
    })
    .expect("four final runs in the collection");

    let failed = db.seed_read("golden", 0, 10);
    assert_eq!(failed.len(), 1, "one document per run: running and final are one document");
    let d = &failed[0];
    for k in ["jobName", "command", "err", "output"] {
        assert!(matches!(d.get(k), Some(Bson::String(_))), "{k} is a string: {d}");
    }
    for k in ["planTime", "scheduleTime", "startTime", "endTime"] {
        assert!(matches!(d.get(k), Some(Bson::Int64(_))), "{k} is an int64 of ms: {d}");
    }
    let log: SeedJobLog = mongodb::bson::from_document(d.clone()).expect("decodes as the seed's JobLog");
    assert_eq!(log.job_name, "golden");
    assert_eq!(log.output, "out\nerr\n");
    assert!(!log.err.is_empty(), "a failed run has err set");
    assert!(
        log.plan_time <= log.schedule_time && log.schedule_time <= log.start_time && log.start_time <= log.end_time,
        "{log:?}"
    );
    assert!((log.start_time - Utc::now().timestamp_millis()).abs() < 60_000);
    assert!(matches!(d.get("_id"), Some(Bson::String(_))), "our _id is the run id");
    assert_eq!(d.get_str("status"), Ok("failed"));
    assert_eq!(d.get_i32("exitCode"), Ok(3));

    // the seed's paging: newest first, skip and limit
    let all = db.seed_read("golden-ok", 0, 10);
    assert_eq!(all.len(), 3);
    let starts: Vec<i64> = all.iter().map(|d| d.get_i64("startTime").expect("startTime")).collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first: {starts:?}");
    let page = db.seed_read("golden-ok", 1, 1);
    assert_eq!(id_of(&page[0]), id_of(&all[1]));
    for d in &all {
        let log: SeedJobLog = mongodb::bson::from_document(d.clone()).expect("decodes");
        assert_eq!((log.output.as_str(), log.err.as_str()), ("ok", ""));
    }
}

/// One line a job wrote: job, scheduled tick, run id, when it ran.
struct Line {
    job: String,
    tick: DateTime<Utc>,
    run: String,
    at_ms: i64,
}

fn read_lines(path: &std::path::Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            let job = p.next()?.to_owned();
            let tick = DateTime::parse_from_rfc3339(p.next()?).ok()?.with_timezone(&Utc);
            let run = p.next()?.to_owned();
            let at_ms = p.next()?.parse().ok()?;
            Some(Line { job, tick, run, at_ms })
        })
        .collect()
}

fn create_tickers(node: &Node, prefix: &str, n: usize, file: &std::path::Path) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i:02}");
            node.create_job(json!({
                "name": name, "cron_expr": "* * * * * *", "concurrency": "allow",
                "command": format!("echo \"$DISTCRON_JOB $DISTCRON_SCHEDULED_AT $DISTCRON_RUN_ID $(date +%s%3N)\" >> {}", file.display()),
            }));
            name
        })
        .collect()
}

fn log_health(node: &Node) -> Value {
    node.get("/api/v1/health/ready").body["backends"]["logs"].clone()
}

fn wait_spool_drained(node: &Node, deadline: Duration) {
    let drained = wait_until(deadline, || {
        let logs = log_health(node);
        (logs["ok"] == true && logs["spool_records"] == 0).then_some(())
    });
    assert!(drained.is_some(), "spool not replayed: {}", log_health(node));
}

#[test]
fn a_store_outage_under_load_loses_nothing_duplicates_nothing_and_never_pauses_scheduling() {
    let mut server = FerretDb::start();
    let mut node = Node::start(&node_config(&server, ""));
    let file = node.path("ticks.txt");
    let jobs = create_tickers(&node, "load", 20, &file);
    std::thread::sleep(Duration::from_secs(4));

    server.stop();
    let outage_start = Utc::now();
    let degraded = wait_until(Duration::from_secs(15), || {
        let r = node.get("/api/v1/health/ready");
        (r.status == 200 && r.body["status"] == "degraded" && r.body["backends"]["logs"]["ok"] == false)
            .then_some(r.body)
    })
    .expect("readiness shows the outage as degraded, 200");
    assert!(degraded["backends"]["logs"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{degraded}");
    let spooling =
        wait_until(Duration::from_secs(15), || (log_health(&node)["spool_records"].as_u64() > Some(0)).then_some(()));
    assert!(spooling.is_some(), "records spool during the outage: {}", log_health(&node));
    std::thread::sleep(
        Duration::from_secs(30).saturating_sub((Utc::now() - outage_start).to_std().unwrap_or_default()),
    );
    server.restart();
    let outage_end = Utc::now();
    wait_spool_drained(&node, Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(2));
    node.signal_and_wait("TERM", Duration::from_secs(40)).expect("graceful stop");

    let lines = read_lines(&file);
    let db = Db::open(&server);
    let docs = db.find(doc! { "jobName": { "$in": &jobs } });
    let by_id: HashMap<String, &Document> = docs.iter().map(|d| (id_of(d), d)).collect();
    assert_eq!(by_id.len(), docs.len());
    let mut missing = Vec::new();
    for l in &lines {
        match by_id.get(&l.run) {
            Some(d) => {
                assert_eq!(d.get_str("status"), Ok("succeeded"), "run {} of {}: final record wins", l.run, l.job)
            }
            None => missing.push(format!("{} {} {}", l.job, l.tick, l.run)),
        }
    }
    assert!(missing.is_empty(), "{} of {} runs not in the store: {missing:?}", missing.len(), lines.len());
    let ran: HashSet<&str> = lines.iter().map(|l| l.run.as_str()).collect();
    assert_eq!(ran.len(), lines.len(), "each run ran once");
    let extra: Vec<&Document> = docs.iter().filter(|d| !ran.contains(id_of(d).as_str())).collect();
    assert!(extra.is_empty(), "records without a run: {extra:?}");

    // Scheduling never paused: each job's ticks are consecutive seconds, through the outage.
    let mut ticks: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for l in &lines {
        ticks.entry(l.job.as_str()).or_default().push(l.tick);
    }
    assert_eq!(ticks.len(), jobs.len());
    for (job, t) in &mut ticks {
        t.sort();
        for w in t.windows(2) {
            assert_eq!((w[1] - w[0]).num_seconds(), 1, "job {job} has no run between {} and {}", w[0], w[1]);
        }
        assert!(
            t[0] < outage_start && *t.last().expect("ticks") > outage_end,
            "job {job} ran before and after the outage"
        );
    }
    assert!(lines.len() >= 20 * 35, "about 20 runs/s for 40 s: {}", lines.len());
}

#[test]
fn kill_9_during_an_outage_replays_the_spool_without_loss_or_duplicates() {
    let mut server = FerretDb::start();
    let mut node = Node::start(&node_config(&server, ""));
    let file = node.path("ticks.txt");
    let jobs = create_tickers(&node, "crash", 5, &file);
    std::thread::sleep(Duration::from_secs(3));
    server.stop();
    let spooling =
        wait_until(Duration::from_secs(15), || (log_health(&node)["spool_records"].as_u64() >= Some(20)).then_some(()));
    assert!(spooling.is_some(), "records spool: {}", log_health(&node));
    std::thread::sleep(Duration::from_secs(2));
    node.signal_and_wait("KILL", Duration::from_secs(10)).expect("killed");
    let killed_at = Utc::now().timestamp_millis();

    let spool_path = node.dir.join("data").join("spool").join("runs.jsonl");
    let spooled: Vec<Value> = std::fs::read_to_string(&spool_path)
        .expect("spool file")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(spooled.len() >= 20, "{}", spooled.len());

    // Restart while the store is still down: the node starts and schedules anyway.
    let started = Instant::now();
    node.restart();
    assert!(started.elapsed() < Duration::from_secs(15), "start waited for the store: {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    wait_spool_drained(&node, Duration::from_secs(40));
    node.signal_and_wait("TERM", Duration::from_secs(40)).expect("graceful stop");

    let db = Db::open(&server);
    let docs = db.find(doc! { "jobName": { "$in": &jobs } });
    let by_id: HashMap<String, &Document> = docs.iter().map(|d| (id_of(d), d)).collect();
    for r in &spooled {
        let id = r["id"].as_str().expect("id");
        let d = by_id.get(id).unwrap_or_else(|| panic!("spooled run {id} not in the store"));
        let stored = d.get_str("status").expect("status");
        assert_ne!(stored, "running", "run {id} left running");
        if status_of(r) != "running" {
            assert_eq!(stored, status_of(r), "run {id}: the spooled final record is stored");
        }
    }
    // No tick is recorded twice, and nothing stays `running` (interrupted runs become lost).
    let mut per_tick: HashMap<(String, i64), usize> = HashMap::new();
    for d in &docs {
        assert_ne!(d.get_str("status"), Ok("running"), "{d}");
        if d.get_str("trigger") == Ok("schedule") {
            *per_tick
                .entry((d.get_str("jobName").expect("job").to_owned(), d.get_i64("planTime").expect("plan")))
                .or_default() += 1;
        }
    }
    let dup: Vec<_> = per_tick.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "ticks recorded twice: {dup:?}");
    // Every run that started well before the kill has its record (younger ones may not: the
    // documented SIGKILL limit of records still in memory).
    for l in read_lines(&file).iter().filter(|l| l.at_ms < killed_at - 500) {
        assert!(by_id.contains_key(&l.run), "run {} of {} at {} not in the store", l.run, l.job, l.tick);
    }
}

#[test]
fn retention_removes_old_runs_per_job_and_globally() {
    let server = FerretDb::start();
    let db = Db::open(&server);
    let mut node = Node::start(&node_config(&server, "retention_days = 30\n"));
    node.create_job(
        json!({"name": "short", "command": "true", "cron_expr": "0 0 1 1 *", "enabled": false, "retention_days": 1}),
    );
    node.create_job(
        json!({"name": "forever", "command": "true", "cron_expr": "0 0 1 1 *", "enabled": false, "retention_days": 0}),
    );
    let days_ago = |d: i64| (Utc::now() - chrono::Duration::days(d)).timestamp_millis();
    let doc_at = |job: &str, ms: i64| {
        let mut d = seed_doc(job, ms, "", "x");
        d.insert("_id", format!("{job}-{ms}"));
        d.insert("status", "succeeded");
        d
    };
    db.insert(vec![
        doc_at("short", days_ago(2)),
        doc_at("short", days_ago(0)),
        doc_at("forever", days_ago(400)),
        doc_at("other", days_ago(40)),
        doc_at("other", days_ago(10)),
        seed_doc("seed-old", days_ago(45), "", "from the seed"),
        seed_doc("seed-new", days_ago(1), "", "from the seed"),
    ]);
    // Retention runs at start (then hourly): restart to apply it now.
    node.signal_and_wait("TERM", Duration::from_secs(20)).expect("stop");
    node.restart();
    let remaining = || -> HashSet<String> {
        let now = Utc::now().timestamp_millis();
        db.find(doc! {})
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d.get_str("jobName").unwrap_or(""),
                    (now - d.get_i64("startTime").unwrap_or(0)) / 86_400_000
                )
            })
            .collect()
    };
    let purged = wait_until(Duration::from_secs(15), || (remaining().len() == 4).then_some(()));
    assert!(purged.is_some(), "retention left: {:?}\n{}", remaining(), node.log());
    let remaining = remaining();
    let expected: HashSet<String> =
        ["short/0", "forever/400", "other/10", "seed-new/1"].iter().map(|s| s.to_string()).collect();
    assert_eq!(remaining, expected);
    assert!(node.log().contains("Retention deleted old runs. deleted=3"), "{}", node.log());
}
