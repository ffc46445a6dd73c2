//! distcron: a distributed cron. Scheduled shell jobs, run exactly once per tick, every run
//! logged, searchable and killable.
//!
//! Map: [`domain`] holds plain data and the cron dialect; [`backend`] the four ports and their
//! adapters; [`actors`] the engine (watch, scheduler, executors, log batching); [`http`] the
//! JSON API, the seed's legacy routes and the admin page; [`run`] wires them per role.

pub mod actors;
pub mod alerting;
pub mod api_token;
pub mod backend;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod host;
pub mod http;
pub mod metrics;
pub mod test_hooks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::actors::messages::{FlushLogs, Shutdown};
use crate::backend::Backends;
use crate::config::{Config, Role};
use crate::domain::{WorkerId, WorkerInfo};
pub use crate::error::StartupError;

/// Runs distcron with `config` until SIGINT/SIGTERM, then shuts down gracefully: stop claiming,
/// let runs finish within `shutdown_grace_secs`, kill the rest (recorded `killed`), flush the
/// run log, exit.
///
/// # Errors
/// A [`StartupError`] when the role, the backends or the listener cannot be set up.
pub fn run(mut config: Config) -> Result<(), StartupError> {
    actors::essential::install();
    test_hooks::warn_if_set();
    check_role(&config)?;
    http::check_listen_auth(&config)?;
    // Issue 9, item 6: before any file is created.
    host::harden_process();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartupError::Io {
        context: format!("cannot create data_dir {}", config.data_dir.display()),
        source,
    })?;
    host::tighten_data_dir(&config.data_dir)
        .map_err(|source| StartupError::Io { context: "cannot tighten the modes under data_dir".into(), source })?;
    let _lock = lock_data_dir(&config.data_dir)?;
    // README "Security": auth is on unless insecure_no_auth; the token is generated under the lock.
    let token_source = api_token::resolve(&mut config)?;
    api_token::log_source(&token_source, &config.listen);
    let tls = http::tls::load(&config)?;
    let node_id = node_id(&config)?;
    let listener = http::bind(&config)?;
    let system = actix::System::new();
    system.block_on(async move {
        let backends = Backends::from_config(&config).await?;
        serve(config, backends, node_id, listener, tls).await
    })
}

/// Refuses role/backend combinations this build cannot serve.
fn check_role(config: &Config) -> Result<(), StartupError> {
    // ARCHITECTURE.md "Process and roles": masters and workers share state through etcd; the
    // embedded job store, membership and claims serve a single process.
    if config.role != Role::All && !config.uses_etcd() {
        return Err(StartupError::Role(format!(
            "role {} needs etcd: set etcd.endpoints (--etcd-endpoints, DISTCRON_ETCD_ENDPOINTS); the embedded job store, membership and claims serve a single process, so run a single node with --role all",
            config.role.as_str()
        )));
    }
    // ARCHITECTURE.md: master and worker need etcd and MongoDB. Without a shared run log each
    // node would keep its runs in its own file and a master would show none of them.
    if config.role != Role::All && !config.uses_mongo() && !config.allow_local_run_log {
        return Err(StartupError::Role(format!(
            "role {} needs MongoDB for run records: set mongo.uri (--mongo-uri, DISTCRON_MONGO_URI) so masters see every worker's runs (allow_local_run_log = true keeps them per node, for tests only)",
            config.role.as_str()
        )));
    }
    // With --role all, any mix of etcd/embedded and MongoDB/embedded is a config choice.
    Ok(())
}

/// What runs in this process besides HTTP, per role.
enum Engine {
    /// Worker actors (roles all and worker).
    Worker(actors::Handles),
    /// The lost-run recorder and its log pipeline (role master).
    Master(actors::MasterHandles),
}

async fn serve(
    config: Config,
    backends: Backends,
    node_id: WorkerId,
    listener: std::net::TcpListener,
    tls: Option<http::tls::TlsConfig>,
) -> Result<(), StartupError> {
    let config = Arc::new(config);
    let started_at = Utc::now();
    // README "Metrics": a master reports HTTP, its log pipeline and lost runs; a worker also
    // its scheduler, executors and session.
    let metrics = metrics::Metrics::new(match config.role {
        Role::Master => metrics::MetricsScope::Master,
        Role::All | Role::Worker => metrics::MetricsScope::Worker,
    });
    let engine = match config.role {
        Role::Master => Engine::Master(actors::start_master(&config, &backends, &metrics).await?),
        Role::All | Role::Worker => {
            let worker = WorkerInfo {
                id: node_id.clone(),
                hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
                address: first_ipv4()
                    .unwrap_or_else(|| config.listen_addr().map(|a| a.ip().to_string()).unwrap_or_default()),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at,
                running: 0,
                capacity: config.executor.pool_size,
                last_heartbeat: started_at,
                labels: config.labels.clone(),
                // README "Live output": the master proxies a run's live output to this address.
                api_addr: Some(config.advertised_api_addr(first_ipv4().as_deref())),
            };
            Engine::Worker(actors::start(&config, &backends, worker, started_at, &metrics).await?)
        }
    };
    let node = match &engine {
        Engine::Worker(handles) => Some(http::NodeHandles {
            scheduler: handles.scheduler.clone().recipient(),
            pool: handles.pool.clone().recipient(),
            log: handles.log.clone().recipient(),
            watch: handles.watch.clone().recipient(),
        }),
        // ARCHITECTURE.md: a master is stateless HTTP over the stores; no scheduler to ask.
        Engine::Master(_) => None,
    };
    let output_followers = http::Followers::new(config.http.max_output_followers);
    let state = http::AppState {
        backends: backends.clone(),
        config: config.clone(),
        node,
        node_id: node_id.clone(),
        started_at,
        auth: http::AuthState::default(),
        essentials: match &engine {
            Engine::Worker(handles) => handles.essentials.clone(),
            Engine::Master(handles) => handles.essentials.clone(),
        },
        alert_channels: Arc::new(alerting::Channels::from_config(&config.alerts, &config.executor.shell)?),
        metrics,
        live: match &engine {
            Engine::Worker(handles) => handles.live.clone(),
            Engine::Master(_) => actors::live::LiveOutputs::default(),
        },
        output_followers: output_followers.clone(),
    };
    // A worker's listener serves health and /metrics only.
    let server = match config.role {
        Role::Worker => http::serve_health_tls_on(state, listener, tls)?,
        Role::All | Role::Master => http::serve_tls_on(state, listener, tls)?,
    };
    let server_handle = server.handle();
    if config.role != Role::Worker {
        actix::spawn(purge_audit_log(Arc::clone(&backends.jobs), config.audit.retention_days));
    }
    actix::spawn(async move {
        if let Err(e) = server.await {
            log::error!("HTTP server stopped with an error. error={e}");
        }
    });
    log::info!(
        "distcron started. role={} listen={} node_id={node_id} data_dir={} jobs={} logs={}",
        config.role.as_str(),
        config.listen,
        config.data_dir.display(),
        backends.kinds.jobs,
        backends.kinds.logs
    );

    wait_for_signal().await;
    let grace = Duration::from_secs(config.scheduler.shutdown_grace_secs);
    log::info!("Signal received; shutting down. grace_secs={}", grace.as_secs());
    actors::essential::shutting_down();
    let log_actor = match &engine {
        Engine::Worker(handles) => {
            if let Err(e) = handles.scheduler.send(Shutdown { grace }).await {
                log::error!("Scheduler did not answer the shutdown request. error={e}");
            }
            handles.log.clone()
        }
        Engine::Master(handles) => handles.log.clone(),
    };
    if let Err(e) = log_actor.send(FlushLogs).await {
        log::error!("Log batcher did not answer the final flush. error={e}");
    }
    // Open output streams would hold the graceful stop for its whole timeout: end them.
    output_followers.close_all();
    server_handle.stop(true).await;
    if matches!(engine, Engine::Worker(_)) {
        if let Err(e) = backends.members.leave(&node_id).await {
            log::warn!("Cannot leave membership cleanly. error={e}");
        }
    }
    log::info!("distcron stopped.");
    Ok(())
}

/// Every hour (and once at start), deletes audit entries older than `retention_days`. Every
/// node with an HTTP front end runs it; purging twice is harmless.
async fn purge_audit_log(jobs: Arc<dyn backend::JobStore>, retention_days: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days));
        match jobs.purge_audit_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => log::info!("Audit log purged. deleted={n} retention_days={retention_days}"),
            Err(e) => log::warn!("Audit log purge failed; retrying next hour. error={e}"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            log::error!("Cannot install signal handlers; stop with SIGKILL.");
            futures::future::pending::<()>().await;
        }
    }
}

/// Holds an exclusive lock on `data_dir/lock` for the life of the process: two nodes sharing one
/// data dir would each plan the same embedded jobs and run them twice, and interleave one spool.
fn lock_data_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, StartupError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("lock");
    let io = |context: String| move |source| StartupError::Io { context, source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let pid = std::process::id().to_string();
            let written = lock.set_len(0).and_then(|()| lock.rewind()).and_then(|()| lock.write_all(pid.as_bytes()));
            written.map_err(io(format!("cannot write {}", path.display())))?;
            Ok(lock)
        }
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(StartupError::Role(format!(
                "data_dir {} is in use by another distcron process (pid {}); give each node its own data_dir",
                dir.display(),
                holder.trim()
            )))
        }
    }
}

/// The configured node id, or the one kept in `data_dir/node_id` (created on first start).
fn node_id(config: &Config) -> Result<WorkerId, StartupError> {
    if !config.node_id.is_empty() {
        return Ok(WorkerId(config.node_id.clone()));
    }
    let path = config.data_dir.join("node_id");
    let io = |context: String| move |source| StartupError::Io { context, source };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(WorkerId(s.trim().to_owned())),
        _ => {
            let host =
                nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "node".into());
            let host: String =
                host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect();
            let suffix = uuid::Uuid::now_v7().simple().to_string();
            let id = format!("{host}-{}", &suffix[suffix.len() - 8..]);
            write_atomically(&path, &id).map_err(io(format!("cannot write {}", path.display())))?;
            Ok(WorkerId(id))
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// First non-loopback IPv4 address (what the seed's `/worker/list` shows).
fn first_ipv4() -> Option<String> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let addr = ifa.address?;
        let v4 = addr.as_sockaddr_in()?.ip();
        (!v4.is_loopback()).then(|| v4.to_string())
    })
}
