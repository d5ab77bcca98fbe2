//! The socket server: accept loop, per-connection tasks, limits and shutdown.
//!
//! STUB: the server work fills this in; names below are the contract.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::DaemonSettings;
use crate::engine::Engine;

/// What every connection handler shares.
pub struct Shared {
    pub engine: Arc<Engine>,
    /// The config file `reload` re-reads; `None` when the daemon runs without one (e.g. `--dev` only).
    pub config_path: Option<PathBuf>,
    pub settings: DaemonSettings,
    pub started: Instant,
    /// Fires when a client sends `shutdown`; `run` then returns.
    pub shutdown: tokio::sync::Notify,
}

/// Serves `listener` until `shutdown` resolves or a client sends `shutdown`,
/// then stops accepting, lets in-flight requests finish (bounded) and returns.
pub async fn run(
    listener: crate::ipc::Listener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let _ = (listener, shared);
    shutdown.await;
    Ok(())
}
