//! Live output of running runs: the one bounded head+tail buffer a run's output is captured
//! into, addressed by byte offset, and the node-wide registry that lets the HTTP layer follow a
//! run while it runs (README "Live output").
//!
//! Owns: [`Capture`] (the first `max_output_bytes / 2` and the last `max_output_bytes / 2`
//! bytes of a run's combined output, and the total; the run record's `output` is made from it),
//! reading it from an offset as [`Piece`]s (bytes, or the gap the capture dropped), [`LiveRun`]
//! (a capture shared by the reading task and its followers, with a change signal and the run's
//! [`RunEnd`]) and [`LiveOutputs`], the registry of this node's runs by [`RunId`].
//! Leaves to others: reading the pipe (`process.rs`), recording the end (`executor.rs` calls
//! [`LiveOutputs::end`] with the final record), turning pieces into server-sent events and
//! limiting followers (`http/output.rs`).
//!
//! Memory and back-pressure: a run holds one capture, the same bound as its stored output.
//! The reader never waits for a follower: it updates the capture under a short lock and bumps a
//! `tokio::sync::watch` counter; a follower that was slow simply reads from its offset again,
//! and when that offset has fallen into the dropped middle it gets a [`Piece::Gap`] and goes on
//! with the tail, exactly what the stored record keeps.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::domain::{RunId, RunRecord, RunStatus};

/// How long an ended run stays in the registry, so a follower arriving just after the end (or
/// before its record reached the log store, `log_batch.flush_ms` later) still gets its output
/// and its end. Short: at 150 runs/s this keeps ~1,500 small captures.
const ENDED_LINGER: Duration = Duration::from_secs(10);

/// Bounded capture of a byte stream: the first `head_cap` bytes and the last `tail_cap` bytes.
#[derive(Debug, Clone)]
pub struct Capture {
    pub(crate) head: Vec<u8>,
    head_cap: usize,
    pub(crate) tail: VecDeque<u8>,
    tail_cap: usize,
    pub(crate) total: u64,
}

/// A stretch of a run's output read from an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes `offset .. offset + bytes.len()` of the output.
    Bytes {
        /// Offset of the first byte.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Bytes `from .. to` were dropped by the head+tail capture.
    Gap {
        /// First dropped offset.
        from: u64,
        /// First offset after the gap.
        to: u64,
    },
}

/// The marker the stored `output` carries where the middle was dropped ([`Capture::text`]).
fn marker(dropped: u64) -> String {
    format!("\n… [{dropped} bytes truncated] …\n")
}

impl Capture {
    /// An empty capture keeping at most `max_bytes` (half head, half tail).
    pub fn new(max_bytes: usize) -> Self {
        let head_cap = max_bytes / 2;
        let tail_cap = max_bytes - head_cap;
        Self {
            // Grown as output comes: most runs print little, and ended runs linger a while.
            head: Vec::new(),
            head_cap,
            tail: VecDeque::new(),
            tail_cap,
            total: 0,
        }
    }

    /// The capture a stored record describes: `output` as [`Capture::text`] made it (head,
    /// marker, tail when `truncated`) and `output_bytes` the total printed. Offsets then match
    /// the live ones for UTF-8 output (invalid bytes were stored as U+FFFD).
    pub fn from_stored(output: &str, output_bytes: u64, truncated: bool) -> Self {
        if truncated {
            if let Some((head, rest)) = output.split_once("\n… [") {
                if let Some((n, tail)) = rest.split_once(" bytes truncated] …\n") {
                    if let Ok(dropped) = n.parse::<u64>() {
                        let (head, tail) = (head.as_bytes().to_vec(), tail.as_bytes().to_vec());
                        let total = head.len() as u64 + dropped + tail.len() as u64;
                        return Self { head_cap: head.len(), tail_cap: tail.len(), head, tail: tail.into(), total };
                    }
                }
            }
        }
        let bytes = output.as_bytes().to_vec();
        // Lossy text may differ in length from the bytes printed: offsets follow the text.
        let _ = output_bytes;
        let total = bytes.len() as u64;
        Self { head_cap: bytes.len(), tail_cap: 0, head: bytes, tail: VecDeque::new(), total }
    }

    /// Appends what the command printed.
    pub fn push(&mut self, mut chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let head_room = self.head_cap - self.head.len();
        if head_room > 0 {
            let n = head_room.min(chunk.len());
            self.head.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
        }
        if chunk.is_empty() || self.tail_cap == 0 {
            return;
        }
        if chunk.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&chunk[chunk.len() - self.tail_cap..]);
        } else {
            let overflow = (self.tail.len() + chunk.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(chunk);
        }
    }

    /// Total bytes printed.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// True when bytes were dropped between head and tail.
    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// Offset of the first byte of the tail (after its leading UTF-8 continuation bytes, which
    /// the stored text skips too).
    fn tail_start(&self) -> u64 {
        let raw = self.total - self.tail.len() as u64;
        if !self.truncated() {
            return raw;
        }
        raw + self.tail.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count() as u64
    }

    /// Lossy UTF-8 text: head, then (when bytes were dropped) a marker, then tail.
    pub fn text(&self) -> String {
        let (a, b) = self.tail.as_slices();
        let mut tail: Vec<u8> = Vec::with_capacity(self.tail.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        if !self.truncated() {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        // The tail starts at an arbitrary byte: skip up to 3 UTF-8 continuation bytes so it does
        // not open with a replacement character.
        let skip = tail.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count();
        let dropped = self.total - (self.head.len() + tail.len() - skip) as u64;
        format!("{}{}{}", String::from_utf8_lossy(&self.head), marker(dropped), String::from_utf8_lossy(&tail[skip..]))
    }

    /// What follows `offset`, at most `max` bytes in one [`Piece::Bytes`] (never crossing from
    /// head to tail), or the gap `offset` lies before or in. `None` when nothing is there yet.
    pub fn read_from(&self, offset: u64, max: usize) -> Option<Piece> {
        let head_len = self.head.len() as u64;
        let max = max.max(1) as u64;
        if offset < head_len {
            let end = head_len.min(offset + max);
            let mut bytes = self.head[offset as usize..end as usize].to_vec();
            if !self.truncated() {
                // Head and tail are contiguous: one chunk may span both.
                bytes.extend(self.tail.iter().take(max as usize - bytes.len()));
            }
            return Some(Piece::Bytes { offset, bytes });
        }
        let tail_start = self.tail_start();
        if offset < tail_start && self.truncated() {
            return Some(Piece::Gap { from: offset.max(head_len), to: tail_start });
        }
        if offset >= self.total {
            return None;
        }
        let raw_start = self.total - self.tail.len() as u64;
        let from = (offset.max(raw_start) - raw_start) as usize;
        let to = (self.tail.len() as u64).min(from as u64 + max) as usize;
        Some(Piece::Bytes { offset: raw_start + from as u64, bytes: self.tail.range(from..to).copied().collect() })
    }

    /// [`Capture::read_from`] for a stream of text: a chunk never ends inside a UTF-8 character
    /// whose rest may still be read (later in the same stretch, or printed later while the run
    /// has not `ended`); `None` also when only such a partial character is there yet.
    pub fn read_chunk(&self, offset: u64, max: usize, ended: bool) -> Option<Piece> {
        let piece = self.read_from(offset, max.max(4))?;
        let Piece::Bytes { offset, mut bytes } = piece else { return Some(piece) };
        let next = offset + bytes.len() as u64;
        let more_follows = if next == self.total {
            !ended
        } else {
            // Contiguous bytes follow unless the gap starts here.
            !(self.truncated() && next == self.head.len() as u64)
        };
        if more_follows {
            let keep = bytes.len() - incomplete_suffix(&bytes);
            if keep == 0 {
                return None;
            }
            bytes.truncate(keep);
        }
        Some(Piece::Bytes { offset, bytes })
    }
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character that needs more.
fn incomplete_suffix(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needs = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if needs > back { back } else { 0 };
    }
    0
}

/// How a run ended, as its `end` event tells it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RunEnd {
    /// The final status.
    pub status: RunStatus,
    /// Exit code, when the shell exited.
    pub exit_code: Option<i32>,
    /// Total bytes the command printed.
    pub output_bytes: u64,
    /// True when the stored output holds only head and tail.
    pub output_truncated: bool,
    /// Why it failed ("" on success).
    pub err: String,
}

impl RunEnd {
    /// The end a final record describes.
    pub fn of(record: &RunRecord) -> Self {
        Self {
            status: record.status,
            exit_code: record.exit_code,
            output_bytes: record.output_bytes,
            output_truncated: record.output_truncated,
            err: record.err.clone(),
        }
    }
}

#[derive(Debug)]
struct LiveState {
    capture: Capture,
    end: Option<RunEnd>,
    ended_at: Option<Instant>,
}

/// One run's output as it is being captured, shared by its reader and its followers.
#[derive(Debug)]
pub struct LiveRun {
    state: Mutex<LiveState>,
    /// Bumped on every change (bytes or end); followers wait on it.
    changed: watch::Sender<u64>,
}

impl LiveRun {
    /// A live run capturing at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(LiveState { capture: Capture::new(max_bytes), end: None, ended_at: None }),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LiveState> {
        // A panic while holding this lock can only come from a bug in `Capture::push`; the
        // capture is still consistent enough to read, so keep going.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends printed bytes and wakes the followers (never waits for them).
    pub fn push(&self, chunk: &[u8]) {
        self.lock().capture.push(chunk);
        self.changed.send_modify(|n| *n += 1);
    }

    /// A copy of the capture as it is now (for the run's record).
    pub fn with_capture<T>(&self, f: impl FnOnce(&Capture) -> T) -> T {
        f(&self.lock().capture)
    }

    /// Reads what follows `offset` (see [`Capture::read_chunk`]) and the end, if the run ended.
    pub fn read(&self, offset: u64, max: usize) -> (Option<Piece>, Option<RunEnd>) {
        let state = self.lock();
        (state.capture.read_chunk(offset, max, state.end.is_some()), state.end.clone())
    }

    /// A receiver that sees every later change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn set_end(&self, end: RunEnd) {
        {
            let mut state = self.lock();
            state.end = Some(end);
            state.ended_at = Some(Instant::now());
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn expired(&self, now: Instant) -> bool {
        self.lock().ended_at.is_some_and(|at| now.duration_since(at) > ENDED_LINGER)
    }
}

/// This node's live runs by id (cheap to clone; one per process).
#[derive(Debug, Clone, Default)]
pub struct LiveOutputs {
    runs: Arc<Mutex<HashMap<RunId, Arc<LiveRun>>>>,
}

impl LiveOutputs {
    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Arc<LiveRun>>> {
        self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers run `run` (about to start) with a capture of `max_bytes`; drops runs that
    /// ended more than [`ENDED_LINGER`] ago.
    pub fn begin(&self, run: &RunId, max_bytes: usize) -> Arc<LiveRun> {
        let live = Arc::new(LiveRun::new(max_bytes));
        let now = Instant::now();
        let mut runs = self.lock();
        runs.retain(|_, r| !r.expired(now));
        runs.insert(run.clone(), Arc::clone(&live));
        live
    }

    /// The live run `run`, if this node runs it (or ended it less than [`ENDED_LINGER`] ago).
    pub fn get(&self, run: &RunId) -> Option<Arc<LiveRun>> {
        self.lock().get(run).cloned()
    }

    /// Records the end of a run from its final record (a run this node never began is ignored)
    /// and drops runs that ended more than [`ENDED_LINGER`] ago.
    pub fn end(&self, record: &RunRecord) {
        if !record.status.is_final() {
            return;
        }
        if let Some(live) = self.get(&record.id) {
            live.set_end(RunEnd::of(record));
        }
        let now = Instant::now();
        self.lock().retain(|_, r| !r.expired(now));
    }

    /// How many runs are registered (running or recently ended).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no run is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(p: Option<Piece>) -> (u64, Vec<u8>) {
        match p {
            Some(Piece::Bytes { offset, bytes }) => (offset, bytes),
            other => panic!("expected bytes, got {other:?}"),
        }
    }

    #[test]
    fn capture_keeps_exact_bytes_under_the_cap() {
        let mut c = Capture::new(10);
        c.push(b"abc");
        c.push(b"defghij");
        assert!(!c.truncated());
        assert_eq!(c.text(), "abcdefghij");
        c.push(b"k");
        assert!(c.truncated());
        assert_eq!(c.text(), "abcde\n… [1 bytes truncated] …\nghijk");
        for _ in 0..1000 {
            c.push(b"0123456789");
        }
        assert_eq!(c.total, 10_011);
        assert_eq!(c.tail.len(), 5);
        assert!(c.text().ends_with("56789"));
    }

    #[test]
    fn reading_by_offset_walks_head_gap_and_tail() {
        let mut c = Capture::new(10);
        c.push(b"0123456789abcdefghij");
        assert_eq!(bytes(c.read_from(0, 3)), (0, b"012".to_vec()));
        assert_eq!(bytes(c.read_from(3, 100)), (3, b"34".to_vec()));
        assert_eq!(c.read_from(5, 100), Some(Piece::Gap { from: 5, to: 15 }));
        assert_eq!(c.read_from(9, 100), Some(Piece::Gap { from: 9, to: 15 }), "resume inside the gap");
        assert_eq!(bytes(c.read_from(15, 100)), (15, b"fghij".to_vec()));
        assert_eq!(bytes(c.read_from(17, 100)), (17, b"hij".to_vec()));
        assert_eq!(c.read_from(20, 100), None);
        let mut small = Capture::new(100);
        assert_eq!(small.read_from(0, 10), None);
        small.push(b"hello");
        assert_eq!(bytes(small.read_from(0, 10)), (0, b"hello".to_vec()));
        assert_eq!(small.read_from(5, 10), None);
    }

    #[test]
    fn a_stored_record_reads_like_the_live_capture() {
        let mut c = Capture::new(10);
        c.push("0123456789abcdefghij".as_bytes());
        let stored = Capture::from_stored(&c.text(), c.total, c.truncated());
        for offset in [0, 3, 5, 9, 15, 17, 20] {
            assert_eq!(stored.read_from(offset, 100), c.read_from(offset, 100), "offset {offset}");
        }
        let whole = Capture::from_stored("all of it\n", 10, false);
        assert_eq!(bytes(whole.read_from(4, 100)), (4, b"of it\n".to_vec()));
        assert!(!whole.truncated());
    }

    #[test]
    fn the_tail_skips_continuation_bytes_like_the_stored_text() {
        let mut c = Capture::new(6);
        c.push("aaaaaaééé".as_bytes()); // 6 + 6 bytes; the tail starts mid-character
        let text = c.text();
        let (_, tail) = text.split_once("truncated] …\n").expect("marker");
        let start = c.tail_start();
        let (offset, b) = bytes(c.read_from(start, 100));
        assert_eq!((offset, String::from_utf8(b).expect("utf-8")), (start, tail.to_owned()));
        assert_eq!(Capture::from_stored(&text, c.total, true).read_from(start, 100), c.read_from(start, 100));
    }

    #[test]
    fn chunks_never_split_a_character_that_may_still_come() {
        let mut c = Capture::new(100);
        c.push(&"é".as_bytes()[..1]);
        assert_eq!(c.read_chunk(0, 10, false), None, "half a character while running");
        assert_eq!(bytes(c.read_chunk(0, 10, true)), (0, vec![0xC3]), "ended: what there is");
        c.push(&"é".as_bytes()[1..]);
        c.push("ab€".as_bytes());
        assert_eq!(bytes(c.read_chunk(0, 5, false)), (0, "éab".as_bytes().to_vec()), "cut before €");
        assert_eq!(bytes(c.read_chunk(4, 10, false)), (4, "€".as_bytes().to_vec()));
        assert_eq!(incomplete_suffix(b"abc\xff"), 0);
        assert_eq!(incomplete_suffix("a€".as_bytes()), 0);
        assert_eq!(incomplete_suffix(&"a€".as_bytes()[..3]), 2);
    }

    #[tokio::test]
    async fn followers_are_woken_and_see_the_end() {
        let outputs = LiveOutputs::default();
        let run = RunId("r1".into());
        let live = outputs.begin(&run, 100);
        let mut rx = live.subscribe();
        live.push(b"line\n");
        rx.changed().await.expect("changed");
        assert_eq!(bytes(live.read(0, 10).0), (0, b"line\n".to_vec()));
        let mut record = RunRecord::not_run(
            crate::domain::JobName::parse("j").expect("name"),
            "true".into(),
            RunStatus::Succeeded,
            crate::domain::Trigger::Manual,
            chrono::Utc::now(),
            crate::domain::WorkerId("w".into()),
            crate::domain::Fence(1),
            String::new(),
        );
        record.id = run.clone();
        record.output_bytes = 5;
        outputs.end(&record);
        rx.changed().await.expect("changed");
        let (_, end) = outputs.get(&run).expect("registered").read(5, 10);
        assert_eq!(end.map(|e| (e.status, e.output_bytes)), Some((RunStatus::Succeeded, 5)));
    }
}
