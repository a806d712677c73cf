//! Process signals: SIGINT and SIGTERM start a graceful shutdown; SIGHUP
//! re-reads the configuration file and applies it live; SIGUSR2 upgrades
//! the binary (see [`crate::runtime::upgrade`]); SIGUSR1 reopens the
//! access log's file (logrotate's `postrotate`).

use log::{error, info, warn};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::cli::ConfigSource;
use crate::proxy::access_log::writer::Reopen;
use crate::runtime::ReloadHandle;
use crate::runtime::check::{self, Mode};
use crate::runtime::systemd;
use crate::runtime::upgrade::{NotUpgraded, Relaunch};

/// Completes on the first SIGINT or SIGTERM: the shutdown future `main`
/// passes to [`Balancer::run_until`](crate::runtime::Balancer::run_until).
/// The handlers are installed when this is called, not when first polled.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            error!("cannot install signal handlers; stop tcplb with SIGKILL");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        info!("received {name}: shutting down");
    }
}

/// Reloads `source` into `handle` on every SIGHUP until `shutdown`.
///
/// The handler is installed before this returns (SIGHUP's default action
/// would end the process), so call it before announcing readiness. Must be
/// called inside the tokio runtime.
pub fn reload_on_sighup(handle: ReloadHandle, source: ConfigSource, shutdown: CancellationToken) {
    let kind = SignalKind::hangup();
    let off = "live reload is off";
    let action = move || {
        info!("received SIGHUP: reloading {}", source.path().display());
        systemd::reloading();
        let _ = reload(&handle, &source);
        systemd::ready(false);
        std::future::ready(())
    };
    on_signal(kind, "SIGHUP", off, shutdown, action);
}

/// Upgrades on every SIGUSR2 until `shutdown`: starts `relaunch` (the
/// binary now at the path this one was started from) and hands it the
/// listening sockets. If it takes over, this process drains and exits;
/// if not, it keeps serving and logs why. Must be called inside the
/// tokio runtime; install it before announcing readiness (SIGUSR2's
/// default action ends the process).
pub fn upgrade_on_sigusr2(handle: ReloadHandle, relaunch: Relaunch, shutdown: CancellationToken) {
    let kind = SignalKind::user_defined2();
    let off = "binary upgrades are off";
    let action = move || {
        let (handle, relaunch) = (handle.clone(), relaunch.clone());
        async move {
            info!(
                "received SIGUSR2: upgrading to {} (handing the listening sockets over)",
                relaunch.exe.display()
            );
            match handle.upgrade(&relaunch).await {
                Ok(pid) => {
                    info!("upgrade: process {pid} serves now; this one stops accepting and drains")
                }
                // Only a new process that did not take over is a failure:
                // docs/upgrades.md names this line as the sign of one.
                Err(NotUpgraded::Failed(e)) => {
                    error!("upgrade failed, this process keeps serving: {e}")
                }
                Err(NotUpgraded::ShuttingDown) => {
                    info!("upgrade not started: this process is shutting down")
                }
                Err(NotUpgraded::Busy) => {
                    info!("upgrade not started: another upgrade is running")
                }
            }
        }
    };
    on_signal(kind, "SIGUSR2", off, shutdown, action);
}

/// Installs the handler for `kind` (named `name` in the logs) now, then
/// runs `action` on every such signal until `shutdown`, one at a time
/// (a signal arriving meanwhile runs it once more afterwards, unless
/// `shutdown` came first: a SIGUSR2 queued behind the upgrade that handed
/// over must not try another). If the handler cannot be installed, logs
/// that `off` and returns. Must be called inside the tokio runtime.
fn on_signal<F, Fut>(
    kind: SignalKind,
    name: &str,
    off: &str,
    shutdown: CancellationToken,
    mut action: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let Ok(mut signals) = signal(kind) else {
        error!("cannot install the {name} handler; {off}");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = signals.recv() => {}
            }
            action().await;
        }
    });
}

/// Re-reads the file, re-applies the command-line overrides, runs the
/// checks `tcplb check` runs ([`check::problems`]) and swaps the result
/// in. A file with problems (every one is logged), or a new listener that
/// cannot bind, leaves the running configuration as it was.
pub fn reload(handle: &ReloadHandle, source: &ConfigSource) -> Result<(), String> {
    let path = source.path().display();
    let checked = source.load().and_then(|config| {
        let text = std::fs::read_to_string(source.path()).ok();
        let file = text.as_deref().map(|t| (source.path(), t));
        let findings = check::problems(&config, Mode::Reload);
        for warning in findings.iter().filter(|f| !f.fatal) {
            warn!("reload: {}", warning.render(file));
        }
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.fatal)
            .map(|f| f.render(file))
            .collect();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    });
    let outcome = checked
        .map_err(|problems| {
            // One line, so a journal shows the whole reason at once.
            format!("{} problem(s): {}", problems.len(), problems.join("; "))
        })
        .and_then(|config| handle.apply(config));
    match &outcome {
        Ok(summary) => info!("reloaded {path}: {summary}"),
        Err(e) => error!("reload rejected, the running configuration stays: {e}"),
    }
    outcome.map(|_| ())
}

/// Reopens the access log's file on every SIGUSR1 until `shutdown`.
///
/// Installed whether or not there is an access log, so a stray SIGUSR1
/// (logrotate run against a tcplb without one) never ends the process,
/// which is SIGUSR1's default action. Must be called inside the tokio
/// runtime.
pub fn reopen_on_sigusr1(reopen: Reopen, shutdown: CancellationToken) {
    let kind = SignalKind::user_defined1();
    let off = "the access log cannot be reopened";
    let action = move || {
        if !reopen.reopen() {
            info!("received SIGUSR1: there is no access log file to reopen");
        }
        std::future::ready(())
    };
    on_signal(kind, "SIGUSR1", off, shutdown, action);
}
