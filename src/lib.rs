//! ce-auth: a credential-helper daemon for the Climate Engine API.
//!
//! `ce-authd` holds client secrets in memory, obtains OAuth2 access tokens,
//! refreshes them before they expire and serves them over a local socket to
//! `ce-auth` and any program that speaks the line-delimited JSON protocol.
//!
//! The crate has two sides and what they share; dependencies point one way,
//! from a side to the shared modules, never between the sides:
//!
//! - Shared: [`protocol`] (the wire types), [`exit`] (both binaries' exit statuses), [`framing`] (the
//!   line cap and the synchronous reader), [`spec`] (a profile as written, and
//!   the naming rules), [`secret`] (redacted, zeroed, locked values),
//!   [`paths`] (every config and runtime path, private directories) and
//!   [`atomic`] (private files replaced atomically).
//! - [`client`]: everything `ce-auth` uses — the connection, autostart, the
//!   command line, the git credential helper, the client's edits of the config.
//! - [`daemon`] (feature `daemon`, on by default): config, oauth, the token
//!   engine, the socket server, the ops, the HTTP face, lifecycle. See
//!   `docs/ARCHITECTURE.md`.
//!
//! Errors: each module that can fail has its own typed error (`thiserror`);
//! a failure a client sees becomes a [`protocol::WireError`] with a stable
//! code; the binaries add context with `anyhow`.

#![warn(unreachable_pub)]

mod atomic;
pub mod client;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod exit;
pub mod framing;
mod paths;
// on Windows only the daemon uses it (for files beside the pipe's --pidfile)
#[cfg_attr(
    all(windows, not(feature = "daemon")),
    allow(dead_code, unreachable_pub)
)]
mod private_dir;
pub mod protocol;
pub mod secret;
pub mod spec;
#[cfg(any(windows, test))]
mod win;
