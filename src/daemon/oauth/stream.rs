//! The HTTP client of proxied API requests: hyper-util's pooled client over
//! the same TLS roots and proxy rules as token requests, bodies streamed
//! both ways, with a connect timeout and a limit on silence, not on length.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::USER_AGENT;
use super::http::{ProxyRule, untrusted_hint};
use crate::daemon::error_chain;

/// Errors of bodies and connections, as hyper and http-body pass them on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body for [`ApiClient::send`]: whole or streamed.
pub type ApiBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// How long idle connections to an API are kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// A pooled client for one profile's API requests. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    inner: hyper_util::client::legacy::Client<Connector, ApiBody>,
    /// The longest wait for the answer's head, and between two reads of its body.
    silence: Duration,
    roots: Arc<str>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// Why an API request got no answer, for the proxy's 502.
#[derive(Debug)]
pub struct SendError {
    /// What failed, with the causes and, for a certificate, how to trust it.
    pub message: String,
}

impl ApiClient {
    pub(super) fn new(
        tls: Arc<rustls::ClientConfig>,
        proxy: Option<ProxyRule>,
        connect_timeout: Duration,
        silence: Duration,
        roots: Arc<str>,
    ) -> ApiClient {
        let mut http = HttpConnector::new();
        // https is wrapped in TLS above this connector
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let route = Route {
            http,
            proxy: proxy.map(|p| Arc::new(p.matcher())),
        };
        let mut tls = (*tls).clone();
        // the builder sets ALPN from the enabled HTTP versions, and insists
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(route);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(Connector {
                https,
                timeout: connect_timeout,
            });
        ApiClient {
            inner,
            silence,
            roots,
        }
    }

    /// Sends `req` and returns the answer's head; its body streams in as
    /// the caller reads it. No redirect is followed. A `User-Agent` is
    /// added when the request has none.
    pub async fn send(
        &self,
        mut req: Request<ApiBody>,
    ) -> Result<Response<Quiet<Incoming>>, SendError> {
        if !req.headers().contains_key(header::USER_AGENT) {
            req.headers_mut().insert(
                header::USER_AGENT,
                http::HeaderValue::from_static(USER_AGENT),
            );
        }
        let resp = match tokio::time::timeout(self.silence, self.inner.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.failure(&e)),
            Err(_) => {
                return Err(SendError {
                    message: format!("no answer within {} s", self.silence.as_secs()),
                });
            }
        };
        let silence = self.silence;
        Ok(resp.map(|body| Quiet::new(body, silence)))
    }

    fn failure(&self, e: &hyper_util::client::legacy::Error) -> SendError {
        let mut message = error_chain(e);
        if message.contains("certificate") {
            message.push_str(&untrusted_hint(&self.roots));
        }
        SendError { message }
    }
}

/// The connection to an API: direct, or through a CONNECT tunnel when the
/// proxy rule says so; then TLS for https.
#[derive(Clone)]
struct Route {
    http: HttpConnector,
    proxy: Option<Arc<Matcher>>,
}

type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl tower_service::Service<Uri> for Route {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // HttpConnector is always ready
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let via = self.proxy.as_ref().and_then(|m| m.intercept(&dst));
        match via {
            Some(via) => {
                let mut tunnel = Tunnel::new(via.uri().clone(), http);
                if let Some(auth) = via.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    tower_service::Service::call(&mut tunnel, dst)
                        .await
                        .map_err(|e| format!("through HTTPS_PROXY: {}", error_chain(&e)).into())
                })
            }
            None => Box::pin(async move {
                tower_service::Service::call(&mut http, dst)
                    .await
                    .map_err(Into::into)
            }),
        }
    }
}

/// [`Route`] with TLS, the whole of it (tunnel and handshake included)
/// bounded by the connect timeout.
#[derive(Clone)]
struct Connector {
    https: hyper_rustls::HttpsConnector<Route>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.https.call(dst);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(r) => r,
                Err(_) => Err(format!("no connection within {} s", timeout.as_secs_f32()).into()),
            }
        })
    }
}

/// A response body that fails once it has been silent for longer than a
/// limit: a download may take hours, a stalled one is cut. The timer is
/// re-armed only when it fires early, not on every frame.
pub struct Quiet<B> {
    inner: B,
    limit: Duration,
    last: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<B> Quiet<B> {
    fn new(inner: B, limit: Duration) -> Quiet<B> {
        Quiet {
            inner,
            limit,
            last: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<B> Body for Quiet<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.last = Instant::now();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        while this.deadline.as_mut().poll(cx).is_ready() {
            let due = this.last + this.limit;
            if Instant::now() >= due {
                return Poll::Ready(Some(Err(format!(
                    "the API sent nothing for {} s",
                    this.limit.as_secs()
                )
                .into())));
            }
            this.deadline.as_mut().reset(due);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body whose frames come from a channel, when the test sends them.
    struct Fed(mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_streams_on_and_a_silent_one_is_cut() {
        let (tx, rx) = mpsc::channel(1);
        let mut body = Quiet::new(Fed(rx), Duration::from_secs(5));
        // a frame every 4 s for a minute: longer than the limit in all, never silent that long
        tokio::spawn(async move {
            for _ in 0..15 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
            // then silence, the sender kept open
            std::future::pending::<()>().await;
        });
        let start = Instant::now();
        for _ in 0..15 {
            let frame = body.frame().await.expect("a frame").expect("no error");
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let e = body.frame().await.expect("an end").unwrap_err();
        assert!(e.to_string().contains("nothing for 5 s"), "{e}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(65) && took < Duration::from_secs(66),
            "{took:?}"
        );
    }
}
