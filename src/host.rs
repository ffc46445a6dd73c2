//! Least exposure on the host (issue 9, item 6): what distcron does to its own process and its
//! data directory at start, so job commands, env values and run outputs are not readable by
//! other local users, nor by a job running as the same user through `/proc`.
//!
//! Owns: the process umask (077), `PR_SET_DUMPABLE` 0, and the modes of `data_dir` (0700) and of
//! everything under it (directories 0700, files 0600), existing entries tightened with one log
//! line each. Leaves to others: which files exist (the stores, spool and token writers create
//! theirs under the umask set here), running jobs as another user (`executor`), and the warning
//! about secrets on the command line (`http`).

use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

/// Mode of `data_dir` and every directory under it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file under `data_dir`.
pub const FILE_MODE: u32 = 0o600;

/// Sets the umask to 077 (every file and directory distcron creates from now on is private to
/// its user) and makes the process non-dumpable: no core dumps, no ptrace, and `/proc/<pid>/`
/// (`environ`, `mem`, `cmdline` aside) owned by root, so a job running as the same user cannot
/// read distcron's environment or memory. Jobs are dumpable again after their `execve`.
///
/// Returns the previous umask. A failing `prctl` is logged (it does not stop the start).
pub fn harden_process() -> u32 {
    let previous = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        log::warn!("Cannot make the process non-dumpable; jobs running as this user may read its memory. error={e}");
    }
    previous.bits()
}

/// One mode change made by [`tighten_data_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    /// The file or directory.
    pub path: PathBuf,
    /// Its mode before (permission bits).
    pub from: u32,
    /// Its mode now.
    pub to: u32,
}

/// Sets `dir` to 0700 and every entry under it to 0700 (directories) or 0600 (files), without
/// following symbolic links, and logs each change. Entries already that private are left alone
/// (a file at 0400 stays 0400).
///
/// # Errors
/// When `dir` cannot be read or a mode cannot be changed (the path is in the error).
pub fn tighten_data_dir(dir: &Path) -> std::io::Result<Vec<Tightened>> {
    let mut changed = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| with_path(&path, e))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        // Files only lose bits (group, other, execute, set-id): a 0400 file stays 0400.
        // Directories get the owner's full access, which distcron needs.
        let want = if kind.is_dir() { DIR_MODE } else { mode & FILE_MODE };
        if mode != want {
            std::fs::set_permissions(&path, Permissions::from_mode(want)).map_err(|e| with_path(&path, e))?;
            log::info!(
                "Tightened the mode of a file under data_dir. path={} from={mode:04o} to={want:04o}",
                path.display()
            );
            changed.push(Tightened { path: path.clone(), from: mode, to: want });
        }
        if kind.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| with_path(&path, e))? {
                stack.push(entry.map_err(|e| with_path(&path, e))?.path());
            }
        }
    }
    Ok(changed)
}

fn with_path(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    #[test]
    fn the_process_is_made_non_dumpable_with_umask_077() {
        let previous = harden_process();
        let dumpable = nix::sys::prctl::get_dumpable();
        let now = nix::sys::stat::umask(Mode::from_bits_truncate(previous));
        // Restore both for the other tests of this process.
        let _ = nix::sys::prctl::set_dumpable(true);
        assert_eq!(dumpable.ok(), Some(false));
        assert_eq!(now.bits(), 0o077);
    }

    #[test]
    fn existing_entries_are_tightened_and_private_ones_left_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(dir.join("sub"), Permissions::from_mode(0o775)).expect("chmod");
        for (name, m) in [("open", 0o644), ("exec", 0o755), ("private", 0o600), ("readonly", 0o400)] {
            std::fs::write(dir.join(name), "x").expect("write");
            std::fs::set_permissions(dir.join(name), Permissions::from_mode(m)).expect("chmod");
        }
        std::fs::write(dir.join("sub/deep"), "x").expect("write");
        std::fs::set_permissions(dir.join("sub/deep"), Permissions::from_mode(0o666)).expect("chmod");
        let outside = root.path().join("outside");
        std::fs::write(&outside, "x").expect("write");
        std::fs::set_permissions(&outside, Permissions::from_mode(0o644)).expect("chmod");
        std::os::unix::fs::symlink(&outside, dir.join("link")).expect("symlink");

        let changed = tighten_data_dir(&dir).expect("tighten");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("sub")), 0o700);
        assert_eq!(mode(&dir.join("open")), 0o600);
        assert_eq!(mode(&dir.join("exec")), 0o600);
        assert_eq!(mode(&dir.join("private")), 0o600);
        assert_eq!(mode(&dir.join("readonly")), 0o400);
        assert_eq!(mode(&dir.join("sub/deep")), 0o600);
        assert_eq!(mode(&outside), 0o644, "symbolic links are not followed");
        assert_eq!(changed.len(), 5, "{changed:?}");
        assert!(tighten_data_dir(&dir).expect("again").is_empty(), "idempotent");
    }
}
