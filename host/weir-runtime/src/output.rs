//! Where a task's log lines and printed output go, and the bound on how much of it is kept.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use weir_core::LogLevel;

/// Receives the log lines of one task run: the task's own `log` calls and, when
/// log-prints is on, each line it printed. Implemented by the task runner to record
/// lines in the store and show them on the terminal.
pub trait LogSink: Send + Sync {
    fn log(&self, level: LogLevel, message: &str);
}

/// Writes lines to the process's stderr; handy for embedding and examples.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrLogSink;

impl LogSink for StderrLogSink {
    fn log(&self, level: LogLevel, message: &str) {
        eprintln!("{level:<7} | {message}");
    }
}

/// A printed line longer than this is cut into several log lines.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// The log lines and output of one attempt, bounded by a byte budget so that a task
/// printing without end costs neither unbounded memory nor disk.
pub(crate) struct AttemptLog {
    sink: Arc<dyn LogSink>,
    capture_prints: bool,
    /// Values never to be shown: replaced by `[redacted]` wherever text leaves the sandbox.
    secrets: Vec<String>,
    state: Mutex<AttemptLogState>,
}

struct AttemptLogState {
    remaining_bytes: usize,
    limit_bytes: usize,
    dropped_bytes: u64,
    stdout_partial: Vec<u8>,
    stderr_partial: Vec<u8>,
    /// The last error-level line (e.g. a panic message): the best explanation of a trap.
    last_error_line: Option<String>,
    /// The last line that names a cause: a panic (with its message, which Rust prints on
    /// the line after `panicked at …:`) or a failed allocation. Better than the last
    /// line, which is often Rust's "run with RUST_BACKTRACE=1" hint.
    cause_line: Option<String>,
    /// A `panicked at …:` line waiting for its message on the next line.
    panic_awaiting_message: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl AttemptLog {
    pub(crate) fn new(
        sink: Arc<dyn LogSink>,
        capture_prints: bool,
        limit_bytes: usize,
        secrets: Vec<String>,
    ) -> Self {
        AttemptLog {
            sink,
            capture_prints,
            secrets: secrets
                .into_iter()
                .filter(|secret| !secret.is_empty())
                .collect(),
            state: Mutex::new(AttemptLogState {
                remaining_bytes: limit_bytes,
                limit_bytes,
                dropped_bytes: 0,
                stdout_partial: Vec::new(),
                stderr_partial: Vec::new(),
                last_error_line: None,
                cause_line: None,
                panic_awaiting_message: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AttemptLogState> {
        // A poisoned lock only means another writer panicked mid-line; the text is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `text` with every secret value replaced.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut redacted = text.to_owned();
        for secret in &self.secrets {
            if redacted.contains(secret.as_str()) {
                redacted = redacted.replace(secret.as_str(), "[redacted]");
            }
        }
        redacted
    }

    /// A line from the task's `log` import.
    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        let mut state = self.lock();
        if level == LogLevel::Error {
            state.last_error_line = Some(truncate_chars(message, 2000));
            note_cause(&mut state, message);
        }
        self.emit(&mut state, level, message);
    }

    fn emit(&self, state: &mut AttemptLogState, level: LogLevel, message: &str) {
        if state.remaining_bytes == 0 {
            state.dropped_bytes += message.len() as u64;
            return;
        }
        if message.len() > state.remaining_bytes {
            state.dropped_bytes += message.len() as u64;
            let limit = state.limit_bytes;
            state.remaining_bytes = 0;
            self.sink.log(
                LogLevel::Warning,
                &format!(
                    "log limit of {limit} bytes reached for this attempt; further lines and output are dropped"
                ),
            );
            return;
        }
        state.remaining_bytes -= message.len();
        if self.secrets.is_empty() {
            self.sink.log(level, message);
        } else {
            self.sink.log(level, &self.redact(message));
        }
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.lock();
        let state = &mut *state;
        if !self.capture_prints && stream == Stream::Stdout {
            return;
        }
        let partial = match stream {
            Stream::Stdout => &mut state.stdout_partial,
            Stream::Stderr => &mut state.stderr_partial,
        };
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(std::mem::take(partial));
            } else {
                partial.push(byte);
                if partial.len() >= MAX_LINE_BYTES {
                    lines.push(std::mem::take(partial));
                }
            }
        }
        for line in lines {
            self.emit_printed(state, stream, &line);
        }
    }

    fn emit_printed(&self, state: &mut AttemptLogState, stream: Stream, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if stream == Stream::Stderr && !text.trim().is_empty() {
            state.last_error_line = Some(truncate_chars(text, 2000));
            note_cause(state, text);
        }
        if !self.capture_prints {
            return;
        }
        let level = match stream {
            Stream::Stdout => LogLevel::Info,
            Stream::Stderr => LogLevel::Warning,
        };
        self.emit(state, level, text);
    }

    /// Emits unterminated lines and a note of what was dropped; call once when the attempt ends.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        for stream in [Stream::Stdout, Stream::Stderr] {
            let partial = match stream {
                Stream::Stdout => std::mem::take(&mut state.stdout_partial),
                Stream::Stderr => std::mem::take(&mut state.stderr_partial),
            };
            if !partial.is_empty() {
                self.emit_printed(state, stream, &partial);
            }
        }
        if state.dropped_bytes > 0 {
            self.sink.log(
                LogLevel::Warning,
                &format!(
                    "{} bytes of log lines and output were dropped (limit {} bytes per attempt)",
                    state.dropped_bytes, state.limit_bytes
                ),
            );
            state.dropped_bytes = 0;
        }
    }

    pub(crate) fn last_error_line(&self) -> Option<String> {
        self.lock().last_error_line.clone()
    }

    /// The last panic (`panicked at FILE:LINE: message`) or failed allocation the task
    /// reported, redacted.
    pub(crate) fn cause_line(&self) -> Option<String> {
        let cause = self.lock().cause_line.clone()?;
        Some(self.redact(&cause))
    }
}

/// Keeps `line` as the cause when it names one (see `AttemptLogState::cause_line`).
fn note_cause(state: &mut AttemptLogState, line: &str) {
    let line = line.trim();
    if state.panic_awaiting_message {
        state.panic_awaiting_message = false;
        if !line.starts_with("note:")
            && let Some(panic) = &mut state.cause_line
        {
            panic.push(' ');
            panic.push_str(&truncate_chars(line, 2000));
            return;
        }
    }
    if let Some(at) = line.find("panicked at ") {
        // `thread 'main' panicked at src/lib.rs:3:5:` (std), or the SDK's one-line form.
        let panic = &line[at..];
        state.panic_awaiting_message = panic.ends_with(':');
        state.cause_line = Some(truncate_chars(panic, 2000));
    } else if line.starts_with("memory allocation of ") {
        state.cause_line = Some(truncate_chars(line, 2000));
    }
}

fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The guest's stdout or stderr, feeding an [`AttemptLog`].
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    log: Arc<AttemptLog>,
    stream: Stream,
}

impl CapturedOutput {
    pub(crate) fn new(log: Arc<AttemptLog>, stream: Stream) -> Self {
        CapturedOutput { log, stream }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// How much the guest may write in one call; the bytes are consumed at once.
const WRITE_PERMIT_BYTES: usize = 64 * 1024;

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.log.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
