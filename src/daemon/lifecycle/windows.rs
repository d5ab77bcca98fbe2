//! `--daemon` and the console's stop events on Windows.
//!
//! Windows has no `fork`, so `ce-authd --daemon` starts a second copy of
//! itself in the foreground, detached from the console
//! (`DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW`), with
//! its standard output a pipe back to the first copy and its log in
//! `%LOCALAPPDATA%\ce-auth\ce-authd.log`. The detached copy reports on the
//! pipe once the named pipe is created and the configuration loaded (or why
//! it failed), exactly as the forked child does on Unix; the first copy then
//! prints `CE_AUTH_SOCK=...; export CE_AUTH_SOCK;` and exits.

use std::os::windows::io::{FromRawHandle, OwnedHandle};
use std::os::windows::process::CommandExt;
use std::process::{Command, Stdio};

use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::System::Console::{GetStdHandle, STD_OUTPUT_HANDLE, SetStdHandle};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, DETACHED_PROCESS,
};

use super::detach::wait_for_daemon;
use super::{LifecycleError, Options};
use crate::paths;

/// Set in the detached copy's environment: its standard output is the
/// start-up pipe.
const REPORT_ON_STDOUT: &str = "CE_AUTHD_REPORT_ON_STDOUT";

/// `ce-authd --daemon` on Windows: starts the detached copy and waits for it.
pub(super) fn detach(opts: Options) -> Result<(), LifecycleError> {
    let socket = paths::socket_path(opts.socket.clone())
        .map_err(|e| LifecycleError::io("choosing the pipe", std::io::Error::other(e)))?;
    let exe = std::env::current_exe()
        .map_err(|e| LifecycleError::io("cannot find ce-authd's own executable", e))?;
    let (reader, writer) =
        std::io::pipe().map_err(|e| LifecycleError::io("cannot create the start-up pipe", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--foreground").arg("--socket").arg(&socket);
    if let Some(c) = &opts.config {
        cmd.arg("--config").arg(c);
    }
    if let Some(p) = &opts.pidfile {
        cmd.arg("--pidfile").arg(p);
    }
    if opts.dev {
        cmd.arg("--dev");
    }
    // --log-level is main's, not in `opts`: passed on as given
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "--log-level" {
            cmd.arg(a).args(args.next());
        } else if a.to_string_lossy().starts_with("--log-level=") {
            cmd.arg(a);
        }
    }
    cmd.env(REPORT_ON_STDOUT, "1")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(daemon_log())
        .creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
    // the daemon must not hold our caller's stdout or stderr open: whoever
    // reads them (`$(ce-auth token)`, a CI step) would wait for it to exit
    crate::win::stop_std_handle_inheritance();
    let child = cmd
        .spawn()
        .map_err(|e| LifecycleError::io("cannot start the detached daemon", e))?;
    // our copy of the pipe's write end goes with `cmd`, so a daemon that dies
    // early shows as end of file
    drop(cmd);
    drop(child);
    wait_for_daemon(reader)?;
    eprintln!(
        "ce-authd: serving {}; clients find this pipe by default \
         (PowerShell: $env:CE_AUTH_SOCK = '{0}'; cmd: set CE_AUTH_SOCK={0})",
        socket.display()
    );
    Ok(())
}

/// In the detached copy: its standard output, taken as the start-up pipe
/// (standard output itself is then detached, so a later print goes nowhere
/// rather than failing on a pipe whose reader has gone).
pub(super) fn take_ready_pipe() -> Option<std::io::PipeWriter> {
    std::env::var_os(REPORT_ON_STDOUT)?;
    // SAFETY: reading and clearing this process's standard output handle;
    // the handle is ours from here on, and nothing else closes it since the
    // std handle no longer names it.
    unsafe {
        let h = GetStdHandle(STD_OUTPUT_HANDLE);
        if h.is_null() || h == INVALID_HANDLE_VALUE {
            return None;
        }
        SetStdHandle(STD_OUTPUT_HANDLE, std::ptr::null_mut());
        Some(std::io::PipeWriter::from(OwnedHandle::from_raw_handle(h)))
    }
}

/// The detached daemon's log: `%LOCALAPPDATA%\ce-auth\ce-authd.log`,
/// readable by the user only, appended to; else nowhere.
fn daemon_log() -> Stdio {
    let Some(path) = paths::windows_daemon_log() else {
        return Stdio::null();
    };
    let open = || -> std::io::Result<std::fs::File> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        use std::os::windows::fs::OpenOptionsExt;
        use windows_sys::Win32::Storage::FileSystem::{FILE_APPEND_DATA, SYNCHRONIZE, WRITE_DAC};
        // appending, and WRITE_DAC to make the file private below
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .access_mode(FILE_APPEND_DATA | SYNCHRONIZE | WRITE_DAC)
            .open(&path)?;
        Ok(f)
    };
    match open() {
        Ok(f) => {
            // the log never holds a secret, but it names profiles and token URLs
            if let Err(e) = crate::win::acl::restrict_to_owner(&f) {
                eprintln!(
                    "ce-authd: cannot make {} private ({e}); logging there anyway",
                    path.display()
                );
            }
            f.into()
        }
        Err(e) => {
            eprintln!(
                "ce-authd: cannot open the log {} ({e}); the detached daemon logs nowhere",
                path.display()
            );
            Stdio::null()
        }
    }
}

/// The console events that stop the daemon: Ctrl-C, Ctrl-Break, the console
/// window closing, and system shutdown. Each is optional: a detached daemon
/// has no console, and registering may then fail.
pub(super) struct ConsoleStop {
    c: Option<tokio::signal::windows::CtrlC>,
    brk: Option<tokio::signal::windows::CtrlBreak>,
    close: Option<tokio::signal::windows::CtrlClose>,
    shutdown: Option<tokio::signal::windows::CtrlShutdown>,
}

impl ConsoleStop {
    /// Registers the handlers (inside the runtime, before the daemon reports ready).
    pub(super) fn register() -> ConsoleStop {
        use tokio::signal::windows as w;
        fn opt<T>(name: &str, r: std::io::Result<T>) -> Option<T> {
            r.map_err(|e| tracing::debug!("cannot handle {name}: {e}"))
                .ok()
        }
        ConsoleStop {
            c: opt("Ctrl-C", w::ctrl_c()),
            brk: opt("Ctrl-Break", w::ctrl_break()),
            close: opt("console close", w::ctrl_close()),
            shutdown: opt("system shutdown", w::ctrl_shutdown()),
        }
    }

    /// Resolves when one of the events arrives. For a close or shutdown the
    /// system waits (about 5 s) while the handler thread is parked by tokio,
    /// so the orderly shutdown that follows has that long.
    pub(super) async fn wait(&mut self) {
        // an event source that is absent or closed never fires
        macro_rules! next {
            ($s:expr) => {
                async {
                    let fired = match $s.as_mut() {
                        Some(s) => s.recv().await.is_some(),
                        None => false,
                    };
                    if !fired {
                        std::future::pending::<()>().await
                    }
                }
            };
        }
        tokio::select! {
            _ = next!(self.c) => tracing::info!("Ctrl-C: shutting down"),
            _ = next!(self.brk) => tracing::info!("Ctrl-Break: shutting down"),
            _ = next!(self.close) => tracing::info!("console closed: shutting down"),
            _ = next!(self.shutdown) => tracing::info!("system shutdown: shutting down"),
        }
    }
}
