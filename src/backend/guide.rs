//! # Adapter guide: what each port guarantees and how to add an adapter
//!
//! The actors and the HTTP layer see storage only through four traits held as `Arc<dyn ..>` in
//! [`Backends`](super::Backends): [`JobStore`](super::JobStore),
//! [`Membership`](super::Membership), [`Claims`](super::Claims) and
//! [`LogStore`](super::LogStore). Each has an embedded single-node adapter
//! ([`embedded`](super::embedded)) and a distributed one (etcd for the first three, MongoDB for
//! the log store). This page is what a new adapter must do; [`conformance`](super::conformance)
//! is the same list as executable checks.
//!
//! ## Adding an adapter
//!
//! 1. Create `src/backend/<name>/` with a `mod.rs` that connects (and says what it owns in its
//!    `//!` line) and one file per port it serves. Only this directory may name the client
//!    crate; `src/actors` and `src/http` never do.
//! 2. Implement the trait with `#[async_trait]`, `&self` methods, `Send + Sync`. Never block the
//!    caller's thread (actix actors run on a single-threaded runtime): use an async client, or
//!    `tokio::task::spawn_blocking` for a synchronous one, and never hold a `std::sync::Mutex`
//!    across `.await`.
//! 3. Map failures to [`BackendError`](super::BackendError): an answer (`JobNotFound`,
//!    `JobExists`, `VersionConflict`, `Compacted`) is not an outage; an outage is `Unavailable`
//!    (with the backend's name and what failed), which [`is_transient`](super::BackendError::is_transient)
//!    tells callers to retry. Unreadable data is `Corrupt`. Never put credentials in a message.
//! 4. Pass the conformance suites, in unit tests when the adapter needs nothing external, and in
//!    `tests/it/backends_etcd.rs` and `tests/it/backends_mongo.rs` against a real server started by the test (free loopback port,
//!    own temp dir, killed on drop):
//!
//!    ```text
//!    conformance::job_store_suite(Arc::new(EtcdJobStore::connect(&etcd.endpoints(), "/cron/").await?)).await;
//!    conformance::membership_suite(Arc::new(members)).await;
//!    conformance::claims_suite(Arc::new(claims)).await;
//!    conformance::log_store_suite(Arc::new(MongoLogStore::connect(&ferret.uri()).await?)).await;
//!    ```
//!
//!    The checks use fresh unique names and tolerate other data in the store, so several may
//!    share one server; they race writers with `tokio::spawn`, so run them in a tokio runtime.
//! 5. Choose it in `Backends::from_config` and give it a `kinds` string for health and logs.
//!
//! ## etcd key layout
//!
//! Under a configurable prefix, default `/cron/` (the seed's layout, so a seed master's jobs are
//! read as they are):
//!
//! | key | value | lifetime |
//! | --- | --- | --- |
//! | `/cron/jobs/<name>` | job JSON ([`Job`](crate::domain::Job); the seed's `{"name","command","cron_expr"}` is valid) | until deleted |
//! | `/cron/killer/<name>` | kill signal: empty (the seed's: every run) or `{"run":"<id>"}` | 1 s lease |
//! | `/cron/run/<name>` | run-now signal: the request id | 1 s lease |
//! | `/cron/workers/<id>` | [`WorkerInfo`](crate::domain::WorkerInfo) JSON | the worker's session lease |
//! | `/cron/claim/<name>` | last claimed tick, zero-padded ms since the epoch (13+ digits) | until the job is deleted |
//! | `/cron/running/<name>/<run id>` | [`RunningMark`](super::RunningMark) JSON | the running worker's session lease |
//! | `/cron/requests/<name>/<id>` | empty: a claimed run-now request or lost-run record | a shared 2 h lease |
//!
//! The job store's revision is etcd's revision; a watch is one etcd watch on the key range
//! `jobs/` .. `run/` from that revision, mapping puts under `jobs/` to `Change::Put`, deletes
//! under `jobs/` to `Change::Delete` (deletes of signal keys are lease expiries, not changes), and
//! puts under `killer/` and `run/` to `Change::Signal`. Several changes may share a revision
//! (one txn, a lease expiring). The worker key and the running marks share the session lease, so
//! a dead worker's marks vanish in the same revision as its key: `Claims::watch_lost` reports
//! exactly those (a mark cleared by its worker is deleted alone).
//!
//! ## What each method must guarantee
//!
//! ### [`JobStore`](super::JobStore)
//! - `snapshot()` returns every readable job and the revision it is consistent at (one etcd
//!   range read; its header revision). A stored value that does not parse is skipped with a
//!   `log::warn!` naming the key, never an error: one bad key must not stop the fleet.
//! - `put(job, precondition)` is atomic (one etcd txn comparing the key's version/existence;
//!   one SQLite transaction): `Absent` fails with `JobExists`, `Version(v)` with `JobNotFound`
//!   or `VersionConflict{expected, found}`; of two writers with the same expected version
//!   exactly one wins. The store sets `version` = previous + 1 (or 1), keeps the previous
//!   `created_at` (or sets now) and sets `updated_at` = now, ignoring the caller's values; it
//!   returns the previous job, the stored job and the write's revision. A job written by the
//!   seed has version 0 and is updated with `Version(0)`.
//! - `delete(name, expected)` with a version behaves like a versioned put (`JobNotFound`,
//!   `VersionConflict`); without one, deleting a missing job is `Ok(None)`.
//! - `signal()` makes a kill or run-now visible to every watcher with a revision; it is not
//!   state (a short etcd lease; nothing in the embedded file).
//! - `watch(from)` yields every change with revision >= `from` in revision order, exactly once,
//!   then live changes, with no gap between history and live (subscribe before reading
//!   history). `from` may be ahead of the store (the stream waits). When history before
//!   `from` is gone (etcd compaction; the embedded store's ring, which starts empty at each
//!   open) it fails with `Compacted`; a stream that falls behind yields one
//!   `Err(Compacted)` and ends. The WatchActor then resyncs from a fresh snapshot, so an
//!   adapter must never skip an event silently.
//!
//! ### [`Membership`](super::Membership)
//! - `join`/`heartbeat` publish the worker's info and keep it live (etcd: a put bound to the
//!   session lease, kept alive; embedded: a TTL, 15 s by default). One adapter instance may
//!   publish several worker ids. A heartbeat after expiry registers the worker again.
//! - `live()` lists each live worker once, sorted by id; a worker whose lease or TTL expired is
//!   not listed. `leave` removes a worker at once and is not an error when it is absent.
//! - `session_events()` (optional; default: a stream that never yields) reports `Lost` when the
//!   process's session expired (its registration and marks are gone; claims then fail until
//!   `Renewed`, when the workers are registered again).
//!
//! ### [`Claims`](super::Claims)
//! - `claim_tick(job, tick)` succeeds only when `tick` is later than every tick of that job
//!   claimed before, compared at millisecond precision (etcd: txn `value(claim/<name>) < T` or
//!   key absent → put T); a tick is claimed once cluster-wide whatever the clocks say, and of
//!   many concurrent claimants exactly one gets `Some`. The fence is increasing over claims
//!   (etcd: the winning put's revision; embedded: a counter seeded from the clock).
//! - `claim_request(job, request)` succeeds once per request id (embedded: remembered for an
//!   hour, at most 100,000 ids; etcd: a create-if-absent key with a lease).
//! - `Err` means nothing was claimed: the caller must not run the tick.
//! - `mark_running` publishes a live run (etcd: bound to the session lease, so a dead worker's
//!   marks vanish and the master records its runs `lost`); `clear_running` is not an error when
//!   absent; `running(job)` lists the marks of one job or of all.
//! - `claim_tick_checked(job, tick, with_running)` is `claim_tick` plus the job's marks (when
//!   asked) and the previously claimed tick (when known), in one round trip where the store can
//!   (etcd: one txn). The default calls `claim_tick` then `running`.
//! - `claim_ticks(requests)` (required) claims many ticks, each decided on its own, and writes
//!   each won request's `mark` in the same transaction as its claim (all or nothing), under
//!   `mark_if_idle` only when the job has no mark; `TickClaim::marked` says whether it did. A
//!   mark written with its claim reads back with the claim's fence. A refused claim whose
//!   request's mark is already stored answers as won (its earlier attempt committed).
//! - `known_claim(job)` (optional) is a no-round-trip hint of the latest claimed tick (etcd: a
//!   cache fed by a watch of `claim/`); it may lag, never lead. `watch_lost()` (optional) yields
//!   the marks that went with an expired session, not those a worker cleared.
//!
//! ### [`LogStore`](super::LogStore)
//! - `append_batch` writes a whole batch in one call (one SQLite transaction; for MongoDB an
//!   unordered `insert_many` of `running` records, duplicate keys = already stored, beside an
//!   unordered `update` command of replacement upserts of final records), upserting by run id in
//!   slice order, so a retried batch never duplicates a run and a `running` record becomes its
//!   final record. A final record is never replaced by a `running` one (a late retry of the
//!   start record must not resurrect a finished run). Records the store refuses one by one
//!   (validation, size) come back as `BackendError::Rejected` with the rest written; the
//!   LogBatchActor retries them, then dead-letters them.
//! - `query` orders by (start time, id) descending, where start time is
//!   [`RunRecord::start_time`](crate::domain::RunRecord::start_time) in ms; filters job, status,
//!   worker, `from <= start < to`; `after` selects rows strictly after the cursor in that order,
//!   then `skip`, then `limit` clamped to 1..=1000. `next_cursor` is the last row's
//!   [`RunCursor::encode`](super::RunCursor::encode) when the page is full, else `None`; pages
//!   stay stable while new runs arrive. It returns summaries (`output` empty, `output_bytes`
//!   as stored) and must not read outputs: keep them apart (a table, a projection).
//! - `get(id)` returns the whole record; `read_output(id, max)` at most `max` bytes of its
//!   output, cut on a character boundary, with the stored size. `query_with_output(q, budget)`
//!   (default: `query` + `read_output`) fills outputs in page order within `budget` bytes,
//!   marking what it cut. `last_runs(jobs)` returns each job's newest run as a summary in one
//!   round trip where the store allows (the default asks `query` per job).
//! - `count(filter)` counts what `query` would page through. `stats(job, since)` counts runs
//!   with a final status started at or after `since` (succeeded; failed = failed, timeout,
//!   error, killed, lost), nearest-rank p50/p95 of their `duration_ms`, and the start times of
//!   the last success and failure. `purge_before(t)` deletes runs started before `t` and says
//!   how many. `apply_retention(policy, now)` deletes each job's runs older than its own
//!   retention (override or default; 0 = keep) and says how many. `ping` is cheap.
//! - Times keep millisecond precision (MongoDB's), and the record reads back as written.
