//! The nemesis checker: reads a history (lines the workload's commands appended) and the run
//! ledger (records from `/api/v1/runs`) against the faults injected, and names every anomaly.
//!
//! Owns: the anomaly classes of issue 14 and which of them a documented limit (README
//! "Verified under faults") explains. Pure: no I/O, unit-tested on hand-made histories.
//! Leaves to others: collecting the history, the ledger and the fault log (the harness).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Duration, Utc};

/// What a history line says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The command started.
    Start,
    /// The command ended (`ok`, or `killed` when it got SIGTERM).
    End,
    /// Its write to the fenced resource: `ok`, or `stale:<last fence seen>` when refused.
    Fenced(String),
}

/// One line of the history file:
/// `job scheduled_at fence worker attempt event real_time_ns run_id detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    pub job: String,
    pub tick: DateTime<Utc>,
    pub fence: i64,
    pub worker: String,
    pub attempt: u32,
    pub event: Event,
    /// When it happened, by the real clock (the commands drop libfaketime).
    pub at: DateTime<Utc>,
    pub run: String,
}

impl HistoryLine {
    /// Parses one line; `None` for a torn or foreign line.
    pub fn parse(line: &str) -> Option<HistoryLine> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 {
            return None;
        }
        let tick = DateTime::parse_from_rfc3339(f[1]).ok()?.with_timezone(&Utc);
        let ns: i64 = f[6].parse().ok()?;
        let event = match f[5] {
            "start" => Event::Start,
            "end" => Event::End,
            "fenced" => Event::Fenced(f[8].to_owned()),
            _ => return None,
        };
        Some(HistoryLine {
            job: f[0].to_owned(),
            tick,
            fence: f[2].parse().ok()?,
            worker: f[3].to_owned(),
            attempt: f[4].parse().ok()?,
            event,
            at: DateTime::from_timestamp_nanos(ns),
            run: f[7].to_owned(),
        })
    }
}

/// One run-ledger record (`/api/v1/runs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub job: String,
    pub status: String,
    pub trigger: String,
    pub tick: DateTime<Utc>,
    pub fence: i64,
    pub worker: String,
    pub attempt: u32,
    pub ended_at: Option<DateTime<Utc>>,
    pub err: String,
}

impl Record {
    /// A record of a run (something was started, or may have been: `lost`), not of a tick
    /// that did not run.
    pub fn is_run(&self) -> bool {
        !matches!(self.status.as_str(), "skipped" | "missed" | "superseded")
    }

    /// The ticks a `missed` record covers: `[first, last]` from its `err`
    /// (`missed N tick(s) from A to B: …`), else its own tick.
    pub fn missed_range(&self) -> Span {
        let parse = |s: &str| DateTime::parse_from_rfc3339(s.trim_end_matches(':')).ok().map(|t| t.with_timezone(&Utc));
        let words: Vec<&str> = self.err.split_whitespace().collect();
        let from = words.iter().position(|w| *w == "from").and_then(|i| words.get(i + 1)).and_then(|w| parse(w));
        let to = words.iter().position(|w| *w == "to").and_then(|i| words.get(i + 1)).and_then(|w| parse(w));
        match (from, to) {
            (Some(a), Some(b)) if a <= b => (a, b),
            _ => (self.tick, self.tick),
        }
    }
}

/// Concurrency policy of a workload job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Allow,
    Forbid,
    Replace,
}

/// A workload job and the window of its ticks the checker accounts for.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    /// Ticks at every multiple of this many seconds since the epoch.
    pub every_secs: i64,
    pub policy: Policy,
    /// First tick checked.
    pub from: DateTime<Utc>,
    /// Ticks before this are checked.
    pub to: DateTime<Utc>,
}

impl JobSpec {
    /// The ticks of the window.
    pub fn ticks(&self) -> Vec<DateTime<Utc>> {
        let first = self.from.timestamp().div_euclid(self.every_secs) * self.every_secs;
        let mut t = first;
        let mut out = Vec::new();
        while t < self.to.timestamp() {
            if t >= self.from.timestamp() {
                out.extend(DateTime::from_timestamp(t, 0));
            }
            t += self.every_secs;
        }
        out
    }
}

/// A fault the nemesis injected (real time).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Worker id, etcd member name or `master`.
    pub target: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The faults of issue 14.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// A worker cut off from every etcd member (it keeps running its jobs).
    PartitionWorker,
    /// The etcd leader cut off from the other members.
    PartitionLeader,
    /// The master cut off from everything.
    IsolateMaster,
    /// A worker SIGSTOPped (then SIGCONTed).
    Pause,
    /// A worker's clock moved by this many seconds.
    ClockJump(i64),
    /// Delay and loss on every link.
    Degrade,
    /// A worker SIGKILLed and restarted at `end`.
    KillWorker,
    /// An etcd member SIGKILLed and restarted at `end`.
    KillEtcd,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PartitionWorker => write!(f, "partition worker from etcd"),
            Self::PartitionLeader => write!(f, "partition etcd leader"),
            Self::IsolateMaster => write!(f, "isolate master"),
            Self::Pause => write!(f, "SIGSTOP worker"),
            Self::ClockJump(s) => write!(f, "clock jump {s:+}s"),
            Self::Degrade => write!(f, "delay + 5% loss"),
            Self::KillWorker => write!(f, "SIGKILL worker"),
            Self::KillEtcd => write!(f, "SIGKILL etcd member"),
        }
    }
}

/// Bounds the checker holds the cluster to.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// `etcd.session_ttl_secs` of the workers.
    pub session_ttl: Duration,
    /// The latest a scheduled run may start after its tick (`scheduler.misfire_grace_ms`; the
    /// failover bound `rank × failover_grace_ms` is within it).
    pub max_lateness: Duration,
    /// Slack for process start and clock reads.
    pub slack: Duration,
}

/// The anomaly classes of issue 14.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// A (job, tick) run twice.
    DuplicateRun,
    /// A tick with no account: no run, no missed/skipped/lost record.
    SilentHole,
    /// A `forbid` job with two runs alive at once.
    ForbidOverlap,
    /// Fences not increasing in tick order.
    FenceOrder,
    /// A run started by a worker after its session ended.
    RunAfterSessionEnd,
    /// A run left `running` after its worker died.
    LeftRunning,
    /// A scheduled run started outside the failover bound (too late, or early).
    Lateness,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 7] = [
        Self::DuplicateRun,
        Self::SilentHole,
        Self::ForbidOverlap,
        Self::FenceOrder,
        Self::RunAfterSessionEnd,
        Self::LeftRunning,
        Self::Lateness,
    ];
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DuplicateRun => "tick run twice",
            Self::SilentHole => "silent hole",
            Self::ForbidOverlap => "forbid overlap",
            Self::FenceOrder => "fence order",
            Self::RunAfterSessionEnd => "run after session end",
            Self::LeftRunning => "left running",
            Self::Lateness => "lateness",
        })
    }
}

/// Documented limits (README "Verified under faults" → "Documented limits"): an anomaly they
/// explain is reported, not failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    /// A worker cut off from etcd (partition, pause) past its session TTL keeps running the
    /// runs it has (`on_session_loss = "finish"`); the cluster counts them `lost` and a `forbid`
    /// job's next tick starts elsewhere. Fencing is what makes that safe for a resource.
    StaleSessionRun,
    /// A worker whose clock is ahead claims and runs its ticks early (never twice).
    ClockAhead,
    /// A run-now's running mark is written one round trip after its claim, so a scheduled
    /// tick claimed in between does not see it under `forbid` (README "Cluster mode", limits).
    RunNowMark,
    /// While etcd changes leader (the leader partitioned from its followers, or a member
    /// killed), a tick may be neither run nor recorded, or run later than `misfire_grace_ms`
    /// (open finding of the nemesis, README "Verified under faults").
    LeaderChange,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::StaleSessionRun => "limit: run outlived its worker's session (finish policy; fence refuses it)",
            Self::ClockAhead => "limit: worker clock ahead runs ticks early",
            Self::LeaderChange => "limit: tick due during an etcd leader change",
            Self::RunNowMark => "limit: a run-now's mark follows its claim",
        })
    }
}

/// One anomaly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub class: Class,
    pub job: String,
    pub tick: DateTime<Utc>,
    pub detail: String,
    /// The documented limit that explains it, if any.
    pub limit: Option<Limit>,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Ticks accounted for (window ticks of every job).
    pub ticks_checked: usize,
    /// Runs seen in the history.
    pub runs_seen: usize,
    /// Writes the fenced resource accepted / refused as stale, per policy.
    pub fenced_ok: usize,
    pub fenced_stale: BTreeMap<String, usize>,
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// Anomalies no documented limit explains.
    pub fn undocumented(&self) -> Vec<&Anomaly> {
        self.anomalies.iter().filter(|a| a.limit.is_none()).collect()
    }

    /// `(class, undocumented, documented)` counts.
    pub fn counts(&self) -> Vec<(Class, usize, usize)> {
        Class::ALL
            .iter()
            .map(|c| {
                let of: Vec<&Anomaly> = self.anomalies.iter().filter(|a| a.class == *c).collect();
                (*c, of.iter().filter(|a| a.limit.is_none()).count(), of.iter().filter(|a| a.limit.is_some()).count())
            })
            .collect()
    }

    /// A readable summary with up to `examples` examples per class.
    pub fn render(&self, examples: usize) -> String {
        let mut out = format!(
            "ticks checked {}, runs seen {}, fenced writes ok {}, refused as stale {:?}\n",
            self.ticks_checked, self.runs_seen, self.fenced_ok, self.fenced_stale
        );
        for (class, bad, documented) in self.counts() {
            out.push_str(&format!("  {class}: {bad} undocumented, {documented} documented limit\n"));
            // Undocumented ones first: they are what a failed run must show.
            let of = self.anomalies.iter().filter(|a| a.class == class);
            let (undocumented, documented): (Vec<&Anomaly>, Vec<&Anomaly>) = of.partition(|a| a.limit.is_none());
            for a in undocumented.into_iter().chain(documented).take(examples) {
                let why = a.limit.map(|l| format!(" [{l}]")).unwrap_or_default();
                out.push_str(&format!("    {} {} {}{why}\n", a.job, a.tick.to_rfc3339(), a.detail));
            }
        }
        out
    }
}

/// A closed range of ticks `[first, last]`.
pub type Span = (DateTime<Utc>, DateTime<Utc>);

/// One run as the checker sees it: history and ledger joined by run id.
#[derive(Debug, Clone, Default)]
struct Run {
    job: String,
    tick: Option<DateTime<Utc>>,
    fence: i64,
    worker: String,
    attempt: u32,
    starts: usize,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    record: Option<Record>,
}

impl Run {
    fn trigger(&self) -> &str {
        self.record.as_ref().map_or("schedule", |r| r.trigger.as_str())
    }
}

/// Checks `history` and `ledger` for the jobs of `jobs` under `faults`; `end` is when the
/// workload stopped (open runs end there).
pub fn check(
    jobs: &[JobSpec],
    history: &[HistoryLine],
    ledger: &[Record],
    faults: &[Fault],
    bounds: &Bounds,
    end: DateTime<Utc>,
) -> Report {
    let mut report = Report::default();
    let specs: HashMap<&str, &JobSpec> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    for l in history.iter().filter(|l| specs.contains_key(l.job.as_str())) {
        let run = runs.entry(l.run.clone()).or_default();
        run.job.clone_from(&l.job);
        run.tick = Some(l.tick);
        run.fence = l.fence;
        run.worker.clone_from(&l.worker);
        run.attempt = l.attempt;
        match &l.event {
            Event::Start => {
                run.starts += 1;
                run.start = Some(run.start.map_or(l.at, |s| s.min(l.at)));
            }
            Event::End => run.end = Some(run.end.map_or(l.at, |e| e.max(l.at))),
            Event::Fenced(detail) => {
                if detail.starts_with("stale") {
                    let policy = specs.get(l.job.as_str()).map(|s| format!("{:?}", s.policy).to_lowercase());
                    *report.fenced_stale.entry(policy.unwrap_or_default()).or_default() += 1;
                } else {
                    report.fenced_ok += 1;
                }
            }
        }
    }
    for r in ledger.iter().filter(|r| specs.contains_key(r.job.as_str()) && r.is_run()) {
        let run = runs.entry(r.id.clone()).or_default();
        if run.job.is_empty() {
            run.job.clone_from(&r.job);
            run.tick = Some(r.tick);
            run.fence = r.fence;
            run.worker.clone_from(&r.worker);
            run.attempt = r.attempt;
        }
        run.record = Some(r.clone());
    }
    report.runs_seen = runs.values().filter(|r| r.starts > 0).count();
    let in_window = |job: &str, tick: DateTime<Utc>| specs.get(job).is_some_and(|s| tick >= s.from && tick < s.to);
    let session_gone = |worker: &str, at: DateTime<Utc>| {
        faults.iter().any(|f| {
            matches!(f.kind, FaultKind::PartitionWorker | FaultKind::Pause)
                && f.target == worker
                && at >= f.start + bounds.session_ttl
                && at <= f.end
        })
    };
    // A run whose worker lost its session while the run was alive.
    let outlived_session = |run: &Run| {
        let (Some(s), e) = (run.start, run.end.unwrap_or(end)) else { return false };
        faults.iter().any(|f| {
            matches!(f.kind, FaultKind::PartitionWorker | FaultKind::Pause)
                && f.target == run.worker
                && f.start + bounds.session_ttl <= f.end
                && f.start <= e
                && f.start + bounds.session_ttl >= s - bounds.slack
        })
    };
    let clock_ahead = |worker: &str, at: DateTime<Utc>| {
        faults.iter().any(|f| {
            matches!(f.kind, FaultKind::ClockJump(s) if s > 0)
                && f.target == worker
                && at >= f.start - bounds.slack
                && at <= f.end + bounds.slack
        })
    };
    let leader_change = |tick: DateTime<Utc>| {
        faults.iter().any(|f| {
            matches!(f.kind, FaultKind::PartitionLeader | FaultKind::KillEtcd)
                && tick >= f.start - bounds.slack
                && tick <= f.end + bounds.max_lateness + bounds.slack
        })
    };
    let mut push = |class, job: &str, tick, detail: String, limit| {
        report.anomalies.push(Anomaly { class, job: job.to_owned(), tick, detail, limit });
    };

    // A (job, tick) run twice: two run ids for one tick and attempt, or one run started twice.
    let mut by_tick: BTreeMap<(String, DateTime<Utc>, u32), Vec<&String>> = BTreeMap::new();
    for (id, run) in &runs {
        let Some(tick) = run.tick else { continue };
        if run.trigger() == "manual" || !in_window(&run.job, tick) {
            continue;
        }
        by_tick.entry((run.job.clone(), tick, run.attempt)).or_default().push(id);
        if run.starts > 1 {
            push(Class::DuplicateRun, &run.job, tick, format!("run {id} started {} times", run.starts), None);
        }
    }
    for ((job, tick, attempt), ids) in &by_tick {
        if ids.len() > 1 {
            let who: Vec<String> = ids.iter().map(|id| format!("{id}@{}", runs[*id].worker)).collect();
            push(Class::DuplicateRun, job, *tick, format!("attempt {attempt} ran as {}", who.join(", ")), None);
        }
    }

    // The silent hole: a tick with nothing in the ledger.
    let mut accounted: HashMap<&str, BTreeSet<DateTime<Utc>>> = HashMap::new();
    let mut ranges: HashMap<&str, Vec<Span>> = HashMap::new();
    for r in ledger {
        accounted.entry(r.job.as_str()).or_default().insert(r.tick);
        if r.status == "missed" {
            ranges.entry(r.job.as_str()).or_default().push(r.missed_range());
        }
    }
    for spec in jobs {
        for tick in spec.ticks() {
            report.ticks_checked += 1;
            let recorded = accounted.get(spec.name.as_str()).is_some_and(|s| s.contains(&tick))
                || ranges.get(spec.name.as_str()).is_some_and(|rs| rs.iter().any(|(a, b)| *a <= tick && tick <= *b));
            if !recorded {
                let ran = runs.values().any(|r| r.job == spec.name && r.tick == Some(tick) && r.starts > 0);
                let detail = if ran { "ran (history) but no ledger record" } else { "no run and no record" };
                let limit = leader_change(tick).then_some(Limit::LeaderChange);
                push(Class::SilentHole, &spec.name, tick, detail.to_owned(), limit);
            }
        }
    }

    // Two runs of a forbid job alive at once.
    for spec in jobs.iter().filter(|j| j.policy == Policy::Forbid) {
        let mut alive: Vec<(&String, &Run, DateTime<Utc>, DateTime<Utc>)> = runs
            .iter()
            .filter(|(_, r)| r.job == spec.name)
            .filter_map(|(id, r)| {
                let s = r.start?;
                let e = r.end.or_else(|| r.record.as_ref().and_then(|rec| rec.ended_at)).unwrap_or(end);
                Some((id, r, s, e))
            })
            .collect();
        alive.sort_by_key(|(_, _, s, _)| *s);
        for (i, (a_id, a, _, a_end)) in alive.iter().enumerate() {
            for (b_id, b, b_start, _) in alive.iter().skip(i + 1) {
                if *b_start >= *a_end {
                    break;
                }
                let tick = b.tick.unwrap_or(*b_start);
                if !in_window(&spec.name, tick) {
                    continue;
                }
                let limit = if outlived_session(a) || outlived_session(b) {
                    Some(Limit::StaleSessionRun)
                } else if a.trigger() == "manual" || b.trigger() == "manual" {
                    Some(Limit::RunNowMark)
                } else {
                    None
                };
                let detail = format!(
                    "{a_id}@{} (fence {}) still alive when {b_id}@{} (fence {}) started",
                    a.worker, a.fence, b.worker, b.fence
                );
                push(Class::ForbidOverlap, &spec.name, tick, detail, limit);
            }
        }
    }

    // Fences increase with the tick, per job (runs and not-run records, one per tick).
    for spec in jobs {
        let mut fences: BTreeMap<DateTime<Utc>, (i64, String)> = BTreeMap::new();
        for r in runs.values().filter(|r| r.job == spec.name && r.trigger() != "manual") {
            if let Some(tick) = r.tick.filter(|t| in_window(&spec.name, *t)) {
                fences.entry(tick).or_insert((r.fence, r.worker.clone()));
            }
        }
        for r in ledger.iter().filter(|r| r.job == spec.name && !r.is_run() && r.fence > 0) {
            if in_window(&spec.name, r.tick) && r.trigger != "manual" {
                fences.entry(r.tick).or_insert((r.fence, r.worker.clone()));
            }
        }
        let ordered: Vec<(&DateTime<Utc>, &(i64, String))> = fences.iter().collect();
        for pair in ordered.windows(2) {
            let ((_, (f1, w1)), (t2, (f2, w2))) = (pair[0], pair[1]);
            if f2 <= f1 {
                push(Class::FenceOrder, &spec.name, *t2, format!("fence {f2}@{w2} after {f1}@{w1}"), None);
            }
        }
    }

    // Runs started while their worker had no session; runs left running.
    for (id, run) in &runs {
        let Some(tick) = run.tick else { continue };
        if let Some(s) = run.start {
            if session_gone(&run.worker, s - bounds.slack) && session_gone(&run.worker, s) {
                push(Class::RunAfterSessionEnd, &run.job, tick, format!("{id}@{} started {s}", run.worker), None);
            }
        }
        if run.record.as_ref().is_some_and(|r| r.status == "running") && in_window(&run.job, tick) {
            push(Class::LeftRunning, &run.job, tick, format!("{id}@{} still running", run.worker), None);
        }
    }

    // Lateness of scheduled runs (real start − tick).
    for (id, run) in &runs {
        let (Some(tick), Some(start)) = (run.tick, run.start) else { continue };
        if run.trigger() != "schedule" || !in_window(&run.job, tick) {
            continue;
        }
        let late = start - tick;
        if late > bounds.max_lateness + bounds.slack {
            let detail = format!("{id}@{} started {} ms late", run.worker, late.num_milliseconds());
            push(Class::Lateness, &run.job, tick, detail, leader_change(tick).then_some(Limit::LeaderChange));
        } else if late < -bounds.slack {
            let limit = clock_ahead(&run.worker, start).then_some(Limit::ClockAhead);
            let detail = format!("{id}@{} started {} ms early", run.worker, -late.num_milliseconds());
            push(Class::Lateness, &run.job, tick, detail, limit);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn ms(s: i64, ms: i64) -> DateTime<Utc> {
        t(s) + Duration::milliseconds(ms)
    }

    fn job(policy: Policy) -> JobSpec {
        JobSpec { name: "j".into(), every_secs: 1, policy, from: t(0), to: t(3) }
    }

    fn bounds() -> Bounds {
        Bounds { session_ttl: Duration::seconds(4), max_lateness: Duration::seconds(5), slack: Duration::seconds(1) }
    }

    fn line(run: &str, tick: i64, fence: i64, worker: &str, event: Event, at: DateTime<Utc>) -> HistoryLine {
        HistoryLine {
            job: "j".into(),
            tick: t(tick),
            fence,
            worker: worker.into(),
            attempt: 1,
            event,
            at,
            run: run.into(),
        }
    }

    fn rec(id: &str, tick: i64, fence: i64, status: &str) -> Record {
        Record {
            id: id.into(),
            job: "j".into(),
            status: status.into(),
            trigger: "schedule".into(),
            tick: t(tick),
            fence,
            worker: "w0".into(),
            attempt: 1,
            ended_at: Some(ms(tick, 500)),
            err: String::new(),
        }
    }

    /// Three clean ticks: every tick run once, in fence order, on time.
    fn clean() -> (Vec<HistoryLine>, Vec<Record>) {
        let mut h = Vec::new();
        let mut l = Vec::new();
        for i in 0..3 {
            let id = format!("r{i}");
            h.push(line(&id, i, 10 + i, "w0", Event::Start, ms(i, 50)));
            h.push(line(&id, i, 10 + i, "w0", Event::Fenced("ok".into()), ms(i, 400)));
            h.push(line(&id, i, 10 + i, "w0", Event::End, ms(i, 500)));
            l.push(rec(&id, i, 10 + i, "succeeded"));
        }
        (h, l)
    }

    fn classes(r: &Report) -> Vec<(Class, Option<Limit>)> {
        r.anomalies.iter().map(|a| (a.class, a.limit)).collect()
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let (h, l) = clean();
        let r = check(&[job(Policy::Forbid)], &h, &l, &[], &bounds(), t(10));
        assert!(r.anomalies.is_empty(), "{}", r.render(5));
        assert_eq!((r.ticks_checked, r.runs_seen, r.fenced_ok), (3, 3, 3));
    }

    #[test]
    fn history_lines_parse_and_torn_lines_do_not() {
        let l =
            HistoryLine::parse("j 2027-01-15T08:00:00+00:00 42 w1 1 start 1800000000000000000 r1 -").expect("parses");
        assert_eq!((l.fence, l.worker.as_str(), l.event), (42, "w1", Event::Start));
        assert!(HistoryLine::parse("j 2027-01-15T08:00:00+00:00 42 w1").is_none());
        assert!(HistoryLine::parse("j notatime 42 w1 1 start 1 r1 -").is_none());
    }

    #[test]
    fn a_tick_run_twice_is_named() {
        let (mut h, mut l) = clean();
        h.push(line("x", 1, 30, "w1", Event::Start, ms(1, 80)));
        l.push(rec("x", 1, 30, "succeeded"));
        let r = check(&[job(Policy::Allow)], &h, &l, &[], &bounds(), t(10));
        assert!(classes(&r).contains(&(Class::DuplicateRun, None)), "{}", r.render(5));
    }

    #[test]
    fn a_tick_without_any_record_is_a_silent_hole_and_a_missed_range_accounts() {
        let (h, mut l) = clean();
        l.retain(|r| r.id != "r1");
        let r = check(&[job(Policy::Allow)], &h, &l, &[], &bounds(), t(10));
        assert_eq!(classes(&r), [(Class::SilentHole, None)], "{}", r.render(5));
        let kill = Fault { kind: FaultKind::KillEtcd, target: "e0".into(), start: t(-3), end: t(0) };
        let r = check(&[job(Policy::Allow)], &h, &l, &[kill], &bounds(), t(10));
        assert_eq!(classes(&r), [(Class::SilentHole, Some(Limit::LeaderChange))], "{}", r.render(5));
        let (h, mut l) = clean();
        l.retain(|r| r.id == "r0");
        let mut missed = rec("m", 1, 20, "missed");
        missed.err = format!("missed 2 tick(s) from {} to {}: etcd unreachable", t(1).to_rfc3339(), t(2).to_rfc3339());
        l.push(missed);
        let h: Vec<HistoryLine> = h.into_iter().filter(|x| x.run == "r0").collect();
        let r = check(&[job(Policy::Allow)], &h, &l, &[], &bounds(), t(10));
        assert!(r.anomalies.is_empty(), "{}", r.render(5));
    }

    #[test]
    fn two_forbid_runs_alive_at_once_are_named_and_a_stale_session_explains_them() {
        let (mut h, l) = clean();
        // r0 runs on until 2.5 s: r1 and r2 start while it is alive.
        h.retain(|x| !(x.run == "r0" && x.event == Event::End));
        h.push(line("r0", 0, 10, "w0", Event::End, ms(2, 500)));
        let r = check(&[job(Policy::Forbid)], &h, &l, &[], &bounds(), t(10));
        assert_eq!(classes(&r), [(Class::ForbidOverlap, None), (Class::ForbidOverlap, None)], "{}", r.render(5));
        // The same overlap under `allow` is fine.
        let r = check(&[job(Policy::Allow)], &h, &l, &[], &bounds(), t(10));
        assert!(r.anomalies.is_empty(), "{}", r.render(5));
        // w0 paused from -4 s to 3 s: its session ended at 0, while r0 ran.
        let pause = Fault { kind: FaultKind::Pause, target: "w0".into(), start: t(-4), end: t(3) };
        let mut h2 = h.clone();
        for x in h2.iter_mut().filter(|x| x.run != "r0") {
            x.worker = "w1".into();
        }
        let r = check(&[job(Policy::Forbid)], &h2, &l, &[pause], &bounds(), t(10));
        assert!(r.anomalies.iter().all(|a| a.limit == Some(Limit::StaleSessionRun)), "{}", r.render(5));
    }

    #[test]
    fn fences_going_backwards_in_tick_order_are_named() {
        let (mut h, l) = clean();
        for x in h.iter_mut().filter(|x| x.run == "r2") {
            x.fence = 5;
        }
        let r = check(&[job(Policy::Allow)], &h, &l, &[], &bounds(), t(10));
        assert_eq!(classes(&r), [(Class::FenceOrder, None)], "{}", r.render(5));
    }

    #[test]
    fn a_run_started_while_its_worker_had_no_session_is_named() {
        let (mut h, l) = clean();
        let cut = Fault { kind: FaultKind::PartitionWorker, target: "w0".into(), start: t(-10), end: t(5) };
        let r = check(&[job(Policy::Allow)], &h, &l, std::slice::from_ref(&cut), &bounds(), t(10));
        assert_eq!(r.anomalies.iter().filter(|a| a.class == Class::RunAfterSessionEnd).count(), 3, "{}", r.render(5));
        // Within the TTL the session still stands.
        let short = Fault { start: t(-2), ..cut };
        h.truncate(3);
        let r = check(&[job(Policy::Allow)], &h, &l, &[short], &bounds(), t(10));
        assert!(!classes(&r).contains(&(Class::RunAfterSessionEnd, None)), "{}", r.render(5));
    }

    #[test]
    fn a_run_still_running_at_the_end_is_named() {
        let (h, mut l) = clean();
        l[1].status = "running".into();
        l[1].ended_at = None;
        let r = check(&[job(Policy::Allow)], &h, &l, &[], &bounds(), t(10));
        assert_eq!(classes(&r), [(Class::LeftRunning, None)], "{}", r.render(5));
    }

    #[test]
    fn late_runs_are_named_and_early_ones_explained_by_a_clock_ahead() {
        let (mut h, l) = clean();
        for x in h.iter_mut().filter(|x| x.run == "r1" && x.event == Event::Start) {
            x.at = ms(1, 7000);
        }
        for x in h.iter_mut().filter(|x| x.run == "r2" && x.event == Event::Start) {
            x.at = ms(2, -20_000);
        }
        let r = check(&[job(Policy::Allow)], &h, &l, &[], &bounds(), t(10));
        assert_eq!(classes(&r), [(Class::Lateness, None), (Class::Lateness, None)], "{}", r.render(5));
        let jump = Fault { kind: FaultKind::ClockJump(30), target: "w0".into(), start: t(-25), end: t(0) };
        let r = check(&[job(Policy::Allow)], &h, &l, &[jump], &bounds(), t(10));
        assert_eq!(
            classes(&r),
            [(Class::Lateness, None), (Class::Lateness, Some(Limit::ClockAhead))],
            "{}",
            r.render(5)
        );
    }
}
