//! A raw blocking client of the daemon's socket speaking JSON lines, for
//! tests that need to see (or break) the protocol byte by byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::deadline::{DEADLINE, Deadline};

/// One connection; every read and write is bounded by [`DEADLINE`].
pub struct LineClient {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl LineClient {
    /// Connects, or fails the test.
    pub fn connect(path: &Path) -> LineClient {
        Self::try_connect(path).expect("connect")
    }

    /// Connects, or `None` while nothing listens.
    pub fn try_connect(path: &Path) -> Option<LineClient> {
        let s = UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        Some(LineClient {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        })
    }

    /// Writes `bytes` as they are, or fails the test.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).expect("send");
    }

    /// Writes `bytes` as they are; a server that hangs up on a client it
    /// refuses makes this fail, which abuse tests expect.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Writes `v` as one line.
    pub fn send(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next reply as JSON; fails the test at EOF, on a timeout or on a
    /// line that is not newline-terminated JSON.
    pub fn recv(&mut self) -> Value {
        self.try_recv().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next reply as JSON, or why there is none.
    pub fn try_recv(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "connection closed instead of a reply",
            ));
        }
        if !line.ends_with('\n') {
            return Err(std::io::Error::other(format!(
                "reply not newline-terminated: {line:?}"
            )));
        }
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("reply {line:?} is not JSON: {e}")))
    }

    /// Sends `v` and returns the reply.
    pub fn call(&mut self, v: &Value) -> Value {
        self.send(v);
        self.recv()
    }

    /// Sends `v` and returns the reply, or why there is none.
    pub fn try_call(&mut self, v: &Value) -> std::io::Result<Value> {
        let mut line = serde_json::to_vec(v)?;
        line.push(b'\n');
        self.try_send_raw(&line)?;
        self.try_recv()
    }

    /// True once the server has closed the connection (EOF or reset) within `within`.
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

    /// Reads until EOF, each read bounded by what is left until `end`; returns what came.
    pub fn drain_by(&mut self, end: Deadline) -> Vec<u8> {
        let mut all = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = end.left("the daemon to finish answering and close");
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.reader.read(&mut chunk) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // a reset after the daemon closed on unread input ends the stream too
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) => panic!("reading until close: {e}"),
            }
        }
    }
}

/// The error code of a failure reply; fails the test on anything else.
pub fn error_code(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "expected a failure reply, got {v}");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(!msg.is_empty());
    v["error"]["code"].as_str().expect("code")
}

/// Sends one request on a fresh connection and returns the reply, or the
/// error while nothing answers (for polling a daemon that is starting).
pub fn request(socket: &Path, req: &Value) -> std::io::Result<Value> {
    LineClient::try_connect(socket)
        .ok_or_else(|| std::io::Error::other(format!("nothing answers on {}", socket.display())))?
        .try_call(req)
}

/// The `hello` request of the current protocol version.
pub fn hello() -> Value {
    serde_json::json!({"op": "hello", "version": ce_auth::protocol::PROTOCOL_VERSION})
}
