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

mod pidfile;
#[cfg(windows)]
mod windows;

use std::io::Write;
#[cfg(any(unix, windows))]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::daemon::config::{AuthMethod, Config, ConfigError, Grant, Profile, ProfileSpec};
use crate::daemon::engine::{Engine, MAX_PROFILES, too_many_profiles};
use crate::daemon::ops::Shared;
use crate::daemon::server;
use crate::daemon::server::listener::{self as ipc, BindError, Listener};
use crate::daemon::systemd;
use crate::paths;
use crate::secret::Secret;
use ce_auth_issuer::Issuer;

use crate::daemon::error_chain;
use crate::exit::daemon as exit;
use pidfile::Pidfile;

/// How long `ce-authd --daemon` waits for the detached daemon to report.
#[cfg(any(unix, windows))]
const READY_TIMEOUT: Duration = Duration::from_secs(60);

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

/// What the detached daemon tells the waiting parent, one JSON line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum StartupReport {
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
fn detach(opts: Options) -> Result<(), LifecycleError> {
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
fn daemon_log(socket: &Path) -> daemonize::Stdio {
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
fn wait_for_daemon(reader: std::io::PipeReader) -> Result<(), LifecycleError> {
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

fn report_failure(pipe: Option<std::io::PipeWriter>, err: &LifecycleError) {
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

fn run_in_runtime(
    opts: Options,
    ready_pipe: Option<std::io::PipeWriter>,
) -> Result<(), LifecycleError> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
        if opts.dev {
            let (iss, profile) = start_dev_issuer().await?;
            if config.profiles.contains_key(DEV_PROFILE) {
                tracing::warn!("--dev replaces the profile \"{DEV_PROFILE}\" of the configuration");
            }
            config.profiles.insert(DEV_PROFILE.to_string(), profile);
            config.default_profile = Some(DEV_PROFILE.to_string());
            notes = dev_notes(&socket, &iss);
            issuer = Some(iss);
        }
        if config.profiles.len() > MAX_PROFILES {
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

        let settings = config.daemon.clone();
        let profiles = config.profiles.len();
        let proxies = config.proxies.clone();
        let engine = Engine::new(config);
        tracing::info!(
            "ce-authd {} listening on {} ({profiles} profile(s), pid {})",
            env!("CARGO_PKG_VERSION"),
            socket.display(),
            std::process::id()
        );
        let shared = Arc::new(Shared::new(engine, config_path, settings));
        if let Err(e) = shared.proxies.apply(&shared.engine, &proxies) {
            drop(listener);
            if let Some(p) = &pidfile {
                p.remove();
            }
            return Err(LifecycleError::io(
                "cannot start the API proxies",
                std::io::Error::other(e),
            ));
        }
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

        let stop = stop_signals.wait();
        let served = server::run(listener, shared.clone(), stop).await;

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

/// The signals that stop the daemon: SIGTERM and SIGINT; on Windows Ctrl-C,
/// Ctrl-Break, the console closing and system shutdown; Ctrl-C elsewhere.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(windows)]
    console: windows::ConsoleStop,
}

/// The signal that reloads the configuration: SIGHUP (none elsewhere).
struct ReloadSignal {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

/// Registers the daemon's signal handlers, before it reports ready.
#[cfg(unix)]
fn signals() -> Result<(StopSignals, ReloadSignal), LifecycleError> {
    use tokio::signal::unix::{SignalKind, signal};
    let reg = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| LifecycleError::io(format!("cannot handle {name}"), e))
    };
    Ok((
        StopSignals {
            term: reg(SignalKind::terminate(), "SIGTERM")?,
            int: reg(SignalKind::interrupt(), "SIGINT")?,
        },
        ReloadSignal {
            hup: reg(SignalKind::hangup(), "SIGHUP")?,
        },
    ))
}

/// Registers the daemon's console event handlers, before it reports ready.
#[cfg(windows)]
fn signals() -> Result<(StopSignals, ReloadSignal), LifecycleError> {
    Ok((
        StopSignals {
            console: windows::ConsoleStop::register(),
        },
        ReloadSignal {},
    ))
}

/// Registers the daemon's signal handlers, before it reports ready.
#[cfg(not(any(unix, windows)))]
fn signals() -> Result<(StopSignals, ReloadSignal), LifecycleError> {
    Ok((StopSignals {}, ReloadSignal {}))
}

impl StopSignals {
    /// Resolves when the daemon is asked to stop.
    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        #[cfg(windows)]
        self.console.wait().await;
        #[cfg(not(any(unix, windows)))]
        {
            let _ = &mut self;
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C: shutting down");
            } else {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl ReloadSignal {
    /// The next reload request; `false` when no more can come.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        let more = self.hup.recv().await.is_some();
        #[cfg(not(unix))]
        let more = false;
        more
    }
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

/// The name of the profile `--dev` adds.
pub const DEV_PROFILE: &str = "dev";
/// The e-mail of the dev user of `--dev`.
pub const DEV_USER: &str = "dev@example.com";

async fn start_dev_issuer() -> Result<(Issuer, Profile), LifecycleError> {
    let client_id = ce_auth_issuer::generate_client_id();
    let client_secret = Secret::new(ce_auth_issuer::generate_client_secret());
    let password = Secret::new(ce_auth_issuer::generate_client_secret());
    let issuer = Issuer::builder()
        .user(DEV_USER, password.expose())
        .client(&client_id, client_secret.expose())
        .start()
        .await
        .map_err(LifecycleError::Issuer)?;
    let spec = ProfileSpec {
        token_url: Some(issuer.token_url()),
        grant: Some(Grant::ClientCredentials),
        auth_method: Some(AuthMethod::ClientSecretJwt),
        client_id: Some(client_id),
        ..ProfileSpec::default()
    };
    let profile = Profile::from_spec(DEV_PROFILE, spec, Some(client_secret))
        .map_err(LifecycleError::Config)?;
    tracing::info!("emulated issuer for --dev at {}", issuer.base_url());
    Ok((issuer, profile))
}

fn dev_notes(socket: &Path, issuer: &Issuer) -> String {
    let sock = shell_quote(&socket.to_string_lossy());
    let base = issuer.base_url();
    let cli = client_command();
    format!(
        "ce-authd --dev: serving tokens from an emulated Climate Engine issuer\n\
         \x20 socket:  {sock}\n\
         \x20 profile: {DEV_PROFILE} (client_credentials + client_secret_jwt; the default profile)\n\
         \x20 issuer:  {base} (token endpoint {token}, user {DEV_USER})\n\
         \n\
         Try, in another terminal:\n\
         \x20 export CE_AUTH_SOCK={sock}\n\
         \x20 {cli} token\n\
         \x20 {cli} status\n\
         \x20 {cli} header | curl -H @- {base}/api/v1/users/me\n\
         \n",
        token = issuer.token_url(),
    )
}

/// How the user should call the client: `ce-auth` when it is on `PATH`,
/// else the binary built next to this one (as after `cargo run`).
fn client_command() -> String {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ce-auth").is_file()));
    if !on_path
        && let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("ce-auth")))
            .filter(|p| p.is_file())
    {
        return shell_quote(&sibling.to_string_lossy());
    }
    "ce-auth".to_string()
}

/// Quotes `s` for a POSIX shell when it holds anything but safe characters.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("/run/user/1000/ce-auth/agent.sock"),
            "/run/user/1000/ce-auth/agent.sock"
        );
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_quote("/tmp/$(rm -rf x)"), "'/tmp/$(rm -rf x)'");
        assert_eq!(shell_quote(""), "''");
    }

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
