//! Reading processes from Linux `/proc`: the parsing is pure and unit tested, the reads are thin.
//!
//! Owns: parsing `/proc/<pid>/stat` (state, parent, process group, session, start time in clock
//! ticks since boot — field 22, which with the pid identifies a process for good: a reused pid
//! has a later start time), listing pids, and looking for a `KEY=value` entry in
//! `/proc/<pid>/environ` (readable by root, or by the same user for a dumpable process).
//! Leaves to others: what to do with the processes found (`orphans.rs`, `subreaper.rs`).

use std::path::Path;

/// The fields of `/proc/<pid>/stat` distcron uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// State letter (`R`, `S`, `D`, `Z` zombie, `X` dead, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// Start time in clock ticks after boot (field 22).
    pub start_ticks: u64,
}

impl ProcStat {
    /// True for a process that still runs code (not a zombie waiting to be reaped).
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let (head, rest) = line.rsplit_once(')')?;
    let pid = head.split_once(" (")?.0.trim().parse().ok()?;
    // rest: " state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    //        cutime cstime priority nice num_threads itrealvalue starttime ..." (fields 3..)
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
    Some(ProcStat {
        pid,
        state,
        ppid: i32::try_from(num(1)?).ok()?,
        pgrp: i32::try_from(num(2)?).ok()?,
        session: i32::try_from(num(3)?).ok()?,
        // field 22 overall = index 19 after the command name (fields 3.. start at index 0)
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat` of one process; `None` when it is gone or unreadable.
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parse_stat)
}

/// Every process visible in `/proc` (processes may vanish while this runs; they are skipped).
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(read_stat)
        .collect()
}

/// True when the NUL-separated environment block `environ` holds exactly `key=value`.
pub fn environ_has(environ: &[u8], key: &str, value: &str) -> bool {
    let want_len = key.len() + 1 + value.len();
    environ.split(|b| *b == 0).any(|entry| {
        entry.len() == want_len
            && entry.starts_with(key.as_bytes())
            && entry[key.len()] == b'='
            && entry.ends_with(value.as_bytes())
    })
}

/// Whether process `pid`'s environment holds `key=value`: `None` when it cannot be read (gone,
/// or another user's process and distcron is not root).
pub fn process_env_has(pid: i32, key: &str, value: &str) -> Option<bool> {
    read_environ(&Path::new("/proc").join(pid.to_string()).join("environ")).map(|e| environ_has(&e, key, value))
}

fn read_environ(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 987654 2461696 200 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(line).expect("parses");
        assert_eq!(st, ProcStat { pid: 4242, state: 'S', ppid: 1, pgrp: 4242, session: 4242, start_ticks: 987_654 });
        assert!(st.is_live());
        let zombie = line.replace(") S 1", ") Z 1");
        assert!(!parse_stat(&zombie).expect("parses").is_live());
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (x) S 1 2"), None, "too short");
    }

    #[test]
    fn own_process_reads_back_from_proc() {
        let me = read_stat(std::process::id() as i32).expect("own stat");
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.start_ticks > 0);
        assert!(all_processes().iter().any(|p| p.pid == me.pid));
    }

    #[test]
    fn environ_match_is_exact() {
        let env = b"PATH=/bin\0DISTCRON_RUN_ID=abc\0DISTCRON_RUN_IDX=abc\0";
        assert!(environ_has(env, "DISTCRON_RUN_ID", "abc"));
        assert!(!environ_has(env, "DISTCRON_RUN_ID", "ab"));
        assert!(!environ_has(env, "DISTCRON_RUN", "ID=abc"), "no match across the '='");
        assert!(!environ_has(b"", "A", "b"));
    }
}
