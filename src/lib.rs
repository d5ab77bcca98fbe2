//! ce-auth: a credential-helper daemon for the Climate Engine API.
//!
//! `ce-authd` holds client secrets in memory, obtains OAuth2 access tokens,
//! refreshes them before they expire and serves them over a local socket to
//! `ce-auth` and any program that speaks the line-delimited JSON protocol.
//!
//! Module map:
//! - [`protocol`]: request/reply types of the socket protocol, shared by both binaries.
//! - [`secret`]: secret values (redacted, zeroed, locked memory).
//! - [`config`]: the TOML configuration and profile validation.
//! - [`oauth`]: token requests, grants, client authentication, error classes.
//! - [`engine`]: token cache, single-flight acquisition and proactive refresh.
//! - [`paths`]: every config and runtime path.
//! - [`ipc`]: local sockets (Unix socket / named pipe), peer checks.
//! - [`wire`]: framed JSON lines with a size cap and timeouts.
//! - [`handler`]: one function per op.
//! - [`client`]: a synchronous client of the socket.
//! - [`hardening`]: not dumpable, no core files.
//! - [`lifecycle`]: daemonizing, pidfile, signals.
//! - [`server`]: the daemon's accept loop and connections.
//! - [`systemd`]: readiness, watchdog, socket activation.
//! - [`issuer`]: the emulated Climate Engine authorization server (`ce-authd --dev`, tests).
//! - [`cli`]: the `ce-auth` command line (synchronous).
//! - [`gitcred`]: git's credential-helper protocol.
//! - [`clientcfg`]: the client's reads and edits of the config file.

pub mod atomic;
pub mod client;
pub mod config;
pub mod engine;
pub mod handler;
pub mod hardening;
pub mod ipc;
pub mod issuer;
pub mod lifecycle;
pub mod oauth;
pub mod paths;
pub mod protocol;
pub mod secret;
pub mod server;
pub mod systemd;
pub mod wire;

// client
pub mod cli;
pub mod clientcfg;
pub mod gitcred;
