//! Every configuration and runtime path in one place (the socket's
//! directory itself is opened and checked by `private_dir`).
//!
//! Each resolver has a pure `*_from` form that takes the environment as a
//! lookup function, so the resolution order is testable without touching the
//! process environment.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// The socket path: `--socket`, else `$CE_AUTH_SOCK`, else
/// `$XDG_RUNTIME_DIR/ce-auth/agent.sock`, else a per-user place no other user
/// can pre-create or redirect (see [`socket_path_from`]).
///
/// On Windows: `--socket`, else `$CE_AUTH_SOCK`, else the user's own named
/// pipe, `\\.\pipe\ce-auth-<SID>` (see [`windows_socket_path_from`]).
pub(crate) fn socket_path(cli: Option<PathBuf>) -> Result<PathBuf, NoSocketPath> {
    #[cfg(windows)]
    {
        windows_socket_path_from(cli, &|k| std::env::var_os(k), &|| {
            crate::win::current_user().ok().map(|s| s.to_string())
        })
    }
    #[cfg(not(windows))]
    {
        socket_path_from(cli, &Host::this())
    }
}

/// [`socket_path`] on Windows, with its inputs passed in: `cli`, then
/// `$CE_AUTH_SOCK`, then `\\.\pipe\ce-auth-<SID>` with the SID of the
/// user (`sid`). The SID rather than the user name: it is unique (a local
/// and a domain account may share a name), never reused, and has only
/// letters, digits and `-`. The name is not what makes the pipe safe
/// (anyone may create a pipe of a free name): the daemon's first-instance
/// rule and both ends' SID checks are.
#[cfg(any(windows, test))]
pub(crate) fn windows_socket_path_from(
    cli: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<OsString>,
    sid: &dyn Fn() -> Option<String>,
) -> Result<PathBuf, NoSocketPath> {
    if let Some(p) = cli {
        return Ok(p);
    }
    if let Some(p) = non_empty(env("CE_AUTH_SOCK")) {
        return Ok(PathBuf::from(p));
    }
    let sid = sid().ok_or(NoSocketPath { uid: 0 })?;
    Ok(PathBuf::from(format!(r"{PIPE_PREFIX}ce-auth-{sid}")))
}

/// Where Windows named pipes live.
#[cfg(any(windows, test))]
const PIPE_PREFIX: &str = r"\\.\pipe\";

/// Neither the environment nor the system gives the socket a safe place.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(
    not(windows),
    error(
        "no place for the socket: XDG_RUNTIME_DIR is unset, /run/user/{uid} does not exist \
     and there is no home directory; set CE_AUTH_SOCK (or XDG_RUNTIME_DIR) to a path in \
     a directory of yours"
    )
)]
#[cfg_attr(
    windows,
    error(
        "no name for the pipe: this user's SID cannot be read; set CE_AUTH_SOCK to \
         \\\\.\\pipe\\<a name of yours>"
    )
)]
pub(crate) struct NoSocketPath {
    uid: u32,
}

/// What the fallback socket location depends on, passed in so the choice is
/// testable without touching the process environment.
#[cfg_attr(windows, allow(dead_code))]
pub(crate) struct Host<'a> {
    pub env: &'a dyn Fn(&str) -> Option<OsString>,
    pub uid: u32,
    /// Whether `/run/user/<uid>` is (by lstat) a real directory owned by `uid`.
    pub run_user: &'a dyn Fn(u32) -> bool,
    /// The home directory from the password database (for when `$HOME` is unset).
    pub passwd_home: &'a dyn Fn() -> Option<PathBuf>,
    pub hostname: &'a dyn Fn() -> String,
}

#[cfg_attr(windows, allow(dead_code))]
impl Host<'static> {
    /// This process's environment and system.
    fn this() -> Host<'static> {
        Host {
            env: &|k| std::env::var_os(k),
            uid: current_uid(),
            run_user: &run_user_dir_is_ours,
            passwd_home: &std::env::home_dir,
            hostname: &hostname,
        }
    }
}

/// [`socket_path`] with its inputs passed in. The order:
///
/// 1. `cli`, then `$CE_AUTH_SOCK`;
/// 2. `$XDG_RUNTIME_DIR/ce-auth/agent.sock` (an absolute value only);
/// 3. on Linux, `/run/user/<uid>/ce-auth/agent.sock` when `/run/user/<uid>` is
///    a real directory owned by the uid: logind's runtime directory, whose
///    parent only root can write, so no other user can pre-create it; and
///    cron jobs, `su` and ssh sessions find the same socket as the user's
///    systemd service;
/// 4. `<home>/.cache/ce-auth/<hostname>/agent.sock` (home: `$HOME`, else the
///    password database): in the user's own home, and per host, because a
///    home shared over NFS would otherwise let one host's daemon reclaim
///    another host's socket.
///
/// The shared `/tmp` is never used: another user could create the directory
/// first (or a symlink in its place) and serve a fake daemon in it.
#[cfg_attr(windows, allow(dead_code))]
pub(crate) fn socket_path_from(
    cli: Option<PathBuf>,
    host: &Host<'_>,
) -> Result<PathBuf, NoSocketPath> {
    if let Some(p) = cli {
        return Ok(p);
    }
    let env = host.env;
    if let Some(p) = non_empty(env("CE_AUTH_SOCK")) {
        return Ok(PathBuf::from(p));
    }
    // the XDG base directory spec says relative values are invalid and must be ignored
    if let Some(dir) = absolute(env("XDG_RUNTIME_DIR")) {
        return Ok(dir.join("ce-auth").join("agent.sock"));
    }
    if cfg!(target_os = "linux") && (host.run_user)(host.uid) {
        return Ok(PathBuf::from(format!(
            "/run/user/{}/ce-auth/agent.sock",
            host.uid
        )));
    }
    let home = absolute(env("HOME"))
        .or_else(|| (host.passwd_home)().filter(|p| p.is_absolute()))
        .ok_or(NoSocketPath { uid: host.uid })?;
    Ok(home
        .join(".cache")
        .join("ce-auth")
        .join(host_dir_name(&(host.hostname)()))
        .join("agent.sock"))
}

/// A host name as a directory name: characters outside `[A-Za-z0-9._-]` as
/// `_`, at most 64 of them, never empty or a dot name.
#[cfg_attr(windows, allow(dead_code))]
fn host_dir_name(host: &str) -> String {
    let mut name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        name = "localhost".into();
    }
    name
}

/// Whether `/run/user/<uid>` is (not following a symlink) a directory owned by `uid`.
#[cfg_attr(windows, allow(dead_code))]
fn run_user_dir_is_ours(uid: u32) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(format!("/run/user/{uid}"))
            .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid)
    }
    #[cfg(not(unix))]
    {
        let _ = uid;
        false
    }
}

/// This machine's host name (uname's nodename).
#[cfg_attr(windows, allow(dead_code))]
fn hostname() -> String {
    #[cfg(unix)]
    {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into())
    }
}

/// The `interprocess` name of the socket at `path`: the path itself on Unix;
/// on Windows a named pipe: `path` itself when it is `\\.\pipe\NAME`,
/// else `\\.\pipe\ce-auth-<path with separators flattened>`.
pub(crate) fn socket_name(path: &Path) -> io::Result<interprocess::local_socket::Name<'static>> {
    #[cfg(unix)]
    {
        use interprocess::local_socket::{GenericFilePath, ToFsName};
        path.to_path_buf().to_fs_name::<GenericFilePath>()
    }
    #[cfg(windows)]
    {
        use interprocess::local_socket::{GenericNamespaced, ToNsName};
        let text = path.to_string_lossy();
        if let Some(name) = pipe_name(&text) {
            return name.to_string().to_ns_name::<GenericNamespaced>();
        }
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

/// The name after `\\.\pipe\` (either slash, any case), when `text` is a
/// named pipe's path with a non-empty name.
#[cfg(any(windows, test))]
fn pipe_name(text: &str) -> Option<&str> {
    let head = text.get(..PIPE_PREFIX.len())?;
    let norm: String = head
        .chars()
        .map(|c| if c == '/' { '\\' } else { c })
        .collect();
    let name = &text[PIPE_PREFIX.len()..];
    (norm.eq_ignore_ascii_case(PIPE_PREFIX) && !name.is_empty()).then_some(name)
}

/// The config path: `--config`, else `$CE_AUTH_CONFIG`, else
/// `$XDG_CONFIG_HOME/ce-auth/config.toml` (`~/.config/ce-auth/config.toml`).
///
/// On Windows the default is `%APPDATA%\ce-auth\config.toml` instead (see
/// [`windows_config_path_from`]).
pub(crate) fn config_path(cli: Option<PathBuf>) -> PathBuf {
    #[cfg(windows)]
    {
        windows_config_path_from(cli, &|k| std::env::var_os(k))
    }
    #[cfg(not(windows))]
    {
        config_path_from(cli, &|k| std::env::var_os(k))
    }
}

/// The config file the user chose on every platform: `--config`, else
/// `$CE_AUTH_CONFIG`.
fn chosen_config(cli: Option<PathBuf>, env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    cli.or_else(|| non_empty(env("CE_AUTH_CONFIG")).map(PathBuf::from))
}

/// [`config_path`] on Windows: `--config`, else `$CE_AUTH_CONFIG`, else
/// `%APPDATA%\ce-auth\config.toml` (the roaming application data folder),
/// else `%USERPROFILE%\AppData\Roaming\ce-auth\config.toml`.
#[cfg(any(windows, test))]
pub(crate) fn windows_config_path_from(
    cli: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> PathBuf {
    if let Some(p) = chosen_config(cli, env) {
        return p;
    }
    let appdata = non_empty(env("APPDATA"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            non_empty(env("USERPROFILE"))
                .map(PathBuf::from)
                .or_else(std::env::home_dir)
                .unwrap_or_default()
                .join("AppData")
                .join("Roaming")
        });
    appdata.join("ce-auth").join("config.toml")
}

/// [`config_path`] with the environment passed in. `HOME` (or `USERPROFILE`
/// on Windows) supplies `~`; without either, the user's home directory from
/// the password database (as cron and some service managers leave `HOME`
/// unset), and only failing that a path relative to the working directory.
#[cfg_attr(windows, allow(dead_code))]
pub(crate) fn config_path_from(
    cli: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> PathBuf {
    if let Some(p) = chosen_config(cli, env) {
        return p;
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

/// Where a daemon started with `--daemon` logs on Windows:
/// `%LOCALAPPDATA%\ce-auth\ce-authd.log` (per machine, not roaming).
#[cfg(windows)]
pub(crate) fn windows_daemon_log() -> Option<PathBuf> {
    windows_daemon_log_from(&|k| std::env::var_os(k))
}

/// [`windows_daemon_log`] with the environment passed in.
#[cfg(any(windows, test))]
pub(crate) fn windows_daemon_log_from(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let base = non_empty(env("LOCALAPPDATA"))
        .map(PathBuf::from)
        .or_else(|| {
            non_empty(env("USERPROFILE")).map(|h| PathBuf::from(h).join("AppData").join("Local"))
        })
        .filter(|p| p.is_absolute() || cfg!(not(windows)))?;
    Some(base.join("ce-auth").join("ce-authd.log"))
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

    #[cfg(not(windows))]
    fn host<'a>(
        env: &'a dyn Fn(&str) -> Option<OsString>,
        run_user: &'a dyn Fn(u32) -> bool,
        home: &'a dyn Fn() -> Option<PathBuf>,
    ) -> Host<'a> {
        Host {
            env,
            uid: 1000,
            run_user,
            passwd_home: home,
            hostname: &|| "build-07.example.org".to_string(),
        }
    }

    // the Unix resolver, with Unix paths
    #[cfg(not(windows))]
    #[test]
    fn socket_cli_and_env_win_over_everything() {
        let e = env(&[("CE_AUTH_SOCK", "/a.sock"), ("XDG_RUNTIME_DIR", "/run/u")]);
        let h = host(&e, &|_| true, &|| None);
        assert_eq!(
            socket_path_from(Some("/cli.sock".into()), &h).unwrap(),
            PathBuf::from("/cli.sock")
        );
        assert_eq!(
            socket_path_from(None, &h).unwrap(),
            PathBuf::from("/a.sock")
        );
    }

    // the Unix resolver, with Unix paths
    #[cfg(not(windows))]
    #[test]
    fn socket_xdg_then_run_user_then_home_cache_per_host() {
        let e = env(&[("XDG_RUNTIME_DIR", "/run/u"), ("HOME", "/home/u")]);
        assert_eq!(
            socket_path_from(None, &host(&e, &|_| true, &|| None)).unwrap(),
            PathBuf::from("/run/u/ce-auth/agent.sock")
        );
        let e = env(&[("HOME", "/home/u"), ("TMPDIR", "/var/t")]);
        if cfg!(target_os = "linux") {
            assert_eq!(
                socket_path_from(None, &host(&e, &|uid| uid == 1000, &|| None)).unwrap(),
                PathBuf::from("/run/user/1000/ce-auth/agent.sock")
            );
        }
        // no runtime directory: the home's cache, per host; never TMPDIR or /tmp
        assert_eq!(
            socket_path_from(None, &host(&e, &|_| false, &|| None)).unwrap(),
            PathBuf::from("/home/u/.cache/ce-auth/build-07.example.org/agent.sock")
        );
        let e = env(&[]);
        assert_eq!(
            socket_path_from(None, &host(&e, &|_| false, &|| Some("/pw/home".into()))).unwrap(),
            PathBuf::from("/pw/home/.cache/ce-auth/build-07.example.org/agent.sock")
        );
        let err = socket_path_from(None, &host(&e, &|_| false, &|| None)).unwrap_err();
        assert!(err.to_string().contains("CE_AUTH_SOCK"), "{err}");
    }

    // the Unix resolver, with Unix paths
    #[cfg(not(windows))]
    #[test]
    fn socket_ignores_empty_and_relative_values() {
        let e = env(&[
            ("CE_AUTH_SOCK", ""),
            ("XDG_RUNTIME_DIR", "relative/dir"),
            ("HOME", "relative/home"),
        ]);
        assert_eq!(
            socket_path_from(None, &host(&e, &|_| false, &|| Some("/pw".into()))).unwrap(),
            PathBuf::from("/pw/.cache/ce-auth/build-07.example.org/agent.sock")
        );
    }

    #[test]
    fn host_names_become_plain_directory_names() {
        assert_eq!(host_dir_name("node-1.cluster"), "node-1.cluster");
        assert_eq!(host_dir_name("a/b c\n"), "a_b_c_");
        assert_eq!(host_dir_name(".."), "localhost");
        assert_eq!(host_dir_name(""), "localhost");
        assert_eq!(host_dir_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn windows_pipe_is_per_user_unless_named() {
        let sid = || Some("S-1-5-21-1-2-3-1001".to_string());
        let e = env(&[("XDG_RUNTIME_DIR", "/run/u"), ("HOME", "/home/u")]);
        assert_eq!(
            windows_socket_path_from(None, &e, &sid).unwrap(),
            PathBuf::from(r"\\.\pipe\ce-auth-S-1-5-21-1-2-3-1001")
        );
        let e = env(&[("CE_AUTH_SOCK", r"\\.\pipe\mine")]);
        assert_eq!(
            windows_socket_path_from(None, &e, &sid).unwrap(),
            PathBuf::from(r"\\.\pipe\mine")
        );
        assert_eq!(
            windows_socket_path_from(Some("x".into()), &e, &sid).unwrap(),
            PathBuf::from("x")
        );
        assert!(windows_socket_path_from(None, &env(&[]), &|| None).is_err());
    }

    #[test]
    fn pipe_paths_name_the_pipe_itself() {
        assert_eq!(
            pipe_name(r"\\.\pipe\ce-auth-S-1-5-18"),
            Some("ce-auth-S-1-5-18")
        );
        assert_eq!(pipe_name(r"\\.\PIPE\x"), Some("x"));
        assert_eq!(pipe_name("//./pipe/x"), Some("x"));
        assert_eq!(pipe_name(r"\\.\pipe\"), None);
        assert_eq!(pipe_name(r"C:\Users\me\agent.sock"), None);
        assert_eq!(pipe_name("/run/user/1000/ce-auth/agent.sock"), None);
        assert_eq!(pipe_name("é"), None);
    }

    #[test]
    fn windows_config_is_in_appdata() {
        let e = env(&[
            ("APPDATA", r"C:\Users\me\AppData\Roaming"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            windows_config_path_from(None, &e),
            PathBuf::from(r"C:\Users\me\AppData\Roaming")
                .join("ce-auth")
                .join("config.toml")
        );
        let e = env(&[("USERPROFILE", r"C:\Users\me")]);
        assert_eq!(
            windows_config_path_from(None, &e),
            PathBuf::from(r"C:\Users\me")
                .join("AppData")
                .join("Roaming")
                .join("ce-auth")
                .join("config.toml")
        );
        let e = env(&[("CE_AUTH_CONFIG", r"D:\c.toml"), ("APPDATA", r"C:\a")]);
        assert_eq!(
            windows_config_path_from(None, &e),
            PathBuf::from(r"D:\c.toml")
        );
        assert_eq!(
            windows_config_path_from(Some("cli.toml".into()), &e),
            PathBuf::from("cli.toml")
        );
    }

    #[test]
    fn windows_log_is_in_local_appdata() {
        let e = env(&[("LOCALAPPDATA", r"C:\L"), ("USERPROFILE", r"C:\U")]);
        assert_eq!(
            windows_daemon_log_from(&e),
            Some(PathBuf::from(r"C:\L").join("ce-auth").join("ce-authd.log"))
        );
        let e = env(&[("USERPROFILE", r"C:\U")]);
        assert_eq!(
            windows_daemon_log_from(&e),
            Some(
                PathBuf::from(r"C:\U")
                    .join("AppData")
                    .join("Local")
                    .join("ce-auth")
                    .join("ce-authd.log")
            )
        );
        assert_eq!(windows_daemon_log_from(&env(&[])), None);
    }

    // the Unix resolver, with Unix paths
    #[cfg(not(windows))]
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
}
