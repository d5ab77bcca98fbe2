//! End-to-end tests of the `ce-authd` binary: foreground and `--daemon`
//! start-up, signals, the pidfile, a second daemon, a stale socket, reload,
//! `--dev`, systemd readiness and socket activation, and process hardening.
//!
//! Each test runs the built binary with its own `XDG_RUNTIME_DIR` and config
//! directory, talks to it over its real socket, and gets tokens from the
//! emulated issuer on 127.0.0.1. Waiting is always polling with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ce_auth_issuer::Issuer;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ce-authd");
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` until it returns `Some`, or panics after [`DEADLINE`] saying what was awaited.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An emulated issuer with one client, served from its own runtime.
struct TestIssuer {
    issuer: Option<Issuer>,
    rt: tokio::runtime::Runtime,
    client_id: String,
    client_secret: String,
}

impl TestIssuer {
    fn start() -> TestIssuer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client_id = uuid::Uuid::new_v4().to_string();
        let client_secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
        let issuer = rt
            .block_on(Issuer::builder().client(&client_id, &client_secret).start())
            .expect("issuer starts");
        TestIssuer {
            issuer: Some(issuer),
            rt,
            client_id,
            client_secret,
        }
    }

    fn token_url(&self) -> String {
        self.issuer.as_ref().unwrap().token_url()
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(i) = self.issuer.take() {
            self.rt.block_on(i.shutdown());
        }
    }
}

/// A private runtime and config directory for one test.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        for d in ["run", "config/ce-auth"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        Env { dir }
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Where the daemon puts its socket by default: `$XDG_RUNTIME_DIR/ce-auth/agent.sock`.
    fn socket(&self) -> PathBuf {
        self.runtime_dir().join("ce-auth/agent.sock")
    }

    fn pidfile(&self) -> PathBuf {
        self.runtime_dir().join("ce-auth/ce-authd.pid")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config/ce-auth/config.toml")
    }

    /// Writes a profile's secret file (0600) and returns its path.
    fn secret_file(&self, name: &str, secret: &str) -> PathBuf {
        let p = self
            .dir
            .path()
            .join(format!("config/ce-auth/{name}.secret"));
        std::fs::write(&p, secret).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// A `[profiles.NAME]` table against `issuer`.
    fn profile(&self, name: &str, issuer: &TestIssuer, method: &str) -> String {
        let secret = self.secret_file(name, &issuer.client_secret);
        format!(
            "[profiles.{name}]\ntoken_url = \"{}\"\ngrant = \"client_credentials\"\n\
             auth_method = \"{method}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\n\n",
            issuer.token_url(),
            issuer.client_id,
            secret.display()
        )
    }

    fn write_config(&self, text: &str) {
        // write-then-rename so a reload never sees half a file
        let tmp = self.config_path().with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// `ce-authd` with this environment and nothing inherited that could change its behaviour.
    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null());
        c
    }
}

/// A daemon process the test started; killed if the test ends early.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ce-authd starts");
        Proc { child }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: rustix::process::Signal) {
        signal(self.pid(), sig);
    }

    /// Waits for the process to exit; returns its status and stderr.
    fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait_for("ce-authd to exit", || self.child.try_wait().unwrap());
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Env {
    /// A test that failed half-way must not leave a detached daemon behind.
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.pidfile())
            && !exited(pid)
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid).expect("a positive pid");
    rustix::process::kill_process(pid, sig).expect("signal delivered");
}

/// Sends one request line and reads one reply line.
fn request(socket: &Path, req: &Value) -> std::io::Result<Value> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}

fn hello() -> Value {
    json!({"op": "hello", "version": ce_auth::protocol::PROTOCOL_VERSION})
}

/// Waits until the daemon answers `hello` on `socket`.
fn wait_ready(socket: &Path) {
    wait_for("the socket to answer hello", || {
        request(socket, &hello())
            .ok()
            .filter(|r| r["ok"] == json!(true))
    });
}

/// A token reply for `profile`, asserting success.
fn token(socket: &Path, profile: Option<&str>) -> Value {
    let mut req = json!({"op": "token"});
    if let Some(p) = profile {
        req["profile"] = json!(p);
    }
    let r = request(socket, &req).expect("token request answered");
    assert_eq!(r["ok"], json!(true), "token for {profile:?}: {r}");
    r
}

fn profile_names(socket: &Path) -> Vec<String> {
    let r = request(socket, &json!({"op": "status"})).expect("status answered");
    assert_eq!(r["ok"], json!(true), "{r}");
    r["profiles"]
        .as_array()
        .expect("profiles is a list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn read_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// True once `pid` has exited (gone, or a zombie nobody reaped).
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn foreground_serves_and_sigterm_removes_socket_and_pidfile() {
    let issuer = TestIssuer::start();
    let env = Env::new();
    env.write_config(&env.profile("alpha", &issuer, "client_secret_post"));
    let mut cmd = env.command();
    cmd.arg("--foreground");
    let daemon = Proc::spawn(cmd);
    wait_ready(&env.socket());

    let meta = std::fs::metadata(env.pidfile()).expect("pidfile written");
    assert_eq!(meta.mode() & 0o777, 0o600, "pidfile mode");
    assert_eq!(read_pid(&env.pidfile()), Some(daemon.pid()));
    let t = token(&env.socket(), Some("alpha"));
    assert_eq!(t["profile"], json!("alpha"));
    assert!(t["access_token"].as_str().is_some_and(|s| s.len() > 20));

    daemon.signal(rustix::process::Signal::TERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(!env.socket().exists(), "socket left behind");
    assert!(!env.pidfile().exists(), "pidfile left behind");
    assert!(
        !stderr.contains(&issuer.client_secret),
        "the secret appeared in the log"
    );
    assert!(!stderr.contains(t["access_token"].as_str().unwrap()));
}

#[test]
fn sigint_stops_the_daemon_cleanly_too() {
    let env = Env::new();
    let mut cmd = env.command();
    cmd.arg("--foreground");
    let daemon = Proc::spawn(cmd);
    wait_ready(&env.socket());
    daemon.signal(rustix::process::Signal::INT);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(!env.socket().exists());
}

#[test]
fn daemon_mode_prints_the_eval_line_only_once_ready() {
    let issuer = TestIssuer::start();
    let env = Env::new();
    env.write_config(&env.profile("alpha", &issuer, "client_secret_basic"));
    let out = env
        .command()
        .arg("--daemon")
        .output()
        .expect("ce-authd --daemon runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        format!(
            "CE_AUTH_SOCK={}; export CE_AUTH_SOCK;\n",
            env.socket().display()
        )
    );
    // no waiting: the parent printed only after the daemon could answer
    let r = request(&env.socket(), &hello()).expect("the socket answers at once");
    assert_eq!(r["ok"], json!(true), "{r}");
    let pid = read_pid(&env.pidfile()).expect("pidfile holds the daemon's pid");
    assert!(!exited(pid), "the daemon runs on");
    assert_eq!(token(&env.socket(), None)["profile"], json!("alpha"));

    let log = env.runtime_dir().join("ce-auth/ce-authd.log");
    let meta = std::fs::metadata(&log).expect("the daemon logs beside the socket");
    assert_eq!(meta.mode() & 0o777, 0o600, "log mode");

    signal(pid, rustix::process::Signal::TERM);
    wait_for("the daemon to exit", || exited(pid).then_some(()));
    assert!(!env.socket().exists(), "socket left behind");
    assert!(!env.pidfile().exists(), "pidfile left behind");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains(&issuer.client_secret), "secret in the log");
}

#[test]
fn daemon_mode_reports_a_broken_config_and_exits_7() {
    let env = Env::new();
    env.write_config("[profiles.broken]\ngrant = \"pasword\"\n");
    let out = env.command().arg("--daemon").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "no eval line on failure");
    assert!(stderr.contains("config"), "{stderr}");
    assert!(!env.socket().exists());
}

#[test]
fn a_second_daemon_on_a_live_socket_exits_3() {
    let env = Env::new();
    let mut cmd = env.command();
    cmd.arg("--foreground");
    let first = Proc::spawn(cmd);
    wait_ready(&env.socket());

    for mode in ["--foreground", "--daemon"] {
        let out = env.command().arg(mode).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{mode}: stderr:\n{stderr}");
        assert!(stderr.contains("already serving"), "{mode}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // the first daemon is untouched
    assert_eq!(read_pid(&env.pidfile()), Some(first.pid()));
    let r = request(&env.socket(), &hello()).unwrap();
    assert_eq!(r["pid"], json!(first.pid()));
}

#[test]
fn a_stale_socket_of_a_killed_daemon_is_reclaimed() {
    let env = Env::new();
    let mut cmd = env.command();
    cmd.arg("--foreground");
    let first = Proc::spawn(cmd);
    wait_ready(&env.socket());
    first.signal(rustix::process::Signal::KILL);
    let _ = first.wait_exit();
    assert!(env.socket().exists(), "SIGKILL leaves the socket file");

    let mut cmd = env.command();
    cmd.arg("--foreground");
    let second = Proc::spawn(cmd);
    wait_ready(&env.socket());
    let r = request(&env.socket(), &hello()).unwrap();
    assert_eq!(r["pid"], json!(second.pid()));
    assert_eq!(read_pid(&env.pidfile()), Some(second.pid()));
}

#[test]
fn an_unwritable_pidfile_is_a_clear_error() {
    let env = Env::new();
    let out = env
        .command()
        .args(["--foreground", "--pidfile"])
        .arg(env.dir.path().join("no/such/dir/ce-authd.pid"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("pidfile"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!env.socket().exists(), "socket left behind");
}

#[test]
fn bad_usage_exits_2() {
    let env = Env::new();
    let out = env
        .command()
        .args(["--daemon", "--foreground"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = env.command().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Receives notifications like systemd does: one datagram per `sd_notify` call.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { sock, path }
    }

    /// Waits for a datagram containing the line `want`; returns the whole datagram.
    fn expect(&self, want: &str) -> String {
        let mut buf = vec![0u8; 4096];
        wait_for(&format!("notification {want}"), || {
            let n = self.sock.recv(&mut buf).ok()?;
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            msg.lines().any(|l| l == want).then_some(msg)
        })
    }
}

#[test]
fn sighup_reloads_keeps_unchanged_tokens_and_survives_a_broken_config() {
    let issuer = TestIssuer::start();
    let env = Env::new();
    let alpha = env.profile("alpha", &issuer, "client_secret_jwt");
    env.write_config(&alpha);
    let notify = NotifySocket::bind(env.dir.path());
    let mut cmd = env.command();
    cmd.arg("--foreground").env("NOTIFY_SOCKET", &notify.path);
    let daemon = Proc::spawn(cmd);

    let ready = notify.expect("READY=1");
    assert!(ready.lines().any(|l| l.starts_with("STATUS=")), "{ready}");
    // READY=1 means ready: the socket answers without further waiting
    assert_eq!(request(&env.socket(), &hello()).unwrap()["ok"], json!(true));
    let before = token(&env.socket(), Some("alpha"));

    // a new profile appears; alpha is unchanged
    let beta = env.profile("beta", &issuer, "client_secret_basic");
    env.write_config(&format!("{alpha}{beta}"));
    daemon.signal(rustix::process::Signal::HUP);
    let reloading = notify.expect("RELOADING=1");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    notify.expect("READY=1");
    let mut names = profile_names(&env.socket());
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    let after = token(&env.socket(), Some("alpha"));
    assert_eq!(
        after["access_token"], before["access_token"],
        "alpha kept its token"
    );
    assert_eq!(after["expires_at"], before["expires_at"]);
    assert_eq!(token(&env.socket(), Some("beta"))["profile"], json!("beta"));

    // a broken file keeps what was loaded
    env.write_config("this is = = not toml");
    daemon.signal(rustix::process::Signal::HUP);
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    let mut names = profile_names(&env.socket());
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(
        token(&env.socket(), Some("alpha"))["access_token"],
        before["access_token"]
    );

    daemon.signal(rustix::process::Signal::TERM);
    notify.expect("STOPPING=1");
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
}

/// Reads the daemon's stdout lines on a thread, so the test can wait on them.
fn stdout_lines(p: &mut Proc) -> std::sync::mpsc::Receiver<String> {
    let out = p.child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn dev_mode_serves_a_dev_token_without_any_config() {
    let env = Env::new();
    let mut cmd = env.command();
    cmd.arg("--dev");
    let mut daemon = Proc::spawn(cmd);
    let lines = stdout_lines(&mut daemon);
    let mut text = String::new();
    wait_for("the --dev instructions", || {
        while let Ok(l) = lines.try_recv() {
            text.push_str(&l);
            text.push('\n');
        }
        text.contains("users/me").then_some(())
    });
    assert!(
        text.contains(&format!("export CE_AUTH_SOCK={}", env.socket().display())),
        "{text}"
    );
    assert!(text.contains("ce-auth token"), "{text}");
    assert!(text.contains("ce-auth status"), "{text}");
    // the suggested curl line keeps the token off curl's argv
    assert!(text.contains("header | curl -H @- "), "{text}");
    assert!(!text.contains("$("), "{text}");
    let base = text
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("the issuer's base URL is printed")
        .to_string();

    // the instructions come once the socket is ready
    let t = token(&env.socket(), Some("dev"));
    assert_eq!(t["profile"], json!("dev"));
    assert_eq!(
        token(&env.socket(), None)["profile"],
        json!("dev"),
        "dev is the default"
    );

    // the token is good at the emulated issuer's users/me
    let access = t["access_token"].as_str().unwrap();
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut http = std::net::TcpStream::connect(addr).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        http,
        "GET /api/v1/users/me HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {access}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    http.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("dev@example.com"), "{resp}");

    daemon.signal(rustix::process::Signal::TERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
}

#[test]
fn socket_activation_adopts_the_passed_socket() {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    }
    let env = Env::new();
    let dir = env.runtime_dir().join("ce-auth");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = env.socket();
    let mut cmd_act = Command::new("systemd-socket-activate");
    cmd_act
        .arg("-l")
        .arg(&socket)
        // it passes on only the environment it is told to
        .arg("-E")
        .arg(format!("XDG_RUNTIME_DIR={}", env.runtime_dir().display()))
        .arg("-E")
        .arg(format!(
            "XDG_CONFIG_HOME={}",
            env.dir.path().join("config").display()
        ))
        .arg(BIN)
        .arg("--foreground")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("XDG_RUNTIME_DIR", env.runtime_dir())
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    let daemon = Proc::spawn(cmd_act);
    wait_for("systemd-socket-activate to listen", || {
        socket.exists().then_some(())
    });
    // the first connection starts ce-authd, which must answer on the very same socket
    let r = wait_for("the activated daemon to answer", || {
        request(&socket, &hello()).ok()
    });
    assert_eq!(r["ok"], json!(true), "{r}");
    // systemd-socket-activate execs ce-authd in place
    assert_eq!(r["pid"], json!(daemon.pid()));

    daemon.signal(rustix::process::Signal::TERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(
        socket.exists(),
        "a socket passed by the service manager is not ours to remove"
    );
    assert!(
        !env.pidfile().exists(),
        "systemd tracks the pid; no pidfile"
    );
}

#[test]
fn the_daemon_is_not_dumpable_and_keeps_secrets_out_of_proc() {
    let issuer = TestIssuer::start();
    let env = Env::new();
    env.write_config(&env.profile("alpha", &issuer, "client_secret_post"));
    let mut cmd = env.command();
    cmd.arg("--foreground");
    let daemon = Proc::spawn(cmd);
    wait_ready(&env.socket());
    let t = token(&env.socket(), Some("alpha"));
    let access = t["access_token"].as_str().unwrap().to_string();
    let pid = daemon.pid();

    for file in ["cmdline", "environ"] {
        match std::fs::read(format!("/proc/{pid}/{file}")) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains(&issuer.client_secret), "secret in {file}");
                assert!(!text.contains(&access), "token in {file}");
            }
            // a non-dumpable process's environ is closed to its own user: also fine
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{file}"),
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        &core.split_whitespace().collect::<Vec<_>>()[4..6],
        &["0", "0"],
        "{core}"
    );

    // the kernel hands a non-dumpable process's /proc entries to root; for
    // the daemon's own user (not root) that is the observable sign
    let me = rustix::process::getuid().as_raw();
    if me != 0 {
        let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
            .unwrap()
            .uid();
        assert_eq!(
            owner, 0,
            "/proc/{pid} should belong to root once not dumpable"
        );
    } else {
        not_dumpable_as_another_user();
    }
}

/// As root the ownership sign is invisible, so run a daemon as `nobody`.
fn not_dumpable_as_another_user() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped the dumpable check: running as root and setpriv is missing");
        return;
    }
    let nobody = 65534;
    let env = Env::new();
    let run = env.runtime_dir();
    rustix::fs::chown(
        &run,
        Some(rustix::process::Uid::from_raw(nobody)),
        Some(rustix::process::Gid::from_raw(nobody)),
    )
    .unwrap();
    // nobody must be able to reach its runtime directory
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        BIN,
        "--foreground",
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", env.dir.path())
    .env("XDG_RUNTIME_DIR", &run)
    .env("XDG_CONFIG_HOME", env.dir.path().join("nonexistent"))
    .stdin(Stdio::null());
    let daemon = Proc::spawn(cmd);
    let pid = daemon.pid();
    let pidfile = env.pidfile();
    wait_for("the daemon running as nobody to write its pidfile", || {
        (read_pid(&pidfile) == Some(pid)).then_some(())
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(1) == Some("65534"),
        "{uid_line}"
    );
    let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid();
    assert_eq!(
        owner, 0,
        "a non-dumpable process's /proc files belong to root"
    );
    daemon.signal(rustix::process::Signal::TERM);
    let (st, stderr) = daemon.wait_exit();
    assert!(st.success(), "exit {st}; stderr:\n{stderr}");
}

#[test]
fn logs_to_the_journal_carry_priorities_and_no_timestamps() {
    let env = Env::new();
    let log = env.dir.path().join("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let st = std::fs::metadata(&log).unwrap();
    let mut cmd = env.command();
    cmd.arg("--foreground")
        .env("JOURNAL_STREAM", format!("{}:{}", st.dev(), st.ino()))
        .env("RUST_LOG", "info");
    let child = cmd
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("ce-authd starts");
    let daemon = Proc { child };
    wait_ready(&env.socket());
    daemon.signal(rustix::process::Signal::TERM);
    let (status, _) = daemon.wait_exit();
    assert!(status.success(), "exit {status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.trim().is_empty(), "the daemon logged something");
    for line in text.lines() {
        assert!(
            line.len() > 3 && line.starts_with('<') && line.as_bytes()[2] == b'>',
            "no priority prefix: {line:?}"
        );
        assert!(!line.contains("\u{1b}["), "colour codes: {line:?}");
        // RFC 3339 timestamps start with the year
        assert!(!line[3..].starts_with("20"), "timestamp: {line:?}");
    }
}

#[test]
fn daemon_mode_passes_on_a_start_up_failure() {
    let env = Env::new();
    let out = env
        .command()
        .args(["--daemon", "--pidfile"])
        .arg(env.dir.path().join("no/such/dir/ce-authd.pid"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "no eval line on failure");
    assert!(stderr.contains("cannot write the pidfile"), "{stderr}");
    // the detached daemon gave up: nothing serves the socket
    wait_for("the failed daemon's socket to go", || {
        (!env.socket().exists()).then_some(())
    });
}

#[test]
fn the_watchdog_is_pinged_when_systemd_asks_for_it() {
    let env = Env::new();
    let notify = NotifySocket::bind(env.dir.path());
    let mut cmd = env.command();
    cmd.arg("--foreground")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "100000");
    let daemon = Proc::spawn(cmd);
    notify.expect("READY=1");
    // pings every 50 ms: several arrive well within the deadline
    for _ in 0..3 {
        notify.expect("WATCHDOG=1");
    }
    daemon.signal(rustix::process::Signal::TERM);
    notify.expect("STOPPING=1");
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
}
