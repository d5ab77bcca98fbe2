//! A smoke run of the benchmark load generator (`examples/bench`): a fraction
//! of a second against the real `ce-authd --dev` and against the generator's
//! own echo server, so the benchmark suite keeps working. The figures
//! themselves come from `scripts/bench.sh` (docs/BENCHMARKS.md), not from CI.

#[allow(dead_code)]
#[path = "../examples/bench/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{EchoServer, Load};

const BIN: &str = env!("CARGO_BIN_EXE_ce-authd");
const DEADLINE: Duration = Duration::from_secs(30);

/// `ce-authd --dev` in the foreground on a private socket; stopped on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        // the daemon refuses a socket directory that others may enter
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = runtime.join("agent.sock");
        let child = Command::new(BIN)
            .args(["--dev", "--foreground", "--socket"])
            .arg(&socket)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("HOME", dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ce-authd starts");
        let mut d = Daemon {
            child,
            socket,
            _dir: dir,
        };
        // ready once it serves a token (the first one waits for the issuer's key)
        let end = Instant::now() + DEADLINE;
        while token_line(&d.socket).is_none() {
            assert!(
                d.child.try_wait().unwrap().is_none(),
                "ce-authd exited early"
            );
            assert!(
                Instant::now() < end,
                "ce-authd did not serve a token in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM, then wait (bounded) before resorting to SIGKILL
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_line(socket: &Path) -> Option<Vec<u8>> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"{\"op\":\"token\"}\n").ok()?;
    let mut line = Vec::new();
    BufReader::new(s).read_until(b'\n', &mut line).ok()?;
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
    let daemon = Daemon::start();

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
    assert!(harness::rss_kib(daemon.child.id()).unwrap() > 0);
    assert!(harness::proc_cpu(daemon.child.id()).is_ok());

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
