//! A small synchronous client of the daemon's socket, for `ce-auth` and other Rust programs.
//!
//! No async runtime: one blocking connection, a `hello` handshake, then typed
//! request/reply pairs. [`Client::connect_or_start`] starts `ce-authd --daemon`
//! when nothing answers on the socket.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use zeroize::Zeroize;

use super::transport::Stream as ClientStream;
use crate::exit::client as exit;
use crate::framing::{FrameError, SyncLines, ZeroingReader};
use crate::protocol::{
    self, Empty, ErrorCode, HelloReply, LoginReply, PROTOCOL_VERSION, ProfileReply, ReloadReply,
    Request, StatusReply, TokenReply, WhoamiReply, WireError,
};
use crate::secret::Secret;
use crate::spec::ProfileSpec;

/// How long a request may wait for its reply. Generous: a token request may
/// wait for the issuer (and its retries) before the daemon answers.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How much longer than a request's `wait` the client waits for its reply.
const WAIT_MARGIN: Duration = Duration::from_secs(15);

/// How long `git-credential` lets the daemon wait for a token: git blocks on
/// its helpers, and a push or fetch is worth a longer wait than a script's
/// token call (a failed helper makes git prompt for a password instead).
pub(crate) const GIT_WAIT: u64 = 30;

/// The `wait` a request asks of the daemon, capped as the daemon caps it.
fn asked_wait(request: &Request) -> Option<Duration> {
    match request {
        Request::Token { wait: Some(w), .. } | Request::Refresh { wait: Some(w), .. } => {
            Some(Duration::from_secs((*w).min(crate::protocol::MAX_WAIT)))
        }
        _ => None,
    }
}

/// How long autostart waits for a freshly started daemon to answer.
const AUTOSTART_DEADLINE: Duration = Duration::from_secs(15);

/// The environment variable that turns autostart off (`1`, `true`, `yes`).
pub(super) const NO_AUTOSTART_ENV: &str = "CE_AUTH_NO_AUTOSTART";

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error(
        "no ce-authd answers on {} ({error}); start one with \
         `eval \"$(ce-authd --daemon --socket {})\"`, or let ce-auth start it \
         (no --no-autostart, {NO_AUTOSTART_ENV} unset)",
        socket.display(),
        socket.display()
    )]
    NotRunning {
        socket: PathBuf,
        error: std::io::Error,
    },
    /// The socket's directory or the process listening on it may not be
    /// trusted (another user's); nothing was sent.
    #[error("{0}")]
    Untrusted(String),
    /// Starting the daemon failed.
    #[error("could not start ce-authd for {}: {message}", socket.display())]
    Autostart { socket: PathBuf, message: String },
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(WireError),
    /// The connection failed mid-request (closed, timed out).
    #[error("talking to ce-authd on {}", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon's reply was not a valid reply line.
    #[error("ce-authd sent an invalid reply: {0}")]
    Protocol(String),
    /// The daemon speaks another protocol version.
    #[error(
        "ce-authd speaks protocol version {daemon}, this ce-auth speaks {PROTOCOL_VERSION}; \
         restart the daemon (`ce-auth stop`) so both come from the same release"
    )]
    Version { daemon: u32 },
}

impl ClientError {
    /// The `ce-auth` exit status for this error (see [`crate::exit::client`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NotRunning { .. }
            | ClientError::Autostart { .. }
            | ClientError::Untrusted(_) => exit::NOT_RUNNING,
            ClientError::Daemon(e) => e.code.exit_code(),
            ClientError::Io { .. } | ClientError::Protocol(_) | ClientError::Version { .. } => {
                exit::FAILURE
            }
        }
    }

    /// Whether nothing answers on the socket at all (so starting a daemon may help).
    pub fn is_absent(&self) -> bool {
        matches!(self, ClientError::NotRunning { error, .. } if is_absent(error))
    }

    /// The daemon's error code, when the daemon answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon(e) => Some(e.code),
            _ => None,
        }
    }
}

/// How to start a daemon when none answers.
#[derive(Debug, Clone, Default)]
pub struct Autostart {
    /// The `ce-authd` program; [`find_daemon`] when `None`.
    pub program: Option<PathBuf>,
    /// A config file to pass with `--config` (else the daemon's own default applies).
    pub config: Option<PathBuf>,
}

/// Whether the environment turns autostart off (`CE_AUTH_NO_AUTOSTART=1`).
pub(super) fn autostart_disabled_by_env() -> bool {
    std::env::var_os(NO_AUTOSTART_ENV).is_some_and(|v| {
        let v = v.to_string_lossy().to_ascii_lowercase();
        !(v.is_empty() || v == "0" || v == "false" || v == "no")
    })
}

/// A connection to the daemon, past the `hello` handshake.
pub struct Client {
    lines: SyncLines<ZeroingReader<ClientStream>>,
    socket: PathBuf,
    daemon: HelloReply,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("daemon", &self.daemon)
            .finish()
    }
}

impl Client {
    /// Connects to the daemon on `socket` and checks its protocol version.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        Client::connect_with_timeout(socket, DEFAULT_TIMEOUT)
    }

    /// Like [`Client::connect`], with a bound on each reply.
    pub fn connect_with_timeout(socket: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let mut client = Client::open(socket, timeout)?;
        client.send(&[&hello()])?;
        client.check_hello()?;
        Ok(client)
    }

    /// Connects and sends `hello` and `request` in one write, then reads both
    /// replies: one round trip instead of two, for one-shot commands.
    pub fn connect_and_request<T: DeserializeOwned>(
        socket: &Path,
        request: &Request,
    ) -> Result<(Client, T), ClientError> {
        let mut client = Client::open(socket, DEFAULT_TIMEOUT)?;
        client.send(&[&hello(), request])?;
        // on a version mismatch the daemon still answers the request; it is left unread
        client.check_hello()?;
        let reply = client.receive(request)?;
        Ok((client, reply))
    }

    /// Connects without the handshake.
    fn open(socket: &Path, timeout: Duration) -> Result<Client, ClientError> {
        use super::transport::ConnectError;
        let stream = super::transport::connect(socket).map_err(|e| match e {
            ConnectError::Failed(error) => ClientError::NotRunning {
                socket: socket.to_path_buf(),
                error,
            },
            ConnectError::Untrusted(message) => ClientError::Untrusted(message),
        })?;
        let io_err = |source| ClientError::Io {
            socket: socket.to_path_buf(),
            source,
        };
        super::transport::set_timeouts(&stream, Some(timeout), Some(timeout)).map_err(io_err)?;
        Ok(Client {
            // replies carry tokens: zeroed as soon as they are read
            lines: SyncLines::new(ZeroingReader::new(stream)),
            socket: socket.to_path_buf(),
            daemon: HelloReply {
                version: 0,
                daemon: String::new(),
                pid: 0,
            },
        })
    }

    /// Reads the reply to `hello` and checks the daemon's protocol version.
    fn check_hello(&mut self) -> Result<(), ClientError> {
        // a daemon that refuses our version says so with `unsupported_version`,
        // whose message names its own version
        let reply: HelloReply = self.receive(&hello())?;
        if reply.version != PROTOCOL_VERSION {
            return Err(ClientError::Version {
                daemon: reply.version,
            });
        }
        self.daemon = reply;
        Ok(())
    }

    /// Connects, or when nothing answers starts `ce-authd --daemon --socket <socket>`,
    /// waits for it (bounded) and connects again.
    pub fn connect_or_start(socket: &Path, autostart: &Autostart) -> Result<Client, ClientError> {
        match Client::connect(socket) {
            Err(ClientError::NotRunning { error, .. }) if is_absent(&error) => {
                start_daemon(socket, autostart)
            }
            other => other,
        }
    }

    /// [`Client::connect_and_request`], starting the daemon as
    /// [`Client::connect_or_start`] does when nothing answers.
    pub fn connect_or_start_and_request<T: DeserializeOwned>(
        socket: &Path,
        autostart: &Autostart,
        request: &Request,
    ) -> Result<(Client, T), ClientError> {
        match Client::connect_and_request(socket, request) {
            Err(ClientError::NotRunning { error, .. }) if is_absent(&error) => {
                let mut client = start_daemon(socket, autostart)?;
                let reply = client.request(request)?;
                Ok((client, reply))
            }
            other => other,
        }
    }

    /// The socket this client is connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's answer to `hello`.
    pub fn daemon(&self) -> &HelloReply {
        &self.daemon
    }

    /// Sends one request and reads its reply as `T`.
    pub fn request<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        self.send(&[request])?;
        self.receive(request)
    }

    /// Writes `requests` as consecutive lines in a single write.
    fn send(&mut self, requests: &[&Request]) -> Result<(), ClientError> {
        let mut lines = Vec::with_capacity(256);
        for request in requests {
            if let Err(e) = serde_json::to_writer(&mut lines, request) {
                lines.zeroize();
                return Err(ClientError::Protocol(format!("cannot encode request: {e}")));
            }
            lines.push(b'\n');
        }
        let sent = self.lines.get_mut().get_mut().write_all(&lines);
        // a request may carry a secret (add, login)
        lines.zeroize();
        sent.map_err(|source| self.io_error(source))
    }

    /// Reads the reply to `request` as `T`.
    fn receive<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        // a caller may ask the daemon to wait longer than this client's usual bound
        if let Some(wait) = asked_wait(request).filter(|w| *w + WAIT_MARGIN > DEFAULT_TIMEOUT) {
            let stream = self.lines.get_mut().get_mut();
            if let Err(e) = super::transport::set_timeouts(stream, Some(wait + WAIT_MARGIN), None) {
                return Err(self.io_error(e));
            }
        }
        let parsed = match self.lines.read_line() {
            Ok(Some(reply)) => protocol::parse_reply::<T>(reply),
            Ok(None) => return Err(self.io_error(frame_error(FrameError::Truncated))),
            Err(e) => return Err(self.io_error(frame_error(e))),
        };
        match parsed {
            Ok(v) => Ok(v),
            Err(Some(e)) => Err(ClientError::Daemon(e)),
            Err(None) => Err(ClientError::Protocol(format!(
                "the reply to `{}` is not valid JSON of the expected shape",
                request.op()
            ))),
        }
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            socket: self.socket.clone(),
            source,
        }
    }

    /// A token for `profile` (the default when `None`) with at least `min_ttl`
    /// seconds left, within the daemon's default wait.
    pub fn token(
        &mut self,
        profile: Option<&str>,
        min_ttl: Option<u64>,
    ) -> Result<TokenReply, ClientError> {
        self.token_within(profile, min_ttl, None)
    }

    /// [`Client::token`], letting the daemon wait up to `wait` seconds (0: answer at once).
    pub fn token_within(
        &mut self,
        profile: Option<&str>,
        min_ttl: Option<u64>,
        wait: Option<u64>,
    ) -> Result<TokenReply, ClientError> {
        let reply = self.request(&Request::Token {
            profile: profile.map(str::to_string),
            min_ttl,
            wait,
        })?;
        checked(reply)
    }

    /// Daemon and profile state: every profile, in as many requests as the
    /// daemon needs to fit each reply in one line (`next_after`).
    pub fn status(&mut self, profile: Option<&str>) -> Result<StatusReply, ClientError> {
        let mut all: StatusReply = self.request(&Request::Status {
            profile: profile.map(str::to_string),
            after: None,
        })?;
        while let Some(after) = all.next_after.take() {
            let page: StatusReply = self.request(&Request::Status {
                profile: None,
                after: Some(after.clone()),
            })?;
            // each page must move on, or a confused daemon would loop us forever
            if page.profiles.first().is_some_and(|p| p.name <= after)
                || page.next_after.as_ref().is_some_and(|n| *n <= after)
                || (page.profiles.is_empty() && page.next_after.is_some())
            {
                return Err(ClientError::Protocol(
                    "the daemon's status pages do not move on".into(),
                ));
            }
            all.profiles.extend(page.profiles);
            all.proxies = page.proxies;
            all.next_after = page.next_after;
        }
        Ok(all)
    }

    /// Loads a profile and its secret into the daemon (memory only).
    pub fn add(
        &mut self,
        profile: &str,
        settings: ProfileSpec,
        secret: Option<Secret>,
        replace: bool,
    ) -> Result<ProfileReply, ClientError> {
        self.request(&Request::Add {
            profile: profile.to_string(),
            settings: Box::new(settings),
            secret,
            replace,
        })
    }

    /// Forgets a profile.
    pub fn remove(&mut self, profile: &str) -> Result<ProfileReply, ClientError> {
        self.request(&Request::Remove {
            profile: profile.to_string(),
        })
    }

    /// Obtains a new token now.
    pub fn refresh(&mut self, profile: Option<&str>) -> Result<TokenReply, ClientError> {
        let reply = self.request(&Request::Refresh {
            profile: profile.map(str::to_string),
            wait: None,
        })?;
        checked(reply)
    }

    /// Makes the daemon re-read its configuration file.
    pub fn reload(&mut self) -> Result<ReloadReply, ClientError> {
        self.request(&Request::Reload {})
    }

    /// The issuer's `users/me` for a profile's token.
    pub fn whoami(&mut self, profile: Option<&str>) -> Result<WhoamiReply, ClientError> {
        self.request(&Request::Whoami {
            profile: profile.map(str::to_string),
        })
    }

    /// Password grant plus API client creation, done by the daemon.
    pub fn login(
        &mut self,
        token_url: Option<&str>,
        email: &str,
        password: Secret,
    ) -> Result<LoginReply, ClientError> {
        self.request(&Request::Login {
            token_url: token_url.map(str::to_string),
            email: email.to_string(),
            password,
        })
    }

    /// Stops the daemon.
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        self.request::<Empty>(&Request::Shutdown {}).map(|_| ())
    }
}

/// A token reply whose token is safe to print, put in a header or the
/// environment (see [`crate::protocol::is_bearer_token`]); a daemon of
/// another build could have been less careful.
pub(super) fn checked(reply: TokenReply) -> Result<TokenReply, ClientError> {
    if crate::protocol::is_bearer_token(reply.access_token.expose()) {
        Ok(reply)
    } else {
        Err(ClientError::Protocol(
            "the daemon sent an access token that is not an RFC 6750 bearer token; \
             refusing to print or pass it on"
                .into(),
        ))
    }
}

/// The handshake this client opens every connection with.
fn hello() -> Request {
    Request::Hello {
        version: PROTOCOL_VERSION,
        client: Some(concat!("ce-auth ", env!("CARGO_PKG_VERSION")).to_string()),
    }
}

/// Framing trouble as an I/O error whose message speaks of the daemon's reply.
fn frame_error(e: FrameError) -> std::io::Error {
    use std::io::{Error, ErrorKind};
    match e {
        FrameError::Io(e) => e,
        FrameError::TooLong(cap) => Error::new(
            ErrorKind::InvalidData,
            format!("the daemon's reply is longer than {cap} bytes"),
        ),
        FrameError::Truncated => Error::new(
            ErrorKind::UnexpectedEof,
            "the daemon closed the connection without a complete reply",
        ),
        other => Error::other(other.to_string()),
    }
}

/// True when the error means no daemon is there (as opposed to, say, a permission problem).
fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// The `ce-authd` beside this executable, else the one on `PATH`.
pub(super) fn find_daemon() -> Option<PathBuf> {
    let name = format!("ce-authd{}", std::env::consts::EXE_SUFFIX);
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let beside = dir.join(&name);
        if beside.is_file() {
            return Some(beside);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
}

/// The variables an autostarted daemon keeps from its caller's environment:
/// what it needs to find its files, reach the issuer and log. Everything else
/// (tokens, passwords and cloud keys of a CI step, say) stays with the caller.
/// Variables named `CE_AUTH_*` are kept too, so a `*_env` secret key can name one.
pub(crate) const AUTOSTART_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "RUST_LOG",
    "SYSTEMROOT",
    "WINDIR",
    "APPDATA",
    "LOCALAPPDATA",
    "USERPROFILE",
    "TEMP",
    "TMP",
    "USERNAME",
];

/// The part of `vars` an autostarted daemon gets: [`AUTOSTART_ENV`], every
/// `LC_*` and every `CE_AUTH_*`.
fn autostart_env(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vars.filter(|(k, _)| {
        k.to_str()
            .is_some_and(|k| kept_for_daemon(k, cfg!(windows)))
    })
    .collect()
}

/// Whether an autostarted daemon keeps the variable `k`. Windows spells
/// names in any case (`Path`, `SystemRoot`, `windir`) and treats them alike,
/// so there the match ignores case.
fn kept_for_daemon(k: &str, any_case: bool) -> bool {
    if any_case {
        let up = k.to_ascii_uppercase();
        AUTOSTART_ENV.iter().any(|v| v.eq_ignore_ascii_case(k))
            || up.starts_with("LC_")
            || up.starts_with("CE_AUTH_")
    } else {
        AUTOSTART_ENV.contains(&k) || k.starts_with("LC_") || k.starts_with("CE_AUTH_")
    }
}

fn start_daemon(socket: &Path, autostart: &Autostart) -> Result<Client, ClientError> {
    let fail = |message: String| ClientError::Autostart {
        socket: socket.to_path_buf(),
        message,
    };
    let program = autostart.program.clone().or_else(find_daemon).ok_or_else(|| {
        fail("ce-authd was found neither beside ce-auth nor on PATH; install it or start it yourself".into())
    })?;
    let mut cmd = Command::new(&program);
    cmd.arg("--daemon").arg("--socket").arg(socket);
    if let Some(config) = &autostart.config {
        cmd.arg("--config").arg(config);
    }
    // the daemon outlives this caller: it gets what it needs, not the caller's
    // environment (a CI step's secrets, say)
    cmd.env_clear().envs(autostart_env(std::env::vars_os()));
    // stdout carries the daemon's `CE_AUTH_SOCK=...` line, which is not ours to print
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        use windows_sys::Win32::System::Threading::{CREATE_NO_WINDOW, DETACHED_PROCESS};
        // no console window flashing up, and nothing tied to ours
        cmd.creation_flags(CREATE_NO_WINDOW | DETACHED_PROCESS);
        // the daemon must not inherit our stdout: `$(ce-auth token)` would
        // wait for the daemon to exit
        crate::win::stop_std_handle_inheritance();
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", program.display())))?;

    // the detached daemon may keep the pipe open, so read it on the side and
    // only wait for it (briefly) when reporting a failure
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            let _ = tx.send(s);
        });
    }

    let started = Instant::now();
    let mut exited: Option<(Instant, std::process::ExitStatus)> = None;
    let last_error = loop {
        let error = match Client::connect(socket) {
            Ok(client) => {
                // `--daemon` exits once the daemon is ready (or lost a start
                // race): reap it on the side, so a long-lived caller keeps no zombie
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Ok(client);
            }
            Err(ClientError::NotRunning { error, .. }) => error,
            Err(other) => {
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Err(other);
            }
        };
        if exited.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            exited = Some((Instant::now(), status));
        }
        // `--daemon` returns only once the socket is ready (or another
        // daemon won a start race), so a short grace after it exits suffices
        let give_up = match exited {
            Some((at, _)) => at.elapsed() > Duration::from_secs(2),
            None => started.elapsed() > AUTOSTART_DEADLINE,
        };
        if give_up {
            break error;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = rx
        .recv_timeout(Duration::from_millis(500))
        .unwrap_or_default();
    let mut message = match exited {
        Some((_, status)) if !status.success() => {
            format!("{} --daemon failed ({status})", program.display())
        }
        Some(_) => format!(
            "{} --daemon exited but nothing answers on the socket",
            program.display()
        ),
        None => format!(
            "{} did not become ready within {} s",
            program.display(),
            AUTOSTART_DEADLINE.as_secs()
        ),
    };
    message.push_str(&format!(" (last connect error: {last_error})"));
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        message.push_str(":\n");
        message.push_str(stderr);
    }
    Err(fail(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_daemon_error_code() {
        let e = |code| ClientError::Daemon(WireError::new(code, "x"));
        assert_eq!(
            e(ErrorCode::UnknownProfile).exit_code(),
            exit::UNKNOWN_PROFILE
        );
        assert_eq!(
            e(ErrorCode::CredentialsRejected).exit_code(),
            exit::CREDENTIALS_REJECTED
        );
        assert_eq!(
            e(ErrorCode::IssuerUnavailable).exit_code(),
            exit::ISSUER_UNAVAILABLE
        );
        assert_eq!(e(ErrorCode::ConfigError).exit_code(), exit::CONFIG);
        assert_eq!(e(ErrorCode::Internal).exit_code(), exit::FAILURE);
        let not_running = ClientError::NotRunning {
            socket: "/nowhere".into(),
            error: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(not_running.exit_code(), exit::NOT_RUNNING);
        let msg = not_running.to_string();
        assert!(
            msg.contains("/nowhere") && msg.contains("ce-authd --daemon"),
            "{msg}"
        );
    }

    #[test]
    fn connecting_to_a_missing_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(&dir.path().join("none.sock")).unwrap_err();
        assert_eq!(err.exit_code(), exit::NOT_RUNNING);
    }

    #[test]
    fn autostart_keeps_only_what_the_daemon_needs() {
        let vars = [
            ("PATH", "/bin"),
            ("HOME", "/h"),
            ("LC_TIME", "C"),
            ("CE_AUTH_SECRET", "s"),
            ("HTTPS_PROXY", "http://p:1"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("GITHUB_TOKEN", "y"),
            ("CE_ACCESS_TOKEN", "z"),
            ("LD_PRELOAD", "/evil.so"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let kept: Vec<String> = autostart_env(vars.into_iter())
            .into_iter()
            .map(|(k, _)| k.into_string().unwrap())
            .collect();
        assert_eq!(
            kept,
            ["PATH", "HOME", "LC_TIME", "CE_AUTH_SECRET", "HTTPS_PROXY"]
        );
    }

    #[test]
    fn autostart_on_windows_matches_names_in_any_case() {
        for k in [
            "Path",
            "SystemRoot",
            "windir",
            "APPDATA",
            "ce_auth_x",
            "TEMP",
        ] {
            assert!(kept_for_daemon(k, true), "{k}");
        }
        assert!(!kept_for_daemon("Path", false), "Unix names are exact");
        assert!(!kept_for_daemon("GITHUB_TOKEN", true));
    }
}
