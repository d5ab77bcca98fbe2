//! `--daemon`: forking before any runtime exists, the ready pipe on which
//! the detached daemon reports, and the parent that waits on it.

use std::io::Write;
#[cfg(any(unix, windows))]
use std::io::{BufRead, BufReader};
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
#[cfg(any(unix, windows))]
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LifecycleError;
#[cfg(unix)]
use super::Options;
use super::dev::shell_quote;
#[cfg(unix)]
use super::run_in_runtime;
use crate::daemon::error_chain;
use crate::exit::daemon as exit;
#[cfg(unix)]
use crate::paths;

/// How long `ce-authd --daemon` waits for the detached daemon to report.
#[cfg(any(unix, windows))]
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the detached daemon tells the waiting parent, one JSON line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(super) enum StartupReport {
    Ready {
        socket: PathBuf,
        pid: u32,
        /// Text for the user (the `--dev` instructions), printed to stderr by the parent.
        notes: String,
    },
    Failed {
        message: String,
        code: u8,
    },
}

#[cfg(unix)]
pub(super) fn detach(opts: Options) -> Result<(), LifecycleError> {
    let socket = paths::socket_path(opts.socket.clone())
        .map_err(|e| LifecycleError::io("choosing the socket", std::io::Error::other(e)))?;
    let stderr = daemon_log(&socket);
    let (reader, writer) =
        std::io::pipe().map_err(|e| LifecycleError::io("cannot create the start-up pipe", e))?;
    let daemonize = daemonize::Daemonize::new()
        .working_directory("/")
        .umask(0o077)
        .stdout(daemonize::Stdio::devnull())
        .stderr(stderr);
    match daemonize.execute() {
        daemonize::Outcome::Parent(Ok(_)) => {
            drop(writer);
            wait_for_daemon(reader)
        }
        daemonize::Outcome::Parent(Err(e)) => Err(LifecycleError::io(
            "cannot detach",
            std::io::Error::other(e.to_string()),
        )),
        daemonize::Outcome::Child(Ok(_)) => {
            drop(reader);
            run_in_runtime(opts, Some(writer))
        }
        daemonize::Outcome::Child(Err(e)) => {
            let err = LifecycleError::io("cannot detach", std::io::Error::other(e.to_string()));
            report_failure(Some(writer), &err);
            Err(err)
        }
    }
}

/// Where the detached daemon's stderr (its log) goes: `ce-authd.log` beside the
/// socket (0600), opened through the checked directory's handle, else `/dev/null`.
#[cfg(unix)]
pub(super) fn daemon_log(socket: &Path) -> daemonize::Stdio {
    let Some(dir) = socket.parent() else {
        return daemonize::Stdio::devnull();
    };
    // created 0700 here if missing; bind opens and checks it again
    let Ok(dir) = crate::private_dir::PrivateDir::create(dir) else {
        return daemonize::Stdio::devnull();
    };
    match dir.open_file(
        std::ffi::OsStr::new("ce-authd.log"),
        crate::private_dir::FileOpen::Append,
    ) {
        Ok(f) => f.into(),
        Err(_) => daemonize::Stdio::devnull(),
    }
}

#[cfg(any(unix, windows))]
pub(super) fn wait_for_daemon(reader: std::io::PipeReader) -> Result<(), LifecycleError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let got = BufReader::new(reader).read_line(&mut line).map(|_| line);
        let _ = tx.send(got);
    });
    let line = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(LifecycleError::io("cannot read the start-up pipe", e)),
        Err(_) => {
            return Err(LifecycleError::Daemon {
                message: format!(
                    "the daemon did not report ready within {} s; see ce-authd.log beside the socket",
                    READY_TIMEOUT.as_secs()
                ),
                code: exit::FAILURE,
            });
        }
    };
    match serde_json::from_str::<StartupReport>(&line) {
        Ok(StartupReport::Ready { socket, notes, .. }) => {
            if !notes.is_empty() {
                eprint!("{notes}");
            }
            println!(
                "CE_AUTH_SOCK={}; export CE_AUTH_SOCK;",
                shell_quote(&socket.to_string_lossy())
            );
            Ok(())
        }
        Ok(StartupReport::Failed { message, code }) => {
            Err(LifecycleError::Daemon { message, code })
        }
        // EOF or garbage: the daemon died before it could say why
        Err(_) => Err(LifecycleError::Daemon {
            message: "the daemon exited before it was ready; see ce-authd.log beside the socket"
                .into(),
            code: exit::FAILURE,
        }),
    }
}

pub(super) fn report_failure(pipe: Option<std::io::PipeWriter>, err: &LifecycleError) {
    if let Some(mut w) = pipe {
        let report = StartupReport::Failed {
            message: error_chain(err),
            code: err.exit_code(),
        };
        if let Ok(mut line) = serde_json::to_vec(&report) {
            line.push(b'\n');
            let _ = w.write_all(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_reports_round_trip() {
        let r = StartupReport::Failed {
            message: "invalid configuration: x".into(),
            code: exit::CONFIG,
        };
        let line = serde_json::to_string(&r).unwrap();
        match serde_json::from_str::<StartupReport>(&line).unwrap() {
            StartupReport::Failed { code, message } => {
                assert_eq!(code, exit::CONFIG);
                assert_eq!(message, "invalid configuration: x");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
