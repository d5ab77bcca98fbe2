//! The OAuth2 client against the emulated issuer over real HTTP on 127.0.0.1:
//! every grant and client authentication method, expiry sources, and each
//! error class (transient and permanent).

use std::time::Duration;

use ce_auth::daemon::config::{Profile, ProfileSpec};
use ce_auth::daemon::oauth::{self, ErrorClass, ExpirySource, HttpClients, Token, TokenError};
use ce_auth::secret::Secret;
use ce_auth_issuer::{Fault, Issuer};

use crate::util::issuer::{CLIENT_ID, CLIENT_SECRET, EMAIL, PASSWORD, builder, quiet_port, start};
use crate::util::load::timed;
use crate::util::now;

async fn issuer() -> Issuer {
    start(
        builder()
            .token_lifetime(Duration::from_secs(900))
            .test_controls(true),
    )
    .await
}

fn client_profile(iss: &Issuer, method: &str, secret: &str) -> Profile {
    Profile::from_spec(
        "p",
        ProfileSpec {
            token_url: Some(iss.token_url()),
            auth_method: Some(method.parse().unwrap()),
            client_id: Some(CLIENT_ID.into()),
            timeout: Some(2),
            connect_timeout: Some(2),
            ..ProfileSpec::default()
        },
        Some(Secret::new(secret.into())),
    )
    .unwrap()
}

fn password_profile(iss: &Issuer, password: &str) -> Profile {
    Profile::from_spec(
        "pw",
        ProfileSpec {
            token_url: Some(iss.token_url()),
            grant: Some("password".parse().unwrap()),
            username: Some(EMAIL.into()),
            ..ProfileSpec::default()
        },
        Some(Secret::new(password.into())),
    )
    .unwrap()
}

async fn fetch(p: &Profile) -> Result<Token, TokenError> {
    oauth::request_token(&HttpClients::new(), p, now()).await
}

fn assert_fresh(t: &Token) {
    let left = t.expires_at as f64 - now();
    assert!((890.0..=901.0).contains(&left), "{left}");
    assert_eq!(t.access_token.expose().split('.').count(), 3, "a JWT");
}

#[tokio::test]
async fn every_client_authentication_method() {
    let _timed = timed();
    let iss = issuer().await;
    for method in [
        "client_secret_basic",
        "client_secret_post",
        "client_secret_jwt",
    ] {
        let t = fetch(&client_profile(&iss, method, CLIENT_SECRET))
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_fresh(&t);
        assert_eq!(t.expiry_source, ExpirySource::ExpiresIn);
    }
    let c = iss.counters();
    for method in [
        "client_secret_basic",
        "client_secret_post",
        "client_secret_jwt",
    ] {
        assert_eq!(c.issued_by_method.get(method), Some(&1), "{c:?}");
    }
}

#[tokio::test]
async fn password_grant() {
    let iss = issuer().await;
    let t = fetch(&password_profile(&iss, PASSWORD)).await.unwrap();
    assert_fresh(&t);
    assert_eq!(iss.counters().requests_by_grant.get("password"), Some(&1));
    // the token works against users/me
    let http = HttpClients::new();
    let client = http
        .get(None, Duration::from_secs(2), Duration::from_secs(5))
        .unwrap();
    let me = oauth::users_me(&client, &iss.base_url(), &t.access_token)
        .await
        .unwrap();
    assert_eq!(me["email"], EMAIL);
}

#[tokio::test]
async fn rejected_credentials_are_permanent_and_secret_free() {
    let _timed = timed();
    let iss = issuer().await;
    for method in [
        "client_secret_basic",
        "client_secret_post",
        "client_secret_jwt",
    ] {
        let e = fetch(&client_profile(&iss, method, "wrong-secret-value"))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent, "{method}: {e}");
        assert_eq!(e.oauth_error.as_deref(), Some("invalid_client"), "{e}");
        assert!(!e.message.contains("wrong-secret-value"));
    }
    let e = fetch(&password_profile(&iss, "bad-password-xyz"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert_eq!(e.oauth_error.as_deref(), Some("invalid_grant"));
    assert!(!e.message.contains("bad-password-xyz"));
    // a revoked client is refused too
    assert!(iss.revoke_client(CLIENT_ID));
    let e = fetch(&client_profile(&iss, "client_secret_jwt", CLIENT_SECRET))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
}

#[tokio::test]
async fn transient_faults() {
    let _timed = timed();
    let iss = issuer().await;
    let p = client_profile(&iss, "client_secret_post", CLIENT_SECRET);
    let cases: Vec<(Fault, &str)> = vec![
        (
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            "503",
        ),
        (
            Fault::Status {
                status: 500,
                retry_after: None,
            },
            "500",
        ),
        (
            Fault::Status {
                status: 408,
                retry_after: None,
            },
            "408",
        ),
        (Fault::Malformed, "malformed"),
        (Fault::Truncated, "malformed"),
        (Fault::Reset, ""),
        (Fault::Hang, "timed out"),
        (Fault::MissingField("access_token".into()), "access_token"),
    ];
    for (fault, words) in cases {
        iss.inject(fault.clone(), 1);
        let e = fetch(&p).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient, "{fault:?}: {e}");
        assert!(e.message.contains(words), "{fault:?}: {e}");
        assert!(!e.message.contains(CLIENT_SECRET));
    }
    iss.inject(
        Fault::Status {
            status: 429,
            retry_after: Some(7),
        },
        1,
    );
    let e = fetch(&p).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    // and then it works again
    assert_fresh(&fetch(&p).await.unwrap());
}

#[tokio::test]
async fn expiry_sources_and_token_types() {
    let _timed = timed();
    let iss = issuer().await;
    let p = client_profile(&iss, "client_secret_basic", CLIENT_SECRET);
    iss.inject(Fault::MissingField("expires_in".into()), 1);
    let t = fetch(&p).await.unwrap();
    assert_eq!(t.expiry_source, ExpirySource::ExpiresAt);
    assert_fresh(&t);
    iss.inject(
        Fault::Override(serde_json::json!({"expires_in": null, "expires_at": null})),
        1,
    );
    let t = fetch(&p).await.unwrap();
    assert_eq!(t.expiry_source, ExpirySource::JwtExp);
    assert_fresh(&t);
    iss.inject(
        Fault::Override(serde_json::json!({"token_type": "Bearer"})),
        1,
    );
    assert_fresh(&fetch(&p).await.unwrap());
    iss.inject(Fault::Override(serde_json::json!({"token_type": "mac"})), 1);
    let e = fetch(&p).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("mac"));
    iss.inject(Fault::Override(serde_json::json!({"expires_in": -5})), 1);
    let e = fetch(&p).await.unwrap_err();
    assert!(e.message.contains("already expired"), "{e}");
}

#[tokio::test]
async fn wrong_endpoint_is_permanent_and_closed_port_transient() {
    let _timed = timed();
    let iss = issuer().await;
    let mut spec = client_profile(&iss, "client_secret_post", CLIENT_SECRET).spec;
    spec.token_url = Some(format!("{}/no/such/path", iss.base_url()));
    let p = Profile::from_spec("p", spec.clone(), Some(Secret::new(CLIENT_SECRET.into()))).unwrap();
    let e = fetch(&p).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert_eq!(e.status, Some(404));
    // a port nobody listens on, and that no test running beside this one
    // can be given meanwhile
    let port = quiet_port();
    spec.token_url = Some(format!("http://127.0.0.1:{port}/token"));
    let p = Profile::from_spec("p", spec, Some(Secret::new(CLIENT_SECRET.into()))).unwrap();
    let e = fetch(&p).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
    assert!(e.message.contains("connect"), "{e}");
}
