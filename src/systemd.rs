//! systemd integration: readiness notification, watchdog and socket activation.
//!
//! STUB: the lifecycle work fills this in. Every function is a no-op when the
//! daemon does not run under systemd (`NOTIFY_SOCKET` unset).

/// Tells systemd the daemon is ready (`READY=1`).
pub fn notify_ready() {}

/// Tells systemd a reload has started (`RELOADING=1`); follow with [`notify_ready`].
pub fn notify_reloading() {}

/// Tells systemd the daemon is stopping (`STOPPING=1`).
pub fn notify_stopping() {}
