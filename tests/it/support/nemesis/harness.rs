//! The nemesis harness: a 3-member etcd, FerretDB, a master and N workers, each in its own
//! network namespace; a workload of 1 s and 5 s jobs under `allow`, `forbid` and `replace`; a
//! seeded nemesis; then the checker over the history and the ledger.
//!
//! Owns: the cluster layout (`10.77.0.0/24` inside the namespaces it creates), the workload
//! script, the fault schedule and its log. Leaves to others: namespaces and processes
//! ([`super::netns`]), the verdict ([`super::checker`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::checker::{self, Anomaly, Bounds, Class, Fault, FaultKind, HistoryLine, JobSpec, Policy, Record, Report};
use super::netns::{Net, NodeNs, NsProc, HUB_ADDR};
use crate::support::{wait_until, Node};

/// What to run: how long the workload lasts, the nemesis seed, how many workers.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Workload length (faults inside it), seconds.
    pub secs: u64,
    /// Nemesis seed (`NEMESIS_SEED` replays a run).
    pub seed: u64,
    /// Workers (3–5).
    pub workers: usize,
}

/// A finished nemesis run.
#[derive(Debug)]
pub struct Outcome {
    pub profile: Profile,
    pub report: Report,
    pub faults: Vec<Fault>,
    /// Run-now requests accepted and kills requested through the master.
    pub run_nows: usize,
    pub kills: usize,
    /// How delay was injected (netem or its stand-in).
    pub delay_mode: String,
}

impl Outcome {
    /// Faults per kind, e.g. `partition worker from etcd ×2, …`.
    pub fn fault_summary(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for f in &self.faults {
            let kind = match f.kind {
                FaultKind::ClockJump(_) => "clock jump ±30s".to_owned(),
                ref k => k.to_string(),
            };
            *counts.entry(kind).or_default() += 1;
        }
        counts.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
    }

    /// A one-line summary (a row of the README's table).
    pub fn row(&self) -> String {
        let anomalies: Vec<String> = self
            .report
            .counts()
            .iter()
            .filter(|(_, bad, doc)| bad + doc > 0)
            .map(|(c, bad, doc)| format!("{c}: {bad} + {doc} documented"))
            .collect();
        format!(
            "| {} | {} s | {} workers | {} | {} ({}) | {} | {} |",
            self.profile.seed,
            self.profile.secs,
            self.profile.workers,
            self.report.ticks_checked,
            self.faults.len(),
            self.fault_summary(),
            self.run_nows + self.kills,
            if anomalies.is_empty() { "0".to_owned() } else { anomalies.join("; ") }
        )
    }
}

/// splitmix64: a small seeded generator (the nemesis' only source of randomness).
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The seed: `NEMESIS_SEED` when set, else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("NEMESIS_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

const TOKEN: &str = "nemesis-token-0123456789abcdef0123456789abcdef";
const SESSION_TTL_SECS: i64 = 4;
const MISFIRE_GRACE_MS: i64 = 8000;
const ETCD_HOSTS: [u8; 3] = [10, 11, 12];
const MASTER_HOST: u8 = 20;
const WORKER_HOST: u8 = 30;

/// The workload: (name, cron, policy, seconds each run sleeps).
fn workload() -> Vec<(&'static str, &'static str, Policy, &'static str)> {
    vec![
        ("n1-allow", "* * * * * *", Policy::Allow, "0.5"),
        ("n1-allow-b", "* * * * * *", Policy::Allow, "1.5"),
        ("n1-forbid", "* * * * * *", Policy::Forbid, "1.5"),
        ("n1-forbid-b", "* * * * * *", Policy::Forbid, "0.3"),
        ("n1-replace", "* * * * * *", Policy::Replace, "2"),
        ("n1-replace-b", "* * * * * *", Policy::Replace, "0.5"),
        ("n5-allow", "*/5 * * * * *", Policy::Allow, "3"),
        ("n5-forbid", "*/5 * * * * *", Policy::Forbid, "7"),
        ("n5-forbid-b", "*/5 * * * * *", Policy::Forbid, "2"),
        ("n5-replace", "*/5 * * * * *", Policy::Replace, "7"),
    ]
}

/// The command every workload run executes: history lines (by the real clock: libfaketime is
/// dropped), a sleep, and a write to the job's fenced resource under `flock`, accepted only
/// when the run's fence is higher than the last one the resource saw.
const WORK_SH: &str = r#"#!/bin/sh
# usage: work.sh HISTORY RESOURCES SLEEP
unset LD_PRELOAD FAKETIME_TIMESTAMP_FILE
H="$1"; R="$2"; S="$3"
line() { echo "$DISTCRON_JOB $DISTCRON_SCHEDULED_AT $DISTCRON_FENCE ${NEM_WORKER:-?} $DISTCRON_ATTEMPT $1 $(date +%s%N) $DISTCRON_RUN_ID $2" >> "$H"; }
line start -
trap 'line end killed; exit 143' TERM INT
sleep "$S" & wait $!
res=$(flock "$R/$DISTCRON_JOB.lock" sh -c 'last=$(cat "$0" 2>/dev/null || echo 0); if [ "$1" -gt "$last" ]; then echo "$1" > "$0"; echo ok; else echo "stale:$last"; fi' "$R/$DISTCRON_JOB" "$DISTCRON_FENCE")
line fenced "$res"
line end ok
"#;

struct Cluster {
    dir: PathBuf,
    net: Net,
    etcd: Vec<(NodeNs, NsProc)>,
    _ferret: NsProc,
    master_ns: NodeNs,
    _master: NsProc,
    _forwarders: Vec<NsProc>,
    api: Node,
    workers: Vec<(NodeNs, NsProc)>,
}

fn tcp_ready(ns: &str, addr: Ipv4Addr, port: u16) -> bool {
    super::netns::try_sh(&["ip", "netns", "exec", ns, "bash", "-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")]).is_ok()
}

fn etcd_endpoints() -> String {
    let eps: Vec<String> = ETCD_HOSTS.iter().map(|h| format!("\"http://10.77.0.{h}:2379\"")).collect();
    format!("[{}]", eps.join(", "))
}

fn node_config(dir: &Path, role: &str, node_id: &str, listen_port: u16) -> String {
    format!(
        "role = \"{role}\"\nnode_id = \"{node_id}\"\nlisten = \"127.0.0.1:{listen_port}\"\ndata_dir = \"{}\"\n\
         log_level = \"info\"\napi_token = \"{TOKEN}\"\n\
         [scheduler]\nheartbeat_secs = 1\nfailover_grace_ms = 1000\nmisfire_grace_ms = {MISFIRE_GRACE_MS}\nshutdown_grace_secs = 2\n\
         [executor]\nshell = \"/bin/sh\"\nkill_grace_ms = 1000\n\
         [log_batch]\nflush_ms = 100\nretry_max_ms = 2000\n\
         [etcd]\nendpoints = {}\nsession_ttl_secs = {SESSION_TTL_SECS}\nrequest_timeout_ms = 2000\nconnect_timeout_ms = 1000\n\
         [mongo]\nuri = \"mongodb://{HUB_ADDR}:27017/\"\n",
        dir.join("data").display(),
        etcd_endpoints()
    )
}

fn faketime_lib() -> PathBuf {
    if let Ok(p) = std::env::var("DISTCRON_TEST_FAKETIME_LIB") {
        return PathBuf::from(p);
    }
    ["/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime", "/usr/lib/faketime", "/usr/local/lib/faketime"]
        .iter()
        .map(|d| Path::new(d).join("libfaketimeMT.so.1"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libfaketimeMT.so.1 not found (or set DISTCRON_TEST_FAKETIME_LIB): install faketime (scripts/setup.sh --test does)"))
}

impl Cluster {
    fn start(dir: &Path, workers: usize) -> Cluster {
        let mut net = Net::new();
        let etcd_bin = crate::support::require_binary("DISTCRON_TEST_ETCD_BIN", "etcd", "etcd-server");
        let ferret_bin = crate::support::ferretdb::binary();
        // FerretDB (the run log) in the hub namespace, on the bridge.
        std::fs::create_dir_all(dir.join("ferret/data")).expect("ferret dir");
        let ferret = NsProc::start(
            &net.hub,
            &[
                ferret_bin.display().to_string(),
                "--handler=sqlite".into(),
                format!("--sqlite-url=file:{}/", dir.join("ferret/data").display()),
                format!("--listen-addr={HUB_ADDR}:27017"),
                format!("--state-dir={}", dir.join("ferret").display()),
                "--telemetry=disable".into(),
                "--debug-addr=-".into(),
                "--log-level=WARN".into(),
            ],
            &[],
            &dir.join("ferret.log"),
        );
        let nss: Vec<NodeNs> = ETCD_HOSTS.iter().enumerate().map(|(i, h)| net.add_node(&format!("e{i}"), *h)).collect();
        let cluster: Vec<String> =
            nss.iter().enumerate().map(|(i, n)| format!("e{i}=http://{}:2380", n.addr)).collect();
        let mut etcd = Vec::new();
        for (i, ns) in nss.into_iter().enumerate() {
            let data = dir.join(format!("etcd{i}"));
            let (client, peer) = (format!("http://{}:2379", ns.addr), format!("http://{}:2380", ns.addr));
            let args: Vec<String> = vec![
                etcd_bin.display().to_string(),
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                data.display().to_string(),
                "--listen-client-urls".into(),
                client.clone(),
                "--advertise-client-urls".into(),
                client,
                "--listen-peer-urls".into(),
                peer.clone(),
                "--initial-advertise-peer-urls".into(),
                peer,
                "--initial-cluster".into(),
                cluster.join(","),
                "--initial-cluster-token".into(),
                format!("nemesis-{}", std::process::id()),
                "--initial-cluster-state".into(),
                "new".into(),
                "--logger".into(),
                "zap".into(),
                "--log-outputs".into(),
                "stderr".into(),
            ];
            let p = NsProc::start(&ns.ns, &args, &[], &dir.join(format!("etcd{i}.log")));
            etcd.push((ns, p));
        }
        for (ns, _) in &etcd {
            let ok = wait_until(Duration::from_secs(30), || tcp_ready(&ns.ns, ns.addr, 2379).then_some(()));
            assert!(ok.is_some(), "etcd in {} did not listen", ns.ns);
        }
        let ok = wait_until(Duration::from_secs(30), || tcp_ready(&net.hub, HUB_ADDR, 27017).then_some(()));
        assert!(ok.is_some(), "ferretdb did not listen:\n{}", ferret.log_text());

        let bin = env!("CARGO_BIN_EXE_distcron").to_owned();
        let master_ns = net.add_node("m", MASTER_HOST);
        let mdir = dir.join("master");
        std::fs::create_dir_all(&mdir).expect("master dir");
        std::fs::write(mdir.join("config.toml"), node_config(&mdir, "master", "master", 8070)).expect("config");
        let master = NsProc::start(
            &master_ns.ns,
            &[bin.clone(), "--config".into(), mdir.join("config.toml").display().to_string()],
            &[],
            &mdir.join("node.log"),
        );
        // The master's loopback API, reached from the test through a Unix socket (no address
        // in the root namespace): socat in its namespace, socat on the test's loopback.
        let sock = dir.join("master.sock");
        let inner = NsProc::start(
            &master_ns.ns,
            &["socat".into(), format!("UNIX-LISTEN:{},fork,unlink-early", sock.display()), "TCP:127.0.0.1:8070".into()],
            &[],
            &dir.join("socat-inner.log"),
        );
        let port = crate::support::free_port();
        let outer = NsProc::start(
            "",
            &[
                "socat".into(),
                format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                format!("UNIX-CONNECT:{}", sock.display()),
            ],
            &[],
            &dir.join("socat-outer.log"),
        );
        let api = Node::attach(port, mdir.clone(), TOKEN.to_owned());
        let live = wait_until(Duration::from_secs(30), || (api.get("/api/v1/health/live").status == 200).then_some(()));
        assert!(live.is_some(), "master did not answer:\n{}", master.log_text());

        let lib = faketime_lib();
        let mut ws = Vec::new();
        for i in 0..workers {
            let id = format!("w{i}");
            let ns = net.add_node(&id, WORKER_HOST + i as u8);
            let wdir = dir.join(&id);
            std::fs::create_dir_all(&wdir).expect("worker dir");
            std::fs::write(wdir.join("config.toml"), node_config(&wdir, "worker", &id, 8071)).expect("config");
            std::fs::write(dir.join(format!("clock-{id}")), "+0\n").expect("clock file");
            let env = vec![
                ("LD_PRELOAD".to_owned(), lib.display().to_string()),
                ("FAKETIME_TIMESTAMP_FILE".to_owned(), dir.join(format!("clock-{id}")).display().to_string()),
                // Re-read the offset at most every second (NO_CACHE would read the file at every
                // clock call of every thread).
                ("FAKETIME_CACHE_DURATION".to_owned(), "1".to_owned()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
                ("NEM_WORKER".to_owned(), id.clone()),
            ];
            let p = NsProc::start(
                &ns.ns,
                &[bin.clone(), "--config".into(), wdir.join("config.toml").display().to_string()],
                &env,
                &wdir.join("node.log"),
            );
            ws.push((ns, p));
        }
        let all = wait_until(Duration::from_secs(60), || {
            let listed = api.get("/api/v1/workers").body;
            (listed["workers"].as_array().map_or(0, Vec::len) >= workers).then_some(())
        });
        assert!(all.is_some(), "workers did not join: {}", api.get("/api/v1/workers").text);
        Cluster {
            dir: dir.to_owned(),
            net,
            etcd,
            _ferret: ferret,
            master_ns,
            _master: master,
            _forwarders: vec![inner, outer],
            api,
            workers: ws,
        }
    }

    /// The current etcd leader: the member with the highest term it "became leader at".
    fn leader(&self) -> usize {
        let mut best = (0, 0u64);
        for (i, (_, p)) in self.etcd.iter().enumerate() {
            let term = p
                .log_text()
                .lines()
                .filter_map(|l| l.split("became leader at term ").nth(1))
                .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse::<u64>().ok()))
                .max()
                .unwrap_or(0);
            if term > best.1 {
                best = (i, term);
            }
        }
        best.0
    }

    fn set_clock(&self, worker: usize, offset_secs: i64) {
        std::fs::write(self.dir.join(format!("clock-w{worker}")), format!("{offset_secs:+}\n")).expect("clock file");
    }

    fn worker_log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, (_, p)) in self.workers.iter().enumerate() {
            let log = p.log_text();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("---- w{i} (last {lines} lines) ----\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// The fault plan of a run: every kind once in a seeded order (the quick profile), then
/// seeded random kinds until the workload's end.
fn plan(rng: &mut Rng, secs: u64) -> Vec<usize> {
    let mut kinds: Vec<usize> = (0..8).collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i + 1));
    }
    // About 13 s per fault (fault + heal gap).
    let slots = (secs.saturating_sub(10) / 13).max(1) as usize;
    while kinds.len() < slots {
        kinds.push(rng.below(8));
    }
    kinds.truncate(slots);
    kinds
}

/// Runs `profile`: starts the cluster, the workload and the nemesis, then checks.
pub fn run(profile: &Profile) -> Outcome {
    eprintln!(
        "nemesis: seed {} ({} s, {} workers); replay with NEMESIS_SEED={}",
        profile.seed, profile.secs, profile.workers, profile.seed
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_owned();
    let mut c = Cluster::start(&dir, profile.workers);
    let delay_mode = if c.net.netem { "tc netem".to_owned() } else { "tbf shaper (no sch_netem)".to_owned() };
    let history = dir.join("history.log");
    let resources = dir.join("resources");
    std::fs::create_dir_all(&resources).expect("resources dir");
    let script = dir.join("work.sh");
    std::fs::write(&script, WORK_SH).expect("work.sh");
    for (name, cron, policy, sleep) in workload() {
        let concurrency = match policy {
            Policy::Allow => "allow",
            Policy::Forbid => "forbid",
            Policy::Replace => "replace",
        };
        let command = format!("/bin/sh {} {} {} {sleep}", script.display(), history.display(), resources.display());
        let r = c.api.post(
            "/api/v1/jobs",
            &json!({ "name": name, "cron_expr": cron, "concurrency": concurrency, "command": command }).to_string(),
        );
        assert_eq!(r.status, 201, "create {name}: {}", r.text);
    }
    let from = Utc::now() + chrono::Duration::seconds(3);
    let mut rng = Rng::new(profile.seed);
    let kinds = plan(&mut rng, profile.secs);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(profile.secs);
    let names: Vec<&str> = workload().iter().map(|w| w.0).collect();
    let mut faults = Vec::new();
    let (mut run_nows, mut kills) = (0usize, 0usize);
    let mut manual_requested: BTreeMap<String, usize> = BTreeMap::new();
    std::thread::sleep(Duration::from_secs(8));
    let ttl = SESSION_TTL_SECS as u64;
    for kind in kinds {
        if Instant::now() + Duration::from_secs(12) > deadline {
            break;
        }
        let w = rng.below(c.workers.len());
        let start = Utc::now();
        let hold = Duration::from_secs(ttl + 4);
        let (fault_kind, target) = match kind {
            0 => {
                let peers: Vec<Ipv4Addr> = c.etcd.iter().map(|(n, _)| n.addr).collect();
                c.net.block(&c.workers[w].0, &peers);
                std::thread::sleep(hold / 2);
                client_ops(&c, &mut rng, &names, &mut run_nows, &mut kills, &mut manual_requested);
                std::thread::sleep(hold / 2);
                c.net.heal(&c.workers[w].0);
                (FaultKind::PartitionWorker, format!("w{w}"))
            }
            1 => {
                let l = c.leader();
                let others: Vec<Ipv4Addr> =
                    c.etcd.iter().enumerate().filter(|(i, _)| *i != l).map(|(_, (n, _))| n.addr).collect();
                c.net.block(&c.etcd[l].0, &others);
                std::thread::sleep(hold / 2);
                client_ops(&c, &mut rng, &names, &mut run_nows, &mut kills, &mut manual_requested);
                std::thread::sleep(hold / 2);
                c.net.heal(&c.etcd[l].0);
                (FaultKind::PartitionLeader, format!("e{l}"))
            }
            2 => {
                c.net.link(&c.master_ns, false);
                std::thread::sleep(Duration::from_secs(3));
                client_ops(&c, &mut rng, &names, &mut run_nows, &mut kills, &mut manual_requested);
                std::thread::sleep(Duration::from_secs(3));
                c.net.heal(&c.master_ns);
                (FaultKind::IsolateMaster, "master".to_owned())
            }
            3 => {
                c.workers[w].1.signal("STOP");
                std::thread::sleep(hold / 2);
                client_ops(&c, &mut rng, &names, &mut run_nows, &mut kills, &mut manual_requested);
                std::thread::sleep(hold / 2);
                c.workers[w].1.signal("CONT");
                (FaultKind::Pause, format!("w{w}"))
            }
            4 => {
                let jump = if rng.below(2) == 0 { 30 } else { -30 };
                c.set_clock(w, jump);
                std::thread::sleep(hold / 2);
                client_ops(&c, &mut rng, &names, &mut run_nows, &mut kills, &mut manual_requested);
                std::thread::sleep(hold / 2);
                c.set_clock(w, 0);
                // The worker reads its offset at most a second late (FAKETIME_CACHE_DURATION).
                std::thread::sleep(Duration::from_secs(1));
                (FaultKind::ClockJump(jump), format!("w{w}"))
            }
            5 => {
                let all: Vec<&NodeNs> = c
                    .etcd
                    .iter()
                    .map(|(n, _)| n)
                    .chain(c.workers.iter().map(|(n, _)| n))
                    .chain(std::iter::once(&c.master_ns))
                    .collect();
                for n in &all {
                    c.net.degrade(n, 200, 100);
                    c.net.loss(n, 5);
                }
                std::thread::sleep(hold / 2);
                client_ops(&c, &mut rng, &names, &mut run_nows, &mut kills, &mut manual_requested);
                std::thread::sleep(hold / 2);
                for n in &all {
                    c.net.heal(n);
                }
                (FaultKind::Degrade, "all".to_owned())
            }
            6 => {
                c.workers[w].1.kill();
                std::thread::sleep(Duration::from_secs(3));
                client_ops(&c, &mut rng, &names, &mut run_nows, &mut kills, &mut manual_requested);
                c.workers[w].1.restart();
                (FaultKind::KillWorker, format!("w{w}"))
            }
            _ => {
                let m = rng.below(c.etcd.len());
                c.etcd[m].1.kill();
                std::thread::sleep(Duration::from_secs(3));
                client_ops(&c, &mut rng, &names, &mut run_nows, &mut kills, &mut manual_requested);
                std::thread::sleep(Duration::from_secs(2));
                c.etcd[m].1.restart();
                (FaultKind::KillEtcd, format!("e{m}"))
            }
        };
        let fault = Fault { kind: fault_kind, target, start, end: Utc::now() };
        eprintln!("nemesis: {} on {} from {} to {}", fault.kind, fault.target, fault.start, fault.end);
        faults.push(fault);
        std::thread::sleep(Duration::from_secs(5));
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(remaining);
    // Stop the workload: no tick after `to` is checked; every run ends by itself (≤ 7 s).
    let to = Utc::now() - chrono::Duration::seconds(2);
    for name in &names {
        // The master may answer 503 for a moment right after a fault (an etcd member restarting).
        let done = wait_until(Duration::from_secs(30), || {
            (c.api.post_empty(&format!("/api/v1/jobs/{name}/disable")).status < 300).then_some(())
        });
        assert!(
            done.is_some(),
            "cannot disable {name}: {}",
            c.api.post_empty(&format!("/api/v1/jobs/{name}/disable")).text
        );
    }
    let stop = Utc::now();
    // Settle: runs end, records flush (spools replay), lost runs get recorded.
    std::thread::sleep(Duration::from_secs(10 + SESSION_TTL_SECS as u64));
    let _ = wait_until(Duration::from_secs(30), || {
        let running = names.iter().flat_map(|n| c.api.runs(n)).filter(|r| r["status"] == "running").count();
        (running == 0).then_some(())
    });
    let ledger: Vec<Record> = names.iter().flat_map(|n| c.api.runs(n)).filter_map(|r| parse_record(&r)).collect();
    let lines: Vec<HistoryLine> =
        std::fs::read_to_string(&history).unwrap_or_default().lines().filter_map(HistoryLine::parse).collect();
    let specs: Vec<JobSpec> = workload()
        .into_iter()
        .map(|(name, cron, policy, _)| JobSpec {
            name: name.to_owned(),
            every_secs: if cron.starts_with("*/5") { 5 } else { 1 },
            policy,
            from,
            to,
        })
        .collect();
    let bounds = Bounds {
        session_ttl: chrono::Duration::seconds(SESSION_TTL_SECS),
        max_lateness: chrono::Duration::milliseconds(MISFIRE_GRACE_MS),
        slack: chrono::Duration::seconds(1),
    };
    let mut report = checker::check(&specs, &lines, &ledger, &faults, &bounds, stop);
    // Every run-now request accepted is accounted for once (a run, or a skipped record).
    for (job, asked) in &manual_requested {
        let accounted = ledger.iter().filter(|r| &r.job == job && r.trigger == "manual").count();
        if accounted != *asked {
            let class = if accounted > *asked { Class::DuplicateRun } else { Class::SilentHole };
            report.anomalies.push(Anomaly {
                class,
                job: job.clone(),
                tick: stop,
                detail: format!("{asked} run-now request(s) accepted, {accounted} manual record(s)"),
                limit: None,
            });
        }
    }
    let outcome = Outcome { profile: profile.clone(), report, faults, run_nows, kills, delay_mode };
    eprintln!("nemesis: {}", outcome.report.render(5));
    if !outcome.report.undocumented().is_empty() {
        eprintln!("{}", c.worker_log_tails(40));
        if std::env::var("NEMESIS_KEEP").is_ok() {
            let kept = tmp.keep();
            eprintln!("nemesis: files kept in {}", kept.display());
        }
    }
    outcome
}

/// A kill and a run-now through the master, on seeded jobs.
fn client_ops(
    c: &Cluster,
    rng: &mut Rng,
    names: &[&str],
    run_nows: &mut usize,
    kills: &mut usize,
    requested: &mut BTreeMap<String, usize>,
) {
    let job = names[rng.below(names.len())];
    let r = c.api.post_empty(&format!("/api/v1/jobs/{job}/run"));
    if r.status == 202 || r.status == 200 {
        *run_nows += 1;
        *requested.entry(job.to_owned()).or_default() += 1;
    }
    let job = names[rng.below(names.len())];
    if c.api.post_empty(&format!("/api/v1/jobs/{job}/kill")).status < 300 {
        *kills += 1;
    }
}

fn parse_record(r: &Value) -> Option<Record> {
    let time = |v: &Value| v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc));
    Some(Record {
        id: r["id"].as_str()?.to_owned(),
        job: r["job"].as_str()?.to_owned(),
        status: r["status"].as_str()?.to_owned(),
        trigger: r["trigger"].as_str().unwrap_or("schedule").to_owned(),
        tick: time(&r["scheduled_at"])?,
        fence: r["fence"].as_i64().unwrap_or(0),
        worker: r["worker"].as_str().unwrap_or("").to_owned(),
        attempt: r["attempt"].as_u64().unwrap_or(1) as u32,
        ended_at: time(&r["ended_at"]),
        err: r["err"].as_str().unwrap_or("").to_owned(),
    })
}
