//! Client authentication at the token endpoint: `client_secret_basic`,
//! `client_secret_post` and `client_secret_jwt` (OpenID Connect Core 1.0, section 9).

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use uuid::Uuid;

use super::errors::OAuthError;
use super::form::Form;
use super::store::{JtiRefusal, MAX_JTI_LEN, Store, secrets_equal};
use secrecy::{ExposeSecret, SecretString as Secret};

/// The only `client_assertion_type` accepted.
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock skew tolerated on assertion times, in seconds. An assertion is
/// accepted until `exp + SKEW`, so its `jti` is remembered that long.
pub(crate) const SKEW: u64 = 60;

/// Longest assertion lifetime accepted (authlib signs for an hour), in seconds.
const MAX_ASSERTION_LIFETIME: u64 = 3600;

/// A client authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Basic,
    Post,
    Jwt,
}

impl Method {
    /// The method's registered name (RFC 7591).
    pub fn name(self) -> &'static str {
        match self {
            Method::Basic => "client_secret_basic",
            Method::Post => "client_secret_post",
            Method::Jwt => "client_secret_jwt",
        }
    }

    /// The scheme of the `WWW-Authenticate` challenge sent when it fails.
    fn scheme(self) -> &'static str {
        match self {
            Method::Basic => "Basic",
            other => other.name(),
        }
    }

    fn refuse(self, description: impl Into<String>) -> OAuthError {
        OAuthError::invalid_client(self.scheme(), description)
    }
}

/// Credentials as presented, before they are checked.
pub(crate) enum Presented {
    Secret {
        method: Method,
        client_id: String,
        secret: Secret,
    },
    Assertion {
        /// `client_id` from the form, if sent alongside the assertion.
        client_id: Option<String>,
        assertion: String,
    },
}

impl Presented {
    /// The method these credentials use.
    pub fn method(&self) -> Method {
        match self {
            Presented::Secret { method, .. } => *method,
            Presented::Assertion { .. } => Method::Jwt,
        }
    }
}

/// A client that proved who it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Authenticated {
    pub client_id: String,
    pub user_id: Uuid,
    pub method: Method,
}

/// Finds the one client authentication method in a request.
pub(crate) fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    let authorization = headers.get(header::AUTHORIZATION);
    let mut methods = Vec::new();
    if authorization.is_some() {
        methods.push(Method::Basic);
    }
    if form.get("client_secret").is_some() {
        methods.push(Method::Post);
    }
    if form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some() {
        methods.push(Method::Jwt);
    }
    if methods.len() > 1 {
        let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
        return Err(OAuthError::invalid_request(format!(
            "use exactly one client authentication method; this request uses {}",
            names.join(" and ")
        )));
    }
    let form_client_id = form.get("client_id");
    match methods.first() {
        None => Err(OAuthError::invalid_client(
            "Basic",
            "client authentication is required (client_secret_basic, client_secret_post or client_secret_jwt)",
        )),
        Some(Method::Basic) => {
            let (client_id, secret) = basic(authorization)?;
            if form_client_id.is_some_and(|id| id != client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the one in the Authorization header",
                ));
            }
            Ok(Presented::Secret {
                method: Method::Basic,
                client_id,
                secret,
            })
        }
        Some(Method::Post) => Ok(Presented::Secret {
            method: Method::Post,
            client_id: form
                .get("client_id")
                .ok_or_else(|| {
                    OAuthError::invalid_request(
                        "client_secret_post needs client_id alongside client_secret",
                    )
                })?
                .to_owned(),
            secret: Secret::from(form.require("client_secret")?.to_owned()),
        }),
        Some(Method::Jwt) => {
            let kind = form.require("client_assertion_type")?;
            if kind != ASSERTION_TYPE {
                return Err(OAuthError::invalid_request(format!(
                    "client_assertion_type must be {ASSERTION_TYPE}"
                )));
            }
            Ok(Presented::Assertion {
                client_id: form_client_id.map(str::to_owned),
                assertion: form.require("client_assertion")?.to_owned(),
            })
        }
    }
}

/// Decodes `Authorization: Basic`, whose id and secret are each
/// form-urlencoded before joining (RFC 6749 section 2.3.1).
fn basic(value: Option<&axum::http::HeaderValue>) -> Result<(String, Secret), OAuthError> {
    let refuse =
        || Method::Basic.refuse("the Authorization header is not valid HTTP Basic credentials");
    let value = value.and_then(|v| v.to_str().ok()).ok_or_else(refuse)?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(refuse)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Method::Basic.refuse(
            "the token endpoint accepts only the Basic scheme in the Authorization header",
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| refuse())?;
    let decoded = Secret::from(String::from_utf8(decoded).map_err(|_| refuse())?);
    let (id, secret) = decoded.expose_secret().split_once(':').ok_or_else(refuse)?;
    // RFC 6749 appendix B: '+' is a space, then percent-decoding
    let unescape = |s: &str| -> Result<String, OAuthError> {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| refuse())
    };
    let id = unescape(id)?;
    let secret = Secret::from(unescape(secret)?);
    if id.is_empty() {
        return Err(refuse());
    }
    Ok((id, secret))
}

/// Checks presented credentials against the store.
///
/// `audiences` are the token endpoint URLs an assertion may name in `aud`:
/// the issuer's own, never taken from the request.
pub(crate) fn authenticate(
    store: &mut Store,
    presented: Presented,
    audiences: &[String],
    now: u64,
) -> Result<Authenticated, OAuthError> {
    match presented {
        Presented::Secret {
            method,
            client_id,
            secret,
        } => {
            let client = active_client(store, method, &client_id)?;
            if !secrets_equal(client.secret.expose_secret(), secret.expose_secret()) {
                return Err(method.refuse("wrong client secret"));
            }
            Ok(Authenticated {
                user_id: client.user_id,
                client_id,
                method,
            })
        }
        Presented::Assertion {
            client_id,
            assertion,
        } => assertion_client(store, client_id, &assertion, audiences, now),
    }
}

fn active_client<'a>(
    store: &'a Store,
    method: Method,
    client_id: &str,
) -> Result<&'a super::store::Client, OAuthError> {
    store.active_client(client_id).ok_or_else(|| {
        method.refuse("unknown or revoked client_id (create a client with POST /api/v1/clients/)")
    })
}

fn assertion_client(
    store: &mut Store,
    form_client_id: Option<String>,
    assertion: &str,
    audiences: &[String],
    now: u64,
) -> Result<Authenticated, OAuthError> {
    let m = Method::Jwt;
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| m.refuse("client_assertion is not a JWT"))?;
    if header.alg != Algorithm::HS256 {
        return Err(m.refuse(format!(
            "client_assertion must be signed with HS256, not {:?}",
            header.alg
        )));
    }
    // the client is named by iss; read it before the signature can be checked
    let unverified = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(assertion)
        .map_err(|_| m.refuse("client_assertion's claims are not a JSON object"))?;
    let client_id = unverified
        .claims
        .get("iss")
        .and_then(|v| v.as_str())
        .ok_or_else(|| m.refuse("client_assertion has no iss claim (it must be the client_id)"))?
        .to_owned();
    if unverified.claims.get("sub").and_then(|v| v.as_str()) != Some(&client_id) {
        return Err(m.refuse("client_assertion's iss and sub must both be the client_id"));
    }
    if form_client_id.is_some_and(|id| id != client_id) {
        return Err(m.refuse("client_id differs from the assertion's iss"));
    }
    let client = active_client(store, m, &client_id)?;
    let user_id = client.user_id;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = SKEW;
    validation.set_audience(audiences);
    validation.set_issuer(&[&client_id]);
    validation.sub = Some(client_id.clone());
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let key = DecodingKey::from_secret(client.secret.expose_secret().as_bytes());
    let claims = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)
        .map_err(|e| {
            m.refuse(match e.kind() {
                ErrorKind::InvalidSignature => {
                    "client_assertion's signature does not verify with the client secret".into()
                }
                ErrorKind::ExpiredSignature => "client_assertion has expired".into(),
                ErrorKind::InvalidAudience => format!(
                    "client_assertion's aud must be the token endpoint URL ({})",
                    audiences.first().map(String::as_str).unwrap_or_default()
                ),
                ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
                    "client_assertion's iss and sub must both be the client_id".into()
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    format!("client_assertion has no {c} claim")
                }
                ErrorKind::InvalidClaimFormat(c) => {
                    format!("client_assertion's {c} claim has the wrong type")
                }
                ErrorKind::ImmatureSignature => "client_assertion is not valid yet (nbf)".into(),
                _ => "client_assertion is not a valid JWT".into(),
            })
        })?
        .claims;

    // times are checked here on integers, the same values the replay store
    // keeps: a float once passed the checks as 0 while the JWT library took it
    let exp = numeric_date(&claims, "exp")?
        .ok_or_else(|| m.refuse("client_assertion has no exp claim"))?;
    let iat = numeric_date(&claims, "iat")?
        .ok_or_else(|| m.refuse("client_assertion has no iat claim"))?;
    let nbf = numeric_date(&claims, "nbf")?;
    if exp.saturating_add(SKEW) < now {
        return Err(m.refuse("client_assertion has expired"));
    }
    if iat > now + SKEW {
        return Err(m.refuse("client_assertion's iat is in the future"));
    }
    if nbf.is_some_and(|nbf| nbf > now + SKEW) {
        return Err(m.refuse("client_assertion is not valid yet (nbf)"));
    }
    if exp > now + MAX_ASSERTION_LIFETIME + SKEW {
        return Err(m.refuse(format!(
            "client_assertion's exp is too far ahead (at most {MAX_ASSERTION_LIFETIME} s)"
        )));
    }
    if exp < iat || exp - iat > MAX_ASSERTION_LIFETIME {
        return Err(m.refuse(format!(
            "client_assertion's lifetime (exp - iat) must be 0 to {MAX_ASSERTION_LIFETIME} s"
        )));
    }
    let jti = claims
        .get("jti")
        .and_then(|v| v.as_str())
        .filter(|j| !j.is_empty())
        .ok_or_else(|| m.refuse("client_assertion has no jti claim"))?;
    if jti.len() > MAX_JTI_LEN {
        return Err(m.refuse(format!(
            "client_assertion's jti is longer than {MAX_JTI_LEN} bytes"
        )));
    }
    store
        .remember_jti(&client_id, jti, exp, now)
        .map_err(|r| match r {
            JtiRefusal::Replayed => m.refuse("client_assertion's jti was used before (replay)"),
            JtiRefusal::Full => {
                m.refuse("too many unexpired client assertions; use shorter exp values")
            }
        })?;
    Ok(Authenticated {
        client_id,
        user_id,
        method: m,
    })
}

/// A NumericDate claim (RFC 7519 section 2), here a whole number of seconds:
/// `None` when absent, refused when anything but a non-negative integer.
fn numeric_date(claims: &serde_json::Value, name: &str) -> Result<Option<u64>, OAuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Method::Jwt.refuse(format!(
                "client_assertion's {name} must be a whole number of seconds since 1970 (an integer)"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn form(body: &str) -> Form {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        Form::parse(&h, body.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn basic_header(raw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&v).expect("ascii"),
        );
        h
    }

    #[test]
    fn basic_credentials_are_form_urldecoded() {
        let p = presented(&basic_header("my%20id:s%3Ae+t"), &form("grant_type=x"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        match p {
            Presented::Secret {
                method,
                client_id,
                secret,
            } => {
                assert_eq!(method, Method::Basic);
                assert_eq!(client_id, "my id");
                assert_eq!(secret.expose_secret(), "s:e t");
            }
            Presented::Assertion { .. } => panic!("not basic"),
        }
    }

    #[test]
    fn two_methods_or_none_are_refused() {
        let e = presented(&basic_header("a:b"), &form("client_id=a&client_secret=b")).err();
        assert_eq!(e.map(|e| e.error), Some("invalid_request"));
        let e = presented(&HeaderMap::new(), &form("grant_type=client_credentials")).err();
        assert_eq!(
            e.map(|e| (e.status.as_u16(), e.error)),
            Some((401, "invalid_client"))
        );
        let e = presented(&basic_header("nocolon"), &form("")).err();
        assert_eq!(e.map(|e| e.error), Some("invalid_client"));
        let e = presented(
            &HeaderMap::new(),
            &form("client_assertion_type=urn:other&client_assertion=x"),
        )
        .err();
        assert_eq!(e.map(|e| e.error), Some("invalid_request"));
    }
}
