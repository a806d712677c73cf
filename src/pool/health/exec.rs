//! The exec check (keepalived's `MISC_CHECK`): run a program, no shell,
//! with `{host}` and `{port}` in its arguments replaced by the check
//! target's; exit status 0 is up, anything else down, and the first line
//! it printed (stdout, else stderr) is the reason.
//!
//! Each child runs in a process group of its own. When the check's
//! timeout drops it, the whole group is killed (a shell script's own
//! children too) and tokio reaps the child, so none is left running and
//! none becomes a zombie. At most [`CONCURRENCY`] children run at once in
//! the whole process; a check waits for a slot before its clock starts.

use std::io;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

use super::check::{BoxFuture, Check, Failure, Transport};
use crate::config::ExecCheck;
use crate::pool::connect::is_local_exhaustion;

/// Exec checks running at once, process-wide: a large pool on a short
/// interval must not fork hundreds of programs in the same instant.
pub const CONCURRENCY: usize = 16;

/// The slots of [`CONCURRENCY`].
static SLOTS: Semaphore = Semaphore::const_new(CONCURRENCY);

/// What is kept of each output stream: enough for a first line.
const OUTPUT_LIMIT: usize = 4096;

/// The longest reason taken from the output.
const REASON_LIMIT: usize = 200;

/// An exec check as configured.
pub struct ExecProbe {
    check: ExecCheck,
}

impl ExecProbe {
    pub fn new(check: ExecCheck) -> Self {
        ExecProbe { check }
    }

    /// The arguments with `{host}` and `{port}` filled in.
    fn argv(&self, target: SocketAddr) -> Vec<String> {
        let host = target.ip().to_string();
        let port = target.port().to_string();
        self.check
            .argv
            .iter()
            .map(|a| a.replace("{host}", &host).replace("{port}", &port))
            .collect()
    }
}

/// Kills the child's process group when the check ends early (dropped at
/// its timeout); the child itself is killed and reaped by tokio
/// (`kill_on_drop`).
struct GroupGuard {
    /// The group's id: the child's pid. `None` once it exited.
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) with a negative pid signals that group only;
            // no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Check for ExecProbe {
    fn run<'a>(
        &'a self,
        target: SocketAddr,
        _transport: &'a dyn Transport,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let argv = self.argv(target);
            let mut command = Command::new(&argv[0]);
            command
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            let mut child = command.spawn().map_err(|e| spawn_failure(&argv[0], e))?;
            let mut guard = GroupGuard {
                pgid: child.id().and_then(|id| i32::try_from(id).ok()),
            };
            let stdout = child.stdout.take();
            let stderr = child.stderr.take();
            let (out, err, status) =
                tokio::join!(read_limited(stdout), read_limited(stderr), child.wait());
            let status = status?;
            // Exited: its group may live on (a daemonised grandchild), but
            // it is no longer ours to kill.
            guard.pgid = None;
            let line = first_line(&out).or_else(|| first_line(&err));
            let said = line.map(|l| format!(": {l}")).unwrap_or_default();
            match (status.code(), status.signal()) {
                (Some(0), _) => Ok(format!("exit 0{said}")),
                (Some(code), _) => Err(Failure::Failed(format!("exit {code}{said}"))),
                (None, Some(signal)) => {
                    Err(Failure::Failed(format!("killed by signal {signal}{said}")))
                }
                (None, None) => Err(Failure::Failed(format!("ended without a status{said}"))),
            }
        })
    }

    fn admission(&self) -> Option<&'static Semaphore> {
        Some(&SLOTS)
    }
}

fn spawn_failure(program: &str, e: io::Error) -> Failure {
    if is_local_exhaustion(&e) || e.raw_os_error() == Some(libc::EAGAIN) {
        Failure::Local(format!("cannot start {program}: {e}"))
    } else {
        Failure::Failed(format!("cannot start {program}: {e}"))
    }
}

/// Up to [`OUTPUT_LIMIT`] bytes of `stream`, reading (and dropping) the
/// rest until it closes, so the child never blocks on a full pipe.
async fn read_limited(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut stream) = stream else {
        return kept;
    };
    let mut chunk = [0u8; 1024];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    kept
}

/// The first non-empty line, trimmed, control characters dropped, at
/// most [`REASON_LIMIT`] characters.
fn first_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(
        line.chars()
            .filter(|c| !c.is_control())
            .take(REASON_LIMIT)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::health::check::PlainTcp;

    /// Long enough never to end a check in these tests.
    const TEST_TIMEOUT: Duration = Duration::from_secs(60);
    use std::time::Duration;

    fn probe(argv: &[&str]) -> ExecProbe {
        ExecProbe::new(ExecCheck::new(argv.iter().map(|a| a.to_string()).collect()).unwrap())
    }

    const TARGET: &str = "127.0.0.1:5432";

    #[tokio::test]
    async fn exit_status_decides_and_the_first_line_is_the_reason() {
        let target = TARGET.parse().unwrap();
        let up = probe(&[
            "/bin/sh",
            "-c",
            "echo; echo \"$0:$1 accepting\"",
            "{host}",
            "{port}",
        ]);
        assert_eq!(
            up.run(target, &PlainTcp, TEST_TIMEOUT).await,
            Ok("exit 0: 127.0.0.1:5432 accepting".into())
        );
        let down = probe(&["/bin/sh", "-c", "echo 'no response' >&2; exit 2"]);
        assert_eq!(
            down.run(target, &PlainTcp, TEST_TIMEOUT).await,
            Err(Failure::Failed("exit 2: no response".into()))
        );
        let missing = probe(&["/nonexistent/check"]);
        let Err(Failure::Failed(reason)) = missing.run(target, &PlainTcp, TEST_TIMEOUT).await
        else {
            panic!("a missing program passed");
        };
        assert!(
            reason.starts_with("cannot start /nonexistent/check"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn no_shell_reads_the_arguments() {
        let target = TARGET.parse().unwrap();
        let check = probe(&["/bin/echo", "$(id)", ";", "{port}"]);
        assert_eq!(
            check.run(target, &PlainTcp, TEST_TIMEOUT).await,
            Ok("exit 0: $(id) ; 5432".into())
        );
    }

    #[tokio::test]
    async fn a_check_dropped_at_its_timeout_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("tcplb-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pids = dir.join("pids");
        // The child and a grandchild both hang; both pids are written down.
        let script = format!("sleep 600 & echo $$ $! > {}; wait", pids.display());
        let check = probe(&["/bin/sh", "-c", &script]);
        let target = TARGET.parse().unwrap();
        let ran = tokio::time::timeout(
            Duration::from_millis(500),
            check.run(target, &PlainTcp, TEST_TIMEOUT),
        );
        assert!(ran.await.is_err(), "a hanging check ended by itself");
        let text = std::fs::read_to_string(&pids).unwrap();
        let gone = |pid: &str| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or at worst a zombie about to be reaped by its parent.
            stat.is_empty() || stat.contains(") Z ")
        };
        let mut left = Vec::new();
        for _ in 0..100 {
            left = text.split_whitespace().filter(|p| !gone(p)).collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(left.is_empty(), "still running: {left:?}");
        // Reaped too: the shell was our child, and no zombie of it is left.
        let shell = text.split_whitespace().next().unwrap();
        for _ in 0..100 {
            if !std::path::Path::new(&format!("/proc/{shell}")).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !std::path::Path::new(&format!("/proc/{shell}")).exists(),
            "the killed child was never reaped"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
