//! The socket server: accept loop, per-connection tasks, limits and shutdown.
//!
//! Shaped like mini-redis: [`run`] takes the listener and a shutdown future,
//! caps concurrent connections with a semaphore, runs one task per connection
//! and, on shutdown, stops accepting and lets in-flight requests finish for a
//! bounded time. A connection whose first bytes are an HTTP request line is
//! served one minimal HTTP request (`GET /v1/token`, `GET /v1/status`).
//!
//! The daemon runs it with [`run_apart`]: on a thread of its own with a
//! single-threaded runtime, answering `token` from the cache there and
//! handing every other request to the daemon's main runtime, so the token
//! path never waits behind a refresh, a proxied download or a TLS handshake,
//! and never pays for hand-offs between worker threads.

pub mod framing;
mod http;
pub mod listener;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use zeroize::{Zeroize, Zeroizing};

use crate::daemon::config::DaemonSettings;

use crate::daemon::ops::{self, Shared};
use crate::framing::{FrameError, ZeroingReader};
use crate::protocol::{ErrorCode, MAX_LINE, WireError};
use framing::AsyncLines;
use listener::{self as ipc, ReadHalf, Stream, WriteHalf};

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
/// Bytes read from a connection at a time: a few hundred `token` requests,
/// and small enough that a thousand idle connections stay cheap.
const READ_BUFFER: usize = 4 * 1024;
/// A client over the connection cap gets this long to take its `busy` reply.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

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
/// Every request runs on the caller's runtime.
///
/// The socket file is removed when the listener is dropped here.
pub async fn run(
    listener: listener::Listener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve(listener, shared, shutdown, None).await
}

/// [`run`] on a new thread with a single-threaded runtime of its own, which
/// answers `token` requests the cache can satisfy and hands every other
/// request to the caller's runtime (where refreshers, proxies and the HTTP
/// client live). Resolves when that thread has stopped serving.
pub async fn run_apart(
    listener: listener::Listener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ops = Handle::current();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ce-authd-socket".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| rt.block_on(serve(listener, shared, shutdown, Some(ops))));
            let _ = done_tx.send(served);
        })?;
    done_rx.await.unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "the socket server's thread ended early",
        ))
    })
}

/// What the connections of one server share.
struct Ctx {
    shared: Arc<Shared>,
    limits: Limits,
    /// Where requests other than a cached `token` run (`None`: right here).
    ops: Option<Handle>,
}

async fn serve(
    listener: listener::Listener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
    ops: Option<Handle>,
) -> std::io::Result<()> {
    let mut listener = listener;
    let max = connection_cap(
        shared
            .settings
            .max_connections
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
    );
    let permits = Arc::new(Semaphore::new(max));
    let ctx = Arc::new(Ctx {
        limits: Limits::from(&shared.settings),
        shared: shared.clone(),
        ops,
    });
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
                        tasks.spawn(connection(stream, ctx.clone(), stop_rx.clone(), permit));
                    }
                    Err(_) => {
                        busy_log.refused(max);
                        let e = WireError::new(
                            ErrorCode::Busy,
                            format!("the daemon is serving {max} connections; try again shortly"),
                        );
                        let mut line = Vec::new();
                        crate::protocol::write_err(&mut line, &e);
                        let _ =
                            tokio::time::timeout(BUSY_WRITE_TIMEOUT, (&stream).write_all(&line))
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
    mut stream: Stream,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let limits = ctx.limits;
    let shared = &ctx.shared;
    let checked = ipc::check_peer(&stream, &shared.settings.allow_uids);
    let (rd, mut wr) = ipc::halves(&mut stream);
    let uid = match checked {
        Ok(uid) => uid,
        Err(refused) => {
            tracing::warn!(reason = %refused, "connection refused");
            let e = WireError::new(ErrorCode::PermissionDenied, refused.to_string());
            let mut out = Vec::new();
            crate::protocol::write_err(&mut out, &e);
            flush(&mut wr, &mut out, limits.write).await;
            return;
        }
    };
    tracing::debug!(uid, "connection accepted");
    let role = ops::Role::of(uid);
    // made once and polled on every wait: it stays registered with the
    // channel instead of joining and leaving it per request
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);

    // requests may carry secrets (add, login): bytes are zeroed once consumed
    let mut reader = ZeroingReader::with_capacity(READ_BUFFER, rd);
    // peek at the first bytes: a JSON line starts with `{`, HTTP with a method name
    let first = tokio::select! {
        _ = &mut stopped => return,
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
        http::serve(&mut wr, &mut reader, shared, limits).await;
        tracing::debug!(uid, "http connection closed");
        return;
    }

    let mut lines = AsyncLines::new(reader);
    let mut out = Vec::with_capacity(1024);
    // one timer for the connection's life, moved only when it fires early
    let timer = tokio::time::sleep(limits.idle);
    tokio::pin!(timer);
    let reason = loop {
        // answer a pipelined batch with one write, but never leave a reply
        // waiting while we wait for more input
        if !out.is_empty()
            && !lines.has_buffered_line()
            && !flush(&mut wr, &mut out, limits.write).await
        {
            break "client does not read its replies";
        }
        let res = tokio::select! {
            biased;
            _ = &mut stopped => break "server stopping",
            r = lines.read_line_with_timer(&mut timer, limits.idle, limits.line) => r,
        };
        match res {
            Ok(Some(line)) => {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // blank lines are not requests and get no reply
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                answer(&ctx, line, &mut out, role).await;
                if out.len() >= OUT_HIGH_WATER && !flush(&mut wr, &mut out, limits.write).await {
                    break "client does not read its replies";
                }
            }
            Ok(None) => break "closed by client",
            Err(FrameError::TooLong(cap)) => {
                let e = WireError::new(
                    ErrorCode::LineTooLong,
                    format!("request line longer than {cap} bytes; closing the connection"),
                );
                crate::protocol::write_err(&mut out, &e);
                break "line too long";
            }
            Err(FrameError::Idle) => break "idle timeout",
            Err(FrameError::Stalled) => break "line not finished in time",
            Err(FrameError::Truncated) => break "closed mid-line",
            Err(FrameError::Io(_)) => break "read error",
        }
    };
    flush(&mut wr, &mut out, limits.write).await;
    tracing::debug!(uid, reason, "connection closed");
}

/// Appends the reply to one request line: what needs no waiting (a cached
/// token, `hello`, `status`, errors) right here, every other request where
/// the server's `ops` runtime says.
async fn answer(ctx: &Ctx, line: &[u8], out: &mut Vec<u8>, role: ops::Role) {
    let Some(req) = ops::answer_now(&ctx.shared, line, out, role) else {
        return;
    };
    let Some(rt) = &ctx.ops else {
        return ops::handle(&ctx.shared, req, out).await;
    };
    let shared = ctx.shared.clone();
    let task = rt.spawn(async move {
        // replies may carry tokens: zeroed when dropped, once copied out
        let mut reply = Zeroizing::new(Vec::with_capacity(1024));
        ops::handle(&shared, req, &mut reply).await;
        reply
    });
    match task.await {
        Ok(reply) => out.extend_from_slice(&reply),
        Err(e) => {
            tracing::error!(error = %e, "a request failed inside the daemon");
            let e = WireError::new(ErrorCode::Internal, "the request failed inside the daemon");
            crate::protocol::write_err(out, &e);
        }
    }
}

/// Writes and clears `out` within `timeout`; false when the client did not take it.
async fn flush<W: AsyncWrite + Unpin>(w: &mut W, out: &mut Vec<u8>, timeout: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
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
