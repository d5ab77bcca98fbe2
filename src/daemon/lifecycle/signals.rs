//! The signals that stop and reload the daemon, registered before it
//! reports ready: SIGTERM, SIGINT and SIGHUP on Unix, console events on
//! Windows.

use super::LifecycleError;
#[cfg(windows)]
use super::windows;

/// The signals that stop the daemon: SIGTERM and SIGINT; on Windows Ctrl-C,
/// Ctrl-Break, the console closing and system shutdown; Ctrl-C elsewhere.
pub(super) struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(windows)]
    console: windows::ConsoleStop,
}

/// The signal that reloads the configuration: SIGHUP (none elsewhere).
pub(super) struct ReloadSignal {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

/// Registers the daemon's signal handlers, before it reports ready.
#[cfg(unix)]
pub(super) fn signals() -> Result<(StopSignals, ReloadSignal), LifecycleError> {
    use tokio::signal::unix::{SignalKind, signal};
    let reg = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| LifecycleError::io(format!("cannot handle {name}"), e))
    };
    Ok((
        StopSignals {
            term: reg(SignalKind::terminate(), "SIGTERM")?,
            int: reg(SignalKind::interrupt(), "SIGINT")?,
        },
        ReloadSignal {
            hup: reg(SignalKind::hangup(), "SIGHUP")?,
        },
    ))
}

/// Registers the daemon's console event handlers, before it reports ready.
#[cfg(windows)]
pub(super) fn signals() -> Result<(StopSignals, ReloadSignal), LifecycleError> {
    Ok((
        StopSignals {
            console: windows::ConsoleStop::register(),
        },
        ReloadSignal {},
    ))
}

/// Registers the daemon's signal handlers, before it reports ready.
#[cfg(not(any(unix, windows)))]
pub(super) fn signals() -> Result<(StopSignals, ReloadSignal), LifecycleError> {
    Ok((StopSignals {}, ReloadSignal {}))
}

impl StopSignals {
    /// Resolves when the daemon is asked to stop.
    pub(super) async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        #[cfg(windows)]
        self.console.wait().await;
        #[cfg(not(any(unix, windows)))]
        {
            let _ = &mut self;
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C: shutting down");
            } else {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl ReloadSignal {
    /// The next reload request; `false` when no more can come.
    pub(super) async fn next(&mut self) -> bool {
        #[cfg(unix)]
        let more = self.hup.recv().await.is_some();
        #[cfg(not(unix))]
        let more = false;
        more
    }
}
