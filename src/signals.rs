//! Process signals: SIGINT and SIGTERM start a graceful shutdown.

use log::{error, info};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
pub async fn shutdown_on_signal(shutdown: CancellationToken) {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        error!("cannot install signal handlers; stop tcplb with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = shutdown.cancelled() => return,
    };
    info!("received {name}: shutting down");
    shutdown.cancel();
}
