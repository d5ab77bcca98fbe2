//! Test harness for the client's end-to-end tests: the emulated issuer on
//! 127.0.0.1, a config file pointing at it, the real `ce-authd` binary on a
//! socket in a temporary directory, and a way to run the real `ce-auth`.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ce_auth_issuer::Issuer;

pub const EMAIL: &str = "user@example.com";
pub const PASSWORD: &str = "user-password-1";
pub const CLIENT_ID: &str = "seeded-client";
pub const CLIENT_SECRET: &str = "seeded-secret-0123456789abcdef";
pub const GIT_HOST: &str = "git.example.com";
/// A comment the user wrote in the config file; edits must keep it.
pub const USER_COMMENT: &str = "# the user's own note: keep me";

pub const CE_AUTH: &str = env!("CARGO_BIN_EXE_ce-auth");
pub const CE_AUTHD: &str = env!("CARGO_BIN_EXE_ce-authd");

/// Polls `f` every 20 ms until it returns `Some`, panicking after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a file that only its owner may read, created with that mode.
pub fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create private file");
    f.write_all(contents.as_bytes())
        .expect("write private file");
}

/// One isolated world: issuer, config, socket, daemon.
pub struct World {
    pub rt: tokio::runtime::Runtime,
    pub issuer: Issuer,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    daemon: Option<Child>,
}

impl World {
    /// Issuer + config, no daemon yet.
    pub fn new() -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let issuer = rt
            .block_on(
                Issuer::builder()
                    .user(EMAIL, PASSWORD)
                    .client(CLIENT_ID, CLIENT_SECRET)
                    .test_controls(true)
                    .start(),
            )
            .expect("issuer starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        let secret = dir.path().join("dev.secret");
        write_private(&secret, CLIENT_SECRET);
        let text = format!(
            "{USER_COMMENT}\ndefault_profile = \"dev\"\n\n\
             [profiles.dev]\n\
             token_url = \"{}\"\n\
             grant = \"client_credentials\"\n\
             auth_method = \"client_secret_jwt\"\n\
             client_id = \"{CLIENT_ID}\"\n\
             client_secret_file = \"{}\"\n\
             git_hosts = [\"{GIT_HOST}\"]\n",
            issuer.token_url(),
            secret.display()
        );
        std::fs::write(&config, text).expect("write config");
        let socket = dir.path().join("run").join("agent.sock");
        World {
            rt,
            issuer,
            dir,
            socket,
            config,
            daemon: None,
        }
    }

    /// Issuer + config + a running daemon.
    pub fn started() -> World {
        let mut w = World::new();
        w.start_daemon();
        w
    }

    /// Runs `ce-authd --foreground` on this world's socket and waits until it answers.
    pub fn start_daemon(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("ce-authd.log")).expect("log file");
        let child = Command::new(CE_AUTHD)
            .arg("--foreground")
            .arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket)
            .env_remove("CE_AUTH_SOCK")
            .env_remove("CE_AUTH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ce-authd");
        self.daemon = Some(child);
        wait_for("ce-authd to answer", Duration::from_secs(20), || {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("ce-authd exited early ({status}):\n{}", self.daemon_log());
            }
            ce_auth::client::Client::connect(&self.socket).ok()
        });
    }

    /// The daemon child, if this world started one.
    pub fn daemon(&mut self) -> Option<&mut Child> {
        self.daemon.as_mut()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ce-authd.log")).unwrap_or_default()
    }

    /// `ce-auth` with this world's socket and config, autostart off.
    pub fn ce_auth(&self) -> Command {
        let mut c = Command::new(CE_AUTH);
        c.env("CE_AUTH_SOCK", &self.socket)
            .env("CE_AUTH_CONFIG", &self.config)
            .env("CE_AUTH_NO_AUTOSTART", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs `ce-auth ARGS` with `stdin` and returns its output.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_with_stdin(self.ce_auth().args(args), stdin)
    }

    /// Runs `ce-auth ARGS`, asserts success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert_success(&out, args);
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// A fresh token from `ce-auth token`.
    pub fn token(&self) -> String {
        self.ok(&["token"]).trim_end().to_string()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a prepared command, feeding `stdin` (or nothing).
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // a client that exits early closes the pipe: its output says why
        if let Err(e) = pipe.write_all(text.as_bytes())
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            panic!("write stdin: {e}");
        }
    }
    child.wait_with_output().expect("wait")
}

pub fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "ce-auth {what:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
