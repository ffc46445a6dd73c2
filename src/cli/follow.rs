//! `distcron runs tail [--follow]`: a run's output, and with `--follow` the output as it grows
//! until the run ends.
//!
//! Owns: the [`OutputSource`] seam (events with byte offsets, then the end) and its two
//! implementations: [`StreamSource`] over the live-output stream
//! (`GET /api/v1/runs/{id}/output?follow=1`, server-sent events with byte offsets; what
//! `--follow` uses) and [`PollingSource`] over `GET /api/v1/runs/{id}` (without `--follow`, and
//! the fallback when a server answers 404 for the stream's route: an older version).
//! Leaves to others: the run record (the log store) and the HTTP calls (`client`).

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use serde_json::Value;

use super::client::{segment, Client};
use super::{CliError, ClientArgs, TailArgs};

/// What a followed run produced next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OutputEvent {
    /// Output bytes starting at `offset` in the run's output.
    Chunk {
        /// Byte offset of `text` in the run's output.
        offset: u64,
        /// The bytes (lossily decoded).
        text: String,
    },
    /// Output was left out between what was printed and what follows (the stored output keeps
    /// only head and tail).
    Gap {
        /// How many bytes the run printed in all.
        total_bytes: u64,
    },
    /// The live stream skipped bytes `from..to`: the run's capture keeps only head and tail.
    Skipped {
        /// First byte not kept.
        from: u64,
        /// First byte kept again.
        to: u64,
    },
    /// The run ended (or, without follow, this is where it stands).
    End {
        /// The run as last read.
        run: Value,
    },
}

/// A run's output as a sequence of events; `next` blocks until there is one.
pub(crate) trait OutputSource {
    /// The next event; after [`OutputEvent::End`] the source is finished.
    ///
    /// # Errors
    /// The server's or the connection's error.
    fn next_event(&mut self) -> Result<OutputEvent, CliError>;
}

/// Polls `GET /api/v1/runs/{id}` and turns what is new in `output` into events.
pub(crate) struct PollingSource<'a> {
    client: &'a Client,
    id: String,
    follow: bool,
    every: Duration,
    tracker: Tracker,
    pending: std::collections::VecDeque<OutputEvent>,
    ended: bool,
}

impl<'a> PollingSource<'a> {
    pub(crate) fn new(client: &'a Client, id: String, follow: bool, every: Duration) -> Self {
        Self { client, id, follow, every, tracker: Tracker::default(), pending: Default::default(), ended: false }
    }
}

impl OutputSource for PollingSource<'_> {
    fn next_event(&mut self) -> Result<OutputEvent, CliError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if self.ended {
                return Err(CliError::Failed("the run's output was already read to its end".into()));
            }
            let run = self.client.get(&format!("/api/v1/runs/{}", segment(&self.id)), &[])?;
            let done = !self.follow || run["status"].as_str() != Some("running");
            self.pending.extend(self.tracker.advance(&run));
            if done {
                self.ended = true;
                self.pending.push_back(OutputEvent::End { run });
            } else if self.pending.is_empty() {
                std::thread::sleep(self.every);
            }
        }
    }
}

/// How many times (100 ms apart) the end of a stream waits for the run's final record.
const STORED_WAIT_TRIES: u32 = 30;

/// Reads the live-output stream (`text/event-stream`) of one run.
pub(crate) struct StreamSource<'a> {
    client: &'a Client,
    id: String,
    reader: BufReader<Box<dyn Read + Send + Sync>>,
    ended: bool,
    /// Where to resume after a broken connection.
    offset: u64,
    /// Resumptions so far.
    reconnects: u32,
}

/// Resumptions of a broken stream before `tail -f` gives up.
const MAX_RECONNECTS: u32 = 5;

impl<'a> StreamSource<'a> {
    /// Opens the stream of run `id`; `Ok(None)` when the server does not have the route.
    ///
    /// # Errors
    /// The server's or the connection's error (e.g. 404 `run_not_found`).
    pub(crate) fn open(client: &'a Client, id: &str) -> Result<Option<Self>, CliError> {
        let path = format!("/api/v1/runs/{}/output", segment(id));
        Ok(client.open_stream(&path, &[("follow", "1".into())])?.map(|r| Self {
            client,
            id: id.to_owned(),
            reader: BufReader::new(r),
            ended: false,
            offset: 0,
            reconnects: 0,
        }))
    }

    /// The stream broke before `end` (a restarted server, a dropped connection): open it again
    /// from the last offset, a few times.
    fn reconnect(&mut self, why: String) -> Result<(), CliError> {
        if self.reconnects >= MAX_RECONNECTS {
            return Err(CliError::Failed(format!("the output stream of run {} broke: {why}", self.id)));
        }
        self.reconnects += 1;
        std::thread::sleep(Duration::from_secs(2));
        let path = format!("/api/v1/runs/{}/output", segment(&self.id));
        let query = [("follow", "1".to_owned()), ("offset", self.offset.to_string())];
        match self.client.open_stream(&path, &query)? {
            Some(r) => {
                self.reader = BufReader::new(r);
                Ok(())
            }
            None => Err(CliError::Failed(format!("the output stream of run {} broke: {why}", self.id))),
        }
    }

    /// The run as it ended: its stored record when that is final already, else the `end` event's
    /// fields with the job's name.
    fn ended_run(&self, end: Value) -> Value {
        // The end event comes as the run ends; its record reaches the log store a batch later
        // (log_batch.flush_ms). Wait a little for it, so what a script reads next agrees.
        let mut stored = Value::Null;
        for _ in 0..STORED_WAIT_TRIES {
            stored = self.client.get(&format!("/api/v1/runs/{}", segment(&self.id)), &[]).unwrap_or(Value::Null);
            if stored["status"].as_str().is_some_and(|s| s != "running") {
                return stored;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut run = end;
        if let Value::Object(map) = &mut run {
            map.insert("job".into(), stored["job"].clone());
            map.insert("id".into(), Value::String(self.id.clone()));
        }
        run
    }
}

impl OutputSource for StreamSource<'_> {
    fn next_event(&mut self) -> Result<OutputEvent, CliError> {
        if self.ended {
            return Err(CliError::Failed("the run's output was already read to its end".into()));
        }
        loop {
            let (event, data) = match read_sse(&mut self.reader) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    self.reconnect("it ended before the run".into())?;
                    continue;
                }
                Err(e) => {
                    self.reconnect(e.to_string())?;
                    continue;
                }
            };
            let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match event.as_str() {
                "output" => {
                    let offset = data["offset"].as_u64().unwrap_or(0);
                    self.offset = offset + data["bytes"].as_u64().unwrap_or(0);
                    return Ok(OutputEvent::Chunk { offset, text: data["text"].as_str().unwrap_or("").to_owned() });
                }
                "truncated" => {
                    let (from, to) = (data["from"].as_u64().unwrap_or(0), data["to"].as_u64().unwrap_or(0));
                    self.offset = to;
                    return Ok(OutputEvent::Skipped { from, to });
                }
                "end" => {
                    self.ended = true;
                    return Ok(OutputEvent::End { run: self.ended_run(data) });
                }
                _ => {} // an event a newer server sends: not ours to print
            }
        }
    }
}

/// The next server-sent event as (event name, data); `None` at the end of the stream. Comments
/// (keep-alives) and `id:`/`retry:` lines are skipped.
pub(crate) fn read_sse(reader: &mut impl BufRead) -> std::io::Result<Option<(String, String)>> {
    let (mut event, mut data) = (String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if l.is_empty() {
            if event.is_empty() && data.is_empty() {
                continue;
            }
            return Ok(Some((if event.is_empty() { "message".into() } else { event }, data)));
        }
        if let Some(v) = l.strip_prefix("event:") {
            event = v.trim_start().to_owned();
        } else if let Some(v) = l.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
}

/// What part of a run's stored output was already emitted (pure: turns one read into events).
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// The output emitted so far.
    seen: String,
}

impl Tracker {
    /// Events for what `run` (a run record) holds beyond what was emitted.
    pub(crate) fn advance(&mut self, run: &Value) -> Vec<OutputEvent> {
        let output = run["output"].as_str().unwrap_or("");
        let total = run["output_bytes"].as_u64().unwrap_or(output.len() as u64);
        let mut events = Vec::new();
        if let Some(rest) = output.strip_prefix(self.seen.as_str()) {
            if !rest.is_empty() {
                events.push(OutputEvent::Chunk { offset: self.seen.len() as u64, text: rest.to_owned() });
            }
        } else {
            // The stored output is no longer an extension of what was printed: it now keeps only
            // head and tail (with its own "[N bytes truncated]" line). Print what follows the
            // printed head.
            let common = common_prefix(&self.seen, output);
            events.push(OutputEvent::Gap { total_bytes: total });
            let rest = &output[common..];
            if !rest.is_empty() {
                let offset = total.saturating_sub(rest.len() as u64);
                events.push(OutputEvent::Chunk { offset, text: rest.to_owned() });
            }
        }
        self.seen = output.to_owned();
        events
    }
}

/// Length of the longest common prefix of `a` and `b`, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices().zip(b.chars()).take_while(|((_, x), y)| x == y).last().map_or(0, |((i, c), _)| i + c.len_utf8())
}

/// `distcron runs tail`.
pub(crate) fn tail(client: &Client, args: &ClientArgs, tail: &TailArgs) -> Result<(), CliError> {
    let id = match (&tail.id, &tail.job) {
        (Some(id), _) => id.clone(),
        (None, Some(job)) => {
            let page = client.get("/api/v1/runs", &[("job", job.clone()), ("limit", "1".into())])?;
            let newest = page["runs"].as_array().and_then(|r| r.first()).and_then(|r| r["id"].as_str());
            newest.map(str::to_owned).ok_or_else(|| CliError::NotFound(format!("job {job} has no runs")))?
        }
        (None, None) => return Err(CliError::Usage("runs tail needs a run id or --job".into())),
    };
    let streamed = if tail.follow { StreamSource::open(client, &id)? } else { None };
    let mut source: Box<dyn OutputSource + '_> = match streamed {
        Some(stream) => Box::new(stream),
        None => Box::new(PollingSource::new(client, id.clone(), tail.follow, Duration::from_millis(tail.poll_ms))),
    };
    let mut stdout = std::io::stdout().lock();
    loop {
        match source.next_event()? {
            OutputEvent::Chunk { offset, text } => {
                if args.json {
                    let line = serde_json::json!({ "offset": offset, "text": text });
                    let _ = writeln!(stdout, "{line}");
                } else {
                    let _ = stdout.write_all(text.as_bytes());
                }
                let _ = stdout.flush();
            }
            OutputEvent::Gap { total_bytes } => {
                if args.json {
                    let _ = writeln!(stdout, "{}", serde_json::json!({ "gap": true, "total_bytes": total_bytes }));
                } else {
                    let _ = writeln!(
                        stdout,
                        "\n[... output cut: the run printed {total_bytes} bytes; head and tail kept ...]"
                    );
                }
            }
            OutputEvent::Skipped { from, to } => {
                if args.json {
                    let line = serde_json::json!({ "gap": true, "from": from, "to": to });
                    let _ = writeln!(stdout, "{line}");
                } else {
                    let _ = writeln!(
                        stdout,
                        "\n[... output cut: bytes {from}..{to} ({} bytes) not kept; head and tail kept ...]",
                        to.saturating_sub(from)
                    );
                }
            }
            OutputEvent::End { run } => {
                let status = run["status"].as_str().unwrap_or("unknown").to_owned();
                if args.json {
                    let _ = writeln!(
                        stdout,
                        "{}",
                        serde_json::json!({ "end": true, "status": status, "exit_code": run["exit_code"] })
                    );
                } else {
                    eprintln!("Run {id} of job {}: {status}{}", super::output::text(&run["job"]), exit_note(&run));
                }
                let _ = stdout.flush();
                // Following to the end answers "did it succeed?" for scripts.
                if tail.follow && status != "succeeded" {
                    return Err(CliError::Failed(format!("run {id} ended {status}{}", exit_note(&run))));
                }
                return Ok(());
            }
        }
    }
}

/// ` (exit 3)` / ` (signal 9)` / ``.
fn exit_note(run: &Value) -> String {
    match (run["exit_code"].as_i64(), run["signal"].as_i64(), run["err"].as_str().filter(|e| !e.is_empty())) {
        (Some(code), _, _) => format!(" (exit {code})"),
        (None, Some(sig), _) => format!(" (signal {sig})"),
        (None, None, Some(err)) => format!(" ({})", super::output::one_line(err)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(output: &str, truncated: bool, total: u64) -> Value {
        // `output_truncated` is informative only: the stored output carries its own marker.
        serde_json::json!({ "output": output, "output_truncated": truncated, "output_bytes": total })
    }

    /// A one-request HTTP server answering 404 with the API error `code`.
    fn answer_404_once(code: &'static str) -> String {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"no\"}}}}");
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        format!("http://{addr}")
    }

    fn client_of(server: String, dir: &tempfile::TempDir) -> Client {
        let token = dir.path().join("token");
        std::fs::write(&token, "t0k3n\n").expect("token file");
        let args = ClientArgs {
            server: Some(server),
            token_file: Some(token),
            ca_file: None,
            config: Some(dir.path().join("none.toml")),
            data_dir: Some(dir.path().to_owned()),
            json: false,
            timeout_secs: 5,
        };
        Client::connect(&args).expect("client")
    }

    #[test]
    fn a_server_without_the_stream_route_means_polling_an_unknown_run_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old_server = client_of(answer_404_once("not_found"), &dir);
        assert!(StreamSource::open(&old_server, "r1").expect("a 404 for the route is no error").is_none());
        let new_server = client_of(answer_404_once("run_not_found"), &dir);
        let err = StreamSource::open(&new_server, "r1").err().expect("unknown run");
        assert!(matches!(err, CliError::Api { status: 404, .. }), "{err:?}");
    }

    #[test]
    fn server_sent_events_are_parsed_skipping_comments() {
        let text = ": keep-alive\n\nevent: output\nid: 3\ndata: {\"offset\":0}\n\nevent: end\ndata: a\ndata: b\n\n";
        let mut reader = std::io::Cursor::new(text.as_bytes());
        assert_eq!(read_sse(&mut reader).expect("read"), Some(("output".into(), "{\"offset\":0}".into())));
        assert_eq!(read_sse(&mut reader).expect("read"), Some(("end".into(), "a\nb".into())));
        assert_eq!(read_sse(&mut reader).expect("read"), None);
    }

    #[test]
    fn growing_output_comes_out_once_with_offsets() {
        let mut t = Tracker::default();
        assert_eq!(t.advance(&run("", false, 0)), []);
        assert_eq!(t.advance(&run("a\n", false, 2)), [OutputEvent::Chunk { offset: 0, text: "a\n".into() }]);
        assert_eq!(t.advance(&run("a\n", false, 2)), []);
        assert_eq!(t.advance(&run("a\nbé\n", false, 6)), [OutputEvent::Chunk { offset: 2, text: "bé\n".into() }]);
    }

    #[test]
    fn output_cut_to_head_and_tail_is_marked_as_a_gap() {
        let mut t = Tracker::default();
        t.advance(&run("head more", false, 9));
        let events = t.advance(&run("head [cut] tail", true, 1000));
        assert_eq!(
            events,
            [OutputEvent::Gap { total_bytes: 1000 }, OutputEvent::Chunk { offset: 990, text: "[cut] tail".into() }]
        );
        let mut fresh = Tracker::default();
        assert_eq!(
            fresh.advance(&run("h [cut] t", true, 100)),
            [OutputEvent::Chunk { offset: 0, text: "h [cut] t".into() }]
        );
    }
}
