//! The daemon under test, two ways: [`Server`] runs `server::run` in this
//! process on a socket in a temporary directory (for the socket server and
//! its ops); [`Authd`] runs the built `ce-authd` binary in a [`Home`] of its
//! own (for everything a real process does: start-up, signals, limits,
//! logs). Both hand out [`LineClient`]s.

use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;

use ce_auth::daemon::config::{Config, DaemonSettings};
use ce_auth::daemon::engine::Engine;
use ce_auth::daemon::ops::Shared;
use ce_auth::daemon::server;
use serde_json::json;

use super::deadline::{DEADLINE, Deadline};
use super::line::{LineClient, hello, request};
use super::process::{CE_AUTHD, Proc, exited, limit_memlock, limit_nofile};

/// `server::run` in this process, served from a runtime of its own.
pub struct Server {
    /// Holds the socket's directory.
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub shared: Arc<Shared>,
    pub rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// A server for an empty configuration.
    pub fn start(settings: DaemonSettings) -> Server {
        Self::start_with(settings, Config::default(), None)
    }

    /// A server for `config`, with `config_path` for `reload`. The socket's
    /// directory does not exist yet: binding creates it.
    pub fn start_with(
        settings: DaemonSettings,
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run").join("agent.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = server::listener::bind(&socket).expect("bind");
        let engine = rt.block_on(async { Engine::new(config) });
        let shared = Arc::new(Shared::new(engine, config_path, settings));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(server::run(listener, shared.clone(), async move {
            let _ = rx.await;
        }));
        Server {
            _dir: dir,
            socket,
            shared,
            rt,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A new client connection.
    pub fn client(&self) -> LineClient {
        LineClient::connect(&self.socket)
    }

    /// Waits (bounded) for `server::run` to return on its own.
    pub fn wait_finished(&mut self) -> std::io::Result<()> {
        let task = self.task.take().expect("server task");
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("server did not stop in time")
                .expect("server task panicked")
        })
    }

    /// Resolves the shutdown future and waits for `run` to return.
    pub fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.wait_finished()
    }
}

/// A private directory for one daemon, laid out as its environment says:
/// `HOME` is the directory, `XDG_RUNTIME_DIR` its `run/` (0700) and
/// `XDG_CONFIG_HOME` its `config/`. Clones share the directory, which goes
/// when the last one does, taking along any daemon that detached into it.
#[derive(Clone)]
pub struct Home(Arc<HomeDir>);

struct HomeDir(tempfile::TempDir);

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["run", "config/ce-auth"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        Home(Arc::new(HomeDir(dir)))
    }

    pub fn path(&self) -> &Path {
        self.0.0.path()
    }

    /// `XDG_RUNTIME_DIR`.
    pub fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    /// The socket tests name with `--socket`: `run/agent.sock`.
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("agent.sock")
    }

    /// Where the daemon puts its socket without `--socket`:
    /// `$XDG_RUNTIME_DIR/ce-auth/agent.sock`.
    pub fn default_socket(&self) -> PathBuf {
        self.run_dir().join("ce-auth/agent.sock")
    }

    /// The pidfile beside [`Home::default_socket`].
    pub fn default_pidfile(&self) -> PathBuf {
        self.run_dir().join("ce-auth/ce-authd.pid")
    }

    /// The daemon's default configuration file: `$XDG_CONFIG_HOME/ce-auth/config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path().join("config/ce-auth/config.toml")
    }

    /// Replaces the configuration file (0600), write-then-rename so that a
    /// reload never sees half a file.
    pub fn write_config(&self, text: &str) {
        let tmp = self.config_path().with_extension("tmp");
        std::fs::remove_file(&tmp).ok();
        self.file_at(&tmp, text, 0o600);
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// Writes `text` to `rel` (below the directory) with exactly `mode`
    /// and returns the path.
    pub fn file(&self, rel: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.path().join(rel);
        self.file_at(&p, text, mode);
        p
    }

    fn file_at(&self, p: &Path, text: &str, mode: u32) {
        use std::io::Write;
        // private from the first byte; then exactly the mode asked for,
        // which the umask would otherwise narrow
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(p)
            .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `ce-authd` with this environment and nothing inherited that could
    /// change its behaviour.
    pub fn command(&self) -> Command {
        let mut c = Command::new(CE_AUTHD);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("XDG_RUNTIME_DIR", self.run_dir())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .stdin(Stdio::null());
        c
    }

    /// `ce-authd --foreground --socket` [`Home::socket`], as `spec` says.
    pub fn daemon_command(&self, spec: &Spec) -> Command {
        let mut c = self.command();
        c.arg("--foreground").arg("--socket").arg(self.socket());
        if let Some(text) = &spec.config {
            self.write_config(text);
            c.arg("--config").arg(self.config_path());
        }
        if let Some(level) = &spec.log_level {
            c.arg("--log-level").arg(level);
        }
        for (k, v) in &spec.env {
            c.env(k, v);
        }
        c.args(&spec.args);
        if let Some(n) = spec.memlock {
            limit_memlock(&mut c, n);
        }
        if let Some(n) = spec.nofile {
            limit_nofile(&mut c, n);
        }
        c
    }
}

impl Drop for HomeDir {
    /// A test that failed half-way must not leave a detached daemon behind.
    fn drop(&mut self) {
        let run = self.0.path().join("run");
        for pidfile in [run.join("ce-auth/ce-authd.pid"), run.join("ce-authd.pid")] {
            let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            else {
                continue;
            };
            // a stale pidfile's pid may belong to someone else by now
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("ce-authd"));
            if ours
                && !exited(pid)
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// How to start an [`Authd`].
#[derive(Default)]
pub struct Spec {
    /// The configuration file's text, written to [`Home::config_path`] and
    /// named with `--config`; none means no `--config`.
    pub config: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// Soft and hard `RLIMIT_NOFILE` for the daemon (only for the daemon).
    pub nofile: Option<u64>,
    /// Soft and hard `RLIMIT_MEMLOCK` for the daemon, in bytes, without `CAP_IPC_LOCK`.
    pub memlock: Option<u64>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra arguments.
    pub args: Vec<String>,
}

/// A running `ce-authd --foreground` on [`Home::socket`], killed if the
/// test ends early. Derefs to its [`Proc`].
pub struct Authd {
    pub home: Home,
    pub socket: PathBuf,
    proc: Proc,
}

impl Authd {
    /// Starts a daemon in a new home and waits until it answers `hello`.
    pub fn start(spec: Spec) -> Authd {
        Self::start_in(&Home::new(), spec)
    }

    /// Starts a daemon in `home` and waits until it answers `hello`.
    pub fn start_in(home: &Home, spec: Spec) -> Authd {
        let mut proc = Proc::spawn(&mut home.daemon_command(&spec), home.path(), "ce-authd");
        wait_ready(&mut proc, &home.socket());
        Authd {
            home: home.clone(),
            socket: home.socket(),
            proc,
        }
    }

    /// A new raw client.
    pub fn client(&self) -> LineClient {
        LineClient::connect(&self.socket)
    }

    /// Asks the daemon to stop over the socket and waits for it to exit.
    pub fn stop(self) -> ExitStatus {
        self.stop_with_output().0
    }

    /// Like [`Authd::stop`], also returning all it wrote to stderr and stdout.
    pub fn stop_with_output(mut self) -> (ExitStatus, String, String) {
        let mut c = self.client();
        assert_eq!(c.call(&json!({"op": "shutdown"}))["ok"], true);
        let st = self.proc.wait_exit();
        (st, self.proc.stderr(), self.proc.stdout())
    }
}

impl Deref for Authd {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl DerefMut for Authd {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// Waits until `socket` answers `hello`; fails at once, with what it said,
/// if `proc` (the daemon, or what runs it) exits first.
pub fn wait_ready(proc: &mut Proc, socket: &Path) {
    Deadline::standard().wait_for("the daemon to answer hello", || {
        if let Some(st) = proc.try_wait() {
            panic!("ce-authd exited early ({st}): {}", proc.stderr());
        }
        request(socket, &hello())
            .ok()
            .filter(|r| r["ok"] == true)
            .map(|_| ())
    });
}
