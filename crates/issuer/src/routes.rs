//! The issuer's HTTP endpoints: token, JWKS, users/me, client creation, and
//! the test controls under `/_test/`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use uuid::Uuid;

use super::Fault;
use super::client_auth;
use super::errors::{OAuthError, unauthorized};
use super::faults::{self, FaultSpec};
use super::form::Form;
use super::serve::ConnControl;
use super::state::{Shared, TOKEN_PATH, lock};
use super::token;

/// Largest request body read, well above any honest token request.
const MAX_BODY: usize = 64 * 1024;

/// What the request log says about a token request (no secrets, no tokens).
#[derive(Clone, Debug, Default)]
struct TokenLog {
    grant: String,
    client_id: Option<String>,
    /// Client authentication method, once known.
    method: Option<&'static str>,
    fault: Option<&'static str>,
}

/// The issuer's routes over `shared`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route(TOKEN_PATH, post(token_endpoint))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/v1/users/me", get(users_me))
        .route("/api/v1/clients/", post(create_client))
        .route("/api/v1/clients", post(create_client));
    if shared.test_key.is_some() {
        let controls = Router::new()
            .route("/_test/counters", get(test_counters))
            .route("/_test/faults", post(test_faults).delete(test_clear_faults))
            .route("/_test/revoke", post(test_revoke))
            .route("/_test/reset", post(test_reset))
            .route_layer(middleware::from_fn_with_state(
                shared.clone(),
                require_test_key,
            ));
        router = router.merge(controls);
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(log_request))
        .with_state(shared)
}

/// Lets a `/_test/` request through only with the test key: any local user
/// can reach the port, and the controls can fault and revoke clients.
async fn require_test_key(State(s): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let how = "send the test_key of the issuer's ready line as `Authorization: Bearer KEY` or `X-CE-Test-Key: KEY`";
    let verdict = s
        .test_key
        .as_ref()
        .and_then(|key| faults::presented_key_matches(request.headers(), key));
    match verdict {
        Some(true) => next.run(request).await,
        Some(false) => (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({
                "error": "forbidden",
                "error_description": format!("wrong test key for the test controls; {how}"),
            })),
        )
            .into_response(),
        None => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({
                    "error": "unauthorized",
                    "error_description": format!("the test controls need a key; {how}"),
                })),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ce-authd issuer test controls\""),
            );
            response
        }
    }
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // the path only: a query string could carry anything
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    match response.extensions().get::<TokenLog>() {
        Some(t) => tracing::info!(
            %method,
            %path,
            status,
            grant = %t.grant,
            client_id = t.client_id.as_deref().unwrap_or("-"),
            method = t.method.unwrap_or("-"),
            fault = t.fault.unwrap_or("-"),
            "request"
        ),
        None => tracing::info!(%method, %path, status, "request"),
    }
    response
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"detail": "Not Found"})),
    )
        .into_response()
}

fn fault_name(fault: &Fault) -> &'static str {
    match fault {
        Fault::Status { .. } => "status",
        Fault::Delay(_) => "delay",
        Fault::Hang => "hang",
        Fault::Reset => "reset",
        Fault::Malformed => "malformed",
        Fault::Truncated => "truncated",
        Fault::MissingField(_) => "missing_field",
        Fault::Override(_) => "override",
    }
}

/// `POST /api/v1/auth/jwt/token`
async fn token_endpoint(
    State(s): State<Arc<Shared>>,
    Extension(conn): Extension<ConnControl>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&headers, &body);
    let grant = match &form {
        Ok(f) => f
            .get("grant_type")
            .unwrap_or("(missing)")
            .chars()
            .take(64)
            .collect(),
        Err(_) => "(unreadable)".to_owned(),
    };
    let fault = lock(&s.controls).on_token_request(&grant);
    let mut log = TokenLog {
        grant,
        client_id: None,
        method: None,
        fault: fault.as_ref().map(fault_name),
    };
    match &fault {
        Some(Fault::Status {
            status,
            retry_after,
        }) => return with_log(status_fault(*status, *retry_after), log),
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::Hang) => {
            tracing::info!(grant = %log.grant, "token request held open (hang fault)");
            // the connection task drops this future when the issuer stops
            return std::future::pending().await;
        }
        Some(Fault::Reset) => {
            tracing::info!(grant = %log.grant, "token request answered by a TCP reset (reset fault)");
            conn.reset();
            return std::future::pending().await;
        }
        Some(Fault::Malformed) => {
            let response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response();
            return with_log(response, log);
        }
        _ => {}
    }
    let response = match grant_token(&s, &headers, form, &mut log).await {
        Ok(issued) => deliver(&s, issued, fault.as_ref()),
        Err(e) if fault == Some(Fault::Truncated) => truncated(&e.body()),
        Err(e) => e.into_response(),
    };
    with_log(response, log)
}

fn with_log(mut response: Response, log: TokenLog) -> Response {
    response.extensions_mut().insert(log);
    response
}

/// A scripted error status, with an RFC 6749 body.
fn status_fault(status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (error, challenge) = match status {
        400 => ("invalid_request", None),
        401 => ("invalid_client", Some("Basic realm=\"Climate Engine\"")),
        429 | 503 => ("temporarily_unavailable", None),
        _ => ("server_error", None),
    };
    let body = serde_json::json!({
        "error": error,
        "error_description": format!("injected fault: HTTP {status}"),
    });
    let mut response = (code, Json(body)).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(c) = challenge {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
    }
    response
}

/// A JSON body cut off half-way, answered with 200.
fn truncated(body: &serde_json::Value) -> Response {
    let text = body.to_string();
    let mut cut = text.len() / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text[..cut].to_owned(),
    )
        .into_response()
}

/// A token about to be delivered.
struct Issued {
    body: serde_json::Map<String, serde_json::Value>,
    /// Client authentication method, `none` for the password grant.
    method: &'static str,
}

async fn grant_token(
    s: &Shared,
    headers: &HeaderMap,
    form: Result<Form, OAuthError>,
    log: &mut TokenLog,
) -> Result<Issued, OAuthError> {
    let form = form?;
    let grant = form.get("grant_type").ok_or_else(|| {
        OAuthError::invalid_request(
            "parameter grant_type is missing (use password or client_credentials)",
        )
    })?;
    let (user_id, method) = match grant {
        "password" => {
            let username = form.require("username")?;
            let password = form.require("password")?;
            let user = lock(&s.store).check_password(username, password);
            let user = user.ok_or_else(|| OAuthError::invalid_grant("wrong e-mail or password"))?;
            log.method = Some("none");
            (user, "none")
        }
        "client_credentials" => {
            let presented = client_auth::presented(headers, &form)?;
            log.method = Some(presented.method().name());
            if let client_auth::Presented::Secret { client_id, .. } = &presented {
                log.client_id = Some(client_id.clone());
            }
            let authenticated = client_auth::authenticate(
                &mut lock(&s.store),
                presented,
                &s.audiences,
                token::now(),
            )?;
            log.client_id = Some(authenticated.client_id);
            (authenticated.user_id, authenticated.method.name())
        }
        _ => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant_type {} is not supported; use password or client_credentials",
                log.grant
            )));
        }
    };
    let key = s.signing_key().await?;
    let (access_token, claims) = token::mint(&key, &s.base_url, user_id, token::now(), s.lifetime)
        .map_err(|e| OAuthError::server_error(format!("cannot sign the token: {e}")))?;
    let mut body = serde_json::Map::new();
    body.insert("access_token".into(), access_token.into());
    body.insert("token_type".into(), "bearer".into());
    body.insert("expires_at".into(), claims.exp.into());
    body.insert("expires_in".into(), s.lifetime.into());
    Ok(Issued { body, method })
}

/// Sends a token answer, altered by a body fault if one applies.
fn deliver(s: &Shared, issued: Issued, fault: Option<&Fault>) -> Response {
    let mut body = issued.body;
    match fault {
        Some(Fault::Truncated) => return truncated(&serde_json::Value::Object(body)),
        Some(Fault::MissingField(field)) => {
            body.remove(field);
        }
        Some(Fault::Override(fields)) => {
            for (k, v) in fields.as_object().into_iter().flatten() {
                if v.is_null() {
                    body.remove(k);
                } else {
                    body.insert(k.clone(), v.clone());
                }
            }
        }
        _ => {}
    }
    if body.get("access_token").is_some_and(|t| t.is_string()) {
        lock(&s.controls).on_issued(issued.method);
    }
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The user a valid `Authorization: Bearer` access token belongs to.
async fn bearer_user(s: &Shared, headers: &HeaderMap) -> Option<Uuid> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = s.signing_key().await.ok()?;
    let user_id = token::verify(&key, &s.base_url, token.trim()).ok()?.user_id;
    lock(&s.store).user(user_id).map(|u| u.id)
}

/// `GET /api/v1/users/me`
async fn users_me(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(user_id) = bearer_user(&s, &headers).await else {
        return unauthorized();
    };
    let store = lock(&s.store);
    let Some(user) = store.user(user_id) else {
        return unauthorized();
    };
    Json(serde_json::json!({
        "id": user.id,
        "email": user.email,
        "is_active": true,
        "is_superuser": false,
        "is_verified": true,
    }))
    .into_response()
}

/// `POST /api/v1/clients/`: a new client for the token's user; the secret is shown once.
async fn create_client(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(user_id) = bearer_user(&s, &headers).await else {
        return unauthorized();
    };
    let Some((client_id, secret)) = lock(&s.store).create_client(user_id) else {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"detail": format!(
                "this user has {} API clients, the most the emulated issuer keeps; \
                 use one of them, or restart the issuer",
                crate::MAX_CLIENTS_PER_USER
            )})),
        )
            .into_response();
    };
    tracing::info!(%client_id, %user_id, "client created");
    let mut response = (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "user_id": user_id,
            "client_id": client_id,
            "client_secret": secret.expose_secret(),
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /.well-known/jwks.json`
async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    match s.signing_key().await {
        Ok(key) => Json(serde_json::json!({"keys": [key.jwk()]})).into_response(),
        Err(e) => e.into_response(),
    }
}

fn bad_control(description: String) -> Response {
    OAuthError::invalid_request(description).into_response()
}

/// `GET /_test/counters`
async fn test_counters(State(s): State<Arc<Shared>>) -> Response {
    Json(lock(&s.controls).counters.clone()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    fault: FaultSpec,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

/// `POST /_test/faults` with `{"fault": {...}, "count": n}`
async fn test_faults(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_control(format!(
                "expected {{\"fault\": {{\"kind\": ...}}, \"count\": n}}: {e}"
            ));
        }
    };
    let fault = match Fault::try_from(request.fault) {
        Ok(f) => f,
        Err(e) => return bad_control(e),
    };
    let mut controls = lock(&s.controls);
    controls.inject(fault, request.count);
    Json(serde_json::json!({"pending": controls.pending()})).into_response()
}

/// `DELETE /_test/faults`: drops queued faults, keeping the counters.
async fn test_clear_faults(State(s): State<Arc<Shared>>) -> Response {
    let cleared = lock(&s.controls).clear_faults();
    Json(serde_json::json!({"cleared": cleared})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    client_id: String,
}

/// `POST /_test/revoke` with `{"client_id": "..."}`
async fn test_revoke(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: RevokeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_control(format!("expected {{\"client_id\": \"...\"}}: {e}")),
    };
    if lock(&s.store).revoke(&request.client_id) {
        Json(serde_json::json!({"revoked": request.client_id})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": "not_found",
                "error_description": "no client with this client_id",
            })),
        )
            .into_response()
    }
}

/// `POST /_test/reset`: forgets counters and queued faults.
async fn test_reset(State(s): State<Arc<Shared>>) -> Response {
    lock(&s.controls).reset();
    Json(serde_json::json!({"reset": true})).into_response()
}
