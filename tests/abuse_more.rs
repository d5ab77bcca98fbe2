//! Socket abuse against the real `ce-authd` binary, with figures: thousands of
//! connections at once, connection caps under a low open file limit, rapid
//! connect/disconnect loops, garbage streams and memory hogs. Throughout, a
//! probe client on its own connection must keep being answered promptly, and
//! the daemon's memory and descriptors must stay bounded.
//!
//! Run with `--nocapture` to see the figures.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::util::daemon::{Authd, Spec};
use crate::util::deadline::{DEADLINE, Deadline, wait_for};
use crate::util::line::LineClient;
use crate::util::load::{Probe, heavy};
use crate::util::process::ensure_fds;

/// The longest any probe answer may take while abuse goes on (debug build, shared CPU).
const PROBE_BOUND: Duration = Duration::from_secs(2);

fn hello_line() -> &'static [u8] {
    b"{\"op\":\"hello\",\"version\":1}\n"
}

/// What one flooded connection got.
#[derive(Debug, Default)]
struct Outcome {
    served: usize,
    busy: usize,
    other: Vec<String>,
}

/// Opens `n` connections as fast as possible, then sends `hello` on each and
/// reads one line from each.
fn flood(socket: &std::path::Path, n: usize) -> (Outcome, Duration) {
    let started = Instant::now();
    let mut conns: Vec<UnixStream> = Vec::with_capacity(n);
    for _ in 0..n {
        let s = UnixStream::connect(socket).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        // a connection answered `busy` may already be closed; its reply is still queued
        let _ = s.write_all(hello_line());
    }
    let mut out = Outcome::default();
    // one deadline for all the answers, so a daemon that stopped answering
    // fails the test instead of costing a timeout per connection
    let end = Deadline::standard();
    for s in conns.iter() {
        s.set_read_timeout(Some(end.left("answers to the flood")))
            .unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut r, &mut line) {
            Ok(n) if n > 0 => {
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["ok"] == true {
                    out.served += 1;
                } else if v["error"]["code"] == "busy" {
                    out.busy += 1;
                } else {
                    out.other.push(line);
                }
            }
            Ok(_) => out.other.push("EOF".into()),
            Err(e) => out.other.push(format!("read error: {e}")),
        }
    }
    let took = started.elapsed();
    drop(conns);
    (out, took)
}

/// Waits until the daemon holds no more descriptors than `baseline` (+ slack).
fn fds_settle(d: &Authd, baseline: usize) -> usize {
    wait_for("the daemon to close the flood's descriptors", || {
        let now = d.fd_count();
        (now <= baseline + 2).then_some(now)
    })
}

#[test]
fn two_thousand_connections_at_once_are_served_or_told_busy() {
    let _heavy = heavy();
    let n = 2000;
    if !ensure_fds(n as u64) {
        eprintln!("skipped: the fd limit is too low for {n} connections");
        return;
    }
    // plenty of descriptors where allowed, so the configured cap (1024) decides
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    let nofile = hard.min(8192);
    let cap = (ce_auth::daemon::server::DEFAULT_MAX_CONNECTIONS as u64)
        .min(nofile - ce_auth::daemon::server::FD_RESERVE) as usize;
    let d = Authd::start(Spec {
        nofile: Some(nofile),
        ..Spec::default()
    });
    let baseline = d.fd_count();
    let rss_before = d.status_kb("VmRSS");
    let probe = Probe::start(&d.socket);

    let (out, took) = flood(&d.socket, n);
    let lat = probe.finish();
    let hwm = d.status_kb("VmHWM");

    println!(
        "2000 connections at once: {} served + {} busy in {:.2} s; daemon VmRSS before {:.1} MiB, \
         peak VmHWM {:.1} MiB; probe: {} answers, p50 {:?}, p99 {:?}, max {:?}",
        out.served,
        out.busy,
        took.as_secs_f64(),
        rss_before as f64 / 1048576.0,
        hwm as f64 / 1048576.0,
        lat.count,
        lat.p50,
        lat.p99,
        lat.max
    );
    assert!(
        out.other.is_empty(),
        "{:?}",
        &out.other[..out.other.len().min(5)]
    );
    // the probe holds one of the places
    assert_eq!(out.served, cap - 1);
    assert_eq!(out.busy, n - out.served);
    assert!(lat.count > 0 && lat.max < PROBE_BOUND, "{lat:?}");
    assert!(hwm < 256 << 20, "peak RSS {hwm} bytes");

    fds_settle(&d, baseline);
    assert_eq!(d.client().call(&json!({"op": "status"}))["ok"], true);
    // one warning a second, not one per refused connection
    let warnings = d.stderr().matches("too many connections").count();
    assert!(
        (1..=1 + took.as_secs() as usize).contains(&warnings),
        "{warnings} busy warnings for {} refusals",
        out.busy
    );
    assert!(d.stop().success());
}

#[test]
fn the_connection_cap_follows_a_low_open_file_limit() {
    let _heavy = heavy();
    let nofile = 256u64;
    let cap = (nofile - ce_auth::daemon::server::FD_RESERVE) as usize;
    let n = 600;
    assert!(ensure_fds(n as u64));
    let d = Authd::start(Spec {
        nofile: Some(nofile),
        ..Spec::default()
    });
    let baseline = d.fd_count();
    let probe = Probe::start(&d.socket);

    // without the cap following the limit, accept() would fail with EMFILE
    // and the connections past it would wait unanswered in the backlog
    let (out, took) = flood(&d.socket, n);
    let lat = probe.finish();
    println!(
        "{n} connections with RLIMIT_NOFILE {nofile}: {} served + {} busy in {:.2} s; probe max {:?}",
        out.served,
        out.busy,
        took.as_secs_f64(),
        lat.max
    );
    assert!(
        out.other.is_empty(),
        "{:?}",
        &out.other[..out.other.len().min(5)]
    );
    assert_eq!(out.served, cap - 1);
    assert_eq!(out.busy, n - out.served);
    assert!(lat.max < PROBE_BOUND, "{lat:?}");
    let log = d.stderr();
    assert!(
        log.contains(&format!(
            "the open file limit allows only {cap} connections"
        )),
        "{log}"
    );
    assert!(!log.contains("accept failed"), "{log}");
    fds_settle(&d, baseline);
    assert!(d.stop().success());
}

#[test]
fn rapid_connect_disconnect_loops_leave_nothing_behind() {
    let _heavy = heavy();
    let d = Authd::start(Spec::default());
    let baseline = d.fd_count();
    let probe = Probe::start(&d.socket);
    let per_thread = 2000;
    let started = Instant::now();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let mut s = UnixStream::connect(&socket).expect("connect");
                    // vary how each connection dies
                    let _ = match (t + i) % 4 {
                        0 => Ok(()),
                        1 => s.write_all(b"{\"op\":\"hel"),
                        2 => s.write_all(b"{\"op\":\"status\"}\n"),
                        _ => s.write_all(b"\xff\x00garbage\n"),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("loop thread");
    }
    let took = started.elapsed();
    let lat = probe.finish();
    let settled = fds_settle(&d, baseline);
    println!(
        "{} connect/disconnect cycles in {:.2} s; probe: {} answers, p99 {:?}, max {:?}; \
         daemon fds {baseline} before, {settled} after; VmHWM {:.1} MiB",
        3 * per_thread,
        took.as_secs_f64(),
        lat.count,
        lat.p99,
        lat.max,
        d.status_kb("VmHWM") as f64 / 1048576.0
    );
    assert!(lat.max < PROBE_BOUND, "{lat:?}");
    assert_eq!(d.client().call(&json!({"op": "status"}))["ok"], true);
    assert!(d.stop().success());
}

#[test]
fn garbage_streams_get_errors_and_never_stall_others() {
    let _heavy = heavy();
    let d = Authd::start(Spec::default());
    let probe = Probe::start(&d.socket);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xce_a17);
    let mut replies = 0;
    // one deadline for the whole loop: a stuck daemon fails the test quickly
    let end = Deadline::after(2 * DEADLINE);
    for round in 0..200 {
        let mut c = d.client();
        let len = match round % 10 {
            0 => 70 * 1024, // over the line cap
            _ => rng.random_range(1..2048),
        };
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if len > ce_auth::protocol::MAX_LINE {
            // one unbroken over-long line
            bytes
                .iter_mut()
                .filter(|b| **b == b'\n')
                .for_each(|b| *b = b'x');
        }
        // keep the first byte away from an HTTP method so the JSON-lines side is exercised
        if bytes[0].is_ascii_uppercase() {
            bytes[0] = b'{';
        }
        bytes.push(b'\n');
        let _ = c.try_send_raw(&bytes);
        c.writer.shutdown(std::net::Shutdown::Write).unwrap();
        let all = c.drain_by(end);
        for line in all.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line)
                .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {line:?}"));
            assert_eq!(v["ok"], false, "{v}");
            let code = v["error"]["code"].as_str().unwrap();
            assert!(matches!(code, "bad_request" | "line_too_long"), "{v}");
            replies += 1;
        }
    }
    let lat = probe.finish();
    println!(
        "200 garbage streams: {replies} error replies; probe: {} answers, p99 {:?}, max {:?}",
        lat.count, lat.p99, lat.max
    );
    assert!(
        replies >= 200,
        "every stream has at least one line to refuse"
    );
    assert!(lat.max < PROBE_BOUND, "{lat:?}");
    assert!(d.stop().success());
}

#[test]
fn non_objects_never_reach_the_token_fast_path() {
    // no profiles: a `token` request that got through would say unknown_profile
    let d = Authd::start(Spec::default());
    let mut c = d.client();
    for line in [
        &b"[\"token\"]\n"[..],
        b"[\"token\",\"dev\",60]\n",
        b"  [\"token\"]\n",
        b"\"token\"\n",
        b"[{\"op\":\"token\"}]\n",
    ] {
        c.send_raw(line);
        let r = c.recv();
        assert_eq!(r["error"]["code"], "bad_request", "{line:?} -> {r}");
    }
    // the object form still works
    let r = c.call(&json!({"op": "token"}));
    assert_eq!(r["error"]["code"], "unknown_profile", "{r}");
    assert!(d.stop().success());
}

#[test]
fn hogs_and_floods_keep_memory_bounded_and_others_answered() {
    let _heavy = heavy();
    let d = Authd::start(Spec {
        config: Some("[daemon]\nidle_timeout = 3\n".into()),
        ..Spec::default()
    });
    let rss_before = d.status_kb("VmRSS");
    let probe = Probe::start(&d.socket);
    let started = Instant::now();
    let mut threads = Vec::new();
    // clients pipelining requests without ever reading a reply
    for _ in 0..20 {
        let socket = d.socket.clone();
        threads.push(std::thread::spawn(move || {
            let s = UnixStream::connect(&socket).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
            let batch = b"{\"op\":\"status\"}\n".repeat(500);
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if (&s).write_all(&batch).is_err() {
                    return true;
                }
            }
            false
        }));
    }
    // clients sending 10 MiB lines
    for _ in 0..10 {
        let socket = d.socket.clone();
        threads.push(std::thread::spawn(move || {
            let mut c = LineClient::connect(&socket);
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..10 {
                if c.try_send_raw(&chunk).is_err() {
                    break;
                }
            }
            let r = c.recv();
            r["error"]["code"] == "line_too_long"
        }));
    }
    // clients that send half a line and stall
    let stalled: Vec<UnixStream> = (0..50)
        .map(|_| {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.write_all(b"{\"op\":\"token\",\"pro").unwrap();
            s
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap(), "a hog was not cut off");
    }
    let lat = probe.finish();
    let hwm = d.status_kb("VmHWM");
    println!(
        "20 non-reading pipeliners + 10 x 10 MiB lines + 50 stalled half lines, {:.1} s: \
         VmRSS before {:.1} MiB, peak VmHWM {:.1} MiB; probe: {} answers, p99 {:?}, max {:?}",
        started.elapsed().as_secs_f64(),
        rss_before as f64 / 1048576.0,
        hwm as f64 / 1048576.0,
        lat.count,
        lat.p99,
        lat.max
    );
    assert!(lat.max < PROBE_BOUND, "{lat:?}");
    assert!(hwm < 256 << 20, "peak RSS {hwm} bytes");
    // the stalled ones are closed by the line timeout
    let end = Deadline::standard();
    for s in stalled {
        s.set_read_timeout(Some(end.left("stalled clients to be closed")))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut &s, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "a stalled client got {:?}", &buf[..n]);
    }
    assert!(d.stop().success());
}

#[test]
fn http_garbage_gets_http_errors_and_never_stalls_others() {
    let _heavy = heavy();
    let d = Authd::start(Spec {
        config: Some("[daemon]\nidle_timeout = 2\n".into()),
        ..Spec::default()
    });
    let probe = Probe::start(&d.socket);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x477);
    let mut statuses = std::collections::BTreeMap::new();
    let end = Deadline::after(2 * DEADLINE);
    for round in 0..60 {
        let mut c = d.client();
        let mut bytes: Vec<u8> = match round % 6 {
            // a head over the 64 KiB cap
            0 => format!("GET /v1/token?{} HTTP/1.1\r\n", "a".repeat(70 * 1024)).into_bytes(),
            // too many headers
            1 => {
                let mut h = b"GET /v1/status HTTP/1.1\r\n".to_vec();
                for i in 0..100 {
                    h.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
                }
                h
            }
            // a method and then noise
            2 => {
                let mut h = b"POST /".to_vec();
                h.extend((0..rng.random_range(1..4096)).map(|_| rng.random::<u8>()));
                h
            }
            3 => b"DELETE /v1/token HTTP/1.1\r\n".to_vec(),
            4 => b"GET /../../etc/passwd HTTP/1.1\r\n".to_vec(),
            // a head that never ends: closed by the line timeout (twice, to keep the test short)
            5 if round < 12 => b"GET /v1/status HTTP/1.1\r\nX-Slow: ".to_vec(),
            _ => b"BREW /pot HTTP/1.1\r\n".to_vec(),
        };
        if !(round % 6 == 5 && round < 12) {
            bytes.extend_from_slice(b"\r\n");
        }
        let _ = c.try_send_raw(&bytes);
        let answer = String::from_utf8_lossy(&c.drain_by(end)).into_owned();
        let status = answer
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .unwrap_or_else(|| panic!("round {round}: not an HTTP answer: {answer:?}"))
            .to_string();
        assert!(status.starts_with('4'), "round {round}: {answer}");
        *statuses.entry(status).or_insert(0) += 1;
    }
    let lat = probe.finish();
    println!(
        "60 hostile HTTP requests: statuses {statuses:?}; probe max {:?}",
        lat.max
    );
    assert!(lat.max < PROBE_BOUND, "{lat:?}");
    assert!(d.stop().success());
}

#[test]
fn a_thousand_partial_lines_at_the_cap_keep_memory_bounded() {
    let _heavy = heavy();
    let n = 1000;
    assert!(ensure_fds(n as u64));
    let d = Authd::start(Spec {
        config: Some("[daemon]\nidle_timeout = 3\n".into()),
        ..Spec::default()
    });
    let rss_before = d.status_kb("VmRSS");
    let probe = Probe::start(&d.socket);
    // each connection holds just under a full line: the most a connection may pin
    let partial = vec![b'x'; ce_auth::protocol::MAX_LINE - 2];
    let started = Instant::now();
    let conns: Vec<UnixStream> = (0..n)
        .map(|_| {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.set_write_timeout(Some(DEADLINE)).unwrap();
            s.write_all(&partial).unwrap();
            s
        })
        .collect();
    // all of it has reached the daemon once it holds (nearly) all the bytes
    let total = n as u64 * partial.len() as u64;
    wait_for("the daemon to take in the partial lines", || {
        (d.status_kb("VmHWM") > rss_before + total / 10 * 9).then_some(())
    });
    let lat = probe.finish();
    let hwm = d.status_kb("VmHWM");
    println!(
        "{n} connections x {} KiB partial lines: VmRSS before {:.1} MiB, peak VmHWM {:.1} MiB \
         after {:.2} s; probe p99 {:?}, max {:?}",
        partial.len() / 1024,
        rss_before as f64 / 1048576.0,
        hwm as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        lat.p99,
        lat.max
    );
    assert!(lat.max < PROBE_BOUND, "{lat:?}");
    // the line buffers are capped, so memory is about n x MAX_LINE, not more
    assert!(
        hwm < rss_before + n as u64 * 2 * ce_auth::protocol::MAX_LINE as u64,
        "peak RSS {hwm} bytes"
    );
    // the line timeout closes them all
    let end = Deadline::standard();
    for s in conns {
        s.set_read_timeout(Some(end.left("partial lines to be closed")))
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(std::io::Read::read(&mut &s, &mut buf).unwrap_or(0), 0);
    }
    assert!(d.stop().success());
}
