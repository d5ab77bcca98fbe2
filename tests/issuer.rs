//! The emulated issuer over real HTTP on 127.0.0.1: the Climate Engine
//! tutorial flow, every refusal, every scripted fault, counters and shutdown.

use std::time::{Duration, Instant};

use ce_auth_issuer::{Counters, Fault, Issuer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::deadline::Deadline;
use crate::util::issuer::{
    CLIENT_ID, CLIENT_SECRET, EMAIL, PASSWORD, builder, http, quiet_port, start,
};
use crate::util::load::timed;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

async fn token_request(
    c: &reqwest::Client,
    issuer: &Issuer,
    form: &[(&str, &str)],
) -> reqwest::Response {
    c.post(issuer.token_url())
        .form(form)
        .send()
        .await
        .expect("token request")
}

async fn password_token(c: &reqwest::Client, issuer: &Issuer) -> String {
    let r = token_request(
        c,
        issuer,
        &[
            ("grant_type", "password"),
            ("username", EMAIL),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Checks an RFC 6749 refusal; `secrets` must not appear anywhere in it.
async fn refused(r: reqwest::Response, status: u16, error: &str, secrets: &[&str]) -> Value {
    assert_eq!(r.status().as_u16(), status);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let text = r.text().await.expect("body");
    for s in secrets {
        assert!(!text.contains(s), "refusal echoes a secret: {text}");
    }
    let body: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    if status == 401 {
        assert!(challenge.is_some(), "401 without WWW-Authenticate");
    }
    json!({"body": body, "challenge": challenge})
}

struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Value,
    exp: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    secret: &'a str,
}

impl<'a> Assertion<'a> {
    fn new(issuer: &Issuer, client_id: &'a str, secret: &'a str) -> Self {
        Assertion {
            iss: client_id,
            sub: client_id,
            aud: json!(issuer.token_url()),
            exp: Some(now() + 60),
            iat: Some(now()),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            secret,
        }
    }

    fn sign(&self) -> String {
        let mut claims = json!({"iss": self.iss, "sub": self.sub, "aud": self.aud});
        if let Some(exp) = self.exp {
            claims["exp"] = json!(exp);
        }
        if let Some(iat) = self.iat {
            claims["iat"] = json!(iat);
        }
        if let Some(jti) = &self.jti {
            claims["jti"] = json!(jti);
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .expect("sign assertion")
    }
}

async fn jwt_request(c: &reqwest::Client, issuer: &Issuer, assertion: &str) -> reqwest::Response {
    token_request(
        c,
        issuer,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
    .await
}

async fn users_me(c: &reqwest::Client, issuer: &Issuer, token: &str) -> reqwest::Response {
    c.get(format!("{}/api/v1/users/me", issuer.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("users/me")
}

async fn assert_unauthorized(r: reqwest::Response) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body, json!({"detail": "Unauthorized"}));
}

/// Verifies an access token against the issuer's published JWKS.
async fn verify_with_jwks(c: &reqwest::Client, issuer: &Issuer, token: &str) -> Value {
    let jwks: Value = c
        .get(issuer.jwks_url())
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwks["keys"][0].clone()).expect("a JWK");
    assert_eq!(jwks["keys"][0]["use"], "sig");
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), jwk.common.key_id.as_deref());
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
    v.set_audience(&["fastapi-users:auth"]);
    v.set_issuer(&[issuer.base_url()]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key"),
        &v,
    )
    .expect("token verifies with the JWKS")
    .claims
}

#[tokio::test]
async fn tutorial_flow_password_then_client_credentials_by_every_method() {
    let lifetime = 123;
    let issuer = start(builder().token_lifetime(Duration::from_secs(lifetime))).await;
    let c = http();

    // 1. password grant
    let before = now();
    let r = token_request(
        &c,
        &issuer,
        &[
            ("grant_type", "password"),
            ("username", EMAIL),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let body: Value = r.json().await.expect("json");
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        ["access_token", "expires_at", "expires_in", "token_type"]
    );
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], lifetime);
    let expires_at = body["expires_at"].as_u64().expect("expires_at");
    assert!(expires_at >= before + lifetime && expires_at <= now() + lifetime);
    let user_token = body["access_token"].as_str().expect("token").to_owned();
    let claims = verify_with_jwks(&c, &issuer, &user_token).await;
    for claim in ["user_id", "iss", "exp", "jti", "iat"] {
        assert!(claims.get(claim).is_some(), "claim {claim} in {claims}");
    }
    assert!(claims["groups"].is_array() && claims["roles"].is_array());
    assert_eq!(claims["aud"], json!(["fastapi-users:auth"]));
    assert_eq!(claims["exp"], expires_at);

    // 2. users/me
    let r = users_me(&c, &issuer, &user_token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.expect("json");
    assert_eq!(me["email"], EMAIL);
    assert_eq!(me["id"], claims["user_id"]);
    for key in ["is_active", "is_superuser", "is_verified"] {
        assert!(me[key].is_boolean(), "{key} in {me}");
    }

    // 3. create a client
    let r = c
        .post(format!("{}/api/v1/clients/", issuer.base_url()))
        .bearer_auth(&user_token)
        .send()
        .await
        .expect("create client");
    assert_eq!(r.status(), StatusCode::CREATED);
    let client: Value = r.json().await.expect("json");
    assert_eq!(client["user_id"], me["id"]);
    let id = client["client_id"].as_str().expect("client_id").to_owned();
    let secret = client["client_secret"].as_str().expect("secret").to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()),
        Ok(4)
    );
    assert_eq!(secret.len(), 43);
    assert!(issuer.client_ids().contains(&id));

    // 4. client_credentials by each method, 5. users/me with the client token
    let basic = c
        .post(issuer.token_url())
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("basic");
    let post = token_request(
        &c,
        &issuer,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    let mut authlib_like = Assertion::new(&issuer, &id, &secret);
    authlib_like.exp = Some(now() + 3600);
    let jwt = jwt_request(&c, &issuer, &authlib_like.sign()).await;
    for (method, r) in [("basic", basic), ("post", post), ("jwt", jwt)] {
        assert_eq!(r.status(), StatusCode::OK, "{method}");
        let body: Value = r.json().await.expect("json");
        let token = body["access_token"].as_str().expect("token");
        let claims = verify_with_jwks(&c, &issuer, token).await;
        assert_eq!(claims["user_id"], me["id"], "{method}");
        let r = users_me(&c, &issuer, token).await;
        assert_eq!(r.status(), StatusCode::OK, "{method}");
        let who: Value = r.json().await.expect("json");
        assert_eq!(who["email"], EMAIL);
    }

    let counters = issuer.counters();
    assert_eq!(counters.token_requests, 4);
    assert_eq!(counters.tokens_issued, 4);
    assert_eq!(counters.requests_by_grant["client_credentials"], 3);
    for method in [
        "none",
        "client_secret_basic",
        "client_secret_post",
        "client_secret_jwt",
    ] {
        assert_eq!(counters.issued_by_method[method], 1, "{method}");
    }
    issuer.shutdown().await;
}

#[tokio::test]
async fn seeded_clients_belong_to_the_first_user_or_a_built_in_one() {
    let c = http();
    let issuer = start(builder()).await;
    let me: Value = users_me(&c, &issuer, &password_token(&c, &issuer).await)
        .await
        .json()
        .await
        .expect("json");
    let r = c
        .post(issuer.token_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("basic");
    let token: Value = r.json().await.expect("json");
    let who: Value = users_me(&c, &issuer, token["access_token"].as_str().expect("t"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(who["id"], me["id"]);

    let alone = start(Issuer::builder().client(CLIENT_ID, CLIENT_SECRET)).await;
    let r = alone_basic(&c, &alone).await;
    assert_eq!(r.status(), StatusCode::OK);
    let token: Value = r.json().await.expect("json");
    let who: Value = users_me(&c, &alone, token["access_token"].as_str().expect("t"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(who["email"], ce_auth_issuer::DEV_USER_EMAIL);
}

async fn alone_basic(c: &reqwest::Client, issuer: &Issuer) -> reqwest::Response {
    c.post(issuer.token_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("basic")
}

#[tokio::test]
async fn malformed_requests_and_bad_passwords_are_refused() {
    let issuer = start(builder()).await;
    let c = http();
    let r = token_request(
        &c,
        &issuer,
        &[
            ("grant_type", "password"),
            ("username", EMAIL),
            ("password", "wrong-pass"),
        ],
    )
    .await;
    refused(r, 400, "invalid_grant", &["wrong-pass"]).await;
    let r = token_request(
        &c,
        &issuer,
        &[
            ("grant_type", "password"),
            ("username", "nobody@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    refused(r, 400, "invalid_grant", &[PASSWORD]).await;
    let r = token_request(
        &c,
        &issuer,
        &[("grant_type", "password"), ("username", EMAIL)],
    )
    .await;
    refused(r, 400, "invalid_request", &[]).await;

    let r = c
        .post(issuer.token_url())
        .json(&json!({"grant_type": "password", "username": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .expect("json body");
    let e = refused(r, 400, "invalid_request", &[PASSWORD]).await;
    assert!(
        e["body"]["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("x-www-form-urlencoded"))
    );

    let r = token_request(&c, &issuer, &[("username", EMAIL), ("password", PASSWORD)]).await;
    let e = refused(r, 400, "invalid_request", &[PASSWORD]).await;
    assert!(
        e["body"]["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("grant_type"))
    );
    let r = token_request(&c, &issuer, &[("grant_type", "authorization_code")]).await;
    refused(r, 400, "unsupported_grant_type", &[]).await;

    // two client authentication methods at once
    let r = c
        .post(issuer.token_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("two methods");
    refused(r, 400, "invalid_request", &[CLIENT_SECRET]).await;
    let assertion = Assertion::new(&issuer, CLIENT_ID, CLIENT_SECRET).sign();
    let r = token_request(
        &c,
        &issuer,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ],
    )
    .await;
    refused(r, 400, "invalid_request", &[CLIENT_SECRET]).await;

    // no client authentication at all
    let r = token_request(&c, &issuer, &[("grant_type", "client_credentials")]).await;
    let e = refused(r, 401, "invalid_client", &[]).await;
    assert!(
        e["challenge"]
            .as_str()
            .is_some_and(|c| c.starts_with("Basic realm="))
    );
    assert_eq!(issuer.counters().tokens_issued, 0);
}

#[tokio::test]
async fn wrong_secrets_and_revoked_clients_are_refused_by_every_method() {
    let issuer = start(builder().test_controls(true)).await;
    let c = http();
    let wrong = "not-the-secret-xyz";
    let basic = |secret: &'static str| {
        c.post(issuer.token_url())
            .basic_auth(CLIENT_ID, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let e = refused(
        basic(wrong).await.expect("basic"),
        401,
        "invalid_client",
        &[wrong],
    )
    .await;
    assert!(
        e["challenge"]
            .as_str()
            .is_some_and(|c| c.starts_with("Basic realm="))
    );
    let e = refused(
        post_cc(&c, &issuer, wrong).await,
        401,
        "invalid_client",
        &[wrong],
    )
    .await;
    assert!(
        e["challenge"]
            .as_str()
            .is_some_and(|c| c.starts_with("client_secret_post"))
    );
    let assertion = Assertion::new(&issuer, CLIENT_ID, wrong).sign();
    let e = refused(
        jwt_request(&c, &issuer, &assertion).await,
        401,
        "invalid_client",
        &[wrong, &assertion],
    )
    .await;
    assert!(
        e["challenge"]
            .as_str()
            .is_some_and(|c| c.starts_with("client_secret_jwt"))
    );
    assert!(
        e["body"]["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("signature"))
    );
    let r = token_request(
        &c,
        &issuer,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "no-such-client"),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await;
    refused(r, 401, "invalid_client", &[CLIENT_SECRET]).await;

    // the right secret works until the client is revoked
    assert_eq!(
        basic(CLIENT_SECRET).await.expect("basic").status(),
        StatusCode::OK
    );
    assert!(issuer.revoke_client(CLIENT_ID));
    refused(
        basic(CLIENT_SECRET).await.expect("basic"),
        401,
        "invalid_client",
        &[CLIENT_SECRET],
    )
    .await;
    refused(
        post_cc(&c, &issuer, CLIENT_SECRET).await,
        401,
        "invalid_client",
        &[CLIENT_SECRET],
    )
    .await;
    let assertion = Assertion::new(&issuer, CLIENT_ID, CLIENT_SECRET).sign();
    refused(
        jwt_request(&c, &issuer, &assertion).await,
        401,
        "invalid_client",
        &[CLIENT_SECRET],
    )
    .await;
    assert!(!issuer.revoke_client("no-such-client"));

    // revocation over HTTP, for tests that run the issuer as a process
    let user = password_token(&c, &issuer).await;
    let created: Value = c
        .post(format!("{}/api/v1/clients/", issuer.base_url()))
        .bearer_auth(&user)
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = created["client_id"].as_str().expect("id");
    let secret = created["client_secret"].as_str().expect("secret");
    let r = c
        .post(format!("{}/_test/revoke", issuer.base_url()))
        .bearer_auth(issuer.test_key().expect("test key"))
        .json(&json!({"client_id": id}))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(issuer.token_url())
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("basic");
    refused(r, 401, "invalid_client", &[secret]).await;
    let r = c
        .post(format!("{}/_test/revoke", issuer.base_url()))
        .bearer_auth(issuer.test_key().expect("test key"))
        .json(&json!({"client_id": "no-such-client"}))
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn client_assertions_are_checked_claim_by_claim() {
    let issuer = start(builder()).await;
    let c = http();
    let fresh = || Assertion::new(&issuer, CLIENT_ID, CLIENT_SECRET);
    let mut cases: Vec<(&str, Assertion, &str)> = Vec::new();
    let mut a = fresh();
    a.iss = "someone-else";
    cases.push(("wrong iss", a, "iss"));
    let mut a = fresh();
    a.sub = "someone-else";
    cases.push(("wrong sub", a, "sub"));
    let mut a = fresh();
    a.aud = json!("https://auth.climateengine.com/api/v1/auth/jwt/token");
    cases.push(("wrong aud", a, "aud"));
    let mut a = fresh();
    a.exp = Some(now() - 600);
    cases.push(("expired", a, "expired"));
    let mut a = fresh();
    a.exp = Some(now() + 7200);
    cases.push(("far-future exp", a, "exp"));
    let mut a = fresh();
    a.exp = None;
    cases.push(("no exp", a, "exp"));
    let mut a = fresh();
    a.iat = None;
    cases.push(("no iat", a, "iat"));
    let mut a = fresh();
    a.iat = Some(now() + 3600);
    cases.push(("future iat", a, "iat"));
    let mut a = fresh();
    a.jti = None;
    cases.push(("no jti", a, "jti"));
    for (label, assertion, hint) in cases {
        let r = jwt_request(&c, &issuer, &assertion.sign()).await;
        let e = refused(r, 401, "invalid_client", &[CLIENT_SECRET]).await;
        let description = e["body"]["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(hint), "{label}: {description}");
    }

    // aud may be a list containing the token endpoint; a jti works once only
    let mut a = fresh();
    a.aud = json!(["https://other.example", issuer.token_url()]);
    let signed = a.sign();
    assert_eq!(
        jwt_request(&c, &issuer, &signed).await.status(),
        StatusCode::OK
    );
    let e = refused(
        jwt_request(&c, &issuer, &signed).await,
        401,
        "invalid_client",
        &[],
    )
    .await;
    assert!(
        e["body"]["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("jti"))
    );

    // the endpoint's URL as localhost (the bound loopback address by name) is accepted as aud
    let port = issuer.local_addr().port();
    let mut a = fresh();
    a.aud = json!(format!("http://localhost:{port}/api/v1/auth/jwt/token"));
    let r = c
        .post(issuer.token_url())
        .header("host", format!("localhost:{port}"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a.sign()),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), StatusCode::OK);

    // another algorithm, a non-JWT, and a wrong assertion type
    let other_alg = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": issuer.token_url(),
                "exp": now() + 60, "iat": now(), "jti": "x"}),
        &EncodingKey::from_secret(CLIENT_SECRET.as_bytes()),
    )
    .expect("sign");
    refused(
        jwt_request(&c, &issuer, &other_alg).await,
        401,
        "invalid_client",
        &[],
    )
    .await;
    refused(
        jwt_request(&c, &issuer, "not.a.jwt").await,
        401,
        "invalid_client",
        &[],
    )
    .await;
    let r = token_request(
        &c,
        &issuer,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:example:other"),
            ("client_assertion", &fresh().sign()),
        ],
    )
    .await;
    refused(r, 400, "invalid_request", &[]).await;
    assert_eq!(issuer.counters().tokens_issued, 2);
}

#[tokio::test]
async fn users_me_refuses_missing_tampered_foreign_and_expired_tokens() {
    let _timed = timed();
    let issuer = start(builder().token_lifetime(Duration::from_secs(1))).await;
    let other = start(builder()).await;
    let c = http();
    let r = c
        .get(format!("{}/api/v1/users/me", issuer.base_url()))
        .send()
        .await
        .expect("no token");
    assert_unauthorized(r).await;
    assert_unauthorized(users_me(&c, &issuer, "garbage").await).await;

    let token = password_token(&c, &issuer).await;
    // change one character of the payload: the signature no longer matches
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload: Vec<char> = parts[1].chars().collect();
    let i = payload.len() / 2;
    payload[i] = if payload[i] == 'A' { 'B' } else { 'A' };
    parts[1] = payload.into_iter().collect();
    assert_unauthorized(users_me(&c, &issuer, &parts.join(".")).await).await;
    // signed by another issuer's key
    let foreign = password_token(&c, &other).await;
    assert_unauthorized(users_me(&c, &issuer, &foreign).await).await;
    // client creation needs a valid token too
    let r = c
        .post(format!("{}/api/v1/clients/", issuer.base_url()))
        .bearer_auth("garbage")
        .send()
        .await
        .expect("create");
    assert_unauthorized(r).await;

    // a 1 s token is refused once it has expired
    let deadline = Deadline::after(Duration::from_secs(5));
    loop {
        let r = users_me(&c, &issuer, &token).await;
        if r.status() == StatusCode::UNAUTHORIZED {
            assert_unauthorized(r).await;
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!deadline.passed(), "token still accepted after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn basic_cc(c: &reqwest::Client, issuer: &Issuer) -> reqwest::Result<reqwest::Response> {
    c.post(issuer.token_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
}

#[tokio::test]
async fn status_delay_and_body_faults_apply_to_the_next_requests() {
    let issuer = start(builder()).await;
    let c = http();

    issuer.inject(
        Fault::Status {
            status: 429,
            retry_after: Some(7),
        },
        2,
    );
    issuer.inject(
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        1,
    );
    for expected in [429, 429, 503] {
        let r = basic_cc(&c, &issuer).await.expect("answer");
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(retry_after.as_deref(), (expected == 429).then_some("7"));
        refused(r, expected, "temporarily_unavailable", &[]).await;
    }
    issuer.inject(
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        1,
    );
    refused(
        basic_cc(&c, &issuer).await.expect("answer"),
        500,
        "server_error",
        &[],
    )
    .await;
    issuer.inject(
        Fault::Status {
            status: 502,
            retry_after: None,
        },
        1,
    );
    refused(
        basic_cc(&c, &issuer).await.expect("answer"),
        502,
        "server_error",
        &[],
    )
    .await;
    assert_eq!(
        basic_cc(&c, &issuer).await.expect("answer").status(),
        StatusCode::OK
    );

    issuer.inject(Fault::Delay(Duration::from_millis(300)), 1);
    let started = Instant::now();
    assert_eq!(
        basic_cc(&c, &issuer).await.expect("answer").status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    issuer.inject(Fault::Malformed, 1);
    let r = basic_cc(&c, &issuer).await.expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&r.text().await.expect("body")).is_err());

    issuer.inject(Fault::Truncated, 1);
    let r = basic_cc(&c, &issuer).await.expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.expect("body");
    assert!(text.starts_with('{') && text.len() > 10);
    assert!(serde_json::from_str::<Value>(&text).is_err());

    issuer.inject(Fault::MissingField("expires_at".into()), 1);
    let body: Value = basic_cc(&c, &issuer)
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert!(body.get("expires_at").is_none() && body["access_token"].is_string());

    issuer.inject(
        Fault::Override(json!({"token_type": "Bearer", "expires_in": -5, "expires_at": null})),
        1,
    );
    let body: Value = basic_cc(&c, &issuer)
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], -5);
    assert!(body.get("expires_at").is_none() && body["access_token"].is_string());

    let counters = issuer.counters();
    assert_eq!(counters.token_requests, 11);
    // the plain one, the delayed one, the two with altered fields
    assert_eq!(counters.tokens_issued, 4);
    assert_eq!(counters.issued_by_method["client_secret_basic"], 4);
    issuer.reset_controls();
    assert_eq!(issuer.counters(), Counters::default());
}

#[tokio::test]
async fn reset_fault_resets_the_tcp_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let issuer = start(builder()).await;
    issuer.inject(Fault::Reset, 2);

    let body = format!(
        "grant_type=password&username={}&password={PASSWORD}",
        EMAIL.replace('@', "%40")
    );
    let request = format!(
        "POST /api/v1/auth/jwt/token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        issuer.local_addr(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(issuer.local_addr())
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the issuer answers within 5 s");
    let e = read.expect_err("a reset, not an answer");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(buf.is_empty());

    // an HTTP client sees a failed request, not an HTTP answer
    let e = basic_cc(&http(), &issuer).await.expect_err("no answer");
    assert!(!e.is_timeout() && e.status().is_none(), "{e:?}");
    assert_eq!(issuer.counters().tokens_issued, 0);
    assert_eq!(issuer.counters().token_requests, 2);
}

async fn post_cc(c: &reqwest::Client, issuer: &Issuer, secret: &str) -> reqwest::Response {
    token_request(
        c,
        issuer,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
        ],
    )
    .await
}

async fn port_closed(addr: std::net::SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn a_hung_request_does_not_keep_the_issuer_from_stopping() {
    let _timed = timed();
    // a quiet port: once closed, nothing running beside this test reopens it
    let issuer = start(builder().port(quiet_port())).await;
    let addr = issuer.local_addr();
    issuer.inject(Fault::Hang, 1);
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let e = basic_cc(&impatient, &issuer).await.expect_err("hangs");
    assert!(e.is_timeout(), "{e:?}");

    // and one still hanging while the issuer stops
    issuer.inject(Fault::Hang, 1);
    let c = http();
    let url = issuer.token_url();
    let hanging = tokio::spawn(async move {
        c.post(url)
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
    });
    Deadline::after(Duration::from_secs(5))
        .wait_for_async("the second request", || {
            (issuer.counters().token_requests >= 2).then_some(())
        })
        .await;
    let started = Instant::now();
    issuer.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(port_closed(addr).await);
    let answer = hanging.await.expect("task");
    assert!(answer.is_err(), "the hung request ends without an answer");
}

#[tokio::test]
async fn dropping_the_issuer_stops_it() {
    // a quiet port: once closed, nothing running beside this test reopens it
    let issuer = start(builder().port(quiet_port())).await;
    let addr = issuer.local_addr();
    assert!(!port_closed(addr).await);
    drop(issuer);
    let deadline = Deadline::after(Duration::from_secs(5));
    while !port_closed(addr).await {
        assert!(!deadline.passed(), "port still open 5 s after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn test_controls_over_http() {
    let issuer = start(builder().test_controls(true)).await;
    let c = http();
    let base = issuer.base_url();
    let key = issuer.test_key().expect("a test key");
    // without the key every control is refused, and nothing happens
    for (method, path) in [
        (reqwest::Method::GET, "counters"),
        (reqwest::Method::POST, "faults"),
        (reqwest::Method::DELETE, "faults"),
        (reqwest::Method::POST, "revoke"),
        (reqwest::Method::POST, "reset"),
    ] {
        let r = c
            .request(method.clone(), format!("{base}/_test/{path}"))
            .json(&json!({"fault": {"kind": "hang"}, "count": 5, "client_id": CLIENT_ID}))
            .send()
            .await
            .expect("control");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(r.headers().contains_key("www-authenticate"));
    }
    assert_eq!(issuer.clear_faults(), 0);
    let r = c
        .post(format!("{base}/_test/faults"))
        .bearer_auth(&key)
        .json(&json!({"fault": {"kind": "status", "status": 503, "retry_after": 2}, "count": 2}))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(format!("{base}/_test/faults"))
        .bearer_auth(&key)
        .json(&json!({"fault": {"kind": "missing_field", "field": "expires_in"}}))
        .send()
        .await
        .expect("faults");
    let pending: Value = r.json().await.expect("json");
    assert_eq!(pending["pending"], 3);
    for _ in 0..2 {
        let r = basic_cc(&c, &issuer).await.expect("answer");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
    }
    let body: Value = basic_cc(&c, &issuer)
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert!(body.get("expires_in").is_none() && body["access_token"].is_string());

    let counters: Counters = c
        .get(format!("{base}/_test/counters"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("counters")
        .json()
        .await
        .expect("json");
    assert_eq!(counters, issuer.counters());
    assert_eq!(counters.token_requests, 3);
    assert_eq!(counters.tokens_issued, 1);

    // an outage ends with DELETE: queued faults go, counters stay
    issuer.inject(Fault::Reset, 4);
    let r = c
        .delete(format!("{base}/_test/faults"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("clear faults");
    assert_eq!(r.status(), StatusCode::OK);
    let cleared: Value = r.json().await.expect("json");
    assert_eq!(cleared["cleared"], 4);
    assert_eq!(
        basic_cc(&c, &issuer).await.expect("answer").status(),
        StatusCode::OK
    );
    assert_eq!(issuer.counters().token_requests, 4);
    let log = issuer.token_requests();
    assert_eq!(log.len(), 4);
    assert!(log[0].fault.is_some() && log[3].fault.is_none());

    // bad control requests get a clear 400
    for bad in [
        json!({"fault": {"kind": "explode"}}),
        json!({"fault": {"kind": "status", "status": 200}}),
        json!({"count": 2}),
    ] {
        let r = c
            .post(format!("{base}/_test/faults"))
            .bearer_auth(&key)
            .json(&bad)
            .send()
            .await
            .expect("faults");
        refused(r, 400, "invalid_request", &[]).await;
    }

    let r = c
        .post(format!("{base}/_test/reset"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("reset");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(issuer.counters(), Counters::default());
}

#[tokio::test]
async fn test_controls_are_absent_unless_turned_on() {
    let issuer = start(builder()).await;
    assert_eq!(issuer.test_key(), None);
    let c = http();
    let base = issuer.base_url();
    let r = c
        .get(format!("{base}/_test/counters"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for path in ["faults", "revoke", "reset"] {
        let r = c
            .post(format!("{base}/_test/{path}"))
            .json(&json!({"fault": {"kind": "hang"}, "client_id": CLIENT_ID}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // nothing was injected or revoked
    assert_eq!(
        basic_cc(&c, &issuer).await.expect("answer").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn builder_refuses_duplicates_and_a_taken_port() {
    let e = Issuer::builder()
        .user("a@example.com", "x")
        .user("A@example.com", "y")
        .start()
        .await
        .expect_err("duplicate user");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let e = Issuer::builder()
        .client("c", "x")
        .client("c", "y")
        .start()
        .await
        .expect_err("duplicate client");
    assert!(!e.to_string().contains('x') || !e.to_string().contains('y'));
    let first = start(builder()).await;
    let e = Issuer::builder()
        .port(first.local_addr().port())
        .start()
        .await
        .expect_err("port taken");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
}

/// Signs `claims` as a client assertion with `secret`.
fn sign_claims(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign assertion")
}

#[tokio::test]
async fn assertion_times_must_be_integers_and_the_lifetime_is_capped() {
    let issuer = start(builder()).await;
    let c = http();
    let base = |jti: &str| {
        json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": issuer.token_url(),
               "exp": now() + 60, "iat": now(), "jti": jti})
    };
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    // a float exp far ahead once slipped past the lifetime cap and was
    // remembered by the replay store as expired already
    let mut a = base("float-exp-far");
    a["exp"] = json!(1e12);
    cases.push(("exp 1e12", a, "exp"));
    let mut a = base("float-exp-near");
    a["exp"] = json!(now() as f64 + 30.5);
    cases.push(("fractional exp", a, "exp"));
    let mut a = base("float-iat");
    a["iat"] = json!(now() as f64 - 0.5);
    cases.push(("fractional iat", a, "iat"));
    let mut a = base("string-exp");
    a["exp"] = json!((now() + 60).to_string());
    cases.push(("string exp", a, "exp"));
    let mut a = base("float-nbf");
    a["nbf"] = json!(now() as f64 - 1.5);
    cases.push(("fractional nbf", a, "nbf"));
    let mut a = base("future-nbf");
    a["nbf"] = json!(now() + 600);
    cases.push(("future nbf", a, "nbf"));
    // exp within an hour of now, but signed for longer than an hour
    let mut a = base("long-lived");
    a["iat"] = json!(now() - 3000);
    a["exp"] = json!(now() + 3000);
    cases.push(("lifetime over an hour", a, "lifetime"));
    for (label, claims, hint) in cases {
        let signed = sign_claims(&claims, CLIENT_SECRET);
        let e = refused(
            jwt_request(&c, &issuer, &signed).await,
            401,
            "invalid_client",
            &[CLIENT_SECRET],
        )
        .await;
        let description = e["body"]["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(hint), "{label}: {description}");
    }
    // integer times, an integer nbf and an hour's lifetime (authlib's) are fine
    let mut a = base("an-hour");
    a["exp"] = json!(now() + 3600);
    a["nbf"] = json!(now());
    let signed = sign_claims(&a, CLIENT_SECRET);
    assert_eq!(
        jwt_request(&c, &issuer, &signed).await.status(),
        StatusCode::OK
    );
    assert_eq!(issuer.counters().tokens_issued, 1);
}

#[tokio::test]
async fn aud_is_the_issuers_own_token_endpoint_whatever_the_host_header_says() {
    let issuer = start(builder()).await;
    let c = http();
    let port = issuer.local_addr().port();
    let send = |aud: Value, host: Option<String>| {
        let mut a = Assertion::new(&issuer, CLIENT_ID, CLIENT_SECRET);
        a.aud = aud;
        let mut r = c.post(issuer.token_url());
        if let Some(h) = host {
            r = r.header("host", h);
        }
        r.form(&[
            ("grant_type", "client_credentials".to_string()),
            ("client_assertion_type", ASSERTION_TYPE.to_string()),
            ("client_assertion", a.sign()),
        ])
        .send()
    };
    // an assertion made for another server, sent with that server's Host header
    for host in ["evil.example", "evil.example:443", "127.0.0.2:1"] {
        let aud = json!(format!("http://{host}/api/v1/auth/jwt/token"));
        let r = send(aud.clone(), Some(host.to_string()))
            .await
            .expect("token request");
        let e = refused(r, 401, "invalid_client", &[]).await;
        assert!(
            e["body"]["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("aud") && d.contains(&issuer.token_url())),
            "{host}: {e}"
        );
        let r = send(
            json!([aud, "https://other.example/token"]),
            Some(host.to_string()),
        )
        .await
        .expect("token request");
        refused(r, 401, "invalid_client", &[]).await;
    }
    // its own URL, by address or as localhost, whatever the Host header
    for aud in [
        issuer.token_url(),
        format!("http://localhost:{port}/api/v1/auth/jwt/token"),
    ] {
        for host in [None, Some("evil.example".to_string())] {
            let r = send(json!(aud), host.clone()).await.expect("token request");
            assert_eq!(r.status(), StatusCode::OK, "{aud} with Host {host:?}");
        }
    }
}

#[tokio::test]
async fn one_client_filling_its_assertion_memory_locks_out_only_itself() {
    const OTHER_ID: &str = "other-client";
    const OTHER_SECRET: &str = "other-secret-9876543210";
    let issuer = start(builder().client(OTHER_ID, OTHER_SECRET)).await;
    let c = http();
    let per_client = ce_auth_issuer::MAX_JTIS_PER_CLIENT;
    // client A signs for the longest lifetime allowed, so nothing expires
    let long = |id: &str, secret: &str, jti: String| {
        sign_claims(
            &json!({"iss": id, "sub": id, "aud": issuer.token_url(),
                    "exp": now() + 3600, "iat": now(), "jti": jti}),
            secret,
        )
    };
    for i in 0..per_client {
        let r = jwt_request(
            &c,
            &issuer,
            &long(CLIENT_ID, CLIENT_SECRET, format!("a-{i}")),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "assertion #{i}");
    }
    let e = refused(
        jwt_request(
            &c,
            &issuer,
            &long(CLIENT_ID, CLIENT_SECRET, "a-over".into()),
        )
        .await,
        401,
        "invalid_client",
        &[],
    )
    .await;
    assert!(
        e["body"]["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("too many")),
        "{e}"
    );
    // client B is not affected, and replays are still caught for both
    let b = long(OTHER_ID, OTHER_SECRET, "b-1".into());
    assert_eq!(jwt_request(&c, &issuer, &b).await.status(), StatusCode::OK);
    refused(
        jwt_request(&c, &issuer, &b).await,
        401,
        "invalid_client",
        &[],
    )
    .await;
    let replay = long(CLIENT_ID, CLIENT_SECRET, "a-0".into());
    refused(
        jwt_request(&c, &issuer, &replay).await,
        401,
        "invalid_client",
        &[],
    )
    .await;
    // A's other methods still work: only its assertions are held back
    assert_eq!(
        basic_cc(&c, &issuer).await.expect("answer").status(),
        StatusCode::OK
    );
}
