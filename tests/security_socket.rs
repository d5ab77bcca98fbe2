//! Trust at both ends of the socket, tried with two real uids (`useradd` +
//! `setpriv`): another user's fake daemon, symlinked and open socket
//! directories, a re-pointed directory, read-only `allow_uids` peers, the
//! autostarted daemon's environment, long socket paths and `login` on a fresh
//! machine.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::daemon::Server;
use crate::util::issuer::{EMAIL, PASSWORD};
use crate::util::process::{
    CE_AUTH, CE_AUTHD, OTHER_USER as OTHER, as_user, other_uid, run_with_stdin, stderr,
};
use crate::util::world::World;
use ce_auth::daemon::config::DaemonSettings;
use serde_json::Value;

/// A python3 that the other user can run (not a shim under /root).
fn python_for(uid: u32, gid: u32) -> String {
    ["/usr/bin/python3", "/usr/local/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            as_user(uid, gid, p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("a python3 runnable by the second user")
        .to_string()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

/// A fake daemon run by the other user: it listens on `socket` and reports
/// every connection with the number of bytes it received (`got N`).
struct Fake {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

const FAKE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(3)
    total = 0
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            total += len(d)
    except Exception:
        pass
    c.close()
    print("got", total, flush=True)
"#;

impl Fake {
    fn start(uid: u32, gid: u32, socket: &Path) -> Fake {
        let mut child = as_user(uid, gid, &python_for(uid, gid))
            .arg("-c")
            .arg(FAKE)
            .arg(socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let f = Fake { child, lines: rx };
        assert_eq!(f.next(), "ready");
        f
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the fake daemon answers")
    }

    /// Every connection it has seen so far (waiting briefly for the last).
    fn connections(&self) -> Vec<u64> {
        let mut got = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            got.push(l.trim_start_matches("got ").parse().unwrap());
        }
        got
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ce-auth` as the victim, against `socket`, with autostart off.
fn ce_auth(socket: &Path, config: &Path) -> Command {
    let mut c = Command::new(CE_AUTH);
    c.env("CE_AUTH_SOCK", socket)
        .env("CE_AUTH_CONFIG", config)
        .env("CE_AUTH_NO_AUTOSTART", "1");
    c
}

/// The commands that would hand the fake daemon a secret or a token, with
/// what they read from standard input.
const SENSITIVE: &[(&[&str], Option<&str>)] = &[
    (&["token"], None),
    (
        &["add", "stolen", "--client-id", "victim-client"],
        Some("victim-client-secret\n"),
    ),
    (&["login", "--email", EMAIL], Some("the-victims-password\n")),
];

#[test]
fn a_fake_daemon_of_another_user_gets_nothing() {
    let Some((uid, gid)) = other_uid() else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o711);
    let config = base.path().join("config.toml");

    // 1. the other user owns the socket's directory (a pre-created /tmp
    //    directory, say): refused before connecting
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs, uid, gid);
    chmod(&theirs, 0o777);
    let socket = theirs.join("agent.sock");
    let fake = Fake::start(uid, gid, &socket);
    for (args, stdin) in SENSITIVE {
        let out = run_with_stdin(ce_auth(&socket, &config).args(*args), *stdin);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("belongs to uid {uid}")),
            "{args:?}: {err}"
        );
    }
    assert!(fake.connections().is_empty(), "the client connected");
    drop(fake);

    // 2. the directory looks right (ours, 0700) but the listener is theirs:
    //    the client connects, sees the listener's uid and sends nothing
    let ours = base.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    chmod(&ours, 0o777);
    let socket = ours.join("agent.sock");
    let fake = Fake::start(uid, gid, &socket);
    chmod(&ours, 0o700);
    for (args, stdin) in SENSITIVE {
        let out = run_with_stdin(ce_auth(&socket, &config).args(*args), *stdin);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains(&format!("served by uid {uid} ({OTHER})"))
                && err.contains("nothing was sent"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("secret") || !err.contains("victim-client-secret"));
    }
    let got = fake.connections();
    assert_eq!(
        got.len(),
        SENSITIVE.len(),
        "one connection per command: {got:?}"
    );
    assert!(
        got.iter().all(|&n| n == 0),
        "bytes reached the fake daemon: {got:?}"
    );
    // and login wrote nothing of theirs (nothing at all) into our config
    assert!(!config.exists(), "login touched the config");
}

#[test]
fn a_symlinked_socket_directory_is_never_used() {
    let Some((uid, gid)) = other_uid() else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o711);
    // a private directory of the victim's (think ~/.ssh)...
    let ssh = base.path().join("ssh");
    std::fs::create_dir(&ssh).unwrap();
    chmod(&ssh, 0o700);
    std::fs::write(ssh.join("id_ed25519"), "PRIVATE KEY").unwrap();
    // ...and the other user's symlink to it where the socket's directory goes
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let link = shared.join("ce-auth-0");
    let made = as_user(uid, gid, "ln")
        .arg("-s")
        .arg(&ssh)
        .arg(&link)
        .status()
        .unwrap();
    assert!(made.success());
    let socket = link.join("agent.sock");
    let out = Command::new(CE_AUTHD)
        .args(["--foreground", "--socket"])
        .arg(&socket)
        .env_remove("CE_AUTH_CONFIG")
        .env("XDG_CONFIG_HOME", base.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the daemon served through a symlink: {err}"
    );
    assert!(err.contains("symbolic link"), "{err}");
    // and so did --daemon (which opens its log first)
    let out = Command::new(CE_AUTHD)
        .args(["--daemon", "--socket"])
        .arg(&socket)
        .env_remove("CE_AUTH_CONFIG")
        .env("XDG_CONFIG_HOME", base.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let mut left: Vec<_> = std::fs::read_dir(&ssh)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["id_ed25519"],
        "the daemon wrote into the link's target"
    );
    // a client refuses the link too
    let out = run_with_stdin(
        ce_auth(&socket, &base.path().join("c.toml")).arg("status"),
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
}

#[test]
fn open_socket_directories_are_refused_by_the_client() {
    let w = World::started();
    let dir = w.socket.parent().unwrap();
    for mode in [0o755, 0o750, 0o777, 0o701] {
        chmod(dir, mode);
        let out = w.run(&["token"], None);
        assert_eq!(out.status.code(), Some(3), "{mode:o}");
        let err = stderr(&out);
        assert!(err.contains("chmod 700"), "{mode:o}: {err}");
    }
    chmod(dir, 0o700);
    assert!(!w.token().is_empty());
}

#[test]
fn the_socket_is_removed_through_the_directory_it_was_made_in() {
    let base = tempfile::tempdir().unwrap();
    let run = base.path().join("run");
    let socket = run.join("agent.sock");
    let mut daemon = Command::new(CE_AUTHD)
        .args(["--foreground", "--socket"])
        .arg(&socket)
        .env_remove("CE_AUTH_CONFIG")
        .env("XDG_CONFIG_HOME", base.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while ce_auth::client::Client::connect(&socket).is_err() {
        assert!(Instant::now() < end, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // the path is re-pointed while it runs: the real directory moves away and
    // a symlink to a decoy takes its place
    let moved = base.path().join("moved");
    std::fs::rename(&run, &moved).unwrap();
    let decoy = base.path().join("decoy");
    std::fs::create_dir(&decoy).unwrap();
    std::fs::write(decoy.join("agent.sock"), "decoy").unwrap();
    std::fs::write(decoy.join("ce-authd.pid"), daemon.id().to_string()).unwrap();
    std::os::unix::fs::symlink(&decoy, &run).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&daemon),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
    // its own socket and pidfile are gone, the decoy's files untouched
    assert!(!moved.join("agent.sock").exists());
    assert!(!moved.join("ce-authd.pid").exists());
    assert_eq!(
        std::fs::read_to_string(decoy.join("agent.sock")).unwrap(),
        "decoy"
    );
    assert!(decoy.join("ce-authd.pid").exists());
}

#[test]
fn allow_uids_peers_may_read_but_not_change_anything() {
    let Some((uid, gid)) = other_uid() else {
        return;
    };
    let d = Server::start(DaemonSettings {
        allow_uids: vec![uid],
        ..Default::default()
    });
    // make the socket reachable to the other uid, so only the daemon's rules apply
    for dir in d.socket.ancestors().skip(1).take(2) {
        chmod(dir, 0o711);
    }
    chmod(&d.socket, 0o666);
    let requests = [
        r#"{"op":"hello","version":1}"#,
        r#"{"op":"status"}"#,
        r#"{"op":"token","profile":"p"}"#,
        r#"{"op":"add","profile":"p","settings":{"client_id":"x","token_url":"http://127.0.0.1:9/t"},"secret":"s"}"#,
        r#"{"op":"remove","profile":"p"}"#,
        r#"{"op":"refresh"}"#,
        r#"{"op":"reload"}"#,
        r#"{"op":"whoami"}"#,
        r#"{"op":"login","email":"a@b.c","password":"pw"}"#,
        r#"{"op":"shutdown"}"#,
    ];
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
f = s.makefile("rwb")
for line in sys.argv[2:]:
    f.write(line.encode() + b"\n")
    f.flush()
    sys.stdout.write(f.readline().decode())
"#;
    let out = as_user(uid, gid, &python_for(uid, gid))
        .arg("-c")
        .arg(script)
        .arg(&d.socket)
        .args(requests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), requests.len());
    assert_eq!(replies[0]["ok"], true, "{}", replies[0]);
    assert_eq!(replies[1]["ok"], true, "{}", replies[1]);
    // a token request is allowed (this daemon has no profile "p")
    assert_eq!(
        replies[2]["error"]["code"], "unknown_profile",
        "{}",
        replies[2]
    );
    for (req, r) in requests[3..].iter().zip(&replies[3..]) {
        assert_eq!(r["error"]["code"], "permission_denied", "{req}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("allow_uids"),
            "{r}"
        );
    }
    // nothing changed, and the owner still has every op
    let mut c = d.client();
    let st = c.call(&serde_json::json!({"op":"status"}));
    assert_eq!(st["profiles"].as_array().unwrap().len(), 0, "{st}");
    d.stop().unwrap();
}

#[test]
fn an_autostarted_daemon_gets_a_minimal_environment() {
    let w = World::new();
    let base = tempfile::tempdir().unwrap();
    let socket = base.path().join("run").join("agent.sock");
    let out = Command::new(CE_AUTH)
        .arg("token")
        .env("CE_AUTH_SOCK", &socket)
        .env("CE_AUTH_CONFIG", &w.config)
        .env_remove("CE_AUTH_NO_AUTOSTART")
        .env("CI_DEPLOY_TOKEN", "hunter2-not-for-the-daemon")
        .env("CE_AUTH_MARK", "kept")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = std::fs::read_to_string(socket.with_file_name("ce-authd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // root reads it even from a non-dumpable process
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let stop = || {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::TERM,
        );
    };
    if environ.is_empty() {
        stop();
        eprintln!("skipped the environ check: /proc/{pid}/environ is not readable (not root)");
        return;
    }
    let vars: Vec<String> = environ
        .split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    stop();
    assert!(vars.iter().any(|v| v == "CE_AUTH_MARK=kept"), "{vars:?}");
    assert!(!vars.iter().any(|v| v.contains("hunter2")), "{vars:?}");
    assert!(vars.iter().any(|v| v.starts_with("PATH=")), "{vars:?}");
}

#[test]
fn a_socket_path_longer_than_sun_path_works() {
    let base = tempfile::tempdir().unwrap();
    let long: PathBuf = base.path().join("d".repeat(60)).join("e".repeat(60));
    let socket = long.join("agent.sock");
    assert!(socket.as_os_str().len() > 108);
    let mut daemon = Command::new(CE_AUTHD)
        .args(["--foreground", "--dev", "--socket"])
        .arg(&socket)
        .env_remove("CE_AUTH_CONFIG")
        .env("XDG_CONFIG_HOME", base.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let out = ce_auth(&socket, &base.path().join("c.toml"))
            .arg("token")
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            Instant::now() < end,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(token.trim().len() > 20);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn login_on_a_fresh_machine_creates_the_config_it_names() {
    let w = World::new();
    let base = tempfile::tempdir().unwrap();
    let socket = base.path().join("run").join("agent.sock");
    let config = base.path().join("new").join("config.toml");
    let mut cmd = Command::new(CE_AUTH);
    cmd.arg("--config")
        .arg(&config)
        .args([
            "login",
            "--email",
            EMAIL,
            "--token-url",
            &w.issuer.token_url(),
        ])
        .env("CE_AUTH_SOCK", &socket)
        .env_remove("CE_AUTH_CONFIG")
        .env_remove("CE_AUTH_NO_AUTOSTART");
    let out = run_with_stdin(&mut cmd, Some(&format!("{PASSWORD}\n")));
    let pidfile = socket.with_file_name("ce-authd.pid");
    let stop = || {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid).unwrap(),
                rustix::process::Signal::TERM,
            );
        }
    };
    stop();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("[profiles.default]") || text.contains("client_id"),
        "{text}"
    );
}
