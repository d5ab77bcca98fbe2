//! Test harness for the socket server: an in-process `server::run` on a socket
//! in a temporary directory, served from its own runtime thread, and a raw
//! blocking client speaking JSON lines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ce_auth::daemon::config::{Config, DaemonSettings};
use ce_auth::daemon::engine::Engine;
use ce_auth::daemon::ops::Shared;
use ce_auth::daemon::server;
use serde_json::Value;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running server.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub shared: Arc<Shared>,
    pub rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Daemon {
    /// Starts a server with the stub-free default engine of an empty configuration.
    pub fn start(settings: DaemonSettings) -> Daemon {
        Self::start_with(settings, Config::default(), None)
    }

    /// Starts a server for `config`, with `config_path` for `reload`.
    pub fn start_with(
        settings: DaemonSettings,
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run").join("agent.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = ce_auth::daemon::server::listener::bind(&path).expect("bind");
        let engine = rt.block_on(async { Engine::new(config) });
        let shared = Arc::new(Shared::new(engine, config_path, settings));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(server::run(listener, shared.clone(), async move {
            let _ = rx.await;
        }));
        Daemon {
            dir,
            path,
            shared,
            rt,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A new client connection.
    pub fn client(&self) -> Client {
        Client::connect(&self.path)
    }

    /// Whether `server::run` has returned.
    pub fn finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits (bounded) for `server::run` to return on its own.
    pub fn wait_finished(&mut self) -> std::io::Result<()> {
        let task = self.task.take().expect("server task");
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("server did not stop in time")
                .expect("server task panicked")
        })
    }

    /// Resolves the shutdown future and waits for `run` to return.
    pub fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.wait_finished()
    }
}

/// A raw blocking client.
pub struct Client {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    pub fn send(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next reply line as JSON; panics on EOF or timeout.
    pub fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("reply");
        assert!(n > 0, "connection closed instead of a reply");
        assert!(
            line.ends_with('\n'),
            "reply not newline-terminated: {line:?}"
        );
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
    }

    pub fn call(&mut self, v: Value) -> Value {
        self.send(&v);
        self.recv()
    }

    /// True once the server has closed the connection (EOF or reset), within the deadline.
    pub fn closed_by_server(&mut self, within: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(within))
            .unwrap();
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected data while waiting for close: {line:?}"),
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
        }
    }
}

/// The error code of a failure reply, or panics with the reply.
pub fn error_code(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "expected a failure reply, got {v}");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(!msg.is_empty());
    v["error"]["code"].as_str().expect("code")
}

/// Polls `f` until it is true or the deadline passes.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}
