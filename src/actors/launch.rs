//! What happens to a run's shell between `fork` and `exec`: resource limits, niceness, the
//! user it runs as, and the signal it gets when distcron dies.
//!
//! Owns: resolving `run_as_user`/`run_as_group` to ids (in the parent, where allocating and
//! reading `/etc/passwd` is fine), checking up front what would fail in the child (non-root,
//! user not allowed, a limit above the hard limit), and the ONE function of the crate that uses
//! `unsafe`: [`install`], which registers a `pre_exec` hook that calls only async-signal-safe
//! system calls (`setrlimit`, `setpriority`, `setgroups`, `setgid`, `setuid`, `prctl`,
//! `getppid`) on values computed before the fork — no allocation, no lock, no formatting.
//! Leaves to others: spawning, output, timeouts and kills (`process.rs`).
//!
//! Why `pre_exec` and not a launcher subcommand (`distcron __exec ... -- sh -c CMD`): the
//! launcher would exec the ~20 MB distcron binary once more per run (a few ms and its page
//! faults, measured in `benches/engine.rs` as the spawn cost) for the same six system calls;
//! the hook costs nothing measurable. The crate lint is `unsafe_code = "deny"` with this one
//! audited `#[allow]`.
//!
//! Order in the child (std has already set the process group): limits and niceness first
//! (a negative nice and raised hard limits need root), then groups, gid, uid — in that order,
//! since after `setuid` nothing else may change — then `PR_SET_PDEATHSIG`, last because the
//! kernel clears it on any credential change, and finally a check that distcron did not die
//! before the signal was armed.
//!
//! Death signal: SIGTERM, not SIGKILL. The shell gets the same chance to clean up as on a
//! timeout or kill (SIGTERM first), and whatever ignores it is SIGKILLed by the restarted node
//! after `kill_grace_ms` (`orphans.rs`). Note that Linux sends it when the *thread* that spawned
//! the child exits: runs are spawned from actix arbiter threads, which live as long as the
//! process. With `executor.on_restart = "adopt"` no death signal is set (the run must outlive
//! distcron to be adopted).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Group, Pid, Uid, User};

use crate::domain::JobLimits;

/// The account a run switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (for `USER`/`LOGNAME`).
    pub user: String,
    /// Its uid.
    pub uid: Uid,
    /// The primary group (`run_as_group` or the user's own).
    pub gid: Gid,
    /// Supplementary groups (as `initgroups` would set them).
    pub groups: Vec<Gid>,
    /// Home directory (for `HOME`).
    pub home: PathBuf,
}

/// Why a run cannot be launched as asked; the text goes into the run's `err`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    /// `run_as_user` on a node that is not root.
    #[error("run_as_user {user:?} refused: distcron does not run as root on this worker, so it cannot switch users")]
    NotRoot {
        /// The user asked for.
        user: String,
    },
    /// The user is not in `executor.allowed_users`.
    #[error("run_as_user {user:?} refused: not in executor.allowed_users of this worker")]
    NotAllowed {
        /// The user asked for.
        user: String,
    },
    /// No such user on this worker.
    #[error("run_as_user {user:?}: no such user on this worker")]
    UnknownUser {
        /// The user asked for.
        user: String,
    },
    /// No such group on this worker.
    #[error("run_as_group {group:?}: no such group on this worker")]
    UnknownGroup {
        /// The group asked for.
        group: String,
    },
    /// The user or group database could not be read.
    #[error("cannot look up {what}: {errno}")]
    Lookup {
        /// User or group.
        what: String,
        /// The error.
        errno: Errno,
    },
    /// A limit above the worker's hard limit, which only root may raise.
    #[error("limit: {what} of {value} is above this worker's hard limit of {hard}, which only root may raise")]
    AboveHardLimit {
        /// Which limit.
        what: &'static str,
        /// Asked for.
        value: u64,
        /// The worker's hard limit.
        hard: u64,
    },
    /// A negative niceness on a non-root node.
    #[error("limit: nice {nice} needs a root worker (only root may raise a priority)")]
    NiceNeedsRoot {
        /// Asked for.
        nice: i32,
    },
}

/// Everything the child does before exec, computed in the parent.
#[derive(Debug, Clone, Default)]
pub struct LaunchPlan {
    /// `(resource, soft, hard)` to set.
    rlimits: Vec<(Resource, u64, u64)>,
    /// Niceness to set.
    nice: Option<i32>,
    /// Account to switch to.
    identity: Option<Identity>,
    /// Signal for the shell when distcron dies, and distcron's pid to check against.
    death_signal: Option<(Signal, Pid)>,
}

/// The `(resource, soft, hard)` limits for `limits`: memory and open files soft = hard (a job
/// cannot raise them back), CPU with a hard limit one second above the soft one, so the kernel
/// sends SIGXCPU first and SIGKILL only to a process that ignores it.
pub fn rlimits_for(limits: &JobLimits) -> Vec<(Resource, u64, u64)> {
    let mut out = Vec::new();
    if let Some(bytes) = limits.max_memory_bytes {
        out.push((Resource::RLIMIT_AS, bytes, bytes));
    }
    if let Some(secs) = limits.max_cpu_secs {
        out.push((Resource::RLIMIT_CPU, secs, secs.saturating_add(1)));
    }
    if let Some(n) = limits.max_open_files {
        out.push((Resource::RLIMIT_NOFILE, n, n));
    }
    out
}

fn resource_name(r: Resource) -> &'static str {
    match r {
        Resource::RLIMIT_AS => "max_memory_bytes",
        Resource::RLIMIT_CPU => "max_cpu_secs",
        Resource::RLIMIT_NOFILE => "max_open_files",
        _ => "limit",
    }
}

/// Looks up `user` (and `group`) for a run, checking the node may switch to it.
///
/// # Errors
/// A [`LaunchError`] saying why not.
pub fn resolve_identity(
    user: &str,
    group: Option<&str>,
    allowed_users: &[String],
    node_is_root: bool,
) -> Result<Identity, LaunchError> {
    if !node_is_root {
        return Err(LaunchError::NotRoot { user: user.to_owned() });
    }
    if !allowed_users.iter().any(|a| a == user) {
        return Err(LaunchError::NotAllowed { user: user.to_owned() });
    }
    let lookup = |what: String| move |errno| LaunchError::Lookup { what, errno };
    let account = User::from_name(user)
        .map_err(lookup(format!("user {user:?}")))?
        .ok_or_else(|| LaunchError::UnknownUser { user: user.to_owned() })?;
    let gid = match group {
        Some(g) => {
            Group::from_name(g)
                .map_err(lookup(format!("group {g:?}")))?
                .ok_or_else(|| LaunchError::UnknownGroup { group: g.to_owned() })?
                .gid
        }
        None => account.gid,
    };
    let cname = CString::new(user).map_err(|_| LaunchError::UnknownUser { user: user.to_owned() })?;
    let mut groups =
        nix::unistd::getgrouplist(&cname, account.gid).map_err(lookup(format!("the groups of {user:?}")))?;
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    Ok(Identity { user: account.name, uid: account.uid, gid, groups, home: account.dir })
}

impl LaunchPlan {
    /// The plan for a run: `limits`, the account (already resolved), and the death signal
    /// (when `death_signal`). Checks in the parent what only root could do in the child.
    ///
    /// # Errors
    /// [`LaunchError::AboveHardLimit`] / [`LaunchError::NiceNeedsRoot`] on a non-root node.
    pub fn new(
        limits: Option<&JobLimits>,
        identity: Option<Identity>,
        death_signal: bool,
        node_is_root: bool,
    ) -> Result<Self, LaunchError> {
        let rlimits = limits.map(rlimits_for).unwrap_or_default();
        if !node_is_root {
            for (resource, _, hard) in &rlimits {
                if let Ok((_, current_hard)) = getrlimit(*resource) {
                    if *hard > current_hard {
                        return Err(LaunchError::AboveHardLimit {
                            what: resource_name(*resource),
                            value: *hard,
                            hard: current_hard,
                        });
                    }
                }
            }
        }
        let nice = limits.and_then(|l| l.nice);
        if let Some(n) = nice.filter(|n| *n < 0 && !node_is_root) {
            return Err(LaunchError::NiceNeedsRoot { nice: n });
        }
        let death_signal = death_signal.then(|| (Signal::SIGTERM, nix::unistd::getpid()));
        Ok(Self { rlimits, nice, identity, death_signal })
    }

    /// True when nothing needs to happen in the child.
    pub fn is_empty(&self) -> bool {
        self.rlimits.is_empty() && self.nice.is_none() && self.identity.is_none() && self.death_signal.is_none()
    }

    /// Runs in the forked child, before exec: system calls only (see the module docs).
    fn apply_in_child(&self) -> std::io::Result<()> {
        for (resource, soft, hard) in &self.rlimits {
            nix::sys::resource::setrlimit(*resource, *soft, *hard)?;
        }
        if let Some(nice) = self.nice {
            set_nice(nice)?;
        }
        if let Some(id) = &self.identity {
            nix::unistd::setgroups(&id.groups)?;
            nix::unistd::setgid(id.gid)?;
            nix::unistd::setuid(id.uid)?;
        }
        if let Some((signal, parent)) = self.death_signal {
            nix::sys::prctl::set_pdeathsig(signal)?;
            // distcron may have died between fork and prctl: then nobody would ever signal us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(Errno::ESRCH as i32));
            }
        }
        Ok(())
    }
}

/// `setpriority(PRIO_PROCESS, 0, nice)`: nix has no safe wrapper for it.
#[allow(unsafe_code)]
fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: a plain system call on the calling process with integer arguments; no memory is
    // passed, so there is nothing to be valid. Async-signal-safe.
    let rc = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, nice) };
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets the environment of a run switching accounts and installs the pre-exec hook of `plan`.
pub fn install(cmd: &mut tokio::process::Command, plan: LaunchPlan) {
    if let Some(id) = &plan.identity {
        cmd.env("HOME", &id.home).env("USER", &id.user).env("LOGNAME", &id.user);
    }
    if plan.is_empty() {
        return;
    }
    install_hook(cmd, plan);
}

/// The crate's one `pre_exec`.
#[allow(unsafe_code)]
fn install_hook(cmd: &mut tokio::process::Command, plan: LaunchPlan) {
    // SAFETY: `pre_exec` runs the closure in the forked child of a multi-threaded process, where
    // only async-signal-safe functions may be called. `apply_in_child` calls only system-call
    // wrappers (setrlimit, setpriority, setgroups, setgid, setuid, prctl, getppid) on data that
    // was allocated before the fork; it allocates nothing, takes no lock and formats nothing
    // (errors are raw OS errors).
    unsafe {
        cmd.as_std_mut().pre_exec(move || plan.apply_in_child());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_gets_a_hard_limit_one_second_later_others_equal() {
        let limits = JobLimits {
            max_memory_bytes: Some(100_000_000),
            max_cpu_secs: Some(2),
            max_open_files: Some(64),
            nice: Some(5),
        };
        assert_eq!(
            rlimits_for(&limits),
            vec![
                (Resource::RLIMIT_AS, 100_000_000, 100_000_000),
                (Resource::RLIMIT_CPU, 2, 3),
                (Resource::RLIMIT_NOFILE, 64, 64)
            ]
        );
        assert!(rlimits_for(&JobLimits::default()).is_empty(), "no RLIMIT_NPROC, nothing unasked");
    }

    #[test]
    fn run_as_user_is_refused_off_root_and_off_the_allow_list() {
        let allowed = vec!["nobody".to_owned()];
        assert_eq!(
            resolve_identity("nobody", None, &allowed, false),
            Err(LaunchError::NotRoot { user: "nobody".into() })
        );
        assert_eq!(
            resolve_identity("daemon", None, &allowed, true),
            Err(LaunchError::NotAllowed { user: "daemon".into() })
        );
        let unknown = vec!["no-such-user-xyz".to_owned()];
        assert_eq!(
            resolve_identity("no-such-user-xyz", None, &unknown, true),
            Err(LaunchError::UnknownUser { user: "no-such-user-xyz".into() })
        );
        let e = resolve_identity("nobody", None, &allowed, false).expect_err("not root");
        assert!(e.to_string().contains("does not run as root"), "{e}");
    }

    #[test]
    fn nobody_resolves_with_its_home_and_groups() {
        let allowed = vec!["nobody".to_owned()];
        let id = resolve_identity("nobody", None, &allowed, true).expect("nobody exists");
        assert_eq!(id.uid, Uid::from_raw(65534));
        assert!(id.groups.contains(&id.gid));
        assert_eq!(id.user, "nobody");
    }

    #[test]
    fn non_root_plans_refuse_what_only_root_may_do() {
        let e = LaunchPlan::new(Some(&JobLimits { nice: Some(-5), ..JobLimits::default() }), None, false, false)
            .expect_err("negative nice");
        assert_eq!(e, LaunchError::NiceNeedsRoot { nice: -5 });
        let plan = LaunchPlan::new(Some(&JobLimits { nice: Some(5), ..JobLimits::default() }), None, true, false)
            .expect("positive nice is fine");
        assert!(!plan.is_empty());
        assert!(LaunchPlan::new(None, None, false, false).expect("empty").is_empty());
    }
}
