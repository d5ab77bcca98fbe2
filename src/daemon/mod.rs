//! The daemon side: what `ce-authd` runs.
//!
//! - [`config`]: the TOML file and profile validation.
//! - [`oauth`]: token requests, grants, client authentication, error classes,
//!   and the Climate Engine API calls (`oauth::api`).
//! - [`engine`]: the token cache, single-flight acquisition and the refresh schedule.
//! - [`ops`]: the shared state and one function per socket op.
//! - [`server`]: the accept loop, connections, the listener, the HTTP face.
//! - [`proxy`]: the local API proxies of `[[proxy]]`.
//! - [`lifecycle`]: detaching, the pidfile, signals, `--dev`.
//! - [`hardening`], `systemd`: process hardening; readiness, watchdog, socket activation.

pub mod config;
pub mod engine;
pub mod hardening;
pub mod lifecycle;
pub mod oauth;
pub mod ops;
pub mod proxy;
pub mod server;
mod systemd;

/// The error and its sources on one line, `a: b: c`, skipping repeats.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
