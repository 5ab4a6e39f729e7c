//! The runner's two logs, on slog + slog-async: `runner.log` (operational
//! messages, also on stderr in the foreground) and `operations.log` (one
//! line when each operation starts and ends, written by the runtime through
//! the operations logger).
//!
//! Files rotate by size, keeping `keep` old files (`runner.log.1` is the
//! newest); a line is never split across two files. `operations.log` never
//! drops a line: its async channel blocks when full. [`Logs::shutdown`]
//! (or dropping [`Logs`]) flushes everything; [`LogReopener::reopen`]
//! reopens the files after an outside tool moved them (SIGHUP).
//!
//! The log directory is 0700 and the files 0600, whatever the umask. Every
//! text line escapes the control characters of what it logs (a node name
//! with a newline cannot forge a line); JSON lines escape them too.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rdrunner_actors::model::{escape_controls, is_control};
use slog::Drain;

use crate::private_dir;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The format named as in the configuration (`text`, `json`).
    pub fn from_name(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    /// The name the configuration uses for the format.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The level named as in the configuration (`trace` .. `critical`;
/// `warn` is taken for `warning`).
pub fn level_from_name(name: &str) -> Option<slog::Level> {
    match name {
        "trace" => Some(slog::Level::Trace),
        "debug" => Some(slog::Level::Debug),
        "info" => Some(slog::Level::Info),
        "warning" | "warn" => Some(slog::Level::Warning),
        "error" => Some(slog::Level::Error),
        "critical" => Some(slog::Level::Critical),
        _ => None,
    }
}

/// The name the configuration uses for `level`.
pub fn level_name(level: slog::Level) -> &'static str {
    match level {
        slog::Level::Trace => "trace",
        slog::Level::Debug => "debug",
        slog::Level::Info => "info",
        slog::Level::Warning => "warning",
        slog::Level::Error => "error",
        slog::Level::Critical => "critical",
    }
}

/// Where and how the two logs are written (`[log]`), its defaults written
/// here.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub dir: PathBuf,
    pub format: LogFormat,
    /// The lowest level written to runner.log (operations.log takes all).
    pub level: slog::Level,
    /// A log file is rotated when it reaches this size (bytes).
    pub rotate_bytes: u64,
    /// Rotated files kept (`runner.log.1` .. `runner.log.N`).
    pub keep: u32,
    /// Also write runner.log's lines to stderr.
    pub stderr: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            dir: PathBuf::from("./runner/logs"),
            format: LogFormat::Text,
            level: slog::Level::Info,
            rotate_bytes: 10 * 1024 * 1024,
            keep: 5,
            stderr: true,
        }
    }
}

/// Name of the operational log.
pub const RUNNER_LOG: &str = "runner.log";
/// Name of the per-operation log.
pub const OPERATIONS_LOG: &str = "operations.log";

/// A log file that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("log file {path}: {message} (set log.dir to a writable directory)")]
pub struct LogError {
    pub path: String,
    pub message: String,
}

/// A file rotated by size: `name`, `name.1` (newest old) .. `name.keep`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens (or creates) `path` with mode 0600, tightening an existing
    /// file to it.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        let file = open_private(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max_bytes,
            keep,
            file,
            size,
        })
    }

    /// Writes whole lines; rotates first when they would not fit.
    pub fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + lines.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(lines)?;
        self.size += lines.len() as u64;
        Ok(())
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_not_found)?;
        } else {
            std::fs::remove_file(self.numbered(self.keep)).or_else(ignore_not_found)?;
            for n in (1..self.keep).rev() {
                std::fs::rename(self.numbered(n), self.numbered(n + 1))
                    .or_else(ignore_not_found)?;
            }
            std::fs::rename(&self.path, self.numbered(1)).or_else(ignore_not_found)?;
        }
        self.reopen()
    }

    /// Opens the file at its path again (after it was moved away).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_private(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }
}

fn open_private(path: &Path) -> io::Result<File> {
    let file = private_dir::file_options()
        .create(true)
        .append(true)
        .open(path)?;
    private_dir::tighten_file(&file)?;
    Ok(file)
}

fn ignore_not_found(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// A `Write` over a shared rotating file that hands it whole lines only.
struct LineWriter {
    file: Arc<Mutex<RotatingFile>>,
    buf: Vec<u8>,
    /// JSON lines: write the control characters JSON allows raw in a string
    /// (DEL, C1, bidirectional controls, U+2028/9) as `\uXXXX` escapes.
    json_escapes: bool,
}

impl LineWriter {
    fn emit(&mut self, upto: usize) -> io::Result<()> {
        if upto == 0 {
            return Ok(());
        }
        let mut lines: Vec<u8> = self.buf.drain(..upto).collect();
        if self.json_escapes {
            lines = json_escape_controls(&lines);
        }
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_lines(&lines)
    }
}

/// serde_json escapes the C0 controls only. Every other control character
/// can stand in JSON text only inside a string (the structure is ASCII
/// without DEL), where `\uXXXX` means the same character: the line parses
/// to the same values and shows as it is stored.
fn json_escape_controls(lines: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(lines);
    if !text.chars().any(is_control) {
        return lines.to_vec();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_control(c) && c != '\n' {
            // Every control character is in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.into_bytes()
}

/// slog-term's plain decorator, with the control characters of everything
/// a record holds (message, keys, values) escaped: a node name with a
/// newline or a terminal escape stays inside its one line. Only the
/// formatter's own whitespace (separating spaces, the final newline) is
/// written as it is.
struct EscapingDecorator<W: Write>(RefCell<W>);

impl<W: Write> EscapingDecorator<W> {
    fn new(out: W) -> Self {
        EscapingDecorator(RefCell::new(out))
    }
}

impl<W: Write> slog_term::Decorator for EscapingDecorator<W> {
    fn with_record<F>(
        &self,
        _record: &slog::Record,
        _logger_values: &slog::OwnedKVList,
        f: F,
    ) -> io::Result<()>
    where
        F: FnOnce(&mut dyn slog_term::RecordDecorator) -> io::Result<()>,
    {
        let mut out = self.0.borrow_mut();
        let mut record = EscapingRecord {
            out: &mut *out,
            escape: true,
        };
        f(&mut record)
    }
}

/// One record being written through [`EscapingDecorator`].
struct EscapingRecord<'a, W: Write> {
    out: &'a mut W,
    /// False only while the formatter writes its own whitespace.
    escape: bool,
}

impl<W: Write> Write for EscapingRecord<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.escape {
            // The formatter writes whole `str`s, so a character is never
            // split across two calls.
            let text = String::from_utf8_lossy(buf);
            self.out.write_all(escape_controls(&text).as_bytes())?;
        } else {
            self.out.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> slog_term::RecordDecorator for EscapingRecord<'_, W> {
    /// Every part of a record but whitespace starts with a reset.
    fn reset(&mut self) -> io::Result<()> {
        self.escape = true;
        Ok(())
    }

    fn start_whitespace(&mut self) -> io::Result<()> {
        self.escape = false;
        Ok(())
    }
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if let Some(last) = self.buf.iter().rposition(|b| *b == b'\n') {
            self.emit(last + 1)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(last) = self.buf.iter().rposition(|b| *b == b'\n') {
            self.emit(last + 1)?;
        }
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .file
            .flush()
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        // A record without a final newline still reaches the file.
        let n = self.buf.len();
        let _ = self.emit(n);
    }
}

/// Reopens the log files; cheap to clone, usable from a signal handler task.
#[derive(Clone, Debug)]
pub struct LogReopener {
    files: Vec<Arc<Mutex<RotatingFile>>>,
}

impl LogReopener {
    pub fn reopen(&self) -> io::Result<()> {
        for f in &self.files {
            f.lock().unwrap_or_else(|e| e.into_inner()).reopen()?;
        }
        Ok(())
    }
}

/// The runner's loggers. Keep it alive for the life of the process; drop it
/// (or call `shutdown`) to flush every line.
pub struct Logs {
    /// For runner.log (and stderr).
    pub runner: slog::Logger,
    /// For operations.log; hand it to the runtime.
    pub operations: slog::Logger,
    reopener: LogReopener,
    guards: Vec<slog_async::AsyncGuard>,
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logs")
            .field("reopener", &self.reopener)
            .finish()
    }
}

type BoxDrain = Box<dyn Drain<Ok = (), Err = slog::Never> + Send>;

fn file_drain(format: LogFormat, file: Arc<Mutex<RotatingFile>>) -> BoxDrain {
    let writer = LineWriter {
        file,
        buf: Vec::new(),
        json_escapes: format == LogFormat::Json,
    };
    match format {
        LogFormat::Text => {
            let d = EscapingDecorator::new(writer);
            Box::new(
                slog_term::FullFormat::new(d)
                    .use_utc_timestamp()
                    .build()
                    .fuse(),
            )
        }
        LogFormat::Json => Box::new(
            slog_json::Json::new(writer)
                .add_default_keys()
                .set_newlines(true)
                .build()
                .fuse(),
        ),
    }
}

impl Logs {
    /// Opens `runner.log` and `operations.log` under `cfg.dir` (created if
    /// needed; made 0700, the files 0600); with `stderr`, runner.log's lines
    /// go to stderr too.
    pub fn open(cfg: &LogSettings, stderr: bool) -> Result<Logs, LogError> {
        private_dir::ensure_dir(&cfg.dir).map_err(|e| LogError {
            path: cfg.dir.display().to_string(),
            message: format!("cannot create the directory or make it private: {e}"),
        })?;
        let open = |name: &str| {
            let path = cfg.dir.join(name);
            RotatingFile::open(&path, cfg.rotate_bytes, cfg.keep)
                .map(|f| Arc::new(Mutex::new(f)))
                .map_err(|e| LogError {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
        };
        let runner_file = open(RUNNER_LOG)?;
        let ops_file = open(OPERATIONS_LOG)?;

        let runner_drain: BoxDrain = if stderr {
            let term = slog_term::FullFormat::new(EscapingDecorator::new(io::stderr()))
                .use_utc_timestamp()
                .build()
                .fuse();
            Box::new(slog::Duplicate::new(file_drain(cfg.format, runner_file.clone()), term).fuse())
        } else {
            file_drain(cfg.format, runner_file.clone())
        };
        let runner_drain = slog::LevelFilter::new(runner_drain, cfg.level).fuse();
        // runner.log may drop (and says how many) rather than stall the
        // runner on a full disk queue; operations.log never drops.
        let (runner_async, g1) = slog_async::Async::new(runner_drain)
            .chan_size(4096)
            .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
            .thread_name("log-runner".into())
            .build_with_guard();
        let (ops_async, g2) = slog_async::Async::new(file_drain(cfg.format, ops_file.clone()))
            .chan_size(4096)
            .overflow_strategy(slog_async::OverflowStrategy::Block)
            .thread_name("log-operations".into())
            .build_with_guard();
        Ok(Logs {
            runner: slog::Logger::root(runner_async.fuse(), slog::o!()),
            operations: slog::Logger::root(ops_async.fuse(), slog::o!()),
            reopener: LogReopener {
                files: vec![runner_file, ops_file],
            },
            guards: vec![g1, g2],
        })
    }

    /// A handle that reopens the files (for SIGHUP).
    pub fn reopener(&self) -> LogReopener {
        self.reopener.clone()
    }

    /// Flushes every line logged so far and stops the log threads.
    pub fn shutdown(mut self) {
        self.guards.clear();
    }
}

/// A logger to stderr only, for commands that write no log files.
pub fn stderr_logger(level: slog::Level) -> (slog::Logger, slog_async::AsyncGuard) {
    let term = slog_term::FullFormat::new(EscapingDecorator::new(io::stderr()))
        .use_utc_timestamp()
        .build()
        .fuse();
    let (d, guard) = slog_async::Async::new(slog::LevelFilter::new(term, level).fuse())
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .build_with_guard();
    (slog::Logger::root(d.fuse(), slog::o!()), guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg(dir: &Path, format: LogFormat, rotate_bytes: u64, keep: u32) -> LogSettings {
        LogSettings {
            dir: dir.to_owned(),
            format,
            level: slog::Level::Info,
            rotate_bytes,
            keep,
            stderr: false,
        }
    }

    fn read_all(dir: &Path, name: &str, keep: u32) -> Vec<String> {
        let mut lines = Vec::new();
        for n in (1..=keep).rev() {
            if let Ok(t) = std::fs::read_to_string(dir.join(format!("{name}.{n}"))) {
                lines.extend(t.lines().map(str::to_owned));
            }
        }
        if let Ok(t) = std::fs::read_to_string(dir.join(name)) {
            lines.extend(t.lines().map(str::to_owned));
        }
        lines
    }

    #[test]
    fn rotates_by_size_keeping_n_files_of_whole_lines() {
        let d = tempfile::tempdir().unwrap();
        let logs = Logs::open(&cfg(d.path(), LogFormat::Text, 4096, 3), false).unwrap();
        for i in 0..2000 {
            slog::info!(logs.runner, "message number {}", i; "k" => "v");
        }
        logs.shutdown();
        let names: Vec<PathBuf> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(d.path().join("runner.log.3").exists());
        assert!(!d.path().join("runner.log.4").exists(), "{names:?}");
        for n in 1..=3 {
            let len = std::fs::metadata(d.path().join(format!("runner.log.{n}")))
                .unwrap()
                .len();
            assert!(len <= 4096, "runner.log.{n}: {len}");
        }
        let lines = read_all(d.path(), "runner.log", 3);
        // Only the newest lines are kept, each whole and in order.
        assert!(lines.last().unwrap().contains("message number 1999"));
        let numbers: Vec<u32> = lines
            .iter()
            .map(|l| {
                assert!(l.ends_with("k: v"), "{l}");
                l.split("message number ")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    }

    #[test]
    fn operations_log_drops_nothing_under_load_and_json_parses() {
        let d = tempfile::tempdir().unwrap();
        let logs = Logs::open(&cfg(d.path(), LogFormat::Json, 64 * 1024 * 1024, 2), false).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = logs.operations.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        slog::info!(log, "operation started"; "op" => format!("op-{t}-{i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        logs.shutdown();
        let lines = read_all(d.path(), "operations.log", 2);
        assert_eq!(lines.len(), 20_000);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["msg"], "operation started");
        assert!(v["op"].as_str().unwrap().starts_with("op-"));
    }

    #[test]
    fn control_characters_in_logged_values_cannot_forge_a_line() {
        use std::os::unix::fs::PermissionsExt;
        let evil = "web1\nJan 01 00:00:00.000 INFO forged\r\x1b[31m\u{202e}gnp.exe\u{85}";
        for format in [LogFormat::Text, LogFormat::Json] {
            let d = tempfile::tempdir().unwrap();
            let logs = Logs::open(&cfg(d.path(), format, 1 << 20, 2), false).unwrap();
            slog::info!(logs.runner, "node {} failed", evil; "node" => evil, "key\n2" => 1);
            slog::info!(logs.operations, "operation started"; "op" => evil);
            logs.shutdown();
            for name in [RUNNER_LOG, OPERATIONS_LOG] {
                let path = d.path().join(name);
                let text = std::fs::read_to_string(&path).unwrap();
                assert_eq!(text.lines().count(), 1, "{format:?} {name}: {text}");
                for c in ['\r', '\x1b', '\u{202e}', '\u{85}'] {
                    assert!(!text.contains(c), "{format:?} {name}: {c:?} in {text}");
                }
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{name}");
                match format {
                    LogFormat::Text => assert!(
                        text.contains("web1\\nJan 01 00:00:00.000 INFO forged\\r\\x1b[31m\\u{202e}gnp.exe\\u{85}"),
                        "{text}"
                    ),
                    // The escapes are JSON's: the values read back unchanged.
                    LogFormat::Json => {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        let field = if name == RUNNER_LOG { "node" } else { "op" };
                        assert_eq!(v[field], evil, "{text}");
                        assert!(text.contains("\\u202e"), "{text}");
                    }
                }
            }
            if format == LogFormat::Text {
                let text = std::fs::read_to_string(d.path().join(RUNNER_LOG)).unwrap();
                assert!(text.contains("key\\n2: 1"), "{text}");
            }
            let mode = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "the log directory");
        }
    }

    #[test]
    fn reopen_follows_a_moved_file() {
        let d = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(&d.path().join("runner.log"), 1 << 20, 2).unwrap();
        f.write_lines(b"before\n").unwrap();
        std::fs::rename(d.path().join("runner.log"), d.path().join("moved.log")).unwrap();
        f.write_lines(b"still old\n").unwrap();
        f.reopen().unwrap();
        f.write_lines(b"after\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("moved.log")).unwrap(),
            "before\nstill old\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("runner.log")).unwrap(),
            "after\n"
        );
    }
}
