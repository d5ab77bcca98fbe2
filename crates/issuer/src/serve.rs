//! The accept loop: one task per connection, a way for a handler to reset its
//! own connection, and a shutdown that does not wait for hung requests.

#[cfg(unix)]
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// Connections served at once; further ones are closed at once.
const MAX_CONNECTIONS: usize = 512;

/// A client that sends no complete request head within this time is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Handed to every request of a connection (as an extension) so a handler can
/// end the connection with a TCP reset.
#[derive(Clone)]
pub(crate) struct ConnControl {
    reset: Arc<Notify>,
}

impl ConnControl {
    /// Asks the connection task to drop the connection with a TCP RST.
    pub fn reset(&self) {
        self.reset.notify_one();
    }
}

/// Serves `router` on `listener` until `shutdown` changes or its sender is
/// dropped; then closes the listener and drops every connection, answered or not.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        tracing::warn!("more than {MAX_CONNECTIONS} connections; dropping a new one");
                        continue;
                    };
                    let router = router.clone();
                    connections.spawn(async move {
                        connection(stream, router).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn connection(stream: TcpStream, router: Router) {
    // a second descriptor for the socket, so its linger option can be set
    // while hyper owns the stream
    #[cfg(unix)]
    let twin = stream.as_fd().try_clone_to_owned().ok();
    let _ = stream.set_nodelay(true);
    let control = ConnControl {
        reset: Arc::new(Notify::new()),
    };
    let reset = control.reset.clone();
    let service = router.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(control.clone());
        request
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!("connection ended with an error: {e}");
            }
        }
        _ = reset.notified() => {
            // with a zero linger time, closing the last descriptor sends RST;
            // elsewhere the connection is just dropped
            #[cfg(unix)]
            if let Some(fd) = &twin
                && let Err(e) = rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO))
            {
                tracing::warn!("cannot set SO_LINGER for a reset: {e}");
            }
        }
    }
    #[cfg(unix)]
    drop(twin);
}
