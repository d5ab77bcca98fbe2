//! Daemon lifecycle: detaching, readiness, the pidfile, signals and orderly shutdown.
//!
//! `ce-authd`'s `main` parses arguments and calls [`run`]. Everything that can
//! fail returns a [`LifecycleError`] whose [`LifecycleError::exit_code`] is the
//! documented exit status, so `main` returns instead of calling
//! `process::exit` and every secret is zeroed by its destructor.
//!
//! With `--daemon` the process forks *before* any tokio runtime exists (forking
//! a multi-threaded process is unsound). The parent waits on a pipe until the
//! daemon reports that its socket is bound and its configuration loaded, or
//! why it failed; only then does it print `CE_AUTH_SOCK=...` and exit.
//!
//! Its jobs, a file each: this one starts the daemon (config, socket,
//! pidfile, proxies) and serves until it stops; `detach` forks and waits on
//! the ready pipe; `pidfile`; `signals`; `dev` (the emulated issuer of
//! `--dev`); `windows` (the same jobs on Windows: detached copy, console events).

mod detach;
mod dev;
mod pidfile;
mod signals;
#[cfg(windows)]
mod windows;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::config::{Config, ConfigError};
use crate::daemon::engine::{Engine, MAX_PROFILES, too_many_profiles};
use crate::daemon::ops::Shared;
use crate::daemon::server;
use crate::daemon::server::listener::{self as ipc, BindError, Listener};
use crate::daemon::systemd;
use crate::paths;
use ce_auth_issuer::Issuer;

use crate::exit::daemon as exit;
#[cfg(unix)]
use detach::detach;
use detach::{StartupReport, report_failure};
use dev::{DEV_PROFILE, dev_notes, start_dev_issuer};
use pidfile::Pidfile;
use signals::{ReloadSignal, StopSignals, signals};

/// How long each shutdown step (engine, emulated issuer) may take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Whether to stay attached to the terminal or detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Stay in the foreground (the default; what systemd and containers want).
    #[default]
    Foreground,
    /// Detach, print `CE_AUTH_SOCK=...; export CE_AUTH_SOCK;` once ready, like `ssh-agent`.
    Daemon,
}

/// What `ce-authd` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--config`; `None` falls back to `$CE_AUTH_CONFIG`, then the XDG default.
    pub config: Option<PathBuf>,
    /// `--socket`; `None` falls back to `$CE_AUTH_SOCK`, then the runtime directory.
    pub socket: Option<PathBuf>,
    /// `--foreground` / `--daemon`.
    pub mode: Mode,
    /// `--dev`: run the emulated issuer in-process with a `dev` profile.
    pub dev: bool,
    /// `--pidfile`; `None` puts it beside the socket (and writes none when
    /// systemd passed the socket).
    pub pidfile: Option<PathBuf>,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Another daemon answers on the socket.
    #[error(
        "another ce-authd is already serving {0}; stop it first (`ce-auth stop`) or pick another socket with --socket"
    )]
    InUse(PathBuf),
    /// The configuration file is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[source] ConfigError),
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A socket passed by systemd could not be adopted.
    #[error("cannot use the socket passed by systemd (LISTEN_FDS): {0}")]
    Activation(#[source] std::io::Error),
    /// The pidfile could not be written.
    #[error("cannot write the pidfile {path}: {source} (choose another with --pidfile)")]
    Pidfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The emulated issuer of `--dev` could not start.
    #[error("cannot start the emulated issuer for --dev: {0}")]
    Issuer(#[source] std::io::Error),
    /// Another I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The detached daemon reported a failure (or vanished) before it was ready.
    #[error("{message}")]
    Daemon { message: String, code: u8 },
}

impl LifecycleError {
    /// The process exit status for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            LifecycleError::InUse(_) => exit::IN_USE,
            LifecycleError::Config(_) => exit::CONFIG,
            LifecycleError::Daemon { code, .. } => *code,
            _ => exit::FAILURE,
        }
    }

    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LifecycleError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Runs the daemon as `opts` says, until a signal or a `shutdown` request stops it.
///
/// Call from `main` with no tokio runtime running: `--daemon` forks first and
/// builds the runtime in the child.
pub fn run(opts: Options) -> Result<(), LifecycleError> {
    let opts = absolute(opts)?;
    match opts.mode {
        // on Windows the copy that `--daemon` started reports on its stdout
        #[cfg(windows)]
        Mode::Foreground => run_in_runtime(opts, windows::take_ready_pipe()),
        #[cfg(not(windows))]
        Mode::Foreground => run_in_runtime(opts, None),
        #[cfg(unix)]
        Mode::Daemon => detach(opts),
        // no fork: a detached copy of ourselves
        #[cfg(windows)]
        Mode::Daemon => windows::detach(opts),
        #[cfg(not(any(unix, windows)))]
        Mode::Daemon => Err(LifecycleError::io(
            "--daemon",
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "detaching is not available on this platform; run ce-authd --foreground",
            ),
        )),
    }
}

/// Makes the paths absolute, since the detached daemon changes to `/`.
fn absolute(mut opts: Options) -> Result<Options, LifecycleError> {
    let cwd = || std::env::current_dir().map_err(|e| LifecycleError::io("current directory", e));
    for p in [&mut opts.config, &mut opts.socket, &mut opts.pidfile]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = cwd()?.join(&*p);
        }
    }
    Ok(opts)
}

fn run_in_runtime(
    opts: Options,
    ready_pipe: Option<std::io::PipeWriter>,
) -> Result<(), LifecycleError> {
    // One thread: token requests are served on the socket server's own
    // thread (`server::run_apart`), so this runtime carries only refreshes,
    // the proxies and the issuer. A worker pool measured no faster for the
    // token path or the proxy on 2 cores, and costs a thread stack and
    // allocator arena per core.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let err = LifecycleError::io("cannot start the async runtime", e);
            report_failure(ready_pipe, &err);
            return Err(err);
        }
    };
    runtime.block_on(async move {
        let daemon = match Daemon::start(&opts).await {
            Ok(d) => d,
            Err(e) => {
                report_failure(ready_pipe, &e);
                return Err(e);
            }
        };
        daemon.serve(ready_pipe).await
    })
}

/// A started daemon: socket bound, configuration loaded, pidfile written.
struct Daemon {
    listener: Listener,
    shared: Arc<Shared>,
    socket: PathBuf,
    pidfile: Option<Pidfile>,
    issuer: Option<Issuer>,
    notes: String,
    signals: (StopSignals, ReloadSignal),
}

impl Daemon {
    async fn start(opts: &Options) -> Result<Daemon, LifecycleError> {
        // handlers go in before anything else: SIGHUP's default action would
        // kill a daemon that is reloaded early
        let signals = signals()?;
        let socket = paths::socket_path(opts.socket.clone())
            .map_err(|e| LifecycleError::io("choosing the socket", std::io::Error::other(e)))?;
        let (mut config, config_path) = load_config(opts)?;

        let mut issuer = None;
        let mut notes = String::new();
        // added as at runtime (not from the file), so a reload keeps it
        let mut dev_profile = None;
        if opts.dev {
            let (iss, profile) = start_dev_issuer().await?;
            if config.profiles.remove(DEV_PROFILE).is_some() {
                tracing::warn!("--dev replaces the profile \"{DEV_PROFILE}\" of the configuration");
            }
            dev_profile = Some(profile);
            config.default_profile = Some(DEV_PROFILE.to_string());
            notes = dev_notes(&socket, &iss);
            issuer = Some(iss);
        }
        if config.profiles.len() + usize::from(dev_profile.is_some()) > MAX_PROFILES {
            let file = config_path
                .as_deref()
                .unwrap_or(Path::new("the configuration"));
            let e = too_many_profiles(
                format!("{} has {} profiles", file.display(), config.profiles.len()),
                "remove some from the file",
            );
            return Err(LifecycleError::Config(ConfigError { message: e.message }));
        }

        let (listener, owns_socket) = match ipc::from_systemd() {
            Ok(Some(l)) => {
                tracing::info!("using the socket passed by systemd");
                (l, false)
            }
            Ok(None) => match ipc::bind(&socket) {
                Ok(l) => (l, true),
                Err(BindError::InUse(_)) => return Err(LifecycleError::InUse(socket)),
                Err(BindError::Io(source)) => {
                    return Err(LifecycleError::Bind {
                        path: socket,
                        source,
                    });
                }
            },
            Err(e) => return Err(LifecycleError::Activation(e)),
        };

        // under socket activation systemd tracks the main pid and the socket
        // path may not be ours to guess, so only an explicit --pidfile is written
        let pidfile = match (&opts.pidfile, listener.dir()) {
            (Some(p), _) => Some(Pidfile::At(p.clone())),
            (None, Some(dir)) if owns_socket => Some(Pidfile::InDir(dir)),
            (None, _) => None,
        };
        if let Some(p) = &pidfile
            && let Err(source) = p.write()
        {
            // nobody else may use a socket we bound: dropping the listener removes it
            drop(listener);
            return Err(LifecycleError::Pidfile {
                path: p.path(),
                source,
            });
        }

        let profiles = config.profiles.len() + usize::from(dev_profile.is_some());
        let shared = match serve_state(config, dev_profile, config_path) {
            Ok(shared) => shared,
            Err(e) => {
                // nobody else may use a socket we bound: dropping the listener removes it
                drop(listener);
                if let Some(p) = &pidfile {
                    p.remove();
                }
                return Err(e);
            }
        };
        tracing::info!(
            "ce-authd {} listening on {} ({profiles} profile(s), pid {})",
            env!("CARGO_PKG_VERSION"),
            socket.display(),
            std::process::id()
        );
        Ok(Daemon {
            listener,
            shared,
            socket,
            pidfile,
            issuer,
            notes,
            signals,
        })
    }

    async fn serve(self, ready_pipe: Option<std::io::PipeWriter>) -> Result<(), LifecycleError> {
        let Daemon {
            listener,
            shared,
            socket,
            pidfile,
            issuer,
            notes,
            signals,
        } = self;

        let (stop_signals, mut hup) = signals;
        let reloader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while hup.next().await {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // failures are logged by reload itself; nobody waits on a reply here
                    let _ = crate::daemon::ops::reload(&shared);
                }
            })
        };
        let watchdog = systemd::spawn_watchdog();

        systemd::notify_ready_with_status(&format!("serving {}", socket.display()));
        match ready_pipe {
            Some(mut w) => {
                let report = StartupReport::Ready {
                    socket: socket.clone(),
                    pid: std::process::id(),
                    notes,
                };
                // the parent may have gone (killed while waiting); we serve anyway
                if let Ok(mut line) = serde_json::to_vec(&report) {
                    line.push(b'\n');
                    let _ = w.write_all(&line);
                }
            }
            None if !notes.is_empty() => {
                print!("{notes}");
                let _ = std::io::stdout().flush();
            }
            None => {}
        }

        let served = serve_socket(listener, shared.clone(), stop_signals).await;

        systemd::notify_stopping();
        shared.proxies.stop();
        reloader.abort();
        if let Some(w) = watchdog {
            w.abort();
        }
        // bounded, so a wedged refresh cannot keep the daemon from exiting
        if tokio::time::timeout(SHUTDOWN_GRACE, shared.engine.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the token engine did not stop within {SHUTDOWN_GRACE:?}");
        }
        if let Some(iss) = issuer {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, iss.shutdown()).await;
        }
        // the socket went with the listener, through the directory handle
        if let Some(p) = &pidfile {
            p.remove();
        }
        tracing::info!("stopped");
        served.map_err(|e| LifecycleError::io("the socket server failed", e))
    }
}

/// Serves the socket until a stop signal (or a client's `shutdown`).
///
/// On Unix the server gets a thread of its own ([`server::run_apart`]); a
/// Windows named pipe is served on this runtime, which drives its I/O.
async fn serve_socket(
    listener: Listener,
    shared: Arc<Shared>,
    stop_signals: StopSignals,
) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = server::run_apart(listener, shared, async move {
            let _ = stop_rx.await;
        });
        tokio::pin!(served);
        tokio::select! {
            r = &mut served => r,
            () = stop_signals.wait() => {
                let _ = stop_tx.send(());
                served.await
            }
        }
    }
    #[cfg(not(unix))]
    {
        server::run(listener, shared, stop_signals.wait()).await
    }
}

/// The engine (with `--dev`'s profile added as at runtime, so a reload keeps
/// it), the shared state and the running API proxies. Runs inside the
/// runtime, once the socket is bound.
fn serve_state(
    config: Config,
    dev_profile: Option<crate::daemon::config::Profile>,
    config_path: Option<PathBuf>,
) -> Result<Arc<Shared>, LifecycleError> {
    let settings = config.daemon.clone();
    let proxies = config.proxies.clone();
    let engine = Engine::new(config);
    if let Some(p) = dev_profile {
        // within the profile cap checked before, so not expected
        engine
            .add(p, true)
            .map_err(|e| LifecycleError::Config(ConfigError { message: e.message }))?;
    }
    let shared = Arc::new(Shared::new(engine, config_path, settings));
    shared
        .proxies
        .apply(&shared.engine, &proxies)
        .map_err(|e| {
            LifecycleError::io("cannot start the API proxies", std::io::Error::other(e))
        })?;
    Ok(shared)
}

/// Loads the configuration. An explicitly named file (`--config`,
/// `$CE_AUTH_CONFIG`) must exist; a missing default file is an empty configuration.
fn load_config(opts: &Options) -> Result<(Config, Option<PathBuf>), LifecycleError> {
    let explicit = opts.config.is_some() || std::env::var_os("CE_AUTH_CONFIG").is_some();
    let path = paths::config_path(opts.config.clone());
    if !explicit && !path.exists() {
        tracing::info!(
            "no configuration at {}; starting without profiles",
            path.display()
        );
        // with --dev the file may never exist: reload would drop the dev profile
        let keep = (!opts.dev).then_some(path);
        return Ok((Config::default(), keep));
    }
    let config = Config::load(&path).map_err(LifecycleError::Config)?;
    Ok((config, Some(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::daemon::error_chain;

    #[test]
    fn exit_codes_follow_the_error_kind() {
        assert_eq!(
            LifecycleError::InUse(PathBuf::from("/x")).exit_code(),
            exit::IN_USE
        );
        let cfg = LifecycleError::Config(ConfigError {
            message: "bad".into(),
        });
        assert_eq!(cfg.exit_code(), exit::CONFIG);
        let pid = LifecycleError::Pidfile {
            path: "/nope/pid".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(pid.exit_code(), exit::FAILURE);
        assert!(
            error_chain(&pid).contains("/nope/pid"),
            "{}",
            error_chain(&pid)
        );
    }

    #[test]
    fn relative_paths_become_absolute() {
        let o = absolute(Options {
            socket: Some("s.sock".into()),
            ..Options::default()
        })
        .unwrap();
        assert!(o.socket.unwrap().is_absolute());
        assert!(o.config.is_none());
    }
}
