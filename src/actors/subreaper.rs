//! distcron as a child subreaper: processes a run leaves behind are re-parented to distcron
//! (not to init), so they stay findable and are never left as zombies.
//!
//! Owns: `PR_SET_CHILD_SUBREAPER` at start, the registry of the shells distcron waits for
//! itself ([`spawn_registered`]), and the reaper task that collects every *other* child that
//! exits (a run's grandchild re-parented here after its shell ended, even one that left the
//! run's process group with `setsid`).
//! Leaves to others: killing anything (`process.rs` sweeps a finished run's group, `orphans.rs`
//! handles what a previous life left), and waiting for the shells (tokio's `Child::wait`).
//!
//! Why a registry: tokio reaps each spawned shell with `waitpid(pid)` when its `wait()` is
//! polled; a `waitpid(-1)` here would steal those exit statuses. So the reaper only ever waits
//! for a specific pid that is a zombie child (per `/proc`) and not in the registry. A shell is
//! put in the registry under the same lock the reaper holds while it reaps, and taken out only
//! after tokio has collected it, so a shell that exits at once can never be reaped here.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::procfs;

/// Shells whose exit status belongs to tokio (pids).
static OWN_SHELLS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// How often the reaper looks even without a SIGCHLD (signals coalesce).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

fn registry() -> MutexGuard<'static, BTreeSet<i32>> {
    // The set stays consistent whatever panicked while holding it (insert/remove only).
    OWN_SHELLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spawns `cmd` and registers its pid as a shell whose exit status tokio collects.
///
/// # Errors
/// The spawn error.
pub fn spawn_registered(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut own = registry();
    let child = cmd.spawn()?;
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        own.insert(pid);
    }
    Ok(child)
}

/// Forgets a shell once tokio has collected its exit status.
pub fn unregister(pid: i32) {
    registry().remove(&pid);
}

/// Makes this process a child subreaper (Linux); logs and carries on where that fails.
pub fn become_subreaper() {
    match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => log::info!("distcron is a child subreaper: processes left by runs are re-parented to it."),
        Err(e) => {
            log::warn!("Cannot become a child subreaper; processes that outlive a run's shell go to init. error={e}")
        }
    }
}

/// Reaps every zombie child of this process that is not a registered shell; returns how many.
pub fn reap_orphans() -> usize {
    reap_where(|_| true)
}

/// [`reap_orphans`] limited to the zombies `select` picks.
fn reap_where(select: impl Fn(&procfs::ProcStat) -> bool) -> usize {
    let me = nix::unistd::getpid().as_raw();
    let own = registry();
    let mut reaped = 0;
    for p in procfs::all_processes() {
        if p.ppid != me || p.is_live() || own.contains(&p.pid) || !select(&p) {
            continue;
        }
        if let Ok(status) = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG)) {
            if status.pid().is_some() {
                reaped += 1;
            }
        }
    }
    reaped
}

/// Runs forever on the current runtime: reaps on every SIGCHLD and every few seconds.
pub async fn reap_forever() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("Cannot listen for SIGCHLD; reaping re-parented processes every few seconds only. error={e}");
            None
        }
    };
    loop {
        let n = tokio::task::spawn_blocking(reap_orphans).await.unwrap_or(0);
        if n > 0 {
            log::debug!("Reaped processes re-parented to distcron. count={n}");
        }
        match sigchld.as_mut() {
            Some(s) => {
                let _ = tokio::time::timeout(SWEEP_EVERY, s.recv()).await;
            }
            None => tokio::time::sleep(SWEEP_EVERY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_shells_are_never_reaped_here_and_others_are() {
        // A registered child that exits: stays a zombie for its owner.
        let mut tokio_cmd = tokio::process::Command::new("true");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let mut child = spawn_registered(&mut tokio_cmd).expect("spawn");
            let pid = child.id().expect("pid") as i32;
            // Another child nobody waits for (like a re-parented orphan).
            let stray = std::process::Command::new("true").spawn().expect("spawn stray");
            let stray_pid = stray.id() as i32;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while procfs::read_stat(stray_pid).is_some_and(|p| p.is_live())
                || procfs::read_stat(pid).is_some_and(|p| p.is_live())
            {
                assert!(std::time::Instant::now() < deadline, "children did not exit");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Only these two: other tests of this binary wait for their own children.
            reap_where(|p| p.pid == stray_pid || p.pid == pid);
            assert!(procfs::read_stat(stray_pid).is_none(), "the stray zombie was reaped");
            let status = child.wait().await.expect("tokio still gets the shell's status");
            assert!(status.success());
            unregister(pid);
            drop(stray);
        });
    }
}
