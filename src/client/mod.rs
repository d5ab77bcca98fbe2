//! The client side: everything `ce-auth` uses, with no async runtime.
//!
//! - `conn`: a connection to the daemon (`hello`, typed requests), autostart.
//! - `transport`: the client's half of the local socket.
//! - `cli`: the `ce-auth` command line.
//! - `gitcred`: git's credential-helper protocol.
//! - `config`: the client's reads and edits of the config file.

mod cli;
mod config;
mod conn;
mod gitcred;
mod transport;

pub use cli::main;
pub use conn::{Autostart, Client, ClientError};
