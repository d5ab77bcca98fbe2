//! A stand-in for the Climate Engine API behind the local proxy: an HTTP
//! server on 127.0.0.1 that accepts only bearer tokens signed by the
//! issuer's JWKS key and not expired, and answers 401 otherwise (or when a
//! test asks it to refuse the next requests). It echoes what it received,
//! streams large bodies both ways, and redirects on request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use jsonwebtoken::{DecodingKey, Validation};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub token: Option<String>,
    pub accepted: bool,
}

#[derive(Default)]
struct Counters {
    refuse_next: AtomicU32,
    uploaded: AtomicU64,
}

struct Up {
    key: DecodingKey,
    seen: Mutex<Vec<Seen>>,
    counters: Counters,
}

/// The upstream, served from a runtime of its own.
pub struct Upstream {
    pub addr: SocketAddr,
    up: Arc<Up>,
    _rt: tokio::runtime::Runtime,
}

impl Upstream {
    /// An upstream that trusts the issuer whose JWKS is at `jwks_url`.
    pub fn start(jwks_url: &str) -> Upstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = rt.block_on(async {
            super::issuer::http()
                .get(jwks_url)
                .send()
                .await
                .expect("JWKS")
                .json()
                .await
                .expect("JWKS JSON")
        });
        let key = DecodingKey::from_jwk(&jwks.keys[0]).expect("a JWKS key");
        let up = Arc::new(Up {
            key,
            seen: Mutex::new(Vec::new()),
            counters: Counters::default(),
        });
        let app = axum::Router::new()
            .route("/echo", any(echo))
            .route("/echo/{*rest}", any(echo))
            .route("/bytes/{n}", get(download))
            .route("/upload", post(upload))
            .route("/redirect", get(redirect))
            .with_state(Arc::clone(&up));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Upstream { addr, up, _rt: rt }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` requests with 401 whatever their token.
    pub fn refuse_next(&self, n: u32) {
        self.up.counters.refuse_next.store(n, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.up.seen.lock().unwrap().clone()
    }

    /// Bytes received by `/upload` so far.
    pub fn uploaded(&self) -> u64 {
        self.up.counters.uploaded.load(Ordering::SeqCst)
    }
}

/// Records the request and checks its token: whether it is accepted.
fn check(up: &Up, method: &str, path: &str, headers: &HeaderMap) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let valid = token.as_deref().is_some_and(|t| {
        let mut v = Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_aud = false;
        v.leeway = 0;
        jsonwebtoken::decode::<serde_json::Value>(t, &up.key, &v).is_ok()
    });
    let refused = up
        .counters
        .refuse_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let accepted = valid && !refused;
    up.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
            .collect(),
        token,
        accepted,
    });
    accepted
}

/// The API's answer to a missing, invalid or expired token.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "{\"detail\":\"Could not validate credentials\"}",
    )
        .into_response()
}

async fn echo(State(up): State<Arc<Up>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if !check(&up, parts.method.as_str(), &path, &parts.headers) {
        return unauthorized();
    }
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "host": parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// `n` zero bytes in 64 KiB chunks, generated as they are sent.
async fn download(State(up): State<Arc<Up>>, Path(n): Path<u64>, headers: HeaderMap) -> Response {
    if !check(&up, "GET", "/bytes", &headers) {
        return unauthorized();
    }
    const CHUNK: usize = 64 * 1024;
    let zeros = Bytes::from(vec![0u8; CHUNK]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let zeros = zeros.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK as u64);
            Some((
                Ok::<_, std::io::Error>(zeros.slice(..take as usize)),
                left - take,
            ))
        }
    });
    Response::builder()
        .header(header::CONTENT_LENGTH, n)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Counts the body's bytes as they arrive and answers the total. The token
/// is judged once the body is in, as an API behind a buffering front end
/// does: one that refused early and closed would reset the connection
/// under the rest of the upload, and the client would see no answer at all.
async fn upload(State(up): State<Arc<Up>>, req: Request) -> Response {
    use futures_util::StreamExt;
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => total += c.len() as u64,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    if !check(&up, "POST", "/upload", &parts.headers) {
        return unauthorized();
    }
    up.counters.uploaded.fetch_add(total, Ordering::SeqCst);
    total.to_string().into_response()
}

async fn redirect(State(up): State<Arc<Up>>, headers: HeaderMap) -> Response {
    if !check(&up, "GET", "/redirect", &headers) {
        return unauthorized();
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, "/echo/after-redirect")],
    )
        .into_response()
}
