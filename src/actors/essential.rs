//! Essential actors: the ones without which the node silently stops doing its job (scheduler,
//! watch, log batching, lost-run recording), and the boundary that keeps them from dying quietly.
//!
//! Owns: [`PanicGuard`], a field of each essential actor whose `Drop` runs when the actor is
//! dropped — on a panic (actix has no panic boundary: a handler panic ends the actor's task and
//! drops the actor while unwinding) it logs the panic with the actor's name and exits the
//! process with [`EXIT_ESSENTIAL_PANIC`], so a supervisor (systemd `Restart=always`, a container
//! restart policy) starts a fresh process whose start-up recovery accounts for the runs in
//! flight; on any other stop outside shutdown it logs an error. [`install`] arms the guards (a
//! process that never calls it, such as a unit test, only gets the log line) and logs every
//! panic's message and location through `log` (the default hook writes to stderr only).
//! [`Essentials`], the list of essential actors' addresses the readiness probe checks.
//!
//! Leaves to others: restarting (the supervisor), the recovery at start (the actors' own start
//! paths), the HTTP answer (`http::health`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr};

/// Exit code of a process stopped because an essential actor panicked (`EX_SOFTWARE`).
pub const EXIT_ESSENTIAL_PANIC: i32 = 70;

/// Set by [`install`]: guards exit the process only in a real node, never in a unit test.
static ARMED: AtomicBool = AtomicBool::new(false);
/// Set once shutdown begins: essential actors stopping after that are expected.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Marks the start of a graceful shutdown (actors dropped after it are not reported).
pub fn shutting_down() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// A field of an essential actor: exits the process if the actor is dropped by a panic.
#[derive(Debug)]
pub struct PanicGuard {
    actor: &'static str,
}

impl PanicGuard {
    /// The guard of the essential actor `actor` (its name in logs and readiness).
    pub fn new(actor: &'static str) -> Self {
        Self { actor }
    }
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        let armed = ARMED.load(Ordering::SeqCst);
        if std::thread::panicking() && armed {
            // witnet-rust's stop_system_if_panicking, made final: stopping the actix system
            // would wait for the HTTP server and the other actors, and a node without its
            // scheduler must not keep answering as if it were fine. The spool is fsynced per
            // append; what is only in memory is accounted for at the next start, as after a kill.
            log::error!(
                "Essential actor panicked; stopping the process so its supervisor restarts it. actor={} exit_code={EXIT_ESSENTIAL_PANIC}",
                self.actor
            );
            log::logger().flush();
            std::process::exit(EXIT_ESSENTIAL_PANIC);
        }
        if std::thread::panicking() {
            log::error!("Essential actor panicked (guard not armed: not a node process). actor={}", self.actor);
        } else if armed && !SHUTTING_DOWN.load(Ordering::SeqCst) {
            log::error!("Essential actor stopped; readiness reports the node unavailable. actor={}", self.actor);
        }
    }
}

/// Arms every [`PanicGuard`] of this process and logs each panic (message, location, thread) as
/// an error before the previous hook runs. Panics of a run's own task are caught and recorded as
/// that run's `error`; this line is what tells an operator where the code broke. Called once by
/// [`crate::run`].
pub fn install() {
    ARMED.store(true, Ordering::SeqCst);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let location = info.location().map_or_else(|| "unknown".to_owned(), |l| format!("{}:{}", l.file(), l.line()));
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        log::error!("Panic. thread={thread} location={location} message={message}");
        previous(info);
    }));
}

/// Liveness of one essential actor.
type Alive = Arc<dyn Fn() -> bool + Send + Sync>;

/// The essential actors of this process, by name, for the readiness probe.
#[derive(Clone, Default)]
pub struct Essentials {
    actors: Vec<(&'static str, Alive)>,
}

impl std::fmt::Debug for Essentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.actors.iter().map(|(name, _)| name)).finish()
    }
}

impl Essentials {
    /// Adds the actor at `addr` under `name`.
    pub fn add<A: Actor>(&mut self, name: &'static str, addr: &Addr<A>) {
        let addr = addr.clone();
        self.actors.push((name, Arc::new(move || addr.connected())));
    }

    /// Each essential actor's name and whether it is running.
    pub fn states(&self) -> Vec<(&'static str, bool)> {
        self.actors.iter().map(|(name, alive)| (*name, alive())).collect()
    }
}

#[cfg(test)]
mod tests {
    use actix::prelude::*;

    use super::*;

    struct Stoppable;

    impl Actor for Stoppable {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct StopNow;

    impl Handler<StopNow> for Stoppable {
        type Result = ();
        fn handle(&mut self, _: StopNow, ctx: &mut Self::Context) {
            ctx.stop();
        }
    }

    #[actix::test]
    async fn essentials_report_a_stopped_actor() {
        let running = Stoppable.start();
        let stopped = Stoppable.start();
        let mut essentials = Essentials::default();
        essentials.add("running", &running);
        essentials.add("stopped", &stopped);
        stopped.do_send(StopNow);
        for _ in 0..200 {
            if !stopped.connected() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(essentials.states(), vec![("running", true), ("stopped", false)]);
    }
}
