//! Every configuration and runtime path in one place, and the creation of
//! private (0700) directories.
//!
//! Each resolver has a pure `*_from` form that takes the environment as a
//! lookup function, so the resolution order is testable without touching the
//! process environment.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// The socket path: `--socket`, else `$CE_AUTH_SOCK`, else
/// `$XDG_RUNTIME_DIR/ce-auth/agent.sock`, else `${TMPDIR:-/tmp}/ce-auth-<uid>/agent.sock`.
pub(crate) fn socket_path(cli: Option<PathBuf>) -> PathBuf {
    socket_path_from(cli, &|k| std::env::var_os(k), current_uid())
}

/// [`socket_path`] with the environment and uid passed in.
pub(crate) fn socket_path_from(
    cli: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<OsString>,
    uid: u32,
) -> PathBuf {
    if let Some(p) = cli {
        return p;
    }
    if let Some(p) = non_empty(env("CE_AUTH_SOCK")) {
        return PathBuf::from(p);
    }
    // the XDG base directory spec says relative values are invalid and must be ignored
    if let Some(dir) = absolute(env("XDG_RUNTIME_DIR")) {
        return dir.join("ce-auth").join("agent.sock");
    }
    let tmp = non_empty(env("TMPDIR"))
        .map(PathBuf::from)
        .unwrap_or_else(default_tmp);
    tmp.join(format!("ce-auth-{uid}")).join("agent.sock")
}

/// The `interprocess` name of the socket at `path`: the path itself on Unix;
/// on Windows a named pipe, `\\.\pipe\ce-auth-<path with separators flattened>`.
pub(crate) fn socket_name(path: &Path) -> io::Result<interprocess::local_socket::Name<'static>> {
    #[cfg(unix)]
    {
        use interprocess::local_socket::{GenericFilePath, ToFsName};
        path.to_path_buf().to_fs_name::<GenericFilePath>()
    }
    #[cfg(windows)]
    {
        use interprocess::local_socket::{GenericNamespaced, ToNsName};
        let flat: String = path
            .to_string_lossy()
            .chars()
            .map(|c| {
                if matches!(c, '\\' | '/' | ':') {
                    '-'
                } else {
                    c
                }
            })
            .collect();
        format!("ce-auth-{flat}").to_ns_name::<GenericNamespaced>()
    }
}

/// The config path: `--config`, else `$CE_AUTH_CONFIG`, else
/// `$XDG_CONFIG_HOME/ce-auth/config.toml` (`~/.config/ce-auth/config.toml`).
pub(crate) fn config_path(cli: Option<PathBuf>) -> PathBuf {
    config_path_from(cli, &|k| std::env::var_os(k))
}

/// [`config_path`] with the environment passed in. `HOME` (or `USERPROFILE`
/// on Windows) supplies `~`; without either, the user's home directory from
/// the password database (as cron and some service managers leave `HOME`
/// unset), and only failing that a path relative to the working directory.
pub(crate) fn config_path_from(
    cli: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> PathBuf {
    if let Some(p) = cli {
        return p;
    }
    if let Some(p) = non_empty(env("CE_AUTH_CONFIG")) {
        return PathBuf::from(p);
    }
    let base = absolute(env("XDG_CONFIG_HOME")).unwrap_or_else(|| {
        let home = non_empty(env("HOME"))
            .or_else(|| non_empty(env("USERPROFILE")))
            .map(PathBuf::from)
            .or_else(std::env::home_dir)
            .unwrap_or_default();
        home.join(".config")
    });
    base.join("ce-auth").join("config.toml")
}

/// The pidfile, beside the socket: `<socket dir>/ce-authd.pid`.
#[cfg(feature = "daemon")]
pub(crate) fn pidfile_path(socket: &Path) -> PathBuf {
    socket.with_file_name("ce-authd.pid")
}

/// Creates `dir` (and missing parents) if needed and checks that it is private:
/// owned by the current user, with no group or other permission bits.
///
/// An existing directory that fails the check is left alone and reported with
/// the command that fixes it, since silently changing a directory we did not
/// create could hide an attack (e.g. a pre-created directory in `/tmp`).
#[cfg(feature = "daemon")]
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create directory {}: {e}", dir.display()),
                )
            })?;
        let meta = std::fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        let uid = current_uid();
        if meta.uid() != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "directory {} belongs to uid {}, not to you (uid {uid}); \
                     remove it or choose another socket path with --socket",
                    dir.display(),
                    meta.uid()
                ),
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "directory {} has mode {mode:04o} and is open to other users; \
                     run `chmod 700 {}`",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        // directories under the user profile are private by their inherited ACL
        std::fs::create_dir_all(dir)
    }
}

/// The effective uid of this process (0 on systems without uids).
pub(crate) fn current_uid() -> u32 {
    #[cfg(unix)]
    {
        rustix::process::geteuid().as_raw()
    }
    #[cfg(not(unix))]
    {
        0
    }
}

fn default_tmp() -> PathBuf {
    #[cfg(unix)]
    {
        PathBuf::from("/tmp")
    }
    #[cfg(not(unix))]
    {
        std::env::temp_dir()
    }
}

fn non_empty(v: Option<OsString>) -> Option<OsString> {
    v.filter(|s| !s.is_empty())
}

fn absolute(v: Option<OsString>) -> Option<PathBuf> {
    non_empty(v).map(PathBuf::from).filter(|p| p.is_absolute())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn socket_cli_wins_over_everything() {
        let e = env(&[("CE_AUTH_SOCK", "/a.sock"), ("XDG_RUNTIME_DIR", "/run/u")]);
        assert_eq!(
            socket_path_from(Some("/cli.sock".into()), &e, 7),
            PathBuf::from("/cli.sock")
        );
    }

    #[test]
    fn socket_env_then_xdg_then_tmpdir() {
        let e = env(&[("CE_AUTH_SOCK", "/a.sock"), ("XDG_RUNTIME_DIR", "/run/u")]);
        assert_eq!(socket_path_from(None, &e, 7), PathBuf::from("/a.sock"));
        let e = env(&[("XDG_RUNTIME_DIR", "/run/u"), ("TMPDIR", "/var/t")]);
        assert_eq!(
            socket_path_from(None, &e, 7),
            PathBuf::from("/run/u/ce-auth/agent.sock")
        );
        let e = env(&[("TMPDIR", "/var/t")]);
        assert_eq!(
            socket_path_from(None, &e, 7),
            PathBuf::from("/var/t/ce-auth-7/agent.sock")
        );
        let e = env(&[]);
        assert_eq!(
            socket_path_from(None, &e, 1000),
            PathBuf::from("/tmp/ce-auth-1000/agent.sock")
        );
    }

    #[test]
    fn socket_ignores_empty_and_relative_values() {
        let e = env(&[
            ("CE_AUTH_SOCK", ""),
            ("XDG_RUNTIME_DIR", "relative/dir"),
            ("TMPDIR", ""),
        ]);
        assert_eq!(
            socket_path_from(None, &e, 3),
            PathBuf::from("/tmp/ce-auth-3/agent.sock")
        );
    }

    #[test]
    fn config_resolution_order() {
        let e = env(&[
            ("CE_AUTH_CONFIG", "/etc/c.toml"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            config_path_from(Some("/cli.toml".into()), &e),
            PathBuf::from("/cli.toml")
        );
        assert_eq!(config_path_from(None, &e), PathBuf::from("/etc/c.toml"));
        let e = env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/u")]);
        assert_eq!(
            config_path_from(None, &e),
            PathBuf::from("/x/ce-auth/config.toml")
        );
        let e = env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]);
        assert_eq!(
            config_path_from(None, &e),
            PathBuf::from("/home/u/.config/ce-auth/config.toml")
        );
    }

    #[test]
    fn pidfile_sits_beside_socket() {
        assert_eq!(
            pidfile_path(Path::new("/run/u/ce-auth/agent.sock")),
            PathBuf::from("/run/u/ce-auth/ce-authd.pid")
        );
    }

    #[cfg(unix)]
    #[test]
    fn private_dir_is_created_0700_and_open_dirs_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        create_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // idempotent on a good directory
        create_private_dir(&dir).unwrap();

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = create_private_dir(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }
}
