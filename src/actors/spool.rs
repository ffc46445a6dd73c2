//! The log spool: an append-only JSON-lines file of run records under `data_dir`, used while
//! the log store fails and replayed, in order, when it answers again.
//!
//! Pure file logic, no actix. Each append is flushed and `fdatasync`ed so spooled records
//! survive a crash; rewrites go to a temporary file renamed over the spool, so a crash leaves
//! either the old or the new file. A torn last line (crash mid-write) is skipped on read and
//! counted. Beyond `max_bytes` the outputs of the OLDEST spooled records are trimmed to a short
//! head and tail first (down to 3/4 of the bound, so rewrites are rare), then those of new
//! records; no record is ever dropped, so the file can still outgrow the bound by the records
//! themselves.
//!
//! Also here: the dead-letter file, where records the store refused for good are kept.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::domain::RunRecord;

/// Output kept per record once the spool is over its bound (head + tail), bytes.
const TRIMMED_OUTPUT_BYTES: usize = 2048;

/// The spool file and its counters.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    max_bytes: u64,
    bytes: u64,
    records: u64,
    /// Leading lines whose outputs are known to be small already (trimming starts after them).
    small_prefix: u64,
}

/// What a replay read.
#[derive(Debug, Default)]
pub(crate) struct SpoolContents {
    /// Records in file order.
    pub(crate) records: Vec<RunRecord>,
    /// Lines that could not be parsed (torn writes), skipped.
    pub(crate) corrupt_lines: u64,
    /// Non-empty lines read (records + corrupt), for [`Spool::replace_prefix`].
    pub(crate) lines: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `path`, counting what it holds.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new().create(true).append(true).open(path)?;
        let mut spool = Self { path: path.to_owned(), max_bytes, bytes: 0, records: 0, small_prefix: 0 };
        spool.bytes = std::fs::metadata(path)?.len();
        spool.records =
            BufReader::new(File::open(path)?).lines().map_while(Result::ok).filter(|l| !l.trim().is_empty()).count()
                as u64;
        Ok(spool)
    }

    /// Where the spool is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records in the file.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// True when nothing is spooled.
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends records durably. Returns how many records (old or new) had their output trimmed
    /// to keep the file within its bound.
    pub(crate) fn append(&mut self, records: &[RunRecord]) -> std::io::Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut lines: Vec<(Vec<u8>, &RunRecord)> = Vec::with_capacity(records.len());
        for record in records {
            lines.push((serde_json::to_vec(record).map_err(std::io::Error::other)?, record));
        }
        let incoming: u64 = lines.iter().map(|(l, _)| l.len() as u64 + 1).sum();
        let mut trimmed = 0;
        if self.bytes + incoming > self.max_bytes && self.small_prefix < self.records {
            // Oldest first: make room down to 3/4 of the bound.
            let target = (self.max_bytes / 4 * 3).saturating_sub(incoming);
            trimmed += self.trim_oldest(target)?;
        }
        let mut total = self.bytes + incoming;
        for (line, record) in &mut lines {
            if total <= self.max_bytes {
                break;
            }
            if record.output.len() > TRIMMED_OUTPUT_BYTES {
                let before = line.len() as u64;
                *line = serde_json::to_vec(&trimmed_record(record)).map_err(std::io::Error::other)?;
                total -= before.saturating_sub(line.len() as u64);
                trimmed += 1;
            }
        }
        let mut buf = Vec::with_capacity(usize::try_from(incoming).unwrap_or(0));
        for (line, _) in &lines {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        file.write_all(&buf)?;
        file.sync_data()?;
        self.bytes += buf.len() as u64;
        self.records += records.len() as u64;
        Ok(trimmed)
    }

    /// Rewrites the spool with the outputs of the oldest records trimmed until the file is at
    /// most `target` bytes (or nothing is left to trim). Returns how many were trimmed.
    fn trim_oldest(&mut self, target: u64) -> std::io::Result<usize> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut size = self.bytes;
        let mut trimmed = 0;
        let mut index: u64 = 0;
        let mut small_prefix = self.small_prefix;
        for line in BufReader::new(File::open(&self.path)?).split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let mut line = line;
            if index >= self.small_prefix && size > target {
                if let Ok(record) = serde_json::from_slice::<RunRecord>(&line) {
                    if record.output.len() > TRIMMED_OUTPUT_BYTES {
                        let small = serde_json::to_vec(&trimmed_record(&record)).map_err(std::io::Error::other)?;
                        size -= (line.len() as u64).saturating_sub(small.len() as u64);
                        line = small;
                        trimmed += 1;
                    }
                }
                small_prefix = index + 1;
            }
            out.push(line);
            index += 1;
        }
        if trimmed > 0 {
            self.rewrite(&out)?;
        }
        self.small_prefix = small_prefix;
        Ok(trimmed)
    }

    /// Atomically replaces the file with `lines` (temporary file, fsync, rename, fsync dir).
    fn rewrite(&mut self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut buf = Vec::new();
        for line in lines {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&buf)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.bytes = buf.len() as u64;
        self.records = lines.len() as u64;
        Ok(())
    }

    /// After a replay that read `consumed` lines: atomically makes the spool `keep` followed by
    /// whatever was appended after those lines (records spooled while the replay ran).
    pub(crate) fn replace_prefix(&mut self, consumed: u64, keep: &[RunRecord]) -> std::io::Result<()> {
        let mut lines: Vec<Vec<u8>> = Vec::with_capacity(keep.len());
        for r in keep {
            lines.push(serde_json::to_vec(r).map_err(std::io::Error::other)?);
        }
        let mut seen = 0;
        for line in BufReader::new(File::open(&self.path)?).split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            seen += 1;
            if seen > consumed {
                lines.push(line);
            }
        }
        if lines.is_empty() {
            return self.clear();
        }
        self.small_prefix = 0;
        self.rewrite(&lines)
    }

    /// Reads every record in order.
    pub(crate) fn read_all(&self) -> std::io::Result<SpoolContents> {
        let mut out = SpoolContents::default();
        for line in BufReader::new(File::open(&self.path)?).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            out.lines += 1;
            match serde_json::from_str::<RunRecord>(&line) {
                Ok(r) => out.records.push(r),
                Err(_) => out.corrupt_lines += 1,
            }
        }
        Ok(out)
    }

    /// Empties the spool (after a successful replay).
    pub(crate) fn clear(&mut self) -> std::io::Result<()> {
        let file = OpenOptions::new().write(true).truncate(true).open(&self.path)?;
        file.sync_all()?;
        self.bytes = 0;
        self.records = 0;
        self.small_prefix = 0;
        Ok(())
    }
}

/// `record` with its output cut to a head and a tail.
fn trimmed_record(record: &RunRecord) -> RunRecord {
    let mut small = record.clone();
    small.output = trim_output(&record.output);
    small.output_truncated = true;
    small
}

/// Records the log store refused for good (`data_dir/spool/dead-letter.jsonl`): one JSON line
/// per record, `{"dead_lettered_at", "error", "record"}`, fsynced. distcron never reads it back;
/// an operator can fix the cause and re-insert the records.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    path: PathBuf,
    records: u64,
}

impl DeadLetter {
    /// Opens (or creates) the file, counting what it holds.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new().create(true).append(true).open(path)?;
        let records =
            BufReader::new(File::open(path)?).lines().map_while(Result::ok).filter(|l| !l.trim().is_empty()).count()
                as u64;
        Ok(Self { path: path.to_owned(), records })
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records in the file.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Appends `record` with the store's `error`, durably.
    pub(crate) fn append(&mut self, record: &RunRecord, error: &str) -> std::io::Result<()> {
        let entry = serde_json::json!({
            "dead_lettered_at": chrono::Utc::now().to_rfc3339(),
            "error": error,
            "record": record,
        });
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        file.write_all(&line)?;
        file.sync_data()?;
        self.records += 1;
        Ok(())
    }
}

/// Keeps a head and a tail of `output`, cut on character boundaries.
fn trim_output(output: &str) -> String {
    let half = TRIMMED_OUTPUT_BYTES / 2;
    let mut head_end = half.min(output.len());
    while !output.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = output.len().saturating_sub(half).max(head_end);
    while !output.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let dropped = tail_start - head_end;
    format!("{}\n… [{dropped} bytes trimmed in the spool] …\n{}", &output[..head_end], &output[tail_start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Fence, JobName, RunStatus, Trigger, WorkerId};

    fn record(i: usize, output: &str) -> RunRecord {
        let mut r = RunRecord::not_run(
            JobName::parse("job").expect("name"),
            "echo".into(),
            RunStatus::Succeeded,
            Trigger::Schedule,
            chrono::Utc::now(),
            WorkerId("w".into()),
            Fence(i as i64),
            String::new(),
        );
        r.output = output.to_owned();
        r
    }

    #[test]
    fn appends_survive_reopen_in_order_and_clear_empties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path, u64::MAX).expect("open");
        assert!(spool.is_empty());
        let batch: Vec<_> = (0..5).map(|i| record(i, "out")).collect();
        spool.append(&batch[..2]).expect("append");
        spool.append(&batch[2..]).expect("append");
        let reopened = Spool::open(&path, u64::MAX).expect("reopen");
        assert_eq!(reopened.records(), 5);
        assert_eq!(reopened.bytes(), spool.bytes());
        let got = reopened.read_all().expect("read").records;
        assert_eq!(got, batch);
        spool.clear().expect("clear");
        assert!(spool.is_empty());
        assert!(spool.read_all().expect("read").records.is_empty());
    }

    #[test]
    fn torn_last_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path, u64::MAX).expect("open");
        spool.append(&[record(1, "a")]).expect("append");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open raw");
        f.write_all(b"{\"id\":\"half").expect("write");
        let contents = Spool::open(&path, u64::MAX).expect("reopen").read_all().expect("read");
        assert_eq!(contents.records.len(), 1);
        assert_eq!(contents.corrupt_lines, 1);
    }

    #[test]
    fn over_the_bound_outputs_are_trimmed_but_records_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path, 10_000).expect("open");
        let big = "x".repeat(50_000) + "THE-END";
        let trimmed = spool.append(&[record(1, &big), record(2, &big)]).expect("append");
        assert_eq!(trimmed, 2);
        let got = spool.read_all().expect("read").records;
        assert_eq!(got.len(), 2);
        assert!(got[0].output.len() < 4_000);
        assert!(got[0].output.ends_with("THE-END"));
        assert!(got[0].output_truncated);
    }

    #[test]
    fn over_the_bound_the_oldest_outputs_are_trimmed_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path, 100_000).expect("open");
        let big = |tag: &str| format!("{tag}-HEAD{}{tag}-END", "y".repeat(30_000));
        spool.append(&[record(1, &big("one")), record(2, &big("two"))]).expect("append");
        assert_eq!(spool.append(&[record(3, &big("three"))]).expect("append"), 0, "still within the bound");
        // The fourth crosses the bound: the oldest outputs go first, the newest stays whole.
        let trimmed = spool.append(&[record(4, &big("four"))]).expect("append");
        assert!(trimmed >= 1, "{trimmed}");
        let got = spool.read_all().expect("read").records;
        assert_eq!(
            got.iter().map(|r| r.fence.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "no record dropped, order kept"
        );
        assert!(got[0].output_truncated && got[0].output.starts_with("one-HEAD") && got[0].output.ends_with("one-END"));
        assert_eq!(got[3].output, big("four"), "the newest output is whole");
        assert!(!got[3].output_truncated);
        assert!(spool.bytes() <= 100_000, "{}", spool.bytes());
        assert_eq!(spool.bytes(), std::fs::metadata(&path).expect("meta").len());
        let reopened = Spool::open(&path, 100_000).expect("reopen");
        assert_eq!(reopened.records(), 4);
    }

    #[test]
    fn replace_prefix_keeps_what_was_appended_during_a_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path, u64::MAX).expect("open");
        spool.append(&[record(1, "a"), record(2, "b"), record(3, "c")]).expect("append");
        let read = spool.read_all().expect("read");
        assert_eq!(read.lines, 3);
        spool.append(&[record(4, "d")]).expect("append during replay");
        spool.replace_prefix(read.lines, &[record(2, "b")]).expect("replace");
        let got: Vec<i64> = spool.read_all().expect("read").records.iter().map(|r| r.fence.0).collect();
        assert_eq!(got, vec![2, 4]);
        assert_eq!(spool.records(), 2);
        spool.replace_prefix(2, &[]).expect("replace all");
        assert!(spool.is_empty() && spool.bytes() == 0);
    }

    #[test]
    fn dead_letters_are_kept_with_their_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dead-letter.jsonl");
        let mut dead = DeadLetter::open(&path).expect("open");
        dead.append(&record(7, "out"), "code 121: Document failed validation").expect("append");
        assert_eq!(DeadLetter::open(&path).expect("reopen").records(), 1);
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).expect("read").trim()).expect("json");
        assert_eq!(line["error"], "code 121: Document failed validation");
        assert_eq!(line["record"]["fence"], 7);
    }

    #[test]
    fn trim_respects_char_boundaries() {
        let s = "é".repeat(5_000);
        let t = trim_output(&s);
        assert!(t.starts_with('é') && t.ends_with('é'));
    }
}
