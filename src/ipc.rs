//! Local sockets: names, bind/connect, stale-socket reclaim and the peer
//! check. The one place where Unix sockets and Windows named pipes differ.
//!
//! STUB: the server work fills this in; names below are the contract.

use std::path::Path;

/// A bound listener ready to accept connections.
pub struct Listener {
    _private: (),
}

/// Why the daemon could not take the socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon answers on this socket.
    #[error("another ce-authd is already serving {0}")]
    InUse(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Binds the socket at `path` (creating its directory 0700, socket 0600),
/// reclaiming a stale socket only when nothing answers on it.
pub fn bind(path: &Path) -> Result<Listener, BindError> {
    let _ = path;
    Err(BindError::Io(std::io::Error::other("not implemented")))
}

/// Adopts a listener passed by systemd socket activation (`LISTEN_FDS`), if any.
pub fn from_systemd() -> std::io::Result<Option<Listener>> {
    Ok(None)
}
