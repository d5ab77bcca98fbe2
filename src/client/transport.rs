//! The client's half of the local socket: connecting to the daemon, and
//! trusting it only after checking who is listening.
//!
//! Before anything is sent (a token request, an `add` with a secret, a
//! `login` with a password), the socket's directory must be a real directory
//! of ours with mode 0700 (checked without following a symlink, and the
//! connection made through the opened directory), and the process listening
//! must run as our own uid or as root (`SO_PEERCRED` / `getpeereid`). Another
//! user could otherwise pre-create the directory, serve a fake daemon in it
//! and collect what we send.
//!
//! On Windows the socket is a named pipe: there is no directory, and the
//! process serving the pipe must run as our own user (its SID) or as SYSTEM.

use std::io;
use std::path::Path;

use interprocess::local_socket::traits::StreamCommon;

/// A client connection to the daemon (blocking; `&Stream` implements `Read` and `Write`).
pub(crate) type Stream = interprocess::local_socket::Stream;

/// Why no trusted connection was made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Nothing to connect to or nothing listening (absent, refused, or another
    /// failure to connect), with the OS error.
    Failed(io::Error),
    /// The socket's directory or its listener may not be trusted; says why.
    Untrusted(String),
}

/// Connects to the daemon's socket at `path`, after the checks above.
pub(crate) fn connect(path: &Path) -> Result<Stream, ConnectError> {
    use interprocess::local_socket::ConnectOptions;
    let at = trusted_path(path)?;
    let stream = ConnectOptions::new()
        .name(crate::paths::socket_name(&at.path).map_err(ConnectError::Failed)?)
        .connect_sync()
        .map_err(ConnectError::Failed)?;
    check_listener(&stream, path)?;
    Ok(stream)
}

/// Sets the stream's read timeout, and its write timeout when `send` is given.
///
/// Windows: `interprocess` has no timeouts for blocking named pipes, so
/// there none is set and the client relies on the daemon's own bounds (its
/// `wait` limit, its write timeout); see README, "Platforms".
pub(crate) fn set_timeouts(
    stream: &Stream,
    recv: Option<std::time::Duration>,
    send: Option<std::time::Duration>,
) -> io::Result<()> {
    #[cfg(windows)]
    {
        let _ = (stream, recv, send);
        Ok(())
    }
    #[cfg(not(windows))]
    {
        use interprocess::local_socket::traits::Stream as _;
        stream.set_recv_timeout(recv)?;
        if send.is_some() {
            stream.set_send_timeout(send)?;
        }
        Ok(())
    }
}

/// The path to connect to: through the checked directory where possible.
struct Trusted {
    path: std::path::PathBuf,
    // keeps the directory handle open until the connection is made
    #[cfg(unix)]
    _dir: crate::private_dir::PrivateDir,
}

#[cfg(unix)]
fn trusted_path(path: &Path) -> Result<Trusted, ConnectError> {
    use crate::private_dir::{DirError, PrivateDir};
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(ConnectError::Failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no socket", path.display()),
        )));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match PrivateDir::open(dir) {
        Ok(d) => Ok(Trusted {
            path: d.socket_path(name),
            _dir: d,
        }),
        // no directory: no daemon yet (autostart creates it)
        Err(DirError::Missing(_)) => Err(ConnectError::Failed(io::ErrorKind::NotFound.into())),
        Err(DirError::Untrusted(why)) => Err(ConnectError::Untrusted(format!(
            "refusing to use the socket {}: {why}",
            path.display()
        ))),
        Err(e @ DirError::Io { .. }) => Err(ConnectError::Failed(e.into())),
    }
}

#[cfg(not(unix))]
fn trusted_path(path: &Path) -> Result<Trusted, ConnectError> {
    Ok(Trusted {
        path: path.to_path_buf(),
    })
}

/// The listener must run as our effective uid, or as root.
fn check_listener(stream: &Stream, path: &Path) -> Result<(), ConnectError> {
    #[cfg(unix)]
    {
        let own = rustix::process::geteuid().as_raw();
        let creds = stream.peer_creds().map_err(|e| {
            ConnectError::Untrusted(format!(
                "refusing to use the socket {}: cannot read who is listening on it ({e})",
                path.display()
            ))
        })?;
        match creds.euid() {
            Some(uid) if uid == own || uid == 0 => Ok(()),
            Some(uid) => Err(ConnectError::Untrusted(format!(
                "refusing to use the socket {}: it is served by uid {uid}{}, not by you (uid {own}); \
                 nothing was sent. Another user may be impersonating ce-authd: remove the socket's \
                 directory if it is yours, or choose another socket with --socket or CE_AUTH_SOCK",
                path.display(),
                user_name(uid)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ))),
            None => Err(ConnectError::Untrusted(format!(
                "refusing to use the socket {}: the system does not say who is listening on it",
                path.display()
            ))),
        }
    }
    #[cfg(windows)]
    {
        windows_check_listener(stream, path)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (stream, path);
        Ok(())
    }
}

/// Windows: the process serving the pipe (`GetNamedPipeServerProcessId`, then
/// its access token's user) must run as our own user, or as SYSTEM. Nothing
/// has been written yet; the pipe's name alone proves nothing, since anyone
/// may create a pipe of any free name.
#[cfg(windows)]
fn windows_check_listener(stream: &Stream, path: &Path) -> Result<(), ConnectError> {
    use crate::win::sid::client_trusts;
    let refuse = |why: String| {
        ConnectError::Untrusted(format!(
            "refusing to use the pipe {}: {why}; nothing was sent",
            path.display()
        ))
    };
    let own = crate::win::current_user()
        .map_err(|e| refuse(format!("cannot tell which user this is ({e})")))?;
    let pid = match stream.peer_creds().map(|c| c.pid()) {
        Ok(Some(pid)) => pid,
        Ok(None) => return Err(refuse("the system does not say who serves it".into())),
        Err(e) => return Err(refuse(format!("cannot read who serves it ({e})"))),
    };
    let server = crate::win::process_user(pid).map_err(|e| {
        refuse(format!(
            "cannot read the user of process {pid}, which serves it ({e})"
        ))
    })?;
    if client_trusts(&server, &own) {
        Ok(())
    } else {
        Err(refuse(format!(
            "it is served by process {pid} running as {server}, not by you ({own}). Another \
             user may be impersonating ce-authd: choose another pipe with --socket or CE_AUTH_SOCK"
        )))
    }
}

/// The user name of `uid` from `/etc/passwd`, if it is there (a static client
/// has no NSS; this is only for the message).
#[cfg(unix)]
fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?;
        (id.parse::<u32>().ok()? == uid).then(|| name.escape_debug().to_string())
    })
}
