//! One isolated world for the client's tests: the emulated issuer, a
//! configuration file pointing at it, the real `ce-authd` on a socket in a
//! [`Home`] of its own, and a way to run the real `ce-auth` against them.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::daemon::{Home, Spec, wait_ready};
use super::issuer::{Account, CLIENT_ID, CLIENT_SECRET, TestIssuer};
use super::process::{CE_AUTH, Proc, assert_success, run_with_stdin};

/// The host the `dev` profile serves git credentials for.
pub const GIT_HOST: &str = "git.example.com";
/// A comment the user wrote in the config file; edits must keep it.
pub const USER_COMMENT: &str = "# the user's own note: keep me";

pub struct World {
    pub issuer: TestIssuer,
    pub home: Home,
    /// The configuration file, with one profile `dev` (the default).
    pub config: PathBuf,
    pub socket: PathBuf,
    daemon: Option<Proc>,
}

impl World {
    /// Issuer + config, no daemon yet.
    pub fn new() -> World {
        let issuer = TestIssuer::start_with(Account::seeded(), |b| b.test_controls(true));
        let home = Home::new();
        let config = home.path().join("config.toml");
        let secret = home.file("dev.secret", CLIENT_SECRET, 0o600);
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
        World {
            issuer,
            socket: home.socket(),
            home,
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

    /// Runs `ce-authd --foreground` with this world's config and socket and
    /// waits until it answers.
    pub fn start_daemon(&mut self) {
        let spec = Spec {
            args: vec!["--config".into(), self.config.display().to_string()],
            ..Spec::default()
        };
        let mut proc = Proc::spawn(
            &mut self.home.daemon_command(&spec),
            self.home.path(),
            "ce-authd",
        );
        wait_ready(&mut proc, &self.socket);
        self.daemon = Some(proc);
    }

    /// The daemon this world started, if any.
    pub fn daemon(&mut self) -> Option<&mut Proc> {
        self.daemon.as_mut()
    }

    /// What the daemon this world started has logged.
    pub fn daemon_log(&self) -> String {
        self.daemon.as_ref().map(Proc::stderr).unwrap_or_default()
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
