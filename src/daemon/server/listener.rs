//! The daemon's half of the local socket: bind, stale-socket reclaim, systemd
//! adoption and the check of each peer. Where the daemon's Unix socket and
//! Windows named pipe differ.
//!
//! Built on `interprocess` local sockets: a Unix domain socket on Unix, a
//! named pipe on Windows, behind the same [`Listener`] / [`Stream`] API.

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::traits::StreamCommon;

/// A connection accepted by the daemon (tokio flavour).
pub type Stream = interprocess::local_socket::tokio::Stream;

/// The read half of an accepted connection, borrowed from it.
///
/// On Unix, tokio's own half: its reads notice a drained socket from a short
/// read, so a request costs one `recv`, not a second that says `EAGAIN`.
#[cfg(unix)]
pub type ReadHalf<'a> = tokio::net::unix::ReadHalf<'a>;
/// The write half of an accepted connection, borrowed from it.
#[cfg(unix)]
pub type WriteHalf<'a> = tokio::net::unix::WriteHalf<'a>;
/// The read half of an accepted connection, borrowed from it.
#[cfg(windows)]
pub type ReadHalf<'a> = &'a Stream;
/// The write half of an accepted connection, borrowed from it.
#[cfg(windows)]
pub type WriteHalf<'a> = &'a Stream;

/// Borrows the two halves of `stream`, to read requests and write replies.
pub fn halves(stream: &mut Stream) -> (ReadHalf<'_>, WriteHalf<'_>) {
    #[cfg(unix)]
    {
        let Stream::UdSocket(s) = stream;
        s.inner_mut().split()
    }
    #[cfg(windows)]
    {
        let s: &Stream = stream;
        (s, s)
    }
}

/// A bound listener ready to accept connections.
///
/// A socket it bound is removed when the listener is dropped — through the
/// directory handle, and only if the entry is still the socket it bound;
/// sockets adopted from systemd are left to systemd.
pub struct Listener {
    inner: Inner,
    path: Option<PathBuf>,
    #[cfg(unix)]
    bound: Option<Bound>,
}

/// The socket this listener bound: its directory handle, name and inode.
#[cfg(unix)]
struct Bound {
    dir: std::sync::Arc<crate::private_dir::PrivateDir>,
    name: std::ffi::OsString,
    id: (u64, u64),
}

#[cfg(unix)]
impl Drop for Listener {
    fn drop(&mut self) {
        let Some(b) = &self.bound else { return };
        // another daemon may have reclaimed the name since: leave its socket alone
        match b.dir.stat(&b.name) {
            Ok(e) if e.id == b.id => {
                if let Err(err) = b.dir.unlink(&b.name) {
                    tracing::warn!("could not remove the socket {:?}: {err}", b.name);
                }
            }
            _ => {}
        }
    }
}

#[cfg(unix)]
enum Inner {
    /// Not yet registered with a runtime, so [`bind`] works before one exists.
    Sync(Option<interprocess::os::unix::uds_local_socket::Listener>),
    Async(interprocess::os::unix::uds_local_socket::tokio::Listener),
}

#[cfg(windows)]
enum Inner {
    Async(interprocess::local_socket::tokio::Listener),
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

/// A peer the daemon will not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefused {
    /// The peer runs as another user.
    #[error("uid {uid} may not use this daemon (it serves uid {own} only; see `allow_uids`)")]
    OtherUser {
        /// The peer's effective uid.
        uid: u32,
        /// The daemon's effective uid.
        own: u32,
    },
    /// The peer's credentials could not be read.
    #[error("cannot read the peer's credentials: {0}")]
    Unknown(String),
    /// The peer process runs as another Windows account.
    #[cfg(windows)]
    #[error("process {pid} runs as {sid}; this daemon serves {own} only")]
    OtherAccount {
        /// The client's process id.
        pid: u32,
        /// The SID the client runs as.
        sid: String,
        /// The daemon's SID.
        own: String,
    },
}

impl Listener {
    /// The socket path this listener was bound to, if it was bound by [`bind`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The open socket directory, if this listener was bound by [`bind`] (for
    /// the pidfile, through the same handle).
    pub fn dir(&self) -> Option<std::sync::Arc<crate::private_dir::PrivateDir>> {
        #[cfg(unix)]
        {
            self.bound.as_ref().map(|b| b.dir.clone())
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// Accepts the next connection. Must run inside a tokio runtime.
    pub async fn accept(&mut self) -> io::Result<Stream> {
        use interprocess::local_socket::traits::tokio::Listener as _;
        #[cfg(unix)]
        {
            if let Inner::Sync(sync) = &mut self.inner {
                let sync = sync
                    .take()
                    .ok_or_else(|| io::Error::other("listener lost during registration"))?;
                self.inner = Inner::Async(sync.try_into()?);
            }
            match &self.inner {
                Inner::Async(l) => l.accept().await.map(Stream::from),
                Inner::Sync(_) => Err(io::Error::other("listener not registered")),
            }
        }
        #[cfg(windows)]
        {
            let Inner::Async(l) = &self.inner;
            l.accept().await
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Binds the socket at `path` (creating its directory 0700, socket 0600),
/// reclaiming a stale socket only when nothing answers on it. Every step after
/// the directory is opened goes through its handle (see
/// [`crate::private_dir`]); the handle is returned for the pidfile and log.
///
/// On Unix this does not need a tokio runtime; on Windows it must be called
/// inside one.
pub fn bind(path: &Path) -> Result<Listener, BindError> {
    imp::bind(path)
}

/// Adopts a listener passed by systemd socket activation (`LISTEN_FDS`), if any.
///
/// Returns `Ok(None)` when the daemon was not socket-activated (the variables
/// are absent or meant for another process).
pub fn from_systemd() -> std::io::Result<Option<Listener>> {
    imp::from_systemd()
}

/// Checks that the peer of `stream` may use the daemon: the same effective
/// uid as the daemon, or one listed in `allow_uids`. Returns the peer's uid.
pub fn check_peer(stream: &Stream, allow_uids: &[u32]) -> Result<Option<u32>, PeerRefused> {
    let creds = stream
        .peer_creds()
        .map_err(|e| PeerRefused::Unknown(e.to_string()))?;
    imp::check_creds(&creds, allow_uids)
}

#[cfg(unix)]
mod imp {
    use super::*;
    use crate::paths::socket_name;
    use crate::private_dir::PrivateDir;
    use interprocess::local_socket::ListenerOptions;
    use interprocess::os::unix::local_socket::ListenerOptionsExt;
    use interprocess::os::unix::uds_local_socket::Listener as UdsListener;
    use std::ffi::OsStr;
    use std::sync::atomic::{AtomicBool, Ordering};

    pub(super) fn bind(path: &Path) -> Result<Listener, BindError> {
        let parent = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().ok_or_else(|| {
            BindError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no socket file", path.display()),
            ))
        })?;
        let dir = std::sync::Arc::new(PrivateDir::create(parent).map_err(io::Error::from)?);
        reclaim_if_stale(&dir, name, path)?;
        let at = dir.socket_path(name);
        let listener = ListenerOptions::new()
            .name(socket_name(&at)?)
            // applied with fchmod before bind(), so the socket is never open to others
            .mode(0o600)
            // removal is ours (Listener's Drop), through the directory handle
            .reclaim_name(false)
            .create_sync_as::<UdsListener>()
            .map_err(|e| match e.kind() {
                // someone bound it between our check and our bind
                io::ErrorKind::AddrInUse => BindError::InUse(path.display().to_string()),
                _ => BindError::Io(io::Error::new(
                    e.kind(),
                    format!("cannot bind {}: {e}", path.display()),
                )),
            })?;
        let entry = dir.stat(name)?;
        let bound = Listener {
            inner: Inner::Sync(Some(listener)),
            path: Some(path.to_path_buf()),
            bound: Some(Bound {
                dir: dir.clone(),
                name: name.to_os_string(),
                id: entry.id,
            }),
        };
        // systems where fchmod before bind has no effect: fix up before serving anyone
        if entry.mode & 0o777 != 0o600 {
            rustix::fs::chmod(&at, rustix::fs::Mode::from_raw_mode(0o600))
                .map_err(io::Error::from)?;
        }
        Ok(bound)
    }

    /// Removes a socket file nobody listens on; refuses to touch anything else.
    fn reclaim_if_stale(dir: &PrivateDir, name: &OsStr, path: &Path) -> Result<(), BindError> {
        let entry = match dir.stat(name) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if entry.file_type != rustix::fs::FileType::Socket {
            return Err(BindError::Io(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; remove it or choose another path with --socket",
                    path.display()
                ),
            )));
        }
        match std::os::unix::net::UnixStream::connect(dir.socket_path(name)) {
            Ok(_) => Err(BindError::InUse(path.display().to_string())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale socket");
                match dir.unlink(name) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(BindError::Io(io::Error::new(
                e.kind(),
                format!(
                    "{} exists and cannot be checked ({e}); remove it if no ce-authd runs",
                    path.display()
                ),
            ))),
        }
    }

    static SYSTEMD_TAKEN: AtomicBool = AtomicBool::new(false);

    pub(super) fn from_systemd() -> io::Result<Option<Listener>> {
        use std::os::fd::{FromRawFd, OwnedFd};
        // checks LISTEN_PID and marks the fds close-on-exec; LISTEN_* stay
        // set because changing the environment of a threaded process is
        // unsound, and a child's pid never matches LISTEN_PID anyway
        let mut fds = sd_notify::listen_fds_with_names(false)?.map(|(fd, _)| fd);
        let Some(first) = fds.next() else {
            return Ok(None);
        };
        if fds.next().is_some() {
            tracing::warn!("systemd passed several sockets; using the first");
        }
        if SYSTEMD_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(io::Error::other("the systemd socket was already adopted"));
        }
        // SAFETY: LISTEN_PID names this process, so systemd passed this fd to
        // us and nothing else in this process owns it; the flag above makes
        // this happen once.
        let fd = unsafe { OwnedFd::from_raw_fd(first) };
        let ty = rustix::net::sockopt::socket_type(&fd)?;
        let listening = rustix::net::sockopt::socket_acceptconn(&fd)?;
        if ty != rustix::net::SocketType::STREAM || !listening {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the socket passed by systemd is not a listening stream socket \
                 (use ListenStream= in ce-authd.socket)",
            ));
        }
        let listener = UdsListener::from(fd);
        Ok(Some(Listener {
            inner: Inner::Sync(Some(listener)),
            path: None,
            bound: None,
        }))
    }

    pub(super) fn check_creds(
        creds: &interprocess::local_socket::PeerCreds,
        allow_uids: &[u32],
    ) -> Result<Option<u32>, PeerRefused> {
        let own = crate::paths::current_uid();
        let uid = creds
            .euid()
            .ok_or_else(|| PeerRefused::Unknown("no uid reported".into()))?;
        if uid == own || allow_uids.contains(&uid) {
            Ok(Some(uid))
        } else {
            Err(PeerRefused::OtherUser { uid, own })
        }
    }
}

/// The Windows named pipe: security descriptor, first-instance rule and the
/// SID check of each client.
#[cfg(windows)]
#[path = "pipe.rs"]
mod imp;
