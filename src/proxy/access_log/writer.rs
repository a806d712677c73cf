//! The access log's writer: one thread of its own that takes records off
//! the queue, formats them and writes them to the destination in batches.
//!
//! A thread rather than a task: writing a file can block (a slow disk, a
//! full pipe behind stderr), and a blocked write must stall neither a
//! worker nor the main runtime (admin endpoint, probes, signals). The
//! thread is never woken by the data path: it wakes every
//! [`FLUSH_EVERY`], drains what is queued, and writes it with one `write`
//! per [`BATCH`] bytes, so a sender pays for a queue push and nothing else
//! (no cross-thread wake-up per connection). A line is in the file at most
//! [`FLUSH_EVERY`] after its connection ended.
//!
//! Failures never stop traffic. A file that cannot be opened at start is a
//! start-up error naming it. A write that fails later (disk full, EIO) loses
//! the records of that batch that did not land whole: exactly those are
//! counted (`tcplb_access_log_write_errors_total`), and the failure is logged
//! at most once per [`ERROR_LOG_EVERY`].
//!
//! A line is never torn and never glued to the next. A write that stops
//! inside a line (a disk that fills up mid-batch writes part of it) is cut
//! back to the last newline with `ftruncate`, after checking that the
//! file's tail is that very fragment. Cutting rather than finishing the
//! line: it needs no space, so the file is whole again at once, whatever
//! comes next (an exit, a rotation, a disk that stays full), and it can
//! only fail where nothing could be written anyway. Where it cannot be done
//! (stderr, a tail that is not ours) the destination is marked as ending
//! mid-line and the next write starts with a newline, so the fragment
//! stands alone and the next record is whole; a file that does not end in
//! a newline when opened (torn by an earlier run) is treated the same.
//!
//! Rotation: [`Reopen::reopen`] (SIGUSR1) makes the thread write out what
//! is queued to the file it has open, then open the path again: after
//! `mv access.log access.log.1 && kill -USR1 <pid>`, every line is in one
//! of the two files, none lost. If the path cannot be opened then, the old
//! file is kept and the failure logged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use anyhow::Context;
use log::{error, info};
use tokio::sync::mpsc;

use super::{AccessLog, QUEUE_CAPACITY, Record, format};
use crate::config::{AccessLogConfig, AccessLogFormat, AccessLogTarget};
use crate::stats::{AccessLogStats, RateLimit};

/// How often the writer drains the queue and writes.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Bytes formatted before they are written in one go.
pub const BATCH: usize = 64 * 1024;
/// A failing destination is reported at most this often (each lost record
/// is counted).
pub const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Access log files are created readable by owner and group only: they
/// name every client.
const FILE_MODE: u32 = 0o640;

/// Where the lines go, and whether the last one written there is whole.
struct Destination {
    /// The stream or file.
    sink: Sink,
    /// Whether it may end inside a line (a torn write that could not be cut
    /// back, or a file found so when opened): the next write starts with a
    /// newline.
    mid_line: bool,
}

/// The stream or file the lines go to.
enum Sink {
    /// The process's standard error.
    Stderr,
    /// A file, opened for appending.
    File {
        /// Opened again on [`Reopen::reopen`].
        path: PathBuf,
        /// The file written now.
        file: File,
    },
}

/// A batch that did not land whole.
struct Failed {
    /// What stopped it.
    error: io::Error,
    /// How many of its lines are in the destination whole.
    landed: u64,
}

impl Destination {
    fn open(target: &AccessLogTarget) -> anyhow::Result<Option<Destination>> {
        let sink = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stderr => Sink::Stderr,
            AccessLogTarget::File(path) => Sink::File {
                path: path.clone(),
                file: open(path)
                    .with_context(|| format!("cannot open the access log {}", path.display()))?,
            },
        };
        Ok(Some(Destination::new(sink)))
    }

    fn new(sink: Sink) -> Destination {
        let mid_line = match &sink {
            Sink::File { file, .. } => ends_mid_line(file),
            Sink::Stderr => false,
        };
        Destination { sink, mid_line }
    }

    fn name(&self) -> String {
        match &self.sink {
            Sink::Stderr => "stderr".into(),
            Sink::File { path, .. } => path.display().to_string(),
        }
    }

    /// Writes `batch` (whole lines). On failure the destination ends on a
    /// line boundary again (a torn last line cut back, or else marked for a
    /// newline first), and the error says how many lines landed whole.
    fn write_lines(&mut self, batch: &[u8]) -> Result<(), Failed> {
        // Locked, so the diagnostic log's lines never land inside a batch.
        let mut stderr;
        let out: &mut dyn Write = match &mut self.sink {
            Sink::Stderr => {
                stderr = io::stderr().lock();
                &mut stderr
            }
            Sink::File { file, .. } => file,
        };
        if self.mid_line {
            if let Err((_, error)) = write_counted(out, b"\n") {
                return Err(Failed { error, landed: 0 });
            }
            self.mid_line = false;
        }
        let Err((written, error)) = write_counted(out, batch) else {
            return Ok(());
        };
        let whole = batch[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        if whole < written {
            let fragment = &batch[whole..written];
            let cut = match &self.sink {
                Sink::File { file, .. } => cut(file, fragment),
                Sink::Stderr => Err(io::ErrorKind::Unsupported.into()),
            };
            self.mid_line = cut.is_err();
        }
        // Lines never hold a raw newline (fields are escaped).
        let landed = batch[..whole].iter().filter(|&&b| b == b'\n').count() as u64;
        Err(Failed { error, landed })
    }
}

/// Writes all of `bytes`, or says how many went out before the error.
fn write_counted(out: &mut dyn Write, bytes: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    while written < bytes.len() {
        match out.write(&bytes[written..]) {
            Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// Takes the torn `fragment` off the end of `file`, if the end is exactly
/// it (no other writer appended since, e.g. the other process of an
/// upgrade): shrinking needs no space, so this works on a full disk.
fn cut(file: &File, fragment: &[u8]) -> io::Result<()> {
    let len = file.metadata()?.len();
    let start = len
        .checked_sub(fragment.len() as u64)
        .ok_or_else(|| io::Error::other("the file is shorter than the torn line"))?;
    let mut tail = vec![0u8; fragment.len()];
    file.read_exact_at(&mut tail, start)?;
    if tail != fragment {
        return Err(io::Error::other("the file's end is not the torn line"));
    }
    file.set_len(start)
}

/// Whether `file` is non-empty and its last byte is not a newline (unknown,
/// e.g. unreadable, counts as no).
fn ends_mid_line(file: &File) -> bool {
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut last = [0u8];
    len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
}

/// Opens `path` for appending, and for reading where allowed (to check and
/// cut back its last line).
fn open(path: &Path) -> io::Result<File> {
    let open = |read| {
        OpenOptions::new()
            .read(read)
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(path)
    };
    match open(true) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => open(false),
        opened => opened,
    }
}

/// What the writer thread and its handles share.
struct Shared {
    /// Set by [`Reopen::reopen`]; the thread opens the path again.
    reopen: AtomicBool,
    /// Set by [`Writer::finish`]; the thread writes what is queued and ends.
    closing: AtomicBool,
    /// The thread, to wake it early for either.
    thread: Thread,
}

/// The running writer thread; [`Writer::finish`] ends it after the last
/// record.
pub struct Writer {
    /// Flags for the thread.
    shared: Arc<Shared>,
    /// Joined by `finish`.
    thread: Option<JoinHandle<()>>,
}

/// Asks the writer to reopen its file (the SIGUSR1 handler holds one).
#[derive(Clone)]
pub struct Reopen {
    /// Flags for the thread; `None` when the access log is off.
    shared: Option<Arc<Shared>>,
}

impl Reopen {
    /// A handle that does nothing: no access log.
    pub fn none() -> Reopen {
        Reopen { shared: None }
    }

    /// Reopens the file soon (after writing what is queued to the old
    /// one). Returns false when there is no access log to reopen.
    pub fn reopen(&self) -> bool {
        match &self.shared {
            Some(shared) => {
                shared.reopen.store(true, Ordering::Release);
                shared.thread.unpark();
                true
            }
            None => false,
        }
    }
}

/// Opens the destination `config` names and starts the writer; `None` when
/// the access log is off. A file that cannot be opened is an error naming it.
pub fn start(
    config: &AccessLogConfig,
    stats: Arc<AccessLogStats>,
) -> anyhow::Result<Option<(AccessLog, Writer)>> {
    let Some(destination) = Destination::open(&config.target)? else {
        return Ok(None);
    };
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let log = AccessLog::new(sender, stats.clone());
    let writer = spawn(receiver, destination, config.format, stats)?;
    Ok(Some((log, writer)))
}

fn spawn(
    receiver: mpsc::Receiver<Record>,
    destination: Destination,
    format: AccessLogFormat,
    stats: Arc<AccessLogStats>,
) -> anyhow::Result<Writer> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Arc<Shared>>();
    let thread = std::thread::Builder::new()
        .name("tcplb-access-log".into())
        .spawn(move || {
            let shared = Arc::new(Shared {
                reopen: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                thread: std::thread::current(),
            });
            if ready_tx.send(shared.clone()).is_ok() {
                run(receiver, destination, format, &stats, &shared);
            }
        })
        .context("cannot start the access log's writer thread")?;
    let shared = ready_rx
        .recv()
        .context("the access log's writer thread ended before starting")?;
    Ok(Writer {
        shared,
        thread: Some(thread),
    })
}

impl Writer {
    /// A handle that reopens this writer's file.
    pub fn reopener(&self) -> Reopen {
        Reopen {
            shared: Some(self.shared.clone()),
        }
    }

    /// Writes every record queued so far, then ends the thread. Blocks
    /// until it has (call it off the async runtime).
    pub fn finish(mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.thread.unpark();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not finished (a test, an early exit): the thread ends by itself.
        self.shared.closing.store(true, Ordering::Release);
        self.shared.thread.unpark();
    }
}

/// The writer thread's loop.
fn run(
    mut receiver: mpsc::Receiver<Record>,
    mut destination: Destination,
    format: AccessLogFormat,
    stats: &AccessLogStats,
    shared: &Shared,
) {
    let mut out: Vec<u8> = Vec::with_capacity(BATCH + 1024);
    let mut failures = RateLimit::new(ERROR_LOG_EVERY);
    loop {
        // Read first: whatever was queued before `finish` or `reopen` was
        // asked is drained below, to the file open until then.
        let closing = shared.closing.load(Ordering::Acquire);
        let reopening = shared.reopen.swap(false, Ordering::AcqRel);
        let mut records = 0u64;
        while let Ok(record) = receiver.try_recv() {
            format::write_line(&record, format, &mut out);
            records += 1;
            if out.len() >= BATCH {
                write(&mut destination, &mut out, records, stats, &mut failures);
                records = 0;
            }
        }
        if records > 0 {
            write(&mut destination, &mut out, records, stats, &mut failures);
        }
        if reopening {
            reopen(&mut destination, &mut failures);
        }
        if closing {
            return;
        }
        std::thread::park_timeout(FLUSH_EVERY);
    }
}

/// Writes the batch `out` (`records` lines) and empties it; a failure loses
/// the records that did not land whole, counted.
fn write(
    destination: &mut Destination,
    out: &mut Vec<u8>,
    records: u64,
    stats: &AccessLogStats,
    failures: &mut RateLimit,
) {
    if let Err(Failed { error, landed }) = destination.write_lines(out) {
        let lost = records.saturating_sub(landed);
        stats
            .write_errors
            .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
        if let Some(suppressed) = failures.allow() {
            error!(
                "cannot write the access log {}: {error}; {lost} record(s) lost ({landed} of the \
                 batch written whole), traffic goes on ({suppressed} more failure(s) since the \
                 last message; lost records are counted in tcplb_access_log_write_errors_total)",
                destination.name()
            );
        }
    }
    out.clear();
}

/// Opens the file's path again (after a rename by logrotate); on failure
/// keeps writing to the file already open.
fn reopen(destination: &mut Destination, failures: &mut RateLimit) {
    let Sink::File { path, .. } = &destination.sink else {
        info!("received SIGUSR1: the access log goes to stderr, nothing to reopen");
        return;
    };
    match open(path) {
        Ok(fresh) => {
            let path = path.clone();
            // The old file's torn line, if one could not be cut, gets its
            // end while it can.
            if destination.mid_line {
                let _ = destination.write_lines(&[]);
            }
            *destination = Destination::new(Sink::File { path, file: fresh });
            info!("reopened the access log {}", destination.name());
        }
        Err(e) => {
            if let Some(suppressed) = failures.allow() {
                error!(
                    "cannot reopen the access log {}: {e}; still writing to the file open \
                     before ({suppressed} more failure(s) since the last message)",
                    path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;

    use super::*;
    use crate::config::{ServiceConfig, parse_backend};
    use crate::pool::Pool;
    use crate::proxy::Service;
    use crate::proxy::access_log::{Cause, ConnectionLog};

    /// A listener whose connections log to `log`.
    fn service(log: AccessLog) -> Arc<Service> {
        let backends = vec![parse_backend("127.0.0.1:8081").unwrap()];
        let config = ServiceConfig::new("127.0.0.1:8080".parse().unwrap(), backends);
        let mut service = Service::new(Arc::new(Pool::new("web", config)));
        service.access_log = log;
        Arc::new(service)
    }

    /// One finished connection with `cause`.
    fn finish_one(service: &Arc<Service>, cause: Cause) {
        let mut log = ConnectionLog::accept(service.clone(), "127.0.0.1:1234".parse().unwrap());
        log.record.cause = cause;
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "tcplb-access-log-{}-{name}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn file_config(path: &Path, format: AccessLogFormat) -> AccessLogConfig {
        AccessLogConfig {
            target: AccessLogTarget::File(path.to_path_buf()),
            format,
        }
    }

    /// A listener logging to `path` in `format`, and the writer.
    fn logging_to(
        path: &Path,
        format: AccessLogFormat,
        stats: &Arc<AccessLogStats>,
    ) -> (Arc<Service>, Writer) {
        let (log, writer) = start(&file_config(path, format), stats.clone())
            .unwrap()
            .unwrap();
        (service(log), writer)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn off_starts_nothing_and_a_missing_directory_names_the_path() {
        let stats = Arc::new(AccessLogStats::default());
        assert!(
            start(&AccessLogConfig::default(), stats.clone())
                .unwrap()
                .is_none()
        );
        let bad = Path::new("/nonexistent-tcplb-dir/access.log");
        let error = start(&file_config(bad, AccessLogFormat::Text), stats)
            .err()
            .expect("a missing directory must fail");
        let text = format!("{error:#}");
        assert!(text.contains("/nonexistent-tcplb-dir/access.log"), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }

    #[test]
    fn records_reach_the_file_in_order_and_finish_writes_the_rest() {
        let dir = TempDir::new("order");
        let path = dir.0.join("access.log");
        let stats = Arc::new(AccessLogStats::default());
        let (service, writer) = logging_to(&path, AccessLogFormat::Json, &stats);
        finish_one(&service, Cause::Completed);
        assert!(wait_for(|| lines(&path).len() == 1), "{:?}", lines(&path));
        for _ in 0..999 {
            finish_one(&service, Cause::Denied);
        }
        writer.finish();
        let lines = lines(&path);
        assert_eq!(lines.len(), 1000);
        let ids: Vec<u64> = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(lines[1].contains("\"cause\":\"denied\""), "{}", lines[1]);
        assert_eq!(stats.dropped.load(Relaxed), 0);
        assert_eq!(stats.write_errors.load(Relaxed), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let stats = Arc::new(AccessLogStats::default());
        // Nobody drains this queue: the writer has fallen behind.
        let (sender, _receiver) = mpsc::channel(2);
        let service = service(AccessLog::new(sender, stats.clone()));
        let started = Instant::now();
        for _ in 0..5 {
            finish_one(&service, Cause::Completed);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(stats.dropped.load(Relaxed), 3);
    }

    #[test]
    fn write_errors_are_counted_and_the_writer_goes_on() {
        // /dev/full fails every write with ENOSPC, like a full disk.
        let stats = Arc::new(AccessLogStats::default());
        let (log, writer) = start(
            &file_config(Path::new("/dev/full"), AccessLogFormat::Text),
            stats.clone(),
        )
        .unwrap()
        .unwrap();
        let service = service(log);
        for _ in 0..3 {
            finish_one(&service, Cause::Completed);
        }
        assert!(wait_for(|| stats.write_errors.load(Relaxed) == 3));
        for _ in 0..2 {
            finish_one(&service, Cause::Completed);
        }
        writer.finish();
        assert_eq!(stats.write_errors.load(Relaxed), 5);
        assert_eq!(stats.dropped.load(Relaxed), 0);
    }

    #[test]
    fn a_file_found_ending_mid_line_gets_a_newline_before_the_first_record() {
        let dir = TempDir::new("torn");
        let path = dir.0.join("access.log");
        // An earlier run's last write was cut off.
        std::fs::write(&path, "whole line\n{\"time\":\"2026").unwrap();
        let stats = Arc::new(AccessLogStats::default());
        let (service, writer) = logging_to(&path, AccessLogFormat::Json, &stats);
        finish_one(&service, Cause::Completed);
        writer.finish();
        let lines = lines(&path);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[1], "{\"time\":\"2026");
        let record: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(record["cause"], "completed");
        assert_eq!(stats.write_errors.load(Relaxed), 0);
    }

    #[test]
    fn reopen_after_a_rename_loses_no_line() {
        let dir = TempDir::new("rotate");
        let path = dir.0.join("access.log");
        let rotated = dir.0.join("access.log.1");
        let stats = Arc::new(AccessLogStats::default());
        let (service, writer) = logging_to(&path, AccessLogFormat::Text, &stats);
        let reopener = writer.reopener();
        for _ in 0..10 {
            finish_one(&service, Cause::Completed);
        }
        std::fs::rename(&path, &rotated).unwrap();
        // Written after the rename, before the signal: still the old file.
        for _ in 0..5 {
            finish_one(&service, Cause::Completed);
        }
        assert!(reopener.reopen());
        assert!(wait_for(|| path.exists()), "no fresh file");
        for _ in 0..7 {
            finish_one(&service, Cause::IdleTimeout);
        }
        writer.finish();
        let (old, new) = (lines(&rotated), lines(&path));
        assert_eq!(old.len() + new.len(), 22, "{old:?} {new:?}");
        assert_eq!(old.len(), 15, "{old:?}");
        assert!(new.iter().all(|l| l.contains(" idle_timeout ")), "{new:?}");
        assert!(!Reopen::none().reopen());
    }
}
