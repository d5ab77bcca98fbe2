//! Hostile and broken clients: oversized, malformed, slow and non-reading
//! clients, floods of connections and peers of another user. None of them may
//! stall or crash the daemon or other clients.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ce_auth::daemon::config::DaemonSettings;
use serde_json::json;

use crate::util::daemon::Server;
use crate::util::line::{LineClient, error_code, hello};
use crate::util::load::{heavy, timed};
use crate::util::process::{ensure_fds, other_uid, skip_two_uid_test};

#[test]
fn ten_mib_line_gets_line_too_long_then_close_and_others_are_unaffected() {
    let d = Server::start(DaemonSettings::default());
    let mut bystander = d.client();
    assert_eq!(bystander.call(&hello())["ok"], true);

    let mut c = d.client();
    let mut writer = c.writer.try_clone().unwrap();
    // the server stops reading at 64 KiB, so the rest of the write fails; that is expected
    let flood = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1024 * 1024];
        let mut sent = 0usize;
        for _ in 0..10 {
            match writer.write_all(&chunk) {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        sent
    });
    let r = c.recv();
    assert_eq!(error_code(&r), "line_too_long");
    assert!(c.closed_by_server(Duration::from_secs(5)));
    let sent = flood.join().unwrap();
    assert!(
        sent < 10 * 1024 * 1024,
        "the server kept reading the long line"
    );

    assert_eq!(bystander.call(&hello())["ok"], true);
    assert_eq!(d.client().call(&hello())["ok"], true);
    d.stop().unwrap();
}

#[test]
fn malformed_requests_get_bad_request_and_the_connection_stays_usable() {
    let d = Server::start(DaemonSettings::default());
    let mut c = d.client();
    let cases: &[(&[u8], &str)] = &[
        (b"{not json", "JSON"),
        (b"\xff\xfe\xfd", "UTF-8"),
        (
            b"{\"op\":\"hello\",\"version\":1,\"client\":\"\xc3\x28\"}",
            "UTF-8",
        ),
        (b"[1,2,3]", "JSON object"),
        (b"\"token\"", "JSON object"),
        (b"42", "JSON object"),
        (b"{\"op\":\"fly\"}", "fly"),
        (b"{\"version\":1}", "op"),
        (b"{\"op\":\"token\",\"profle\":\"dev\"}", "profle"),
        (b"{\"op\":\"token\",\"min_ttl\":\"soon\"}", "u64"),
        (b"{\"op\":\"hello\",\"version\":-1}", "u32"),
        (b"{\"op\":\"hello\"}", "version"),
        (
            b"{\"op\":\"add\",\"profile\":\"p\",\"settings\":{\"bogus\":1}}",
            "bogus",
        ),
        (b"{}", "op"),
    ];
    for (line, hint) in cases {
        let mut raw = line.to_vec();
        raw.push(b'\n');
        c.send_raw(&raw);
        let r = c.recv();
        assert_eq!(
            error_code(&r),
            "bad_request",
            "{}",
            String::from_utf8_lossy(line)
        );
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(hint),
            "{} -> {msg}",
            String::from_utf8_lossy(line)
        );
        // still usable
        assert_eq!(c.call(&hello())["ok"], true);
    }
    d.stop().unwrap();
}

#[test]
fn blank_lines_and_crlf_are_tolerated() {
    let d = Server::start(DaemonSettings::default());
    let mut c = d.client();
    c.send_raw(b"\n\r\n  \n{\"op\":\"hello\",\"version\":1}\r\n");
    assert_eq!(c.recv()["ok"], true);
    d.stop().unwrap();
}

#[test]
fn half_sent_line_is_closed_after_the_timeout_while_others_are_served() {
    let _timed = timed();
    let d = Server::start(DaemonSettings {
        idle_timeout: Some(1),
        ..Default::default()
    });
    let mut slow = d.client();
    slow.send_raw(b"{\"op\":\"hel");
    let started = Instant::now();
    // others keep being answered while the slow client stalls
    let mut other = d.client();
    for _ in 0..5 {
        assert_eq!(other.call(&hello())["ok"], true);
    }
    assert!(slow.closed_by_server(Duration::from_secs(10)));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "closed too late: {took:?}");
    // a fresh client is still served
    assert_eq!(d.client().call(&hello())["ok"], true);
    d.stop().unwrap();
}

#[test]
fn idle_connection_is_closed_after_the_idle_timeout() {
    let _timed = timed();
    let d = Server::start(DaemonSettings {
        idle_timeout: Some(1),
        ..Default::default()
    });
    let mut c = d.client();
    assert_eq!(c.call(&hello())["ok"], true);
    let started = Instant::now();
    assert!(c.closed_by_server(Duration::from_secs(10)));
    assert!(started.elapsed() >= Duration::from_millis(900));
    d.stop().unwrap();
}

#[test]
fn a_client_that_never_reads_does_not_stall_others_and_is_dropped() {
    let _heavy = heavy();
    let d = Server::start(DaemonSettings {
        idle_timeout: Some(2),
        ..Default::default()
    });
    let hog = UnixStream::connect(&d.socket).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = hog.try_clone().unwrap();
    // pipeline status requests (large replies) and never read a byte
    let writer = std::thread::spawn(move || {
        let line = b"{\"op\":\"status\"}\n".repeat(1000);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if w.write_all(&line).is_err() {
                return true; // the server closed us
            }
        }
        false
    });
    // meanwhile every other client is answered promptly
    for _ in 0..20 {
        let mut c = d.client();
        let t = Instant::now();
        assert_eq!(c.call(&hello())["ok"], true);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "slow: {:?}",
            t.elapsed()
        );
    }
    assert!(
        writer.join().unwrap(),
        "the non-reading client was never disconnected"
    );
    drop(hog);
    assert_eq!(d.client().call(&hello())["ok"], true);
    d.stop().unwrap();
}

#[test]
fn a_thousand_concurrent_connections_are_all_answered() {
    let _heavy = heavy();
    let n = 1000;
    // both ends of every connection live in this process
    if !ensure_fds(2 * n as u64) {
        eprintln!("skipped: the fd limit is too low for {n} connections");
        return;
    }
    let d = Server::start(DaemonSettings {
        max_connections: Some(n + 10),
        ..Default::default()
    });
    let mut clients: Vec<LineClient> = (0..n).map(|_| d.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&json!({"op": "hello", "version": 1, "client": format!("c{i}")}));
    }
    for c in clients.iter_mut() {
        let r = c.recv();
        assert_eq!(r["ok"], true, "{r}");
    }
    // and all still open and usable afterwards
    for c in clients.iter_mut().step_by(97) {
        assert_eq!(c.call(&json!({"op":"status"}))["ok"], true);
    }
    d.stop().unwrap();
}

#[test]
fn a_peer_of_another_user_is_refused() {
    let Some((uid, gid)) = other_uid() else {
        return;
    };
    let as_other = [
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".to_string(),
    ];
    // the interpreter must be runnable by the other uid (not e.g. a shim under /root)
    let runs_as_other = |cmd: &str| {
        std::process::Command::new("setpriv")
            .args(&as_other)
            .args([cmd, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let Some(python) = ["/usr/bin/python3", "/usr/local/bin/python3", "python3"]
        .into_iter()
        .find(|p| runs_as_other(p))
    else {
        skip_two_uid_test(&format!(
            "setpriv is missing or no python3 runs as uid {uid}"
        ));
        return;
    };
    for (allow, expect_ok) in [(vec![], false), (vec![uid], true)] {
        let d = Server::start(DaemonSettings {
            allow_uids: allow.clone(),
            ..Default::default()
        });
        // make the socket reachable to the other uid so only the peer check stands in the way
        use std::os::unix::fs::PermissionsExt;
        for dir in d.socket.ancestors().skip(1).take(2) {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"op":"hello","version":1}\n')
except BrokenPipeError:
    pass  # a refused peer may be closed before it sends; the reply is still queued
buf = b''
while not buf.endswith(b'\n'):
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
sys.stdout.write(buf.decode())
"#;
        let out = std::process::Command::new("setpriv")
            .args(&as_other)
            .args([python, "-c", script])
            .arg(&d.socket)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("a JSON reply line");
        if expect_ok {
            assert_eq!(reply["ok"], true, "{reply}");
        } else {
            assert_eq!(error_code(&reply), "permission_denied");
            let msg = reply["error"]["message"].as_str().unwrap();
            assert!(msg.contains(&uid.to_string()), "{msg}");
        }
        // our own uid is still served
        assert_eq!(d.client().call(&hello())["ok"], true);
        d.stop().unwrap();
    }
}
