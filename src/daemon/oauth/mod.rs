//! OAuth2 token requests: grants, client authentication, response parsing, error classes.
//!
//! Every failure is a [`TokenError`] classified [`ErrorClass::Transient`]
//! (worth retrying with backoff) or [`ErrorClass::Permanent`] (retrying will
//! not help until the credentials change); the engine acts on the class.
//! Messages name the endpoint and the issuer's own words, never a secret or token.
//!
//! The HTTP clients (trust roots, proxies, timeouts) are built in `http`;
//! the Climate Engine API calls (`users/me`, client creation) are in [`api`].

pub mod api;
mod http;
mod scrub;
mod stream;

pub use api::{NewClient, create_client, users_me};
pub use http::{ApiClient, Client, HttpClients};
pub use stream::{ApiBody, BoxError, Quiet, SendError};

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;

use crate::daemon::config::{AuthMethod, Grant, Profile};
use crate::daemon::error_chain as chain;
use crate::secret::Secret;
use scrub::Scrub;

/// Largest response body read from the issuer.
const MAX_BODY: usize = 1024 * 1024;
/// A lifetime this long or longer is treated as nonsense (see [`Token`]).
pub const ABSURD_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest `Retry-After` honoured; longer values are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Lifetime of a `client_secret_jwt` assertion.
const ASSERTION_LIFETIME: i64 = 60;
const USER_AGENT: &str = concat!("ce-auth/", env!("CARGO_PKG_VERSION"));

/// Whether a failed request is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connect/timeout errors, 408, 429, 5xx, unreadable bodies: retry with backoff.
    Transient,
    /// The issuer refused the request (invalid_client, invalid_grant, other 4xx,
    /// a non-bearer token): retrying will not help.
    Permanent,
}

/// A failed token (or API) request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    pub class: ErrorClass,
    /// Readable and free of secrets; names the endpoint.
    pub message: String,
    /// The issuer's `Retry-After`, if it sent one (capped at [`MAX_RETRY_AFTER`]).
    pub retry_after: Option<Duration>,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The RFC 6749 `error` code, when the body had one.
    pub oauth_error: Option<String>,
}

impl TokenError {
    fn transient(message: String) -> Self {
        TokenError {
            class: ErrorClass::Transient,
            message,
            retry_after: None,
            status: None,
            oauth_error: None,
        }
    }

    fn permanent(message: String) -> Self {
        TokenError {
            class: ErrorClass::Permanent,
            ..TokenError::transient(message)
        }
    }

    /// True for [`ErrorClass::Transient`].
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

/// Where a token's expiry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirySource {
    ExpiresIn,
    ExpiresAt,
    JwtExp,
    /// The profile's `default_lifetime`.
    Default,
}

/// An access token and when it expires.
///
/// Expiry comes from `expires_in` (counted from when the request was sent),
/// else `expires_at`, else the access token's JWT `exp` (read unverified, for
/// scheduling only), else the configured default lifetime. A source giving a
/// lifetime of a year or more is ignored as nonsense (the next one is used);
/// the first source giving an expiry at or before the request time is an
/// error. A later source with an earlier expiry still in the future lowers it,
/// so a token is never believed to outlive its own `exp`.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: Secret,
    /// Expiry in whole Unix seconds, rounded down so it is never optimistic.
    pub expires_at: i64,
    /// When the request was sent (Unix seconds).
    pub obtained_at: f64,
    pub expiry_source: ExpirySource,
}

impl Token {
    /// Seconds from `obtained_at` to `expires_at`.
    pub fn lifetime(&self) -> f64 {
        self.expires_at as f64 - self.obtained_at
    }
}

/// Requests a token for a profile. `sent_at` is the current wall-clock time
/// (Unix seconds), from which `expires_in` counts.
pub async fn request_token(
    http: &HttpClients,
    profile: &Profile,
    sent_at: f64,
) -> Result<Token, TokenError> {
    let s = profile;
    let client = http.for_profile(s)?;
    let secret = profile.secret.as_ref().ok_or_else(|| {
        TokenError::permanent(format!(
            "profile \"{}\" has no secret loaded; add it again with its secret",
            profile.name
        ))
    })?;
    let mut form: Vec<(&str, &str)> = Vec::with_capacity(8);
    let mut basic: Option<(&str, &str)> = None;
    let assertion;
    match s.grant {
        Grant::Password => {
            form.push(("grant_type", "password"));
            form.push(("username", s.username.as_deref().unwrap_or_default()));
            form.push(("password", secret.expose()));
        }
        Grant::ClientCredentials => {
            let client_id = s.client_id.as_deref().unwrap_or_default();
            form.push(("grant_type", "client_credentials"));
            match s.auth_method.unwrap_or(AuthMethod::ClientSecretJwt) {
                AuthMethod::ClientSecretBasic => basic = Some((client_id, secret.expose())),
                AuthMethod::ClientSecretPost => {
                    form.push(("client_id", client_id));
                    form.push(("client_secret", secret.expose()));
                }
                AuthMethod::ClientSecretJwt => {
                    assertion = client_assertion(client_id, &s.token_url, secret, sent_at)?;
                    form.push(("client_id", client_id));
                    form.push((
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ));
                    form.push(("client_assertion", assertion.expose()));
                }
            }
        }
    }
    for (k, v) in [
        ("scope", &s.scope),
        ("audience", &s.audience),
        ("resource", &s.resource),
    ] {
        if let Some(v) = v {
            form.push((k, v));
        }
    }
    post_token(
        &client,
        &s.token_url,
        &form,
        basic,
        sent_at,
        s.default_lifetime,
    )
    .await
}

/// Requests a token with the password grant (the `login` bootstrap).
pub async fn password_token(
    client: &Client,
    token_url: &str,
    username: &str,
    password: &Secret,
    sent_at: f64,
) -> Result<Token, TokenError> {
    let form = [
        ("grant_type", "password"),
        ("username", username),
        ("password", password.expose()),
    ];
    post_token(
        client,
        token_url,
        &form,
        None,
        sent_at,
        crate::daemon::config::DEFAULT_LIFETIME,
    )
    .await
}

/// Builds the `client_secret_jwt` assertion (OpenID Connect Core 1.0 §9).
pub fn client_assertion(
    client_id: &str,
    token_url: &str,
    secret: &Secret,
    now: f64,
) -> Result<Secret, TokenError> {
    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        jti: String,
        iat: i64,
        exp: i64,
    }
    let iat = now.floor() as i64;
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: token_url,
        jti: uuid::Uuid::new_v4().to_string(),
        iat,
        exp: iat + ASSERTION_LIFETIME,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &key)
        .map(Secret::new)
        .map_err(|e| TokenError::permanent(format!("cannot sign the client assertion: {e}")))
}

async fn post_token(
    client: &Client,
    token_url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
    sent_at: f64,
    default_lifetime: Duration,
) -> Result<Token, TokenError> {
    let body = Secret::new(
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish(),
    );
    // what the issuer must never see echoed back into our logs and replies
    let mut secrets: Vec<&str> = form
        .iter()
        .filter(|(k, _)| matches!(*k, "password" | "client_secret" | "client_assertion"))
        .map(|(_, v)| *v)
        .collect();
    let basic_creds = basic.map(|(id, secret)| {
        // RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        (secret, Secret::new(format!("{}:{}", enc(id), enc(secret))))
    });
    if let Some((secret, creds)) = &basic_creds {
        secrets.push(secret);
        secrets.push(creds.expose());
    }
    let scrub = Scrub::of(&secrets);
    let mut req = client
        .inner
        .post(token_url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body.expose().as_bytes().to_vec());
    if let Some((_, creds)) = &basic_creds {
        let value = Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds.expose())
        ));
        let mut hv = reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
            TokenError::permanent("the client id cannot be sent in an HTTP header".into())
        })?;
        hv.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, hv);
    }
    let (status, headers, body) = send(client, req, token_url).await?;
    if status.is_success() {
        return parse_token(&body, token_url, sent_at, default_lifetime, &scrub);
    }
    Err(status_error(
        status,
        &headers,
        &body,
        token_url,
        "token request",
        &scrub,
    ))
}

/// Sends a request and reads the whole body (capped); failures are transient.
pub(super) async fn send(
    client: &Client,
    req: reqwest::RequestBuilder,
    url: &str,
) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), TokenError> {
    let mut resp = req
        .send()
        .await
        .map_err(|e| transport_error(&e, url, &client.roots))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > MAX_BODY {
                    return Err(TokenError::transient(format!(
                        "the answer from {url} is larger than {MAX_BODY} bytes"
                    )));
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => {
                let mut err = transport_error(&e, url, &client.roots);
                err.message = format!("reading the answer from {url} failed: {}", chain(&e));
                err.status = Some(status.as_u16());
                return Err(err);
            }
        }
    }
    Ok((status, headers, body))
}

fn transport_error(e: &reqwest::Error, url: &str, roots: &str) -> TokenError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let detail = chain(e);
    // rustls says "invalid peer certificate: UnknownIssuer" and the like
    let hint = if detail.contains("certificate") {
        http::untrusted_hint(roots)
    } else {
        String::new()
    };
    TokenError::transient(format!("{url}: {what}: {detail}{hint}"))
}

pub(super) fn status_error(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    url: &str,
    what: &str,
    scrub: &Scrub,
) -> TokenError {
    let sanitize = |s: &str| scrub.clean(s);
    let code = status.as_u16();
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(sanitize)
    };
    let oauth_error = field("error");
    // FastAPI-style servers (Climate Engine) put the reason in `detail`
    let description = field("error_description").or_else(|| field("detail"));
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    let transient = code == 408 || code == 429 || status.is_server_error();
    let mut reason = String::new();
    if let Some(e) = &oauth_error {
        reason.push_str(": ");
        reason.push_str(e);
    }
    if let Some(d) = &description {
        reason.push_str(": ");
        reason.push_str(d);
    }
    let message = if transient {
        let mut m = format!("{url}: {what} answered {status}{reason}");
        if let Some(r) = retry_after {
            m.push_str(&format!(" (retry after {} s)", r.as_secs()));
        }
        m
    } else if status.is_redirection() {
        let to = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(sanitize)
            .unwrap_or_default();
        format!(
            "{url}: {what} was redirected ({status}) to \"{to}\"; set the URL to the final address"
        )
    } else if code == 401 || code == 403 || oauth_error.is_some() {
        format!("{url}: the issuer rejected the credentials ({status}){reason}")
    } else {
        format!("{url}: {what} refused ({status}){reason}")
    };
    TokenError {
        class: if transient {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        },
        message,
        retry_after,
        status: Some(code),
        oauth_error,
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): seconds, or an HTTP date, which
/// counts from `now` (a date already past means "now"). Capped at
/// [`MAX_RETRY_AFTER`]; `None` when it is neither.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Parses a successful token response (RFC 6749 §5.1).
pub(crate) fn parse_token(
    body: &[u8],
    url: &str,
    sent_at: f64,
    default_lifetime: Duration,
    scrub: &Scrub,
) -> Result<Token, TokenError> {
    let malformed =
        |why: &str| TokenError::transient(format!("{url}: malformed token response: {why}"));
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("not JSON (or cut off)"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("not a JSON object"))?;
    let access_token = match obj.get("access_token") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Secret::new(s.clone()),
        _ => return Err(malformed("no access_token")),
    };
    // it ends up in HTTP headers and on terminals: a newline would inject a
    // header line (`ce-auth header`), an escape sequence reach the terminal
    if !crate::protocol::is_bearer_token(access_token.expose()) {
        return Err(malformed(&format!(
            "the access_token is not an RFC 6750 bearer token (at most {} bytes of \
             letters, digits and -._~+/ with trailing =)",
            crate::protocol::MAX_TOKEN_LEN
        )));
    }
    match obj.get("token_type") {
        // RFC 6749 requires it; servers that omit it issue bearer tokens
        None => {}
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            let shown = scrub.clean(
                &other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
            );
            return Err(TokenError::permanent(format!(
                "{url}: token_type \"{shown}\" is not supported; only bearer tokens are"
            )));
        }
    }
    let absurd = ABSURD_LIFETIME.as_secs_f64();
    let number = |k: &str| -> Result<Option<f64>, TokenError> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
            Some(serde_json::Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| malformed(&format!("{k} is not a number"))),
            Some(_) => Err(malformed(&format!("{k} is not a number"))),
        }
    };
    let candidates = [
        (
            ExpirySource::ExpiresIn,
            number("expires_in")?.map(|s| sent_at + s),
        ),
        (ExpirySource::ExpiresAt, number("expires_at")?),
        (ExpirySource::JwtExp, jwt_exp(access_token.expose())),
    ];
    let mut chosen: Option<(ExpirySource, f64)> = None;
    for (source, expiry) in candidates {
        let Some(expiry) = expiry else { continue };
        if !expiry.is_finite() || expiry - sent_at >= absurd {
            tracing::warn!(
                "{url}: ignoring an expiry {:.0} s away ({source:?}); it is not plausible",
                expiry - sent_at
            );
            continue;
        }
        match chosen {
            None if expiry.floor() <= sent_at => {
                return Err(TokenError::transient(format!(
                    "{url}: the issuer returned a token that has already expired ({source:?} gives {:.0} s)",
                    expiry - sent_at
                )));
            }
            None => chosen = Some((source, expiry)),
            // a later source may only bring the expiry forward: a token must
            // never be believed to outlive its own `exp`. One already past is
            // clock skew between us and the issuer, not news about the token.
            // (compared in whole seconds, as kept: agreeing sources keep their order)
            Some((_, current)) if expiry.floor() < current.floor() && expiry.floor() > sent_at => {
                tracing::debug!(
                    "{url}: {source:?} gives an earlier expiry ({:.0} s) than the first source",
                    expiry - sent_at
                );
                chosen = Some((source, expiry));
            }
            Some(_) => {}
        }
    }
    let (expiry_source, expiry) = chosen.unwrap_or((
        ExpirySource::Default,
        sent_at + default_lifetime.as_secs_f64(),
    ));
    Ok(Token {
        access_token,
        expires_at: expiry.floor() as i64,
        obtained_at: sent_at,
        expiry_source,
    })
}

/// The `exp` claim of a JWT, decoded without verification (for scheduling only).
pub fn jwt_exp(token: &str) -> Option<f64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://issuer.test/token";

    fn jwt_with_exp(exp: i64) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(br#"{"alg":"RS256"}"#),
            e.encode(format!(r#"{{"exp":{exp}}}"#))
        )
    }

    fn parse(body: &str) -> Result<Token, TokenError> {
        parse_token(
            body.as_bytes(),
            URL,
            1000.0,
            Duration::from_secs(300),
            &Scrub::none(),
        )
    }

    #[test]
    fn expiry_precedence() {
        let t = parse(
            r#"{"access_token":"a","token_type":"bearer","expires_in":900,"expires_at":5000}"#,
        )
        .unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (1900, ExpirySource::ExpiresIn)
        );
        let t = parse(r#"{"access_token":"a","token_type":"Bearer","expires_at":5000}"#).unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (5000, ExpirySource::ExpiresAt)
        );
        let body = format!(
            r#"{{"access_token":"{}","token_type":"BEARER"}}"#,
            jwt_with_exp(1600)
        );
        let t = parse(&body).unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (1600, ExpirySource::JwtExp)
        );
        let t = parse(r#"{"access_token":"opaque"}"#).unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (1300, ExpirySource::Default)
        );
        let t = parse(r#"{"access_token":"a","expires_in":"120"}"#).unwrap();
        assert_eq!(t.expires_at, 1120);
    }

    #[test]
    fn nonsense_expiry() {
        for body in [
            r#"{"access_token":"a","expires_in":0}"#,
            r#"{"access_token":"a","expires_in":-5}"#,
            r#"{"access_token":"a","expires_at":999}"#,
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.message.contains("already expired"), "{}", e.message);
        }
        // an absurd expires_in falls through to the next source
        let t =
            parse(r#"{"access_token":"a","expires_in":99999999999,"expires_at":2000}"#).unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (2000, ExpirySource::ExpiresAt)
        );
        let t = parse(r#"{"access_token":"a","expires_in":1e12}"#).unwrap();
        assert_eq!(t.expiry_source, ExpirySource::Default);
    }

    #[test]
    fn a_later_source_only_brings_the_expiry_forward() {
        // months of expires_in (under the implausibility limit) for a token
        // whose own exp says ten minutes: the exp wins
        let body = format!(
            r#"{{"access_token":"{}","expires_in":9000000,"expires_at":9001000}}"#,
            jwt_with_exp(1600)
        );
        let t = parse(&body).unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (1600, ExpirySource::JwtExp)
        );
        // an expires_at before expires_in's expiry wins too
        let t = parse(r#"{"access_token":"a","expires_in":900,"expires_at":1500}"#).unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (1500, ExpirySource::ExpiresAt)
        );
        // agreeing to the second, the first source stays the source
        let t = parse_token(
            br#"{"access_token":"a","expires_in":900,"expires_at":1900}"#,
            URL,
            1000.4,
            Duration::from_secs(300),
            &Scrub::none(),
        )
        .unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (1900, ExpirySource::ExpiresIn)
        );
        // a later source already past is clock skew: ignored, not an error
        let body = format!(
            r#"{{"access_token":"{}","expires_in":900,"expires_at":990}}"#,
            jwt_with_exp(10)
        );
        let t = parse(&body).unwrap();
        assert_eq!(
            (t.expires_at, t.expiry_source),
            (1900, ExpirySource::ExpiresIn)
        );
    }

    #[test]
    fn token_type_and_malformed() {
        let e = parse(r#"{"access_token":"a","token_type":"mac","expires_in":9}"#).unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("\"mac\""));
        for body in [
            r#"{"access_token":"a","#,
            "<html>",
            r#"{"token_type":"bearer"}"#,
            "[]",
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.class, ErrorClass::Transient, "{body}");
            assert!(e.message.contains("malformed"), "{}", e.message);
        }
    }

    #[test]
    fn error_messages_never_contain_the_token() {
        let e = parse(r#"{"access_token":"tok-SECRET","token_type":"mac"}"#).unwrap_err();
        assert!(!e.message.contains("tok-SECRET"));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let p = |v: &str| parse_retry_after(v, now);
        assert_eq!(p(" 120 "), Some(Duration::from_secs(120)));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            p("Sun, 06 Nov 1994 08:51:37 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(p("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(p("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("Mon, 06 Nov 1995 08:49:37 GMT"), Some(MAX_RETRY_AFTER));
        for bad in ["", "soon", "-5", "1.5"] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn status_classification() {
        let h = reqwest::header::HeaderMap::new();
        let mut ra = reqwest::header::HeaderMap::new();
        ra.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        let st = |c: u16| reqwest::StatusCode::from_u16(c).unwrap();
        let e = status_error(st(429), &ra, b"", URL, "token request", &Scrub::none());
        assert_eq!(
            (e.class, e.retry_after),
            (ErrorClass::Transient, Some(Duration::from_secs(7)))
        );
        for c in [408, 500, 502, 503, 504] {
            assert_eq!(
                status_error(st(c), &h, b"", URL, "t", &Scrub::none()).class,
                ErrorClass::Transient
            );
        }
        let body = br#"{"error":"invalid_client","error_description":"Bad client\ncredentials"}"#;
        let e = status_error(st(401), &h, body, URL, "t", &Scrub::none());
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.oauth_error.as_deref(), Some("invalid_client"));
        assert!(
            e.message.contains("invalid_client: Bad client credentials"),
            "{}",
            e.message
        );
        for (c, err) in [
            (400, "invalid_grant"),
            (400, "unsupported_grant_type"),
            (400, "unauthorized_client"),
        ] {
            let body = format!(r#"{{"error":"{err}"}}"#);
            let e = status_error(st(c), &h, body.as_bytes(), URL, "t", &Scrub::none());
            assert_eq!(e.class, ErrorClass::Permanent);
            assert!(e.message.contains(err));
        }
        let e = status_error(st(404), &h, b"nope", URL, "t", &Scrub::none());
        assert_eq!(e.class, ErrorClass::Permanent);
        let e = status_error(
            st(401),
            &h,
            br#"{"detail":"Unauthorized"}"#,
            URL,
            "t",
            &Scrub::none(),
        );
        assert!(e.message.contains("Unauthorized"));
    }

    #[test]
    fn client_assertion_claims() {
        let secret = Secret::new("k".repeat(32));
        let a = client_assertion("cid", URL, &secret, 1000.5).unwrap();
        let b = client_assertion("cid", URL, &secret, 1000.5).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&[URL]);
        v.validate_exp = false;
        let key = jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes());
        let d = jsonwebtoken::decode::<serde_json::Value>(a.expose(), &key, &v).unwrap();
        let c = d.claims;
        assert_eq!(c["iss"], "cid");
        assert_eq!(c["sub"], "cid");
        assert_eq!(c["aud"], URL);
        assert_eq!(c["iat"], 1000);
        assert_eq!(c["exp"], 1060);
        let d2 = jsonwebtoken::decode::<serde_json::Value>(b.expose(), &key, &v).unwrap();
        assert_ne!(c["jti"], d2.claims["jti"], "jti must be fresh");
    }

    #[test]
    fn tokens_outside_the_bearer_charset_are_refused() {
        for token in ["tok\\nX-Injected: 1", "tok en", "t\\u001b[31m", "a=b"] {
            let body = format!(r#"{{"access_token":"{token}","expires_in":60}}"#);
            let e = parse(&body).unwrap_err();
            assert!(e.message.contains("RFC 6750"), "{}", e.message);
            assert!(!e.message.contains("Injected"), "{}", e.message);
        }
        let long = "a".repeat(crate::protocol::MAX_TOKEN_LEN + 1);
        let e = parse(&format!(r#"{{"access_token":"{long}"}}"#)).unwrap_err();
        assert!(e.message.contains("RFC 6750"), "{}", e.message);
    }

    #[test]
    fn an_issuer_echoing_the_secret_does_not_get_it_into_the_message() {
        let secret = "s3cret-Value+/=";
        let scrub = Scrub::of(&[secret]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let body = format!(
            r#"{{"error":"invalid_client","error_description":"bad secret {secret} ({form}, {b64})"}}"#
        );
        let e = status_error(
            reqwest::StatusCode::UNAUTHORIZED,
            &reqwest::header::HeaderMap::new(),
            body.as_bytes(),
            URL,
            "token request",
            &scrub,
        );
        assert!(e.message.contains("[redacted]"), "{}", e.message);
        assert!(!e.message.contains("s3cret"), "{}", e.message);
        assert!(!e.message.contains(&b64), "{}", e.message);
        let e = parse_token(
            format!(r#"{{"access_token":"a","token_type":"{secret}"}}"#).as_bytes(),
            URL,
            1000.0,
            Duration::from_secs(300),
            &scrub,
        )
        .unwrap_err();
        assert!(!e.message.contains("s3cret"), "{}", e.message);
    }
}
