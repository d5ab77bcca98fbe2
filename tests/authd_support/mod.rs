//! Test harness for the real `ce-authd` binary: a daemon in a temporary
//! directory with its output captured to files, raw line clients, and readings
//! of the daemon's memory and descriptors from `/proc`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The daemon under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ce-authd");

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Time left until `end`, for one blocking step of a loop that must finish by
/// then as a whole; fails the test (instead of waiting on) once it has passed.
pub fn time_left(end: Instant, what: &str) -> Duration {
    let left = end.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "timed out: {what}");
    left
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How to start a daemon.
#[derive(Default)]
pub struct Spec {
    /// The configuration file's text (written 0600); none means no `--config`.
    pub config: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// Soft and hard `RLIMIT_NOFILE` for the daemon.
    pub nofile: Option<u64>,
    /// Soft and hard `RLIMIT_MEMLOCK` for the daemon, in bytes. The daemon
    /// also loses `CAP_IPC_LOCK` (which ignores the limit), so a test run as
    /// root sees what a user sees.
    pub memlock: Option<u64>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra arguments.
    pub args: Vec<String>,
}

/// A running `ce-authd`, killed if the test ends early.
pub struct Authd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Authd {
    /// A directory laid out for a daemon: `run/` (0700) for the socket, `config.toml`.
    pub fn dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        dir
    }

    /// The command that starts a daemon in `dir` as `spec` says.
    pub fn command(dir: &Path, spec: &Spec) -> Command {
        let socket = dir.join("run/agent.sock");
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .arg("--foreground")
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            // a file, not a pipe: a daemon logging a flood must never block on a full pipe
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        if let Some(text) = &spec.config {
            let path = dir.join("config.toml");
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            c.arg("--config").arg(path);
        }
        if let Some(level) = &spec.log_level {
            c.arg("--log-level").arg(level);
        }
        for (k, v) in &spec.env {
            c.env(k, v);
        }
        c.args(&spec.args);
        let (nofile, memlock) = (spec.nofile, spec.memlock);
        if nofile.is_some() || memlock.is_some() {
            use rustix::process::{Resource, Rlimit, setrlimit};
            use std::os::unix::process::CommandExt;
            let limit = |n: u64| Rlimit {
                current: Some(n),
                maximum: Some(n),
            };
            // SAFETY: setrlimit and prctl are async-signal-safe and touch only the child.
            unsafe {
                c.pre_exec(move || {
                    if let Some(n) = nofile {
                        setrlimit(Resource::Nofile, limit(n)).map_err(std::io::Error::from)?;
                    }
                    if let Some(n) = memlock {
                        setrlimit(Resource::Memlock, limit(n)).map_err(std::io::Error::from)?;
                        // without CAP_SETPCAP (not root) this fails, and there
                        // is no CAP_IPC_LOCK to drop either
                        let _ = rustix::thread::remove_capability_from_bounding_set(
                            rustix::thread::CapabilitySet::IPC_LOCK,
                        );
                    }
                    Ok(())
                });
            }
        }
        c
    }

    /// Starts a daemon and waits until it answers `hello`.
    pub fn start(spec: Spec) -> Authd {
        Self::start_in(Self::dir(), spec)
    }

    /// Starts a daemon in a prepared directory and waits until it answers `hello`.
    pub fn start_in(dir: tempfile::TempDir, spec: Spec) -> Authd {
        let child = Self::command(dir.path(), &spec)
            .spawn()
            .expect("ce-authd starts");
        let mut d = Authd {
            socket: dir.path().join("run/agent.sock"),
            dir,
            child: Some(child),
        };
        wait_for("the daemon to answer hello", || {
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ce-authd exited early ({st}): {}", d.stderr());
            }
            let mut c = LineClient::try_connect(&d.socket)?;
            (c.call(&json!({"op": "hello", "version": 1}))["ok"] == true).then_some(())
        });
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// A new raw client.
    pub fn client(&self) -> LineClient {
        LineClient::connect(&self.socket)
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Everything the daemon wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`, `VmLck`), in bytes.
    pub fn status_kb(&self, field: &str) -> u64 {
        proc_status_kb(self.pid(), field)
    }

    /// Open descriptors of the daemon.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Whether the process has exited (and been reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Asks the daemon to stop over the socket and waits for it to exit.
    pub fn stop(self) -> ExitStatus {
        self.stop_with_output().0
    }

    /// Like [`Authd::stop`], also returning all it wrote to stderr and stdout.
    pub fn stop_with_output(mut self) -> (ExitStatus, String, String) {
        let mut c = self.client();
        assert_eq!(c.call(&json!({"op": "shutdown"}))["ok"], true);
        let st = wait_for("ce-authd to exit", || self.try_wait());
        self.child = None;
        (st, self.stderr(), self.stdout())
    }
}

impl Drop for Authd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take()
            && let Ok(None) = c.try_wait()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `kB` field of `/proc/PID/status`, in bytes.
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A raw blocking client speaking JSON lines.
pub struct LineClient {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl LineClient {
    pub fn connect(path: &Path) -> LineClient {
        Self::try_connect(path).expect("connect")
    }

    pub fn try_connect(path: &Path) -> Option<LineClient> {
        let s = UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        Some(LineClient {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// The next line, or `None` at EOF; panics on a read error or timeout.
    pub fn recv_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("reply");
        (n > 0).then_some(line)
    }

    pub fn recv(&mut self) -> Value {
        let line = self
            .recv_line()
            .expect("connection closed instead of a reply");
        assert!(line.ends_with('\n'), "unterminated reply {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
    }

    pub fn call(&mut self, v: &Value) -> Value {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        self.send_raw(&line).expect("send");
        self.recv()
    }

    /// Reads until EOF, each read bounded by what is left until `end`; returns what came.
    pub fn drain_by(&mut self, end: Instant) -> Vec<u8> {
        let mut all = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = time_left(end, "the daemon to finish answering and close");
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.reader.read(&mut chunk) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // a reset after the daemon closed on unread input ends the stream too
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) => panic!("reading until close: {e}"),
            }
        }
    }
}

/// Latency figures of a probe that kept asking while something else went on.
#[derive(Debug, Default, Clone)]
pub struct Latency {
    pub count: usize,
    pub max: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        Latency {
            count: samples.len(),
            max: samples.last().copied().unwrap_or_default(),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// A client that keeps one connection and asks `hello` in a loop until told
/// to stop, timing each answer.
pub struct Probe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Duration>>>,
}

impl Probe {
    /// Connects now (so the probe holds its place under a connection cap) and starts asking.
    pub fn start(socket: &Path) -> Probe {
        use std::sync::atomic::Ordering;
        let mut c = LineClient::connect(socket);
        assert_eq!(c.call(&json!({"op": "hello", "version": 1}))["ok"], true);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            // bounded even if nobody stops it
            let end = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                let t = Instant::now();
                let r = c.call(&json!({"op": "hello", "version": 1}));
                samples.push(t.elapsed());
                assert_eq!(r["ok"], true, "{r}");
                // pace the probe so it measures the daemon, not its own load
                std::thread::sleep(Duration::from_millis(2));
            }
            samples
        });
        Probe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops asking and returns the figures.
    pub fn finish(mut self) -> Latency {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = self.thread.take().unwrap().join().expect("probe thread");
        Latency::of(samples)
    }
}

/// Makes sure this process may open `n` more descriptors (tests of one file
/// run in parallel, so the soft limit is raised as far as allowed, not just
/// to `n`); false when the hard limit is too low.
pub fn ensure_fds(n: u64) -> bool {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let want = n + 200;
    let roomy = want.max(16 * 1024);
    if l.current.is_none_or(|c| c >= roomy) {
        return true;
    }
    if l.maximum.is_some_and(|h| h < want) {
        return false;
    }
    let target = l.maximum.map_or(roomy, |h| h.min(roomy));
    if l.current.is_some_and(|c| c >= target) {
        return true;
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: l.maximum,
        },
    )
    .is_ok()
}
