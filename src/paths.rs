//! Every configuration and runtime path in one place, and the creation of
//! private (0700) directories.
//!
//! STUB: the server work fills this in; names below are the contract.

use std::path::PathBuf;

/// The socket path: `--socket`, else `$CE_AUTH_SOCK`, else
/// `$XDG_RUNTIME_DIR/ce-auth/agent.sock`, else `${TMPDIR:-/tmp}/ce-auth-<uid>/agent.sock`.
pub fn socket_path(cli: Option<PathBuf>) -> PathBuf {
    cli.unwrap_or_else(|| PathBuf::from("/tmp/ce-auth/agent.sock"))
}

/// The config path: `--config`, else `$CE_AUTH_CONFIG`, else
/// `$XDG_CONFIG_HOME/ce-auth/config.toml` (`~/.config/ce-auth/config.toml`).
pub fn config_path(cli: Option<PathBuf>) -> PathBuf {
    cli.unwrap_or_else(|| PathBuf::from("config.toml"))
}

/// The pidfile, beside the socket: `<socket dir>/ce-authd.pid`.
pub fn pidfile_path(socket: &std::path::Path) -> PathBuf {
    socket.with_file_name("ce-authd.pid")
}
