//! End-to-end tests of the `ce-authd` binary: foreground and `--daemon`
//! start-up, signals, the pidfile, a second daemon, a stale socket, reload,
//! `--dev`, systemd readiness and socket activation, and process hardening.
//!
//! Each test runs the built binary with its own `XDG_RUNTIME_DIR` and config
//! directory, talks to it over its real socket, and gets tokens from the
//! emulated issuer on 127.0.0.1. Waiting is always polling with a deadline.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::daemon::{Home, wait_ready};
use crate::util::deadline::wait_for;
use crate::util::issuer::{Account, TestIssuer};
use crate::util::line::{hello, request};
use crate::util::process::{CE_AUTHD, Proc, exited, other_uid, signal, skip_two_uid_test};

/// `ce-authd` in `home`, logging at debug level.
fn authd(home: &Home) -> Command {
    let mut c = home.command();
    c.env("RUST_LOG", "debug");
    c
}

/// A `[profiles.NAME]` table against `issuer`, with its secret file (0600).
fn profile(home: &Home, name: &str, issuer: &TestIssuer, method: &str) -> String {
    let secret = home.file(
        &format!("config/ce-auth/{name}.secret"),
        &issuer.account.client_secret,
        0o600,
    );
    format!(
        "[profiles.{name}]\ntoken_url = \"{}\"\ngrant = \"client_credentials\"\n\
         auth_method = \"{method}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\n\n",
        issuer.token_url(),
        issuer.account.client_id,
        secret.display()
    )
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

#[test]
fn foreground_serves_and_sigterm_removes_socket_and_pidfile() {
    let issuer = TestIssuer::start(Account::random());
    let home = Home::new();
    home.write_config(&profile(&home, "alpha", &issuer, "client_secret_post"));
    let mut cmd = authd(&home);
    cmd.arg("--foreground");
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "ce-authd");
    wait_ready(&mut daemon, &home.default_socket());

    let meta = std::fs::metadata(home.default_pidfile()).expect("pidfile written");
    assert_eq!(meta.mode() & 0o777, 0o600, "pidfile mode");
    assert_eq!(read_pid(&home.default_pidfile()), Some(daemon.pid()));
    let t = token(&home.default_socket(), Some("alpha"));
    assert_eq!(t["profile"], json!("alpha"));
    assert!(t["access_token"].as_str().is_some_and(|s| s.len() > 20));

    daemon.signal(rustix::process::Signal::TERM);
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(!home.default_socket().exists(), "socket left behind");
    assert!(!home.default_pidfile().exists(), "pidfile left behind");
    assert!(
        !stderr.contains(&issuer.account.client_secret),
        "the secret appeared in the log"
    );
    assert!(!stderr.contains(t["access_token"].as_str().unwrap()));
}

#[test]
fn sigint_stops_the_daemon_cleanly_too() {
    let home = Home::new();
    let mut cmd = authd(&home);
    cmd.arg("--foreground");
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "ce-authd");
    wait_ready(&mut daemon, &home.default_socket());
    daemon.signal(rustix::process::Signal::INT);
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(!home.default_socket().exists());
}

#[test]
fn daemon_mode_prints_the_eval_line_only_once_ready() {
    let issuer = TestIssuer::start(Account::random());
    let home = Home::new();
    home.write_config(&profile(&home, "alpha", &issuer, "client_secret_basic"));
    let out = authd(&home)
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
            home.default_socket().display()
        )
    );
    // no waiting: the parent printed only after the daemon could answer
    let r = request(&home.default_socket(), &hello()).expect("the socket answers at once");
    assert_eq!(r["ok"], json!(true), "{r}");
    let pid = read_pid(&home.default_pidfile()).expect("pidfile holds the daemon's pid");
    assert!(!exited(pid), "the daemon runs on");
    assert_eq!(
        token(&home.default_socket(), None)["profile"],
        json!("alpha")
    );

    let log = home.run_dir().join("ce-auth/ce-authd.log");
    let meta = std::fs::metadata(&log).expect("the daemon logs beside the socket");
    assert_eq!(meta.mode() & 0o777, 0o600, "log mode");

    signal(pid, rustix::process::Signal::TERM);
    wait_for("the daemon to exit", || exited(pid).then_some(()));
    assert!(!home.default_socket().exists(), "socket left behind");
    assert!(!home.default_pidfile().exists(), "pidfile left behind");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains(&issuer.account.client_secret),
        "secret in the log"
    );
}

#[test]
fn daemon_mode_reports_a_broken_config_and_exits_7() {
    let home = Home::new();
    home.write_config("[profiles.broken]\ngrant = \"pasword\"\n");
    let out = authd(&home).arg("--daemon").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "no eval line on failure");
    assert!(stderr.contains("config"), "{stderr}");
    assert!(!home.default_socket().exists());
}

#[test]
fn a_second_daemon_on_a_live_socket_exits_3() {
    let home = Home::new();
    let mut cmd = authd(&home);
    cmd.arg("--foreground");
    let mut first = Proc::spawn(&mut cmd, home.path(), "ce-authd");
    wait_ready(&mut first, &home.default_socket());

    for mode in ["--foreground", "--daemon"] {
        let out = authd(&home).arg(mode).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{mode}: stderr:\n{stderr}");
        assert!(stderr.contains("already serving"), "{mode}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // the first daemon is untouched
    assert_eq!(read_pid(&home.default_pidfile()), Some(first.pid()));
    let r = request(&home.default_socket(), &hello()).unwrap();
    assert_eq!(r["pid"], json!(first.pid()));
}

#[test]
fn a_stale_socket_of_a_killed_daemon_is_reclaimed() {
    let home = Home::new();
    let mut cmd = authd(&home);
    cmd.arg("--foreground");
    let mut first = Proc::spawn(&mut cmd, home.path(), "first");
    wait_ready(&mut first, &home.default_socket());
    first.signal(rustix::process::Signal::KILL);
    let _ = first.wait_exit();
    assert!(
        home.default_socket().exists(),
        "SIGKILL leaves the socket file"
    );

    let mut cmd = authd(&home);
    cmd.arg("--foreground");
    let mut second = Proc::spawn(&mut cmd, home.path(), "second");
    wait_ready(&mut second, &home.default_socket());
    let r = request(&home.default_socket(), &hello()).unwrap();
    assert_eq!(r["pid"], json!(second.pid()));
    assert_eq!(read_pid(&home.default_pidfile()), Some(second.pid()));
}

#[test]
fn an_unwritable_pidfile_is_a_clear_error() {
    let home = Home::new();
    let out = authd(&home)
        .args(["--foreground", "--pidfile"])
        .arg(home.path().join("no/such/dir/ce-authd.pid"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("pidfile"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!home.default_socket().exists(), "socket left behind");
}

#[test]
fn bad_usage_exits_2() {
    let home = Home::new();
    let out = authd(&home)
        .args(["--daemon", "--foreground"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = authd(&home).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // a word that is not a level is refused, not taken as a module's name
    // (which would log nothing)
    for bad in ["verbose", "ce_auth=loud"] {
        let out = authd(&home).args(["--log-level", bad]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("debug") && stderr.contains(bad), "{stderr}");
    }
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
    let issuer = TestIssuer::start(Account::random());
    let home = Home::new();
    let alpha = profile(&home, "alpha", &issuer, "client_secret_jwt");
    home.write_config(&alpha);
    let notify = NotifySocket::bind(home.path());
    let mut cmd = authd(&home);
    cmd.arg("--foreground").env("NOTIFY_SOCKET", &notify.path);
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "ce-authd");

    let ready = notify.expect("READY=1");
    assert!(ready.lines().any(|l| l.starts_with("STATUS=")), "{ready}");
    // READY=1 means ready: the socket answers without further waiting
    assert_eq!(
        request(&home.default_socket(), &hello()).unwrap()["ok"],
        json!(true)
    );
    let before = token(&home.default_socket(), Some("alpha"));

    // a new profile appears; alpha is unchanged
    let beta = profile(&home, "beta", &issuer, "client_secret_basic");
    home.write_config(&format!("{alpha}{beta}"));
    daemon.signal(rustix::process::Signal::HUP);
    let reloading = notify.expect("RELOADING=1");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    notify.expect("READY=1");
    let mut names = profile_names(&home.default_socket());
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    let after = token(&home.default_socket(), Some("alpha"));
    assert_eq!(
        after["access_token"], before["access_token"],
        "alpha kept its token"
    );
    assert_eq!(after["expires_at"], before["expires_at"]);
    assert_eq!(
        token(&home.default_socket(), Some("beta"))["profile"],
        json!("beta")
    );

    // a broken file keeps what was loaded
    home.write_config("this is = = not toml");
    daemon.signal(rustix::process::Signal::HUP);
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    let mut names = profile_names(&home.default_socket());
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(
        token(&home.default_socket(), Some("alpha"))["access_token"],
        before["access_token"]
    );

    daemon.signal(rustix::process::Signal::TERM);
    notify.expect("STOPPING=1");
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
}

#[test]
fn dev_mode_serves_a_dev_token_without_any_config() {
    let home = Home::new();
    let mut cmd = authd(&home);
    cmd.arg("--dev");
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "ce-authd");
    let text = wait_for("the --dev instructions", || {
        let text = daemon.stdout();
        text.contains("users/me").then_some(text)
    });
    assert!(
        text.contains(&format!(
            "export CE_AUTH_SOCK={}",
            home.default_socket().display()
        )),
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
    let t = token(&home.default_socket(), Some("dev"));
    assert_eq!(t["profile"], json!("dev"));
    assert_eq!(
        token(&home.default_socket(), None)["profile"],
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
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
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
    let home = Home::new();
    let dir = home.run_dir().join("ce-auth");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = home.default_socket();
    let mut cmd_act = Command::new("systemd-socket-activate");
    cmd_act
        .arg("-l")
        .arg(&socket)
        // it passes on only the environment it is told to
        .arg("-E")
        .arg(format!("XDG_RUNTIME_DIR={}", home.run_dir().display()))
        .arg("-E")
        .arg(format!(
            "XDG_CONFIG_HOME={}",
            home.path().join("config").display()
        ))
        .arg(CE_AUTHD)
        .arg("--foreground")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.run_dir())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    let mut daemon = Proc::spawn(&mut cmd_act, home.path(), "activate");
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
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(
        socket.exists(),
        "a socket passed by the service manager is not ours to remove"
    );
    assert!(
        !home.default_pidfile().exists(),
        "systemd tracks the pid; no pidfile"
    );
}

#[test]
fn the_daemon_is_not_dumpable_and_keeps_secrets_out_of_proc() {
    let issuer = TestIssuer::start(Account::random());
    let home = Home::new();
    home.write_config(&profile(&home, "alpha", &issuer, "client_secret_post"));
    let mut cmd = authd(&home);
    cmd.arg("--foreground");
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "ce-authd");
    wait_ready(&mut daemon, &home.default_socket());
    let t = token(&home.default_socket(), Some("alpha"));
    let access = t["access_token"].as_str().unwrap().to_string();
    let pid = daemon.pid();

    for file in ["cmdline", "environ"] {
        match std::fs::read(format!("/proc/{pid}/{file}")) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains(&issuer.account.client_secret),
                    "secret in {file}"
                );
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

/// As root the ownership sign is invisible, so run a daemon as another user.
fn not_dumpable_as_another_user() {
    let Some((uid, gid)) = other_uid() else {
        return;
    };
    if Command::new("setpriv").arg("--version").output().is_err() {
        skip_two_uid_test("the dumpable check as another user needs setpriv");
        return;
    }
    let home = Home::new();
    let run = home.run_dir();
    rustix::fs::chown(
        &run,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )
    .unwrap();
    // the other user must be able to reach its runtime directory
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", CE_AUTHD, "--foreground"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &run)
        .env("XDG_CONFIG_HOME", home.path().join("nonexistent"))
        .stdin(Stdio::null());
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "ce-authd");
    let pid = daemon.pid();
    let pidfile = home.default_pidfile();
    wait_for(
        "the daemon running as another user to write its pidfile",
        || (read_pid(&pidfile) == Some(pid)).then_some(()),
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(1) == Some(uid.to_string().as_str()),
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
    let st = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert!(st.success(), "exit {st}; stderr:\n{stderr}");
}

#[test]
fn logs_to_the_journal_carry_priorities_and_no_timestamps() {
    let home = Home::new();
    // the stderr file Proc::spawn opens (and keeps: same inode) is the stream
    let log = home.path().join("journal.err");
    std::fs::File::create(&log).unwrap();
    let st = std::fs::metadata(&log).unwrap();
    let mut cmd = authd(&home);
    cmd.arg("--foreground")
        .env("JOURNAL_STREAM", format!("{}:{}", st.dev(), st.ino()))
        .env("RUST_LOG", "info");
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "journal");
    wait_ready(&mut daemon, &home.default_socket());
    daemon.signal(rustix::process::Signal::TERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "exit {status}");
    let text = daemon.stderr();
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
    let home = Home::new();
    let out = authd(&home)
        .args(["--daemon", "--pidfile"])
        .arg(home.path().join("no/such/dir/ce-authd.pid"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "no eval line on failure");
    assert!(stderr.contains("cannot write the pidfile"), "{stderr}");
    // the detached daemon gave up: nothing serves the socket
    wait_for("the failed daemon's socket to go", || {
        (!home.default_socket().exists()).then_some(())
    });
}

#[test]
fn the_watchdog_is_pinged_when_systemd_asks_for_it() {
    let home = Home::new();
    let notify = NotifySocket::bind(home.path());
    let mut cmd = authd(&home);
    cmd.arg("--foreground")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "100000");
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "ce-authd");
    notify.expect("READY=1");
    // pings every 50 ms: several arrive well within the deadline
    for _ in 0..3 {
        notify.expect("WATCHDOG=1");
    }
    daemon.signal(rustix::process::Signal::TERM);
    notify.expect("STOPPING=1");
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
}

#[test]
fn dev_mode_with_a_config_file_keeps_the_dev_profile_across_reloads() {
    let home = Home::new();
    let issuer = TestIssuer::start(Account::seeded());
    home.write_config(&profile(&home, "file", &issuer, "client_secret_post"));
    let mut cmd = authd(&home);
    cmd.arg("--dev").arg("--config").arg(home.config_path());
    let mut daemon = Proc::spawn(&mut cmd, home.path(), "ce-authd");
    wait_ready(&mut daemon, &home.default_socket());
    let sock = home.default_socket();
    assert_eq!(token(&sock, Some("dev"))["profile"], json!("dev"));
    assert_eq!(token(&sock, Some("file"))["profile"], json!("file"));
    let r = crate::util::line::request(&sock, &json!({"op": "reload"})).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    // the emulated issuer's profile is not the file's to remove, and stays the default
    assert_eq!(token(&sock, Some("dev"))["profile"], json!("dev"));
    assert_eq!(token(&sock, None)["profile"], json!("dev"));
    assert_eq!(token(&sock, Some("file"))["profile"], json!("file"));
}
