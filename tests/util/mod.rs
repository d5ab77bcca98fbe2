//! The support module of the integration tests: one harness per kind of
//! thing, shared by every test module.
//!
//! - [`deadline`]: bounded waiting, the one way any test waits.
//! - [`line`]: a raw JSON-lines client of the daemon's socket.
//! - [`daemon`]: the daemon in this process (`server::run`) or as the built
//!   `ce-authd` in a private home directory.
//! - [`issuer`]: the emulated issuer, the credentials tests seed it with,
//!   and ports that stay quiet.
//! - [`world`]: issuer, config, daemon and the real `ce-auth`, for the
//!   client's end-to-end tests.
//! - [`process`]: child processes, `/proc`, the open-file limit, a second
//!   local user, and re-running a test in a process of its own.
//! - [`tls`]: a CA made in the test, a TLS terminator in front of the
//!   issuer, and a CONNECT proxy.
//! - [`upstream`]: an API behind the local proxy that checks tokens
//!   against the issuer's JWKS.
//! - [`load`]: keeping load-generating tests apart from timing-sensitive
//!   ones, and a latency probe.
//! - [`watcher`]: the engine under issuer faults, checked answer by answer
//!   against the backoff schedule.
//!
//! Every test runs in one process: nothing here changes the process for the
//! others (no environment variables set, limits only raised, and only for
//! what needs them).

pub mod daemon;
pub mod deadline;
pub mod issuer;
pub mod line;
pub mod load;
pub mod process;
pub mod tls;
pub mod upstream;
pub mod watcher;
pub mod world;

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds.
pub fn now() -> f64 {
    secs(SystemTime::now())
}

/// A `SystemTime` in Unix seconds.
pub fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}
