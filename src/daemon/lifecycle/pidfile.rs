//! The pidfile: `ce-authd.pid` in the socket's directory (through its open
//! handle, never a path that could be re-pointed), or where `--pidfile` says.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::private_dir::{FileOpen, PrivateDir};

/// The pidfile's name in the socket's directory.
pub(super) const NAME: &str = "ce-authd.pid";

/// Where the pidfile is.
pub(super) enum Pidfile {
    /// `ce-authd.pid` in the socket's directory.
    InDir(Arc<PrivateDir>),
    /// An explicit `--pidfile`.
    At(PathBuf),
}

impl Pidfile {
    /// The path, for messages.
    pub(super) fn path(&self) -> PathBuf {
        match self {
            Pidfile::InDir(d) => d.path().join(NAME),
            Pidfile::At(p) => p.clone(),
        }
    }

    /// Writes our pid, mode 0600, replacing a stale file (called only once the
    /// socket is ours, so an existing pidfile belongs to a daemon that is gone).
    pub(super) fn write(&self) -> std::io::Result<()> {
        let mut f = match self {
            Pidfile::InDir(d) => {
                ignore_missing(d.unlink(OsStr::new(NAME)))?;
                d.open_file(OsStr::new(NAME), FileOpen::CreateNew)?
            }
            Pidfile::At(p) => {
                ignore_missing(std::fs::remove_file(p))?;
                create_new(p)?
            }
        };
        writeln!(f, "{}", std::process::id())?;
        f.sync_all()
    }

    /// Removes the pidfile if it is still ours.
    pub(super) fn remove(&self) {
        let mut text = String::new();
        let read = match self {
            Pidfile::InDir(d) => d.open_file(OsStr::new(NAME), FileOpen::Read),
            Pidfile::At(p) => std::fs::File::open(p),
        }
        .and_then(|mut f| f.read_to_string(&mut text));
        if read.is_err() || text.trim() != std::process::id().to_string() {
            return;
        }
        let removed = match self {
            Pidfile::InDir(d) => d.unlink(OsStr::new(NAME)),
            Pidfile::At(p) => std::fs::remove_file(p),
        };
        if let Err(e) = removed {
            tracing::warn!(
                "could not remove the pidfile {}: {e}",
                self.path().display()
            );
        }
    }
}

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A new file at `path`, 0600, not through a symlink in its last component.
fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    opts.open(path)
}
