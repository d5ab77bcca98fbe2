//! The socket's directory, opened once and checked: a real directory (never
//! followed through a symlink), owned by us, mode 0700. Every later file
//! operation in it (the socket's bind, the stale-socket probe and its removal,
//! the pidfile, the detached daemon's log) goes through the open handle, so
//! re-pointing a path component afterwards redirects nothing.
//!
//! The daemon creates the directory ([`PrivateDir::create`]); a client only
//! opens it ([`PrivateDir::open`]) and refuses to talk through one that fails
//! the check.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

/// Why a directory may not hold the socket.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// It does not exist (for a client: no daemon has started there).
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    /// It exists and must not be used; the message says why and how to fix it.
    #[error("{0}")]
    Untrusted(String),
    /// It could not be created, opened or checked.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl From<DirError> for io::Error {
    fn from(e: DirError) -> io::Error {
        let kind = match &e {
            DirError::Missing(_) => io::ErrorKind::NotFound,
            DirError::Untrusted(_) => io::ErrorKind::PermissionDenied,
            DirError::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

/// An open, checked private directory.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

#[cfg(unix)]
mod imp {
    use super::*;
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    impl PrivateDir {
        /// Creates `dir` (and missing parents, mode 0700) if needed, then opens
        /// and checks it. An existing directory that fails the check is left
        /// alone and reported with the command that fixes it: silently changing
        /// a directory we did not create could hide an attack.
        pub fn create(dir: &Path) -> Result<PrivateDir, DirError> {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| match source.kind() {
                    // a symlink (or a file) where the directory should be
                    io::ErrorKind::AlreadyExists => untrusted_kind(dir),
                    _ => DirError::Io {
                        context: format!("cannot create directory {}", dir.display()),
                        source,
                    },
                })?;
            PrivateDir::open(dir)
        }

        /// Opens an existing `dir` without following a symlink and checks it:
        /// a directory owned by the effective uid, with no group or other
        /// permission bits.
        pub fn open(dir: &Path) -> Result<PrivateDir, DirError> {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| {
                let e = io::Error::from(e);
                match e.raw_os_error() {
                    Some(c) if c == libc_enoent() => DirError::Missing(dir.to_path_buf()),
                    // ELOOP: the last component is a symlink; ENOTDIR: not a directory
                    Some(c) if c == libc_eloop() || c == libc_enotdir() => untrusted_kind(dir),
                    _ => DirError::Io {
                        context: format!("cannot open directory {}", dir.display()),
                        source: e,
                    },
                }
            })?;
            check(dir, &fd)?;
            Ok(PrivateDir {
                path: dir.to_path_buf(),
                fd,
            })
        }

        /// The path to use for `bind`/`connect` of `name` in this directory: on
        /// Linux `/proc/self/fd/N/name`, which resolves through the open
        /// handle (and is short, whatever the directory's length); elsewhere
        /// the directory's path and `name`.
        pub fn socket_path(&self, name: &OsStr) -> PathBuf {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                let via = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
                if via.is_dir() {
                    return via.join(name);
                }
            }
            self.path.join(name)
        }

        /// The file type, owner, device and inode of `name`, not following a symlink.
        pub fn stat(&self, name: &OsStr) -> io::Result<Entry> {
            let st = rustix::fs::statat(self.fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(Entry {
                file_type: FileType::from_raw_mode(st.st_mode),
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                id: (st.st_dev as u64, st.st_ino as u64),
            })
        }

        /// Removes `name` from this directory.
        pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
            rustix::fs::unlinkat(self.fd.as_fd(), name, AtFlags::empty())?;
            Ok(())
        }

        /// Opens `name` in this directory, never through a symlink; created
        /// with mode 0600 when `create` is set.
        pub fn open_file(&self, name: &OsStr, how: FileOpen) -> io::Result<std::fs::File> {
            let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC;
            flags |= match how {
                FileOpen::Read => OFlags::RDONLY,
                FileOpen::Append => OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND,
                FileOpen::CreateNew => OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            };
            let fd: OwnedFd =
                rustix::fs::openat(self.fd.as_fd(), name, flags, Mode::from_raw_mode(0o600))?;
            let file = std::fs::File::from(fd);
            if how != FileOpen::Read {
                // an older file may have been created with looser permissions
                let meta = file.metadata()?;
                if !meta.is_file() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is not a regular file", self.path.join(name).display()),
                    ));
                }
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                }
            }
            Ok(file)
        }
    }

    fn check(dir: &Path, fd: &OwnedFd) -> Result<(), DirError> {
        let st = rustix::fs::fstat(fd).map_err(|e| DirError::Io {
            context: format!("cannot check directory {}", dir.display()),
            source: e.into(),
        })?;
        let own = rustix::process::geteuid().as_raw();
        if st.st_uid != own {
            return Err(DirError::Untrusted(format!(
                "directory {} belongs to uid {}, not to you (uid {own}); remove it or \
                 choose another socket with --socket or CE_AUTH_SOCK",
                dir.display(),
                st.st_uid
            )));
        }
        let mode = st.st_mode & 0o777;
        if mode != 0o700 {
            return Err(DirError::Untrusted(format!(
                "directory {} has mode {mode:03o}; it must be 0700 (private to you): \
                 run `chmod 700 {}`",
                dir.display(),
                dir.display()
            )));
        }
        Ok(())
    }

    /// A symlink or a non-directory where the socket's directory should be.
    fn untrusted_kind(dir: &Path) -> DirError {
        let what = match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => "is a symbolic link",
            Ok(_) => "is not a directory",
            Err(_) => "cannot be used",
        };
        DirError::Untrusted(format!(
            "{} {what}; the socket's directory must be a real directory of yours \
             (mode 0700). Remove it, or choose another socket with --socket or CE_AUTH_SOCK",
            dir.display()
        ))
    }

    fn libc_enoent() -> i32 {
        rustix::io::Errno::NOENT.raw_os_error()
    }
    fn libc_eloop() -> i32 {
        rustix::io::Errno::LOOP.raw_os_error()
    }
    fn libc_enotdir() -> i32 {
        rustix::io::Errno::NOTDIR.raw_os_error()
    }

    /// What [`PrivateDir::stat`] reports.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Entry {
        pub file_type: FileType,
        pub mode: u32,
        pub uid: u32,
        /// Device and inode: the same entry, or a new one in its place.
        pub id: (u64, u64),
    }
}

/// How [`PrivateDir::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOpen {
    /// Read an existing file.
    Read,
    /// Append, creating it 0600 if missing.
    Append,
    /// Create it 0600; it must not exist.
    CreateNew,
}

#[cfg(not(unix))]
impl PrivateDir {
    /// Creates `dir` if needed. Named pipes do not live in it, so it holds
    /// only files that the user profile's inherited ACL keeps private.
    pub fn create(dir: &Path) -> Result<PrivateDir, DirError> {
        std::fs::create_dir_all(dir).map_err(|source| DirError::Io {
            context: format!("cannot create directory {}", dir.display()),
            source,
        })?;
        Ok(PrivateDir {
            path: dir.to_path_buf(),
        })
    }

    /// Opens an existing `dir`.
    pub fn open(dir: &Path) -> Result<PrivateDir, DirError> {
        if !dir.is_dir() {
            return Err(DirError::Missing(dir.to_path_buf()));
        }
        Ok(PrivateDir {
            path: dir.to_path_buf(),
        })
    }

    /// The path of `name` in this directory.
    pub fn socket_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Removes `name` from this directory.
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }

    /// Opens `name` in this directory.
    pub fn open_file(&self, name: &OsStr, how: FileOpen) -> io::Result<std::fs::File> {
        let mut o = std::fs::OpenOptions::new();
        match how {
            FileOpen::Read => o.read(true),
            FileOpen::Append => o.append(true).create(true),
            FileOpen::CreateNew => o.write(true).create_new(true),
        };
        o.open(self.path.join(name))
    }
}

impl PrivateDir {
    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_0700_and_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        let d = PrivateDir::create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(d.path(), dir);
        PrivateDir::create(&dir).unwrap();
        PrivateDir::open(&dir).unwrap();
    }

    #[test]
    fn open_dirs_are_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        PrivateDir::create(&dir).unwrap();
        for m in [0o755, 0o770, 0o707, 0o500, 0o711] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
            let e = PrivateDir::create(&dir).unwrap_err();
            assert!(matches!(e, DirError::Untrusted(_)), "{m:o}: {e}");
            assert!(e.to_string().contains("chmod 700"), "{e}");
            assert_eq!(mode(&dir), m);
        }
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        PrivateDir::create(&target).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for r in [PrivateDir::create(&link), PrivateDir::open(&link)] {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        // a file in its place
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = PrivateDir::create(&file).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(matches!(
            PrivateDir::open(&tmp.path().join("none")),
            Err(DirError::Missing(_))
        ));
    }

    #[test]
    fn files_go_through_the_handle() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let d = PrivateDir::create(&dir).unwrap();
        // the path is re-pointed after opening: operations still land in the original
        let moved = tmp.path().join("moved");
        std::fs::rename(&dir, &moved).unwrap();
        std::fs::create_dir(&dir).unwrap();
        use std::io::Write;
        let mut f = d
            .open_file(OsStr::new("x.pid"), FileOpen::CreateNew)
            .unwrap();
        writeln!(f, "1").unwrap();
        assert!(moved.join("x.pid").exists());
        assert!(!dir.join("x.pid").exists());
        assert_eq!(mode(&moved.join("x.pid")), 0o600);
        let e = d.stat(OsStr::new("x.pid")).unwrap();
        assert!(e.file_type == rustix::fs::FileType::RegularFile);
        d.unlink(OsStr::new("x.pid")).unwrap();
        assert!(!moved.join("x.pid").exists());
        // a symlink planted inside is not followed by open_file
        std::os::unix::fs::symlink("/etc/passwd", moved.join("log")).unwrap();
        assert!(d.open_file(OsStr::new("log"), FileOpen::Append).is_err());
    }
}
