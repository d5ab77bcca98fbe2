//! One proxied request: checks, the profile's token, the upstream call with
//! both bodies streamed, and one refresh-and-retry on an upstream 401.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{ProxyState, body_error};
use crate::daemon::config::{ClientAuthorization, ProxyConfig};
use crate::daemon::oauth::{ApiBody, BoxError, Quiet};
use crate::protocol::ErrorCode;

/// The body of every answer the proxy gives.
pub(super) type ProxyBody = http_body_util::combinators::BoxBody<Bytes, super::BoxError>;

/// Request bodies up to this size (with a `Content-Length`) are read whole,
/// so the request can be replayed after a 401; larger ones are streamed.
const REPLAY_LIMIT: u64 = 64 * 1024;
/// A token with less than this left is not sent: it could expire before the
/// API sees it. Kept short so that short-lived tokens still qualify; an
/// expiry in flight ends in a 401, and the retry.
const PROXY_MIN_TTL: Duration = Duration::from_secs(5);
/// How long a request may wait for a token while the issuer is failing.
const TOKEN_WAIT: Duration = Duration::from_secs(10);

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// and the proxy's own: never forwarded either way.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Answers one request from a peer that passed the uid check.
pub(super) async fn handle(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<ProxyBody> {
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let config = state.config();
    match forward(&state, &config, req).await {
        Ok(r) => r,
        Err((status, message)) => {
            if status.is_server_error() {
                state.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(listen = %config.listen, %status, "proxy: {message}");
            answer(status, &message)
        }
    }
}

type Failure = (StatusCode, String);

async fn forward(
    state: &ProxyState,
    config: &ProxyConfig,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Failure> {
    let (parts, body) = req.into_parts();
    let Some(pq) = parts
        .uri
        .path_and_query()
        .filter(|_| parts.uri.scheme().is_none())
    else {
        return Err((
            StatusCode::BAD_REQUEST,
            "send requests in origin form (GET /path HTTP/1.1), not as to a forward proxy".into(),
        ));
    };
    if parts.method == Method::CONNECT || is_upgrade(&parts.headers) {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT and protocol upgrades are not proxied".into(),
        ));
    }
    check_path(config, pq.path())?;
    if parts.headers.contains_key(header::AUTHORIZATION)
        && config.client_authorization == ClientAuthorization::Refuse
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "this proxy adds the Authorization header itself (client_authorization = \"refuse\"); \
             send the request without one"
                .into(),
        ));
    }
    let url = upstream_url(&config.upstream, pq.path(), pq.query());
    let uri: http::Uri = url.as_str().parse().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "the request's path cannot be sent to the upstream".to_string(),
        )
    })?;
    let headers = forwarded_headers(&parts.headers);
    let mut body = RequestBody::read(body, &parts.headers).await?;

    let client = state
        .http(config)
        .map_err(|e| (StatusCode::BAD_GATEWAY, e))?;
    let mut token = token(state, config, false).await?;
    let mut retried = false;
    loop {
        let mut h = headers.clone();
        let bearer = format!("Bearer {}", token.access_token.expose());
        let mut value = HeaderValue::from_str(&bearer).map_err(|_| {
            (
                StatusCode::BAD_GATEWAY,
                "the token is not a header value".into(),
            )
        })?;
        value.set_sensitive(true);
        h.insert(header::AUTHORIZATION, value);
        let mut request = Request::new(body.take());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = h;
        let resp = client.send(request).await.map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                format!(
                    "the API at {} did not answer: {}",
                    config.upstream, e.message
                ),
            )
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED && !retried && body.replayable() {
            // the token was refused: a new one, once, then the request again
            retried = true;
            state.counters.refreshes.fetch_add(1, Ordering::Relaxed);
            token = token_after_401(state, config, &token).await?;
            continue;
        }
        return Ok(relay(resp));
    }
}

/// The profile's token: a cached one, or with `refresh` a new one.
async fn token(
    state: &ProxyState,
    config: &ProxyConfig,
    refresh: bool,
) -> Result<crate::protocol::TokenReply, Failure> {
    let engine = &state.engine;
    let r = if refresh {
        engine
            .refresh_within(Some(&config.profile), Some(TOKEN_WAIT))
            .await
    } else {
        engine
            .token_within(Some(&config.profile), PROXY_MIN_TTL, TOKEN_WAIT)
            .await
    };
    r.map_err(|e| {
        let status = match e.code {
            ErrorCode::IssuerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        (
            status,
            format!("no token for profile \"{}\": {}", config.profile, e.message),
        )
    })
}

/// After an upstream 401: the current token if another request has already
/// replaced the refused one, else a refresh (single-flight in the engine).
async fn token_after_401(
    state: &ProxyState,
    config: &ProxyConfig,
    refused: &crate::protocol::TokenReply,
) -> Result<crate::protocol::TokenReply, Failure> {
    let current = token(state, config, false).await?;
    if current.access_token.expose() != refused.access_token.expose() {
        return Ok(current);
    }
    token(state, config, true).await
}

/// The upstream's answer, streamed back with its status and headers (a
/// redirect included: it is the client's to follow).
fn relay(resp: Response<Quiet<Incoming>>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(body_error).boxed())
}

/// A plain-text answer of the proxy itself.
pub(super) fn answer(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("ce-authd proxy: {message}\n")))
            .map_err(body_error)
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    r
}

/// The request body: read whole when small (so it can be sent again after
/// a 401), else streamed once.
enum RequestBody {
    Whole(Bytes),
    Stream(Option<Incoming>),
}

impl RequestBody {
    async fn read(body: Incoming, headers: &HeaderMap) -> Result<RequestBody, Failure> {
        let chunked = headers.contains_key(header::TRANSFER_ENCODING);
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match (chunked, len) {
            (false, None) => Ok(RequestBody::Whole(Bytes::new())),
            (false, Some(n)) if n <= REPLAY_LIMIT => {
                let bytes = Limited::new(body, REPLAY_LIMIT as usize)
                    .collect()
                    .await
                    .map_err(|e| {
                        (
                            StatusCode::BAD_REQUEST,
                            format!("could not read the request body: {e}"),
                        )
                    })?
                    .to_bytes();
                Ok(RequestBody::Whole(bytes))
            }
            _ => Ok(RequestBody::Stream(Some(body))),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, RequestBody::Whole(_))
    }

    /// The body for the next upstream request.
    fn take(&mut self) -> ApiBody {
        match self {
            RequestBody::Whole(b) => Full::new(b.clone()).map_err(|e| match e {}).boxed(),
            RequestBody::Stream(s) => match s.take() {
                Some(incoming) => incoming.map_err(BoxError::from).boxed(),
                None => Full::new(Bytes::new()).map_err(|e| match e {}).boxed(),
            },
        }
    }
}

/// `upstream` with the request's path appended to its path, and the
/// request's query. Only the path and query are parsed: the upstream's host
/// was checked once, with the configuration.
fn upstream_url(upstream: &url::Url, path: &str, query: Option<&str>) -> url::Url {
    let mut url = upstream.clone();
    let joined = format!("{}{path}", upstream.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_query(query);
    url
}

/// Refuses paths outside `allow_paths`, and any path that could step out of
/// a prefix once the upstream normalises it.
fn check_path(config: &ProxyConfig, path: &str) -> Result<(), Failure> {
    if config.allow_paths.is_empty() {
        return Ok(());
    }
    let lower = path.to_ascii_lowercase();
    let sneaky = path.split('/').any(|seg| seg == ".." || seg == ".")
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\');
    if !sneaky
        && config
            .allow_paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    {
        return Ok(());
    }
    Err((
        StatusCode::FORBIDDEN,
        format!(
            "{} is not among this proxy's allow_paths ({})",
            path.escape_debug(),
            config.allow_paths.join(", ")
        ),
    ))
}

/// The request headers to send upstream: without hop-by-hop headers, those
/// `Connection` names, `Host` (set from the upstream URL) and the client's
/// `Authorization`.
fn forwarded_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut h = incoming.clone();
    strip_hop_by_hop(&mut h);
    h.remove(header::HOST);
    h.remove(header::AUTHORIZATION);
    h
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::ProxyListen;

    fn config(allow: &[&str]) -> ProxyConfig {
        ProxyConfig {
            listen: ProxyListen::Tcp("127.0.0.1:1".parse().unwrap()),
            upstream: url::Url::parse("https://api.example.org/v1/").unwrap(),
            profile: "p".into(),
            allow_paths: allow.iter().map(|s| s.to_string()).collect(),
            client_authorization: ClientAuthorization::Replace,
        }
    }

    #[test]
    fn paths_are_appended_to_the_upstream() {
        let u = url::Url::parse("https://api.example.org/v1/").unwrap();
        assert_eq!(
            upstream_url(&u, "/users/me", Some("x=1")).as_str(),
            "https://api.example.org/v1/users/me?x=1"
        );
        let u = url::Url::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            upstream_url(&u, "/a", None).as_str(),
            "http://127.0.0.1:9/a"
        );
        // the same URL as parsing the joined text would give, encodings kept
        let u = url::Url::parse("https://api.example.org/v1?drop=me").unwrap();
        for (path, query) in [
            ("/a%20b/c", Some("q=%2F&r=1")),
            ("/x/../y", None),
            ("/", Some("")),
            ("/\u{e9}t\u{e9}", Some("v=\u{e9}")),
        ] {
            let text = match query {
                Some(q) => format!("https://api.example.org/v1{path}?{q}"),
                None => format!("https://api.example.org/v1{path}"),
            };
            assert_eq!(
                upstream_url(&u, path, query),
                url::Url::parse(&text).unwrap(),
                "{path}"
            );
        }
    }

    #[test]
    fn allow_paths_cannot_be_stepped_out_of() {
        let c = config(&["/api/v1/"]);
        assert!(check_path(&c, "/api/v1/users/me").is_ok());
        for bad in [
            "/admin",
            "/api/v1/../../admin",
            "/api/v1/%2e%2e/admin",
            "/api/v1/..%2Fadmin",
            "/api/v1/./x",
            "/api/v1\\..\\admin",
        ] {
            assert_eq!(
                check_path(&c, bad).unwrap_err().0,
                StatusCode::FORBIDDEN,
                "{bad}"
            );
        }
        assert!(check_path(&config(&[]), "/anything/../at-all").is_ok());
    }

    #[test]
    fn hop_by_hop_headers_host_and_authorization_are_not_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "127.0.0.1:8787"),
            ("authorization", "Bearer client-token"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("accept", "text/csv"),
            ("content-length", "3"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let f = forwarded_headers(&h);
        let names: Vec<&str> = f.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "content-length"], "{f:?}");
    }
}
