//! The log spool: an append-only JSON-lines file of run records under `data_dir`, used while
//! the log store fails (or while more is buffered than `log_batch.max_buffered_bytes`) and
//! replayed, in order, when the store answers again.
//!
//! Owns: the file format and its crash rules, and [`SpoolHandle`], the one thread that does
//! every spool operation, in the order they were asked, so no actor thread ever waits on the
//! disk. Leaves to others: when to spool and replay (`log_batch`), what a record holds (`domain`).
//!
//! Crash rules: each append is written and `fdatasync`ed before it is acknowledged; an append
//! that fails half way is cut back, so the file only ever ends with a whole line. At open a torn
//! last line (a crash in the middle of an append, never acknowledged) is cut back to the last
//! newline, with a warning naming the bytes dropped, so the next record appended after a restart
//! starts on a line of its own. Rewrites (trimming, dropping a replayed prefix) stream into a
//! temporary file renamed over the spool, so a crash leaves either the old or the new file.
//! Reads are streamed, all through one line iterator ([`Lines`]): [`Spool::read_chunk`] reads
//! from a byte offset up to a record and byte budget, [`Spool::scan`] visits every record once;
//! memory never scales with the file. Appends serialize each record straight into the file's
//! buffer (sizes are counted first, not built), so an append holds no copy of its batch.
//!
//! Bound: beyond `max_bytes` the outputs of the OLDEST spooled records are trimmed to a short
//! head and tail first (down to 3/4 of the bound, so rewrites are rare), then those of new
//! records; no record is ever dropped, so the file can still outgrow the bound by the records
//! themselves.
//!
//! Also here: the dead-letter file, where records the store refused for good are kept.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use super::log_batch::record_bytes;
use crate::domain::{RunId, RunRecord, RunStatus};

/// Output kept per record once the spool is over its bound (head + tail), bytes.
const TRIMMED_OUTPUT_BYTES: usize = 2048;
/// Buffer of each read and write of the file: lines longer than this are read and written
/// straight through, so it bounds nothing but system calls.
const IO_BUFFER_BYTES: usize = 64 * 1024;

/// The spool file and its counters.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    max_bytes: u64,
    bytes: u64,
    records: u64,
    /// Leading lines whose outputs are known to be small already (trimming starts after them).
    small_prefix: u64,
    /// Records refused for good; opened next to the spool on first use.
    dead: Option<DeadLetter>,
    /// Runs with a final record in the spool: their `running` records are not replayed (the
    /// final one replaces them), so a replay inserts each run once instead of inserting then
    /// replacing it (a replacement is what slow stores such as FerretDB do worst).
    finals: HashSet<RunId>,
}

/// One chunk read by [`Spool::read_chunk`].
#[derive(Debug, Default)]
pub(crate) struct SpoolChunk {
    /// Records in file order.
    pub(crate) records: Vec<RunRecord>,
    /// Lines that could not be parsed, skipped.
    pub(crate) corrupt_lines: u64,
    /// `running` records skipped because their run's final record is in the spool.
    pub(crate) superseded: u64,
    /// Byte offset just after the last line read: where the next chunk starts.
    pub(crate) next_offset: u64,
    /// True when the chunk reached the end of the file.
    pub(crate) at_end: bool,
}

/// What a full read holds (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct SpoolContents {
    /// Records in file order.
    pub(crate) records: Vec<RunRecord>,
    /// Lines that could not be parsed, skipped.
    pub(crate) corrupt_lines: u64,
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

impl Spool {
    /// Opens (or creates) the spool at `path`, cutting a torn last line and counting records.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let whole = whole_lines_len(&file, len)?;
        let torn = len - whole;
        if torn > 0 {
            // A crash in the middle of an append: those bytes were never acknowledged (the
            // append returns after fsync), and left there they would swallow the next record.
            file.set_len(whole)?;
            file.sync_all()?;
            log::warn!(
                "Log spool ended with a torn line (a crash during an append); cut back to the last whole line. path={} bytes_dropped={torn} kept_bytes={whole}",
                path.display()
            );
        }
        let mut spool = Self {
            path: path.to_owned(),
            max_bytes,
            bytes: whole,
            records: 0,
            small_prefix: 0,
            dead: None,
            finals: HashSet::new(),
        };
        for line in Lines::open(path, 0)? {
            let line = line?;
            spool.records += 1;
            if let Ok(head) = serde_json::from_slice::<RecordHead>(&line.bytes) {
                if head.status.is_final() {
                    spool.finals.insert(head.id);
                }
            }
        }
        Ok(spool)
    }

    /// Dead-letters into `dead` instead of `dead-letter.jsonl` next to the spool.
    pub(crate) fn with_dead_letter(mut self, dead: DeadLetter) -> Self {
        self.dead = Some(dead);
        self
    }

    /// Appends `record`, refused by the store for good with `reason`, to the dead-letter file;
    /// answers the file's path.
    pub(crate) fn dead_letter(&mut self, record: &RunRecord, reason: &str) -> std::io::Result<PathBuf> {
        let dead = match &mut self.dead {
            Some(dead) => dead,
            None => self.dead.insert(DeadLetter::open(&self.path.with_file_name("dead-letter.jsonl"))?),
        };
        dead.append(record, reason)?;
        Ok(dead.path().to_owned())
    }

    /// Records in the dead-letter file (0 before its first use).
    pub(crate) fn dead_lettered(&self) -> u64 {
        self.dead.as_ref().map_or(0, DeadLetter::records)
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
    /// to keep the file within its bound. On an error nothing of this append stays in the file.
    pub(crate) fn append(&mut self, records: &[RunRecord]) -> std::io::Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        // Sizes are counted, not built: no serialized copy of the batch is held.
        let mut sizes = Vec::with_capacity(records.len());
        for record in records {
            sizes.push(json_len(record)?);
        }
        let incoming: u64 = sizes.iter().map(|n| n + 1).sum();
        let mut trimmed = 0;
        if self.bytes + incoming > self.max_bytes && self.small_prefix < self.records {
            // Oldest first: make room down to 3/4 of the bound.
            let target = (self.max_bytes / 4 * 3).saturating_sub(incoming);
            trimmed += self.trim_oldest(target)?;
        }
        // Still over: the new records' outputs, oldest first (these lines are small).
        let mut small: Vec<Option<Vec<u8>>> = vec![None; records.len()];
        let mut total = self.bytes + incoming;
        for ((record, size), small) in records.iter().zip(&mut sizes).zip(&mut small) {
            if total <= self.max_bytes {
                break;
            }
            if record.output.len() > TRIMMED_OUTPUT_BYTES {
                let line = serde_json::to_vec(&trimmed_record(record)).map_err(std::io::Error::other)?;
                total -= size.saturating_sub(line.len() as u64);
                *size = line.len() as u64;
                *small = Some(line);
                trimmed += 1;
            }
        }
        let file = OpenOptions::new().append(true).open(&self.path)?;
        let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, &file);
        let mut written: u64 = 0;
        let mut res = Ok(());
        for ((record, size), small) in records.iter().zip(&sizes).zip(&small) {
            res = match small {
                Some(line) => out.write_all(line),
                None => serde_json::to_writer(&mut out, record).map_err(std::io::Error::other),
            }
            .and_then(|()| out.write_all(b"\n"));
            if res.is_err() {
                break;
            }
            written += size + 1;
        }
        if let Err(e) = res.and_then(|()| out.flush()).and_then(|()| file.sync_data()) {
            drop(out);
            // Never leave a partial line behind: it would swallow the next append.
            let _ = file.set_len(self.bytes).and_then(|()| file.sync_data());
            return Err(e);
        }
        drop(out);
        self.bytes += written;
        self.records += records.len() as u64;
        self.finals.extend(records.iter().filter(|r| r.status.is_final()).map(|r| r.id.clone()));
        Ok(trimmed)
    }

    /// Rewrites the spool with the outputs of the oldest records trimmed until the file is at
    /// most `target` bytes (or nothing is left to trim), streaming. Returns how many were trimmed.
    fn trim_oldest(&mut self, target: u64) -> std::io::Result<usize> {
        let tmp = self.tmp_path();
        let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, File::create(&tmp)?);
        let mut size = self.bytes;
        let mut trimmed = 0;
        let mut index: u64 = 0;
        let mut small_prefix = self.small_prefix;
        let mut written: u64 = 0;
        for line in Lines::open(&self.path, 0)? {
            let mut line = line?.bytes;
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
            out.write_all(&line)?;
            out.write_all(b"\n")?;
            written += line.len() as u64 + 1;
            index += 1;
        }
        if trimmed > 0 {
            self.install(out, written, index)?;
        } else {
            drop(out);
            let _ = std::fs::remove_file(&tmp);
        }
        self.small_prefix = small_prefix;
        Ok(trimmed)
    }

    fn tmp_path(&self) -> PathBuf {
        self.path.with_extension("jsonl.tmp")
    }

    /// Makes the temporary file written through `out` the spool (fsync, rename, fsync dir).
    fn install(&mut self, out: BufWriter<File>, bytes: u64, records: u64) -> std::io::Result<()> {
        let file = out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(self.tmp_path(), &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.bytes = bytes;
        self.records = records;
        Ok(())
    }

    /// After a replay that read the file up to byte `offset`: atomically makes the spool `keep`
    /// followed by whatever lies after `offset` (records spooled while the replay ran),
    /// streaming the tail. Empties the file when nothing is left.
    pub(crate) fn replace_prefix(&mut self, offset: u64, keep: &[RunRecord]) -> std::io::Result<()> {
        let offset = offset.min(self.bytes);
        if keep.is_empty() && offset >= self.bytes {
            return self.clear();
        }
        let tmp = self.tmp_path();
        let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, File::create(&tmp)?);
        let mut written = 0;
        for r in keep {
            let line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
            out.write_all(&line)?;
            out.write_all(b"\n")?;
            written += line.len() as u64 + 1;
        }
        let mut records = keep.len() as u64;
        for line in Lines::open(&self.path, offset)? {
            let line = line?;
            out.write_all(&line.bytes)?;
            out.write_all(b"\n")?;
            written += line.bytes.len() as u64 + 1;
            records += 1;
        }
        self.small_prefix = 0;
        self.install(out, written, records)
    }

    /// Reads records from byte `offset` on: at most `max_records` records and `max_bytes` of
    /// them ([`record_bytes`]), but at least one record per chunk.
    pub(crate) fn read_chunk(&self, offset: u64, max_records: usize, max_bytes: usize) -> std::io::Result<SpoolChunk> {
        let mut chunk = SpoolChunk { next_offset: offset, ..SpoolChunk::default() };
        let mut bytes = 0;
        let mut lines = Lines::open(&self.path, offset)?;
        loop {
            if chunk.records.len() >= max_records.max(1) {
                return Ok(chunk);
            }
            let line = match lines.next() {
                Some(Ok(line)) if line.whole => line,
                Some(Err(e)) => return Err(e),
                // End of file (a line without its newline is an append not finished yet).
                _ => {
                    chunk.at_end = true;
                    return Ok(chunk);
                }
            };
            match serde_json::from_slice::<RunRecord>(&line.bytes) {
                Ok(r) if r.status == RunStatus::Running && self.finals.contains(&r.id) => {
                    chunk.superseded += 1;
                }
                Ok(r) => {
                    let size = record_bytes(&r);
                    if !chunk.records.is_empty() && bytes + size > max_bytes {
                        // The next chunk starts with it.
                        return Ok(chunk);
                    }
                    bytes += size;
                    chunk.records.push(r);
                }
                Err(_) => chunk.corrupt_lines += 1,
            }
            chunk.next_offset = line.end;
        }
    }

    /// Visits every readable record in file order (streamed); returns the unreadable lines.
    pub(crate) fn scan(&self, mut visit: impl FnMut(RunRecord)) -> std::io::Result<u64> {
        let mut corrupt = 0;
        for line in Lines::open(&self.path, 0)? {
            match serde_json::from_slice::<RunRecord>(&line?.bytes) {
                Ok(r) => visit(r),
                Err(_) => corrupt += 1,
            }
        }
        Ok(corrupt)
    }

    /// Reads every record in order (tests).
    #[cfg(test)]
    pub(crate) fn read_all(&self) -> std::io::Result<SpoolContents> {
        let mut records = Vec::new();
        let corrupt_lines = self.scan(|r| records.push(r))?;
        Ok(SpoolContents { records, corrupt_lines })
    }

    /// Empties the spool (after a successful replay).
    pub(crate) fn clear(&mut self) -> std::io::Result<()> {
        let file = OpenOptions::new().write(true).truncate(true).open(&self.path)?;
        file.sync_all()?;
        self.bytes = 0;
        self.records = 0;
        self.small_prefix = 0;
        self.finals.clear();
        Ok(())
    }
}

/// One non-blank line of a spool file.
#[derive(Debug)]
struct Line {
    /// Its bytes, without the newline.
    bytes: Vec<u8>,
    /// Byte offset just after it (and its newline).
    end: u64,
    /// False for a last line without its newline (an append that did not finish).
    whole: bool,
}

/// The one line reader of the spool: every non-blank line from a byte offset on, in file
/// order, streamed through a small buffer.
struct Lines {
    reader: BufReader<File>,
    /// Byte offset just after the last line read.
    offset: u64,
}

impl Lines {
    /// Lines of the file at `path` from byte `offset` (a line start) on.
    fn open(path: &Path, offset: u64) -> std::io::Result<Self> {
        let mut reader = BufReader::with_capacity(IO_BUFFER_BYTES, File::open(path)?);
        if offset > 0 {
            reader.seek(SeekFrom::Start(offset))?;
        }
        Ok(Self { reader, offset })
    }
}

impl Iterator for Lines {
    type Item = std::io::Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut bytes = Vec::new();
            let n = match self.reader.read_until(b'\n', &mut bytes) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => return Some(Err(e)),
            };
            self.offset += n as u64;
            let whole = bytes.last() == Some(&b'\n');
            if whole {
                bytes.pop();
            }
            if !is_blank(&bytes) {
                return Some(Ok(Line { bytes, end: self.offset, whole }));
            }
        }
    }
}

/// Bytes of `record` as one JSON line (without its newline), counted without building it.
fn json_len(record: &RunRecord) -> std::io::Result<u64> {
    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, record).map_err(std::io::Error::other)?;
    Ok(count.0)
}

/// The fields of a spooled line that [`Spool::open`] needs.
#[derive(serde::Deserialize)]
struct RecordHead {
    id: RunId,
    status: RunStatus,
}

/// Length of `file` up to and including its last newline (`len` when it ends with one or is
/// empty), found by reading backwards in blocks.
fn whole_lines_len(file: &File, len: u64) -> std::io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let mut reader = file;
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = usize::try_from(end - start).unwrap_or(block.len());
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(&mut block[..n])?;
        if let Some(pos) = block[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + pos as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Counters of a [`SpoolHandle`], readable without waiting for its thread.
#[derive(Debug, Default)]
struct SpoolCounters {
    bytes: AtomicU64,
    records: AtomicU64,
    /// Records handed to the thread for appending, not yet written.
    pending_records: AtomicU64,
    dead_lettered: AtomicU64,
}

type SpoolTask = Box<dyn FnOnce(&mut Spool) + Send>;

/// The spool behind its own thread: every operation runs there, in the order asked (an append
/// asked before a read is in the file when the read runs), and the caller awaits the result.
#[derive(Debug, Clone)]
pub(crate) struct SpoolHandle {
    tx: mpsc::Sender<SpoolTask>,
    counters: Arc<SpoolCounters>,
}

/// The spool thread is gone (it only stops when every handle is dropped).
fn thread_gone() -> std::io::Error {
    std::io::Error::other("the log spool thread stopped")
}

impl SpoolHandle {
    /// Moves `spool` to a new thread (`distcron-spool`) and returns its handle.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub(crate) fn start(mut spool: Spool) -> std::io::Result<Self> {
        let counters = Arc::new(SpoolCounters::default());
        counters.bytes.store(spool.bytes(), Ordering::SeqCst);
        counters.records.store(spool.records(), Ordering::SeqCst);
        counters.dead_lettered.store(spool.dead_lettered(), Ordering::SeqCst);
        let (tx, rx) = mpsc::channel::<SpoolTask>();
        std::thread::Builder::new().name("distcron-spool".into()).spawn(move || {
            while let Ok(task) = rx.recv() {
                // A panicking task answers nothing (its caller sees an error); the next runs.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(&mut spool)));
            }
        })?;
        Ok(Self { tx, counters })
    }

    /// Runs `f` on the spool thread after every operation asked before it.
    ///
    /// # Errors
    /// When the spool thread is gone or `f` panicked.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = std::io::Result<T>> + 'static {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let counters = Arc::clone(&self.counters);
        let sent = self.tx.send(Box::new(move |spool: &mut Spool| {
            let out = f(spool);
            counters.bytes.store(spool.bytes(), Ordering::SeqCst);
            counters.records.store(spool.records(), Ordering::SeqCst);
            counters.dead_lettered.store(spool.dead_lettered(), Ordering::SeqCst);
            let _ = reply.send(out);
        }));
        async move {
            sent.map_err(|_| thread_gone())?;
            answer.await.map_err(|_| thread_gone())
        }
    }

    /// Appends `records` (in call order with every other operation); the spool counts them as
    /// spooled from this call on. Answers how many outputs were trimmed, or gives the records
    /// back with the error.
    pub(crate) fn append(
        &self,
        records: Vec<RunRecord>,
    ) -> impl std::future::Future<Output = Result<usize, (Vec<RunRecord>, std::io::Error)>> + 'static {
        let n = records.len() as u64;
        self.counters.pending_records.fetch_add(n, Ordering::SeqCst);
        let counters = Arc::clone(&self.counters);
        let done = self.call(move |spool| {
            let res = spool.append(&records);
            counters.pending_records.fetch_sub(n, Ordering::SeqCst);
            res.map_err(|e| (records, e))
        });
        let counters = Arc::clone(&self.counters);
        async move {
            match done.await {
                Ok(res) => res,
                Err(e) => {
                    // The task never ran: the records are gone with it, only the error is left.
                    counters.pending_records.fetch_sub(n, Ordering::SeqCst);
                    Err((Vec::new(), e))
                }
            }
        }
    }

    /// Bytes in the file (as of the last operation).
    pub(crate) fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::SeqCst)
    }

    /// Records in the file, counting appends asked but not yet written.
    pub(crate) fn records(&self) -> u64 {
        self.counters.records.load(Ordering::SeqCst) + self.counters.pending_records.load(Ordering::SeqCst)
    }

    /// Records in the dead-letter file.
    pub(crate) fn dead_lettered(&self) -> u64 {
        self.counters.dead_lettered.load(Ordering::SeqCst)
    }

    /// A reader of the counters alone, for the metrics; unlike a handle it does not keep the
    /// spool thread alive.
    pub(crate) fn levels(&self) -> impl Fn() -> crate::metrics::SpoolLevels + Send + Sync + 'static {
        let counters = Arc::clone(&self.counters);
        move || crate::metrics::SpoolLevels {
            bytes: counters.bytes.load(Ordering::SeqCst),
            records: counters.records.load(Ordering::SeqCst) + counters.pending_records.load(Ordering::SeqCst),
            dead_lettered: counters.dead_lettered.load(Ordering::SeqCst),
        }
    }

    /// True when nothing is spooled or being spooled.
    pub(crate) fn is_empty(&self) -> bool {
        self.records() == 0
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
        let records = Lines::open(path, 0)?.map_while(Result::ok).count() as u64;
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
    fn a_torn_last_line_is_cut_at_open_and_the_next_record_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path, u64::MAX).expect("open");
        spool.append(&[record(1, "a")]).expect("append");
        let whole = spool.bytes();
        // A crash in the middle of an append leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open raw");
        f.write_all(b"{\"id\":\"half").expect("write");
        drop(f);
        let mut reopened = Spool::open(&path, u64::MAX).expect("reopen");
        assert_eq!((reopened.bytes(), reopened.records()), (whole, 1));
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), whole);
        // The record appended after the restart is whole, and read back.
        reopened.append(&[record(2, "b")]).expect("append after restart");
        let contents = Spool::open(&path, u64::MAX).expect("reopen").read_all().expect("read");
        assert_eq!(contents.corrupt_lines, 0);
        assert_eq!(contents.records.iter().map(|r| r.fence.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_file_that_is_one_torn_line_is_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        std::fs::write(&path, b"{\"id\":").expect("write");
        let spool = Spool::open(&path, u64::MAX).expect("open");
        assert!(spool.is_empty() && spool.bytes() == 0);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
    }

    #[test]
    fn chunks_stream_the_file_within_their_budgets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path, u64::MAX).expect("open");
        let batch: Vec<_> = (0..10).map(|i| record(i, &"o".repeat(100))).collect();
        spool.append(&batch).expect("append");
        let budget = 3 * record_bytes(&batch[0]) + 1;
        let mut offset = 0;
        let mut seen = Vec::new();
        let mut chunks = 0;
        loop {
            let chunk = spool.read_chunk(offset, 4, budget).expect("chunk");
            assert!(chunk.records.len() <= 3, "byte budget: {}", chunk.records.len());
            assert!(chunk.records.iter().map(record_bytes).sum::<usize>() <= budget);
            seen.extend(chunk.records.iter().map(|r| r.fence.0));
            offset = chunk.next_offset;
            chunks += 1;
            if chunk.at_end {
                break;
            }
        }
        assert_eq!(seen, (0..10).collect::<Vec<i64>>());
        assert_eq!(offset, spool.bytes());
        assert!(chunks >= 4, "{chunks}");
        // With one record per chunk at most: still progresses.
        assert_eq!(spool.read_chunk(0, 0, 0).expect("chunk").records.len(), 1);
    }

    #[test]
    fn a_running_record_whose_final_record_is_spooled_is_not_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path, u64::MAX).expect("open");
        let running = |i| {
            let mut r = record(i, "");
            r.status = RunStatus::Running;
            r
        };
        let (one, two) = (running(1), running(2));
        let mut one_done = record(1, "out");
        one_done.id = one.id.clone();
        spool.append(&[one, two.clone()]).expect("append");
        spool.append(&[one_done.clone()]).expect("append");
        for reader in [&spool, &Spool::open(&path, u64::MAX).expect("reopen")] {
            let chunk = reader.read_chunk(0, 100, usize::MAX).expect("chunk");
            assert_eq!(chunk.records, vec![two.clone(), one_done.clone()]);
            assert_eq!(chunk.superseded, 1);
        }
    }

    #[tokio::test]
    async fn the_handle_runs_operations_in_order_on_its_own_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let handle = SpoolHandle::start(Spool::open(&path, u64::MAX).expect("open")).expect("thread");
        let first = handle.append(vec![record(1, "a")]);
        assert_eq!(handle.records(), 1, "counted from the call on");
        let second = handle.append(vec![record(2, "b")]);
        let read = handle.call(|s| {
            let mut fences = Vec::new();
            s.scan(|r| fences.push(r.fence.0)).map(|_| (fences, std::thread::current().name().map(str::to_owned)))
        });
        let (a, b, read) = futures::join!(first, second, read);
        assert!(a.is_ok() && b.is_ok());
        let (fences, thread) = read.expect("thread").expect("scan");
        assert_eq!(fences, vec![1, 2]);
        assert_eq!(thread.as_deref(), Some("distcron-spool"));
        assert_eq!(handle.bytes(), std::fs::metadata(&path).expect("meta").len());
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
        let read = spool.read_chunk(0, 100, usize::MAX).expect("read");
        assert_eq!(read.records.len(), 3);
        spool.append(&[record(4, "d")]).expect("append during replay");
        spool.replace_prefix(read.next_offset, &[record(2, "b")]).expect("replace");
        let got: Vec<i64> = spool.read_all().expect("read").records.iter().map(|r| r.fence.0).collect();
        assert_eq!(got, vec![2, 4]);
        assert_eq!(spool.records(), 2);
        assert_eq!(spool.bytes(), std::fs::metadata(&path).expect("meta").len());
        spool.replace_prefix(spool.bytes(), &[]).expect("replace all");
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
