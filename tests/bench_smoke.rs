//! A smoke run of the benchmark load generator (`examples/bench`): a fraction
//! of a second against the real `ce-authd --dev` and against the generator's
//! own echo server, so the benchmark suite keeps working. The figures
//! themselves come from `scripts/bench.sh` (docs/BENCHMARKS.md), not from CI.

#[allow(dead_code)]
#[path = "../examples/bench/harness.rs"]
mod harness;

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use harness::{EchoServer, Load};

use crate::util::daemon::{Authd, Spec};
use crate::util::deadline::Deadline;
use crate::util::line::LineClient;
use crate::util::load::heavy;

/// `ce-authd --dev` in the foreground on a private socket, once it serves
/// a token (the first one waits for the issuer's key).
fn dev_daemon() -> Authd {
    let mut d = Authd::start(Spec {
        args: vec!["--dev".into()],
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..Spec::default()
    });
    Deadline::after(Duration::from_secs(30)).wait_for("ce-authd to serve a token", || {
        assert!(d.try_wait().is_none(), "ce-authd exited early");
        token_line(&d.socket)
    });
    d
}

/// The daemon's exact reply line to `token`, if it is a success.
fn token_line(socket: &Path) -> Option<Vec<u8>> {
    let mut c = LineClient::try_connect(socket)?;
    c.try_send_raw(b"{\"op\":\"token\"}\n").ok()?;
    let mut line = Vec::new();
    c.reader.read_until(b'\n', &mut line).ok()?;
    line.starts_with(b"{\"ok\":true,").then_some(line)
}

fn load(socket: &Path, conns: usize, new_conn: bool, min_ttl: Option<u64>) -> Load {
    let request = match min_ttl {
        Some(t) => format!("{{\"op\":\"token\",\"min_ttl\":{t}}}\n"),
        None => "{\"op\":\"token\"}\n".to_string(),
    };
    Load {
        socket: socket.to_path_buf(),
        conns,
        threads: 2,
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(250),
        request: request.into_bytes(),
        new_conn,
        min_ttl,
    }
}

#[test]
fn generator_drives_the_daemon_and_the_echo_server() {
    let _heavy = heavy();
    let daemon = dev_daemon();

    for (conns, new_conn) in [(1, false), (8, false), (4, true)] {
        let mut o = harness::run(&load(&daemon.socket, conns, new_conn, Some(60))).unwrap();
        o.sort();
        assert!(
            o.requests > 0,
            "no requests completed ({conns}, {new_conn})"
        );
        assert_eq!(o.errors, 0, "error replies");
        assert_eq!(o.conn_failures, 0, "broken connections");
        assert_eq!(o.checked, o.requests);
        assert_eq!(o.stale, 0, "a token with less than min_ttl left was served");
        assert!(o.min_margin.unwrap() >= 60.0);
        assert_eq!(o.latencies_ns.len() as u64, o.requests);
        assert!(o.percentile_us(0.5) > 0.0 && o.percentile_us(0.5) <= o.percentile_us(0.999));
        assert!(o.rate() > 0.0);
    }
    let pid = daemon.pid() as u32;
    assert!(harness::rss_kib(pid).unwrap() > 0);
    assert!(harness::proc_cpu(pid).is_ok());

    // the echo server answers with the daemon's own reply
    let reply = token_line(&daemon.socket).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let echo = EchoServer::start(dir.path().join("echo.sock"), reply, 1).unwrap();
    let o = harness::run(&load(&echo.path, 8, false, None)).unwrap();
    let o2 = harness::run(&load(&echo.path, 2, true, None)).unwrap();
    echo.stop();
    assert!(o.requests > 0 && o2.requests > 0);
    assert_eq!(o.errors + o.conn_failures + o2.errors + o2.conn_failures, 0);
}

#[test]
fn a_stale_token_is_counted() {
    // the echo server's copied token expires in the past: every reply is stale
    let dir = tempfile::tempdir().unwrap();
    let reply = b"{\"ok\":true,\"access_token\":\"a.b.c\",\"token_type\":\"bearer\",\"expires_at\":1000,\"profile\":\"x\"}\n".to_vec();
    let echo = EchoServer::start(dir.path().join("echo.sock"), reply, 1).unwrap();
    let o = harness::run(&load(&echo.path, 2, false, Some(1))).unwrap();
    echo.stop();
    assert!(o.requests > 0);
    assert_eq!(o.stale, o.requests);
}
