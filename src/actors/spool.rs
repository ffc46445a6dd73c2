//! The log spool: an append-only JSON-lines file of run records under `data_dir`, used while
//! the log store fails and replayed, in order, when it answers again.
//!
//! Pure file logic, no actix. Each append is flushed and `fdatasync`ed so spooled records
//! survive a crash. A torn last line (crash mid-write) is skipped on read and counted.
//! Beyond `max_bytes` the outputs of newly spooled records are trimmed to a short head and
//! tail; no record is ever dropped.

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
}

/// What a replay read.
#[derive(Debug, Default)]
pub(crate) struct SpoolContents {
    /// Records in file order.
    pub(crate) records: Vec<RunRecord>,
    /// Lines that could not be parsed (torn writes), skipped.
    pub(crate) corrupt_lines: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `path`, counting what it holds.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new().create(true).append(true).open(path)?;
        let mut spool = Self { path: path.to_owned(), max_bytes, bytes: 0, records: 0 };
        spool.bytes = std::fs::metadata(path)?.len();
        spool.records = BufReader::new(File::open(path)?).lines().map_while(Result::ok).filter(|l| !l.trim().is_empty()).count() as u64;
        Ok(spool)
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

    /// Appends records durably. Returns how many had their output trimmed to fit the bound.
    pub(crate) fn append(&mut self, records: &[RunRecord]) -> std::io::Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::new();
        let mut trimmed = 0;
        for record in records {
            let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
            if self.bytes + (buf.len() + line.len()) as u64 > self.max_bytes && record.output.len() > TRIMMED_OUTPUT_BYTES {
                let mut small = record.clone();
                small.output = trim_output(&record.output);
                small.output_truncated = true;
                line = serde_json::to_vec(&small).map_err(std::io::Error::other)?;
                trimmed += 1;
            }
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        file.write_all(&buf)?;
        file.sync_data()?;
        self.bytes += buf.len() as u64;
        self.records += records.len() as u64;
        Ok(trimmed)
    }

    /// Reads every record in order.
    pub(crate) fn read_all(&self) -> std::io::Result<SpoolContents> {
        let mut out = SpoolContents::default();
        for line in BufReader::new(File::open(&self.path)?).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
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
    fn trim_respects_char_boundaries() {
        let s = "é".repeat(5_000);
        let t = trim_output(&s);
        assert!(t.starts_with('é') && t.ends_with('é'));
    }
}
