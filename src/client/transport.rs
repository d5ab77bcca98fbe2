//! The client's half of the local socket: connecting to the daemon.

use std::io;
use std::path::Path;

/// A client connection to the daemon (blocking; `&Stream` implements `Read` and `Write`).
pub(crate) type Stream = interprocess::local_socket::Stream;

/// Connects to the daemon's socket at `path`.
pub(crate) fn connect(path: &Path) -> io::Result<Stream> {
    use interprocess::local_socket::ConnectOptions;
    ConnectOptions::new()
        .name(crate::paths::socket_name(path)?)
        .connect_sync()
}
