//! The socket server: accept loop, per-connection tasks, limits and shutdown.
//!
//! Shaped like mini-redis: [`run`] takes the listener and a shutdown future,
//! caps concurrent connections with a semaphore, runs one task per connection
//! and, on shutdown, stops accepting and lets in-flight requests finish for a
//! bounded time. A connection whose first bytes are an HTTP request line is
//! served one minimal HTTP request (`GET /v1/token`, `GET /v1/status`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use zeroize::Zeroize;

use crate::config::DaemonSettings;
use crate::engine::Engine;
use crate::handler;
use crate::ipc::{self, Stream};
use crate::protocol::{ErrorCode, MAX_LINE, WireError};
use crate::wire::{AsyncLines, FrameError, ZeroingReader};

/// Connections served at once when `max_connections` is not set.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long a connection may stay silent between requests when `idle_timeout` is not set.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a started line may take to finish (capped by the idle timeout).
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply may wait for the client to read it (capped by the idle timeout).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may run on after shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// File descriptors kept free of client connections (for the listener, the
/// log, token requests to the issuer, and for accepting a connection only to
/// answer it `busy`).
pub const FD_RESERVE: u64 = 64;

/// Replies buffered for a client that pipelines requests without reading
/// are written out at this size, so such a client cannot pin memory.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// A client over the connection cap gets this long to take its `busy` reply.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

/// What every connection handler shares.
pub struct Shared {
    pub engine: Arc<Engine>,
    /// The config file `reload` re-reads; `None` when the daemon runs without one (e.g. `--dev` only).
    pub config_path: Option<PathBuf>,
    pub settings: DaemonSettings,
    pub started: Instant,
    /// Fires when a client sends `shutdown`; `run` then returns.
    pub shutdown: tokio::sync::Notify,
}

impl Shared {
    /// Shared state for a daemon started now.
    pub fn new(
        engine: Arc<Engine>,
        config_path: Option<PathBuf>,
        settings: DaemonSettings,
    ) -> Shared {
        Shared {
            engine,
            config_path,
            settings,
            started: Instant::now(),
            shutdown: tokio::sync::Notify::new(),
        }
    }
}

/// Per-connection time limits derived from [`DaemonSettings`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: Duration,
    line: Duration,
    write: Duration,
}

impl Limits {
    fn from(settings: &DaemonSettings) -> Limits {
        let idle = settings
            .idle_timeout
            .map(|s| Duration::from_secs(s.max(1)))
            .unwrap_or(DEFAULT_IDLE_TIMEOUT);
        Limits {
            idle,
            line: LINE_TIMEOUT.min(idle),
            write: WRITE_TIMEOUT.min(idle),
        }
    }
}

/// Serves `listener` until `shutdown` resolves or a client sends `shutdown`,
/// then stops accepting, lets in-flight requests finish (bounded) and returns.
///
/// The socket file is removed when the listener is dropped here.
pub async fn run(
    listener: crate::ipc::Listener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut listener = listener;
    let max = connection_cap(
        shared
            .settings
            .max_connections
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
    );
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(1);
    let mut busy_log = BusyLog::default();
    tokio::pin!(shutdown);
    tracing::debug!(max_connections = max, "serving");

    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            _ = shared.shutdown.notified() => break,
            // reap finished connections so the set stays small
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = listener.accept() => r,
        };
        match accepted {
            Ok(stream) => {
                backoff = Duration::from_millis(1);
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tasks.spawn(connection(stream, shared.clone(), stop_rx.clone(), permit));
                    }
                    Err(_) => {
                        busy_log.refused(max);
                        let e = WireError::new(
                            ErrorCode::Busy,
                            format!("the daemon is serving {max} connections; try again shortly"),
                        );
                        let _ = tokio::time::timeout(
                            BUSY_WRITE_TIMEOUT,
                            (&stream).write_all(&crate::protocol::err_line(&e)),
                        )
                        .await;
                    }
                }
            }
            Err(e) => {
                // e.g. out of file descriptors: back off instead of spinning, keep serving
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    // stop accepting first; dropping a bound listener also removes the socket file
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "requests still running after {DRAIN_TIMEOUT:?}; dropping them"
        );
        tasks.abort_all();
    }
    tracing::debug!("server stopped");
    Ok(())
}

/// Warnings about connections refused as `busy`, at most one a second, so a
/// client reconnecting in a loop cannot flood the log (or fill its file).
#[derive(Default)]
struct BusyLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl BusyLog {
    fn refused(&mut self, max: usize) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            max_connections = max,
            also_refused = self.suppressed,
            "connection refused: too many connections"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The connection cap actually used: `wanted`, but never more than the open
/// file limit allows, so a flood of clients is answered `busy` instead of
/// making `accept` fail for everyone (and the issuer unreachable).
pub fn connection_cap(wanted: usize) -> usize {
    let wanted = wanted.max(1);
    let Some(budget) = fd_budget() else {
        return wanted;
    };
    if (wanted as u64) <= budget {
        return wanted;
    }
    let capped = budget.max(1) as usize;
    tracing::warn!(
        max_connections = wanted,
        using = capped,
        "the open file limit allows only {capped} connections; raise it \
         (ulimit -n, LimitNOFILE=) to serve more at once"
    );
    capped
}

/// Descriptors available to client connections under the soft open file limit.
fn fd_budget() -> Option<u64> {
    #[cfg(unix)]
    {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
        Some(soft.saturating_sub(FD_RESERVE))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Serves one connection until it closes, misbehaves or the server stops.
async fn connection(
    stream: Stream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let limits = Limits::from(&shared.settings);
    let uid = match ipc::check_peer(&stream, &shared.settings.allow_uids) {
        Ok(uid) => uid,
        Err(refused) => {
            tracing::warn!(reason = %refused, "connection refused");
            let e = WireError::new(ErrorCode::PermissionDenied, refused.to_string());
            let mut out = crate::protocol::err_line(&e);
            flush(&stream, &mut out, limits.write).await;
            return;
        }
    };
    tracing::debug!(uid, "connection accepted");

    // requests may carry secrets (add, login): bytes are zeroed once consumed
    let mut reader = ZeroingReader::new(&stream);
    // peek at the first bytes: a JSON line starts with `{`, HTTP with a method name
    let first = tokio::select! {
        _ = stop.wait_for(|s| *s) => return,
        r = tokio::time::timeout(limits.idle, reader.fill_buf()) => match r {
            Ok(Ok(buf)) => buf.first().copied(),
            _ => None,
        },
    };
    let Some(first) = first else {
        tracing::debug!(uid, "connection closed before a request");
        return;
    };
    if first.is_ascii_uppercase() {
        http::serve(&stream, &mut reader, &shared, limits).await;
        tracing::debug!(uid, "http connection closed");
        return;
    }

    let mut lines = AsyncLines::new(reader);
    let mut out = Vec::with_capacity(1024);
    let reason = loop {
        // answer a pipelined batch with one write, but never leave a reply
        // waiting while we wait for more input
        if !out.is_empty()
            && !lines.has_buffered_line()
            && !flush(&stream, &mut out, limits.write).await
        {
            break "client does not read its replies";
        }
        let res = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break "server stopping",
            r = lines.read_line_timed(limits.idle, limits.line) => r,
        };
        match res {
            Ok(Some(line)) => {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // blank lines are not requests and get no reply
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                handler::handle_line(&shared, line, &mut out).await;
                if out.len() >= OUT_HIGH_WATER && !flush(&stream, &mut out, limits.write).await {
                    break "client does not read its replies";
                }
            }
            Ok(None) => break "closed by client",
            Err(FrameError::TooLong(cap)) => {
                let e = WireError::new(
                    ErrorCode::LineTooLong,
                    format!("request line longer than {cap} bytes; closing the connection"),
                );
                handler::write_err(&mut out, &e);
                break "line too long";
            }
            Err(FrameError::Idle) => break "idle timeout",
            Err(FrameError::Stalled) => break "line not finished in time",
            Err(FrameError::Truncated) => break "closed mid-line",
            Err(FrameError::Io(_)) => break "read error",
        }
    };
    flush(&stream, &mut out, limits.write).await;
    tracing::debug!(uid, reason, "connection closed");
}

/// Writes and clears `out` within `timeout`; false when the client did not take it.
async fn flush(stream: &Stream, out: &mut Vec<u8>, timeout: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let mut w = stream;
    let ok = matches!(
        tokio::time::timeout(timeout, w.write_all(out)).await,
        Ok(Ok(()))
    );
    // replies carry tokens: zero what was written (earlier, longer contents
    // were zeroed by the flushes that wrote them)
    out.as_mut_slice().zeroize();
    out.clear();
    ok
}

/// The minimal HTTP/1.x face of the socket, for `curl --unix-socket`.
mod http {
    use super::*;
    use crate::protocol::{StatusReply, TokenReply};

    /// Reads one request head (at most [`MAX_LINE`] bytes), answers it, and returns.
    pub(super) async fn serve(
        stream: &Stream,
        reader: &mut ZeroingReader<&Stream>,
        shared: &Shared,
        limits: Limits,
    ) {
        let deadline = tokio::time::Instant::now() + limits.line;
        let mut head: Vec<u8> = Vec::with_capacity(1024);
        let (status, body) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&head) {
                Ok(httparse::Status::Complete(_)) => {
                    let method = req.method.unwrap_or("");
                    let target = req.path.unwrap_or("");
                    break route(shared, method, target).await;
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    break error(431, ErrorCode::BadRequest, "too many request headers");
                }
                Err(e) => {
                    break error(
                        400,
                        ErrorCode::BadRequest,
                        &format!("malformed HTTP request: {e}"),
                    );
                }
            }
            if head.len() >= MAX_LINE {
                break error(
                    431,
                    ErrorCode::LineTooLong,
                    &format!("request head longer than {MAX_LINE} bytes"),
                );
            }
            let avail = match tokio::time::timeout_at(deadline, reader.fill_buf()).await {
                Ok(Ok(a)) if !a.is_empty() => a,
                Ok(_) => return,
                Err(_) => {
                    break error(
                        408,
                        ErrorCode::BadRequest,
                        "request head not finished in time",
                    );
                }
            };
            let n = avail.len().min(MAX_LINE - head.len());
            head.extend_from_slice(&avail[..n]);
            reader.consume(n);
        };
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            reason(status),
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        flush(stream, &mut out, limits.write).await;
    }

    async fn route(shared: &Shared, method: &str, target: &str) -> (u16, Vec<u8>) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        tracing::debug!(method, path, "http request");
        let known = matches!(path, "/v1/token" | "/v1/status");
        if known && method != "GET" {
            return error(
                405,
                ErrorCode::BadRequest,
                &format!("{path} accepts GET only"),
            );
        }
        match path {
            "/v1/token" => {
                let mut profile = None;
                let mut min_ttl = None;
                for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                    match &*k {
                        "profile" => profile = Some(v.into_owned()),
                        "min_ttl" => match v.parse::<u64>() {
                            Ok(n) => min_ttl = Some(n),
                            Err(_) => {
                                return error(
                                    400,
                                    ErrorCode::BadRequest,
                                    "min_ttl must be a number of seconds",
                                );
                            }
                        },
                        other => {
                            return error(
                                400,
                                ErrorCode::BadRequest,
                                &format!(
                                    "unknown query parameter `{}`; use profile and min_ttl",
                                    other.escape_debug()
                                ),
                            );
                        }
                    }
                }
                reply::<TokenReply>(handler::token(shared, profile.as_deref(), min_ttl).await)
            }
            "/v1/status" => reply::<StatusReply>(handler::status(shared, None)),
            _ => error(
                404,
                ErrorCode::BadRequest,
                "no such endpoint; try GET /v1/token?profile=NAME&min_ttl=SECS or GET /v1/status",
            ),
        }
    }

    fn reply<T: serde::Serialize>(r: Result<T, WireError>) -> (u16, Vec<u8>) {
        let status = match &r {
            Ok(_) => 200,
            Err(e) => status_of(e.code),
        };
        let mut body = Vec::new();
        handler::respond(&mut body, r);
        (status, body)
    }

    fn error(status: u16, code: ErrorCode, message: &str) -> (u16, Vec<u8>) {
        let mut body = Vec::new();
        handler::write_err(&mut body, &WireError::new(code, message));
        (status, body)
    }

    /// The HTTP status for an error code (documented in docs/PROTOCOL.md).
    pub(crate) fn status_of(code: ErrorCode) -> u16 {
        match code {
            ErrorCode::BadRequest | ErrorCode::UnsupportedVersion => 400,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::UnknownProfile => 404,
            ErrorCode::ProfileExists => 409,
            ErrorCode::LineTooLong => 431,
            ErrorCode::ConfigError | ErrorCode::Internal => 500,
            ErrorCode::CredentialsRejected => 502,
            ErrorCode::IssuerUnavailable | ErrorCode::Busy | ErrorCode::ShuttingDown => 503,
        }
    }

    fn reason(status: u16) -> &'static str {
        match status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Error",
        }
    }
}
