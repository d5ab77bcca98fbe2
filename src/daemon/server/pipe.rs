//! The daemon's named pipe on Windows (the `imp` of [`super`]).
//!
//! - The pipe is `\\.\pipe\ce-auth-<SID>` by default (see `crate::paths`).
//! - Its security descriptor is explicit: owned by the daemon's user, with a
//!   protected DACL granting access to that user and SYSTEM only. (The
//!   default one grants full control to administrators too, and read access
//!   to Everyone and the anonymous account.)
//! - Remote clients are rejected (`PIPE_REJECT_REMOTE_CLIENTS`), and the first
//!   instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE` (both by
//!   `interprocess`, which sets them unless told otherwise), so a process that
//!   created the name first — a squatter waiting for secrets — makes the
//!   daemon refuse to start instead of serving beside it. Before creating,
//!   the daemon also asks who serves the name, if anyone: that names the
//!   holder in the refusal, and is the only guard under Wine 8, which ignores
//!   the flag. Later instances need `FILE_CREATE_PIPE_INSTANCE` on our DACL,
//!   which no one else has.
//! - Every connection's client process is looked up
//!   (`GetNamedPipeClientProcessId`, then its access token's `TokenUser`) and
//!   served only when it runs as the daemon's own user.

use super::*;
use crate::paths::socket_name;
use crate::win::sid::{self, Sid};
use interprocess::local_socket::ListenerOptions;
use interprocess::os::windows::local_socket::ListenerOptionsExt;
use interprocess::os::windows::security_descriptor::SecurityDescriptor;

/// The pipe's security descriptor: the user and SYSTEM only.
fn security_descriptor(own: &Sid) -> io::Result<SecurityDescriptor> {
    let sddl = widestring::U16CString::from_str(sid::pipe_sddl(own))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    SecurityDescriptor::deserialize(&sddl)
}

pub(super) fn bind(path: &Path) -> Result<Listener, BindError> {
    let own = crate::win::current_user()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot tell which user this is: {e}")))?;
    // FILE_FLAG_FIRST_PIPE_INSTANCE refuses a name that exists (Windows
    // enforces it; Wine 8 ignores it); asking first also tells a daemon of
    // ours from someone else's pipe in the message
    if let Some(refusal) = existing_holder(path, &own) {
        return Err(refusal);
    }
    let listener = ListenerOptions::new()
        .name(socket_name(path)?)
        .security_descriptor(security_descriptor(&own)?)
        .create_tokio()
        .map_err(|e| match e.kind() {
            // FILE_FLAG_FIRST_PIPE_INSTANCE: the name exists already
            io::ErrorKind::PermissionDenied | io::ErrorKind::AddrInUse => {
                existing_holder(path, &own).unwrap_or_else(|| {
                    squatted(path, "a process that has let go of it since".into())
                })
            }
            _ => BindError::Io(io::Error::new(
                e.kind(),
                format!("cannot create the pipe {}: {e}", path.display()),
            )),
        })?;
    Ok(Listener {
        inner: Inner::Async(listener),
        path: Some(path.to_path_buf()),
    })
}

/// Refuses a pipe name someone else holds, loudly.
fn squatted(path: &Path, who: String) -> BindError {
    let shown = path.display();
    tracing::error!(pipe = %shown, "the pipe exists already and is not ours: {who}");
    BindError::Io(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "the pipe {shown} exists already and is held by {who}; refusing to serve on it \
             (another user may be impersonating ce-authd). Stop that process, or choose \
             another pipe with --socket or CE_AUTH_SOCK"
        ),
    ))
}

/// Who holds the pipe at `path`, when it exists: another daemon of this user
/// ([`BindError::InUse`]), or a process of someone else that created the name
/// first (refused, naming it). `None` when no pipe of that name exists.
fn existing_holder(path: &Path, own: &Sid) -> Option<BindError> {
    use interprocess::local_socket::ConnectOptions;
    use interprocess::local_socket::traits::StreamCommon;
    let name = match socket_name(path) {
        Ok(n) => n,
        Err(e) => return Some(BindError::Io(e)),
    };
    let stream = match ConnectOptions::new().name(name).connect_sync() {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        // every instance busy, or we may not open it: a live server whose
        // user is unknown, so not trusted
        Err(e) => {
            return Some(squatted(
                path,
                format!("a process that cannot be asked ({e})"),
            ));
        }
    };
    let pid = match stream.peer_creds().map(|c| c.pid()) {
        Ok(Some(pid)) => pid,
        _ => {
            return Some(squatted(
                path,
                "a process that does not say who it is".into(),
            ));
        }
    };
    Some(match crate::win::process_user(pid) {
        Ok(user) if user == *own => BindError::InUse(path.display().to_string()),
        Ok(user) => squatted(path, format!("process {pid}, running as {user}")),
        Err(e) => squatted(
            path,
            format!("process {pid}, whose user cannot be read ({e})"),
        ),
    })
}

pub(super) fn from_systemd() -> io::Result<Option<Listener>> {
    Ok(None)
}

pub(super) fn check_creds(
    creds: &interprocess::local_socket::PeerCreds,
    allow_uids: &[u32],
) -> Result<Option<u32>, PeerRefused> {
    // uids mean nothing here; `allow_uids` is documented as Unix-only
    let _ = allow_uids;
    let pid = creds
        .pid()
        .ok_or_else(|| PeerRefused::Unknown("no client process id".into()))?;
    let own = crate::win::current_user()
        .map_err(|e| PeerRefused::Unknown(format!("cannot tell which user this is: {e}")))?;
    let peer = crate::win::process_user(pid)
        .map_err(|e| PeerRefused::Unknown(format!("client process {pid}: {e}")))?;
    if sid::daemon_accepts(&peer, &own) {
        Ok(None)
    } else {
        Err(PeerRefused::OtherAccount {
            pid,
            sid: peer.to_string(),
            own: own.to_string(),
        })
    }
}
