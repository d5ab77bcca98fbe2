//! Lifecycle faults with the real binaries: the daemon SIGKILLed (clients
//! recover by autostart or by retrying, the stale socket is reclaimed, one
//! daemon wins a start race), a request cut off by the kill, reloads of
//! broken configurations (the old one is kept and the error reported), and
//! an unwritable pidfile or token file (a clear error, not a crash).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ce_auth::client::Client;
use ce_auth::exit::client as exit;
use ce_auth::protocol::StatusReply;
use ce_auth_issuer::Fault;

use crate::util::deadline::{Deadline, wait_for};
use crate::util::issuer::CLIENT_SECRET;
use crate::util::load::timed;
use crate::util::process::{CE_AUTHD, assert_success, exited, run_with_stdin, stderr};
use crate::util::world::World;

const LIMIT: Duration = Duration::from_secs(20);

/// Processes whose command line mentions `needle` (our socket path), by pid.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("ce-authd") && cmd.contains(needle) && !exited(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn kill(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Stops every daemon still serving `socket` when the test ends, however it
/// ends: the ones autostart detached are nobody's children.
struct Reaper {
    socket: String,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in processes_with(&self.socket) {
            kill(pid, rustix::process::Signal::TERM);
            let end = Deadline::after(Duration::from_secs(10));
            // a daemon deaf to SIGTERM gets SIGKILL, not a failed test
            while !exited(pid) && !end.passed() {
                std::thread::sleep(Duration::from_millis(20));
            }
            kill(pid, rustix::process::Signal::KILL);
        }
    }
}

fn daemon_pid(socket: &Path) -> i32 {
    Client::connect(socket)
        .expect("the daemon answers")
        .daemon()
        .pid as i32
}

fn status_json(w: &World) -> StatusReply {
    serde_json::from_str(&w.ok(&["status", "--json"])).expect("status json")
}

/// Runs `cmd` and asserts it ended within `limit`.
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let started = Instant::now();
    let out = run_with_stdin(cmd, None);
    assert!(
        started.elapsed() < limit,
        "took {:?}: {}",
        started.elapsed(),
        stderr(&out)
    );
    out
}

#[test]
fn after_sigkill_clients_autostart_one_daemon_on_the_reclaimed_socket() {
    let _timed = timed();
    let mut w = World::started();
    let _reaper = Reaper {
        socket: w.socket.display().to_string(),
    };
    let before = w.token();
    let daemon = w.daemon().expect("daemon child");
    let first_pid = daemon.pid();
    daemon.kill();
    assert!(w.socket.exists(), "SIGKILL leaves the socket file behind");

    // without autostart: a prompt, clear "not running", naming the socket
    let out = run_within(w.ce_auth().arg("token"), Duration::from_secs(5));
    assert_eq!(
        out.status.code(),
        Some(exit::NOT_RUNNING),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&w.socket.display().to_string()),
        "{}",
        stderr(&out)
    );

    // with autostart, several at once: one daemon wins, all get its token
    let requests_before = w.issuer.counters().token_requests;
    let children: Vec<_> = (0..6)
        .map(|_| {
            w.ce_auth()
                .env_remove("CE_AUTH_NO_AUTOSTART")
                .arg("token")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ce-auth")
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for out in &outs {
        assert_success(out, &["token (autostart after SIGKILL)"]);
    }
    let tokens: std::collections::BTreeSet<&[u8]> =
        outs.iter().map(|o| o.stdout.as_slice()).collect();
    assert_eq!(tokens.len(), 1, "one daemon, one token");
    assert_ne!(
        outs[0].stdout.trim_ascii_end(),
        before.as_bytes(),
        "the new daemon got its own token"
    );
    assert_eq!(
        w.issuer.counters().token_requests,
        requests_before + 1,
        "one daemon asked the issuer once"
    );
    let pid = daemon_pid(&w.socket);
    assert_ne!(pid, first_pid);
    // losers of the start race are gone; one daemon serves the socket
    let serving = wait_for("the start race's losers to exit", || {
        let p = processes_with(&w.socket.display().to_string());
        (p.len() == 1).then_some(p)
    });
    assert_eq!(serving, [pid]);
    let pidfile = w.socket.with_file_name("ce-authd.pid");
    let written: i32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(written, pid);

    // a second daemon on the live socket refuses and leaves it alone
    let out = run_within(
        Command::new(CE_AUTHD)
            .args(["--foreground", "--socket"])
            .arg(&w.socket)
            .arg("--config")
            .arg(&w.config),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("already serving"), "{}", stderr(&out));
    assert_eq!(daemon_pid(&w.socket), pid);
    assert_eq!(w.token().as_bytes(), outs[0].stdout.trim_ascii_end());

    w.ok(&["stop"]);
    wait_for("the autostarted daemon to exit", || {
        exited(pid).then_some(())
    });
    assert!(!w.socket.exists(), "a clean stop removes the socket");
}

#[test]
fn a_request_cut_off_by_sigkill_fails_fast_and_a_retry_recovers() {
    let _timed = timed();
    let mut w = World::started();
    let _reaper = Reaper {
        socket: w.socket.display().to_string(),
    };
    // the daemon's first token request hangs at the issuer
    w.issuer.inject(Fault::Hang, 1);
    let waiting = w
        .ce_auth()
        .arg("token")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ce-auth");
    wait_for("the daemon to ask the issuer", || {
        (w.issuer.counters().token_requests == 1).then_some(())
    });
    w.daemon().expect("daemon child").kill();
    let killed_at = Instant::now();
    let out = waiting.wait_with_output().expect("wait");
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "the cut-off client waited {:?}",
        killed_at.elapsed()
    );
    assert!(!out.status.success(), "no token from a killed daemon");
    assert!(out.stdout.is_empty());
    let msg = stderr(&out);
    assert!(!msg.contains("panicked"), "{msg}");
    assert!(!msg.contains(CLIENT_SECRET), "{msg}");

    // the retry (with autostart) starts a daemon that reclaims the socket
    let out = run_within(
        w.ce_auth().env_remove("CE_AUTH_NO_AUTOSTART").arg("token"),
        LIMIT,
    );
    assert_success(&out, &["token (retry)"]);
    let pid = daemon_pid(&w.socket);
    w.ok(&["stop"]);
    wait_for("the daemon to exit", || exited(pid).then_some(()));
}

#[test]
fn a_reload_with_a_broken_config_keeps_the_old_one_and_says_why() {
    let w = World::started();
    let token = w.token();
    let good = std::fs::read_to_string(&w.config).expect("config");
    let secret = w.home.path().join("dev.secret");
    let name = w.config.display().to_string();

    type Break = Box<dyn Fn(&World)>;
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "not TOML",
            Box::new(|w: &World| std::fs::write(&w.config, "this is = = not toml").unwrap()),
            "TOML",
        ),
        (
            "a misspelt key",
            Box::new(|w: &World| {
                let text = std::fs::read_to_string(&w.config).unwrap();
                std::fs::write(&w.config, text.replace("grant =", "grnat =")).unwrap();
            }),
            "grnat",
        ),
        (
            "a secret file others can read",
            Box::new(move |_: &World| {
                std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap()
            }),
            "chmod 600",
        ),
        (
            "the file gone",
            Box::new(|w: &World| std::fs::remove_file(&w.config).unwrap()),
            "config.toml",
        ),
    ];
    for (what, break_it, says) in cases {
        break_it(&w);
        let out = run_within(w.ce_auth().arg("reload"), LIMIT);
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(exit::CONFIG), "{what}: {msg}");
        assert!(
            msg.contains(says) && msg.contains("unchanged"),
            "{what}: {msg}"
        );
        assert!(msg.contains(&name) || what == "not TOML", "{what}: {msg}");
        // the running configuration and its token are untouched
        assert_eq!(w.token(), token, "{what}");
        let st = status_json(&w);
        assert_eq!(st.profiles.len(), 1, "{what}: {st:?}");
        assert_eq!(st.profiles[0].state, "fresh", "{what}: {st:?}");
        // put it right
        std::fs::write(&w.config, &good).unwrap();
        std::fs::set_permissions(
            w.home.path().join("dev.secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let out = w.ok(&["reload"]);
    assert!(out.contains("unchanged: dev"), "{out}");
    assert_eq!(w.token(), token);
    assert!(w.daemon_log().contains("keeping the running configuration"));
}

#[test]
fn an_unwritable_pidfile_is_a_clear_error_not_a_crash() {
    let w = World::new();
    let dir = w.home.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let file = w.home.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    // a directory where the pidfile should be; a file where its directory should be
    for pidfile in [dir.clone(), file.join("ce-authd.pid")] {
        let out = run_within(
            Command::new(CE_AUTHD)
                .args(["--foreground", "--socket"])
                .arg(&w.socket)
                .arg("--config")
                .arg(&w.config)
                .arg("--pidfile")
                .arg(&pidfile)
                .stdin(Stdio::null()),
            LIMIT,
        );
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {msg}", pidfile.display());
        assert!(
            msg.contains("pidfile") && msg.contains(&pidfile.display().to_string()),
            "{msg}"
        );
        assert!(!msg.contains("panicked"), "{msg}");
        assert!(!w.socket.exists(), "socket left behind");
    }
    assert!(dir.is_dir(), "the directory in the way is left alone");
}

#[test]
fn an_unwritable_token_file_is_reported_while_serving_goes_on() {
    let mut w = World::new();
    let out_dir = w.home.path().join("tokens");
    std::fs::create_dir(&out_dir).unwrap();
    let token_file = out_dir.join("dev.token");
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str(&format!("token_file = \"{}\"\n", token_file.display()));
    std::fs::write(&w.config, text).unwrap();
    w.start_daemon();

    let token = w.token();
    // the file is written just after the token is cached
    wait_for("the token file", || {
        (std::fs::read_to_string(&token_file).ok()? == token).then_some(())
    });
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // the directory goes away: the next token cannot be written
    std::fs::remove_dir_all(&out_dir).unwrap();
    let out = w.ok(&["refresh"]);
    assert!(out.starts_with("refreshed profile dev"), "{out}");
    // the write is attempted just after the token is cached
    let err = wait_for("the token_file error in status", || {
        status_json(&w).profiles[0].last_error.clone()
    });
    assert!(
        err.contains("cannot write token_file") && err.contains(&token_file.display().to_string()),
        "{err}"
    );
    assert_eq!(status_json(&w).profiles[0].state, "fresh");
    // serving goes on, with the new token
    let newer = w.token();
    assert_ne!(newer, token);
    let table = w.ok(&["status"]);
    assert!(table.contains("token_file"), "{table}");
    assert!(w.daemon_log().contains("cannot write token_file"));

    // fixed: the next token is written and the error clears
    std::fs::create_dir(&out_dir).unwrap();
    w.ok(&["refresh"]);
    let latest = w.token();
    wait_for("the token file again", || {
        (std::fs::read_to_string(&token_file).ok()? == latest).then_some(())
    });
    wait_for("the error to clear", || {
        status_json(&w).profiles[0]
            .last_error
            .is_none()
            .then_some(())
    });
    let daemon = w.daemon().expect("daemon");
    assert!(daemon.try_wait().is_none(), "the daemon still runs");
}
