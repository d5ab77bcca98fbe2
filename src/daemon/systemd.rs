//! systemd integration: readiness notification, watchdog and socket activation.
//!
//! Every function is a no-op when the daemon does not run under systemd
//! (`NOTIFY_SOCKET` unset). Notification failures are logged, never fatal: a
//! daemon that serves tokens is more useful than one that exits because the
//! service manager went away.

use std::time::Duration;

#[cfg(unix)]
use sd_notify::NotifyState;

#[cfg(unix)]
fn send(states: &[NotifyState<'_>]) {
    // keep NOTIFY_SOCKET: later notifications (reload, stopping) need it
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("could not notify systemd: {e}");
    }
}

/// Stand-ins where there is no systemd: every notification is a no-op.
#[cfg(not(unix))]
#[allow(dead_code)]
enum NotifyState<'a> {
    Ready,
    Reloading,
    Stopping,
    Status(&'a str),
    Watchdog,
}

#[cfg(not(unix))]
impl NotifyState<'_> {
    fn monotonic_usec_now() -> std::io::Result<NotifyState<'static>> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[cfg(not(unix))]
fn send(_: &[NotifyState<'_>]) {}

/// Tells systemd the daemon is ready (`READY=1`) with a one-line `STATUS=`.
pub(super) fn notify_ready() {
    notify_ready_with_status("serving tokens");
}

/// Like [`notify_ready`], with a custom status line (e.g. the socket and profile count).
pub(super) fn notify_ready_with_status(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd a reload has started (`RELOADING=1`); follow with [`notify_ready`].
///
/// Carries `MONOTONIC_USEC`, which systemd 253 and later require for
/// `Type=notify-reload` and older versions ignore.
pub(super) fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading configuration"),
        ]),
    }
}

/// Tells systemd the daemon is stopping (`STOPPING=1`).
pub(super) fn notify_stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The interval at which to ping the watchdog: half of `WATCHDOG_USEC`, when
/// the watchdog is on for this process (`WATCHDOG_PID` absent or equal to our pid).
pub(super) fn watchdog_interval() -> Option<Duration> {
    parse_watchdog(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        // a WATCHDOG_PID meant for another process (e.g. a parent) is not ours to serve
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// Spawns a task pinging `WATCHDOG=1` at half the watchdog interval, if the
/// watchdog is on. The pings come from the tokio runtime, so a stalled runtime
/// stops them and systemd restarts the daemon. Call inside a tokio runtime.
pub(super) fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let every = watchdog_interval()?;
    tracing::debug!("systemd watchdog on, pinging every {every:?}");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_half_the_interval_for_our_pid() {
        assert_eq!(
            parse_watchdog(Some("10000000"), Some("42"), 42),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_watchdog(Some("10000000"), None, 42),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn watchdog_off_when_unset_zero_garbage_or_other_pid() {
        assert_eq!(parse_watchdog(None, Some("42"), 42), None);
        assert_eq!(parse_watchdog(Some("0"), None, 42), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 42), None);
        assert_eq!(parse_watchdog(Some("10000000"), Some("41"), 42), None);
        assert_eq!(parse_watchdog(Some("10000000"), Some("x"), 42), None);
    }
}
