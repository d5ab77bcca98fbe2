//! The socket server end to end: every op's reply shape, binding rules
//! (modes, stale sockets, a live daemon), shutdown and the HTTP face.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ce_auth::daemon::config::DaemonSettings;
use ce_auth::daemon::server::listener::{self, BindError};
use ce_auth::protocol::{self, PROTOCOL_VERSION};
use serde_json::{Value, json};

use crate::util::daemon::Server;
use crate::util::deadline::{DEADLINE, wait_for};
use crate::util::line::error_code;

const KNOWN_CODES: &[&str] = &[
    "bad_request",
    "line_too_long",
    "unsupported_version",
    "unknown_profile",
    "profile_exists",
    "credentials_rejected",
    "issuer_unavailable",
    "config_error",
    "permission_denied",
    "busy",
    "shutting_down",
    "internal",
];

#[test]
fn hello_reports_version_daemon_and_pid() {
    let d = Server::start(DaemonSettings::default());
    let mut c = d.client();
    let r = c.call(&json!({"op": "hello", "version": PROTOCOL_VERSION, "client": "test"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["version"], PROTOCOL_VERSION);
    assert_eq!(r["pid"], std::process::id());
    assert!(r["daemon"].as_str().unwrap().starts_with("ce-authd "));
    // it parses as the shared reply type
    let line = serde_json::to_vec(&r).unwrap();
    let hello: protocol::HelloReply = protocol::parse_reply(&line).unwrap();
    assert_eq!(hello.version, PROTOCOL_VERSION);
    d.stop().unwrap();
}

#[test]
fn hello_with_another_major_version_is_refused_and_connection_stays_usable() {
    let d = Server::start(DaemonSettings::default());
    let mut c = d.client();
    let r = c.call(&json!({"op": "hello", "version": PROTOCOL_VERSION + 1}));
    assert_eq!(error_code(&r), "unsupported_version");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("v{PROTOCOL_VERSION}")), "{msg}");
    let r = c.call(&json!({"op": "hello", "version": PROTOCOL_VERSION}));
    assert_eq!(r["ok"], true);
    d.stop().unwrap();
}

#[test]
fn hello_is_optional() {
    let d = Server::start(DaemonSettings::default());
    let mut c = d.client();
    let r = c.call(&json!({"op": "status"}));
    assert_eq!(r["ok"], true, "{r}");
    d.stop().unwrap();
}

#[test]
fn status_reports_daemon_state() {
    let d = Server::start(DaemonSettings::default());
    let mut c = d.client();
    let r = c.call(&json!({"op": "status"}));
    assert_eq!(r["ok"], true, "{r}");
    let line = serde_json::to_vec(&r).unwrap();
    let st: protocol::StatusReply = protocol::parse_reply(&line).unwrap();
    assert_eq!(st.version, PROTOCOL_VERSION);
    assert_eq!(st.pid, std::process::id());
    assert!(st.uptime < 3600);
    assert_eq!(st.memory_locked, ce_auth::secret::memory_locked());
    assert!(
        st.profiles.is_empty(),
        "empty configuration has no profiles"
    );
    d.stop().unwrap();
}

#[test]
fn every_op_gets_exactly_one_well_formed_reply_in_order() {
    let d = Server::start(DaemonSettings::default());
    let mut c = d.client();
    let requests = [
        json!({"op": "hello", "version": 1}),
        json!({"op": "token"}),
        json!({"op": "token", "profile": "nope", "min_ttl": 30}),
        json!({"op": "status", "profile": "nope"}),
        json!({"op": "refresh", "profile": "nope"}),
        json!({"op": "whoami"}),
        json!({"op": "remove", "profile": "nope"}),
        json!({"op": "reload"}),
        json!({"op": "login", "token_url": "http://127.0.0.1:9/api/v1/auth/jwt/token",
               "email": "a@example.com", "password": "pw"}),
    ];
    // pipelined in one write: replies must come back one per request, in order
    let mut batch = Vec::new();
    for r in &requests {
        batch.extend(serde_json::to_vec(r).unwrap());
        batch.push(b'\n');
    }
    // a marker request whose reply is recognisable
    batch.extend(br#"{"op":"hello","version":1,"client":"marker"}"#);
    batch.push(b'\n');
    c.send_raw(&batch);
    for req in &requests {
        let r = c.recv();
        match r["ok"].as_bool() {
            Some(true) => {}
            Some(false) => {
                let code = error_code(&r);
                assert!(KNOWN_CODES.contains(&code), "{req} -> unknown code {code}");
                let msg = r["error"]["message"].as_str().unwrap();
                assert!(!msg.contains("pw\""), "message echoes the password: {msg}");
            }
            None => panic!("{req} -> reply without ok: {r}"),
        }
        if req["op"] == "hello" {
            assert_eq!(r["ok"], true);
        }
        if req["op"] == "reload" {
            // this daemon runs without a configuration file
            assert_eq!(error_code(&r), "config_error");
        }
        if req["op"] == "token" && req["profile"] == "nope" {
            assert_ne!(r["ok"], true, "a token for an unknown profile: {r}");
        }
    }
    let last = c.recv();
    assert_eq!(last["ok"], true);
    assert_eq!(last["version"], PROTOCOL_VERSION);
    d.stop().unwrap();
}

#[test]
fn reload_rereads_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "").unwrap();
    let d = Server::start_with(
        DaemonSettings::default(),
        ce_auth::daemon::config::Config::default(),
        Some(cfg.clone()),
    );
    let mut c = d.client();
    let r = c.call(&json!({"op": "reload"}));
    assert_eq!(r["ok"], true, "{r}");
    for k in ["added", "removed", "changed", "unchanged"] {
        assert!(r[k].is_array(), "{k} in {r}");
    }
    // the same path answered directly, as the daemon's SIGHUP handler calls it
    assert!(ce_auth::daemon::ops::reload(&d.shared).is_ok());
    d.stop().unwrap();
}

#[test]
fn shutdown_op_answers_then_stops_the_server_and_removes_the_socket() {
    let mut d = Server::start(DaemonSettings::default());
    let mut other = d.client();
    assert_eq!(other.call(&json!({"op":"hello","version":1}))["ok"], true);
    let mut c = d.client();
    let r = c.call(&json!({"op": "shutdown"}));
    assert_eq!(r, json!({"ok": true}));
    d.wait_finished().unwrap();
    assert!(!d.socket.exists(), "socket file left behind");
    // idle connections were closed by the shutdown
    assert!(other.closed_by_server(Duration::from_secs(5)));
    assert!(UnixStream::connect(&d.socket).is_err());
}

#[test]
fn external_shutdown_removes_the_socket() {
    let d = Server::start(DaemonSettings::default());
    let path = d.socket.clone();
    assert!(path.exists());
    d.stop().unwrap();
    assert!(!path.exists());
}

#[test]
fn socket_dir_is_0700_and_socket_0600() {
    let d = Server::start(DaemonSettings::default());
    let dir_mode = std::fs::metadata(d.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let sock_mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert_eq!(sock_mode, 0o600);
    d.stop().unwrap();
}

#[test]
fn bind_refuses_a_directory_open_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("open");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = listener::bind(&sub.join("agent.sock")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BindError::Io(_)), "{msg}");
    assert!(msg.contains("chmod 700"), "{msg}");
    assert!(!sub.join("agent.sock").exists());
}

#[test]
fn bind_refuses_to_replace_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("run");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = sub.join("agent.sock");
    std::fs::write(&file, "precious").unwrap();
    let err = listener::bind(&file).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[test]
fn stale_socket_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("run");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = sub.join("agent.sock");
    // a socket file whose listener is gone: connecting to it is refused
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    assert_eq!(
        UnixStream::connect(&path).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    let listener = listener::bind(&path).expect("stale socket reclaimed");
    assert_eq!(listener.path(), Some(path.as_path()));
    // the new socket accepts connections
    UnixStream::connect(&path).expect("connect to the new socket");
}

#[test]
fn second_bind_on_a_live_socket_is_in_use() {
    let d = Server::start(DaemonSettings::default());
    match listener::bind(&d.socket) {
        Err(BindError::InUse(p)) => assert!(p.contains("agent.sock")),
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("second bind succeeded"),
    }
    // the live daemon is unaffected
    let mut c = d.client();
    assert_eq!(c.call(&json!({"op":"hello","version":1}))["ok"], true);
    d.stop().unwrap();
}

#[test]
fn sync_connect_talks_to_the_daemon() {
    let d = Server::start(DaemonSettings::default());
    let client = ce_auth::client::Client::connect(&d.socket).expect("connect");
    let hello = client.daemon();
    assert_eq!(hello.version, PROTOCOL_VERSION);
    d.stop().unwrap();
}

/// Raw HTTP/1.1 over the socket, returning (status, body).
fn http_get(path: &std::path::Path, target: &str) -> (u16, Value) {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("head and body");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(head.contains("Connection: close"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, body.len());
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn http_status_token_and_unknown_paths() {
    let d = Server::start(DaemonSettings::default());
    let (status, body) = http_get(&d.socket, "/v1/status");
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["version"], PROTOCOL_VERSION);

    let (status, body) = http_get(&d.socket, "/v1/token?profile=nope&min_ttl=5");
    assert!(status >= 400, "{status} {body}");
    let code = error_code(&body);
    assert!(KNOWN_CODES.contains(&code));

    let (status, body) = http_get(&d.socket, "/v1/token?min_ttl=soon");
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "bad_request");

    let (status, body) = http_get(&d.socket, "/etc/passwd");
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "bad_request");
    d.stop().unwrap();
}

#[test]
fn http_with_real_curl() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let d = Server::start(DaemonSettings::default());
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(&d.socket)
        .arg("http://localhost/v1/status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "200");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["pid"], std::process::id());

    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--unix-socket")
        .arg(&d.socket)
        .arg("http://localhost/nowhere")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    d.stop().unwrap();
}

#[test]
fn over_the_connection_cap_clients_get_busy() {
    let d = Server::start(DaemonSettings {
        max_connections: Some(2),
        ..Default::default()
    });
    let mut a = d.client();
    let mut b = d.client();
    // both are being served (their tasks hold the permits)
    assert_eq!(a.call(&json!({"op":"hello","version":1}))["ok"], true);
    assert_eq!(b.call(&json!({"op":"hello","version":1}))["ok"], true);
    let mut c = d.client();
    let r = c.recv();
    assert_eq!(error_code(&r), "busy");
    assert!(c.closed_by_server(Duration::from_secs(5)));
    // a freed slot is usable again
    drop(a);
    wait_for("a slot frees up", || {
        let mut c = d.client();
        c.send(&json!({"op":"hello","version":1}));
        (c.recv()["ok"] == true).then_some(())
    });
    d.stop().unwrap();
}
