//! The emulated issuer (`crates/issuer`) on 127.0.0.1, started one way for
//! every test: handed over only once its signing key exists, from a runtime
//! of its own for tests that are not async ([`TestIssuer`]).

use std::ops::Deref;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use base64::Engine as _;
use ce_auth_issuer::{Issuer, IssuerBuilder};

use super::deadline::DEADLINE;

/// The user most tests seed, for the password grant and `login`.
pub const EMAIL: &str = "user@example.com";
pub const PASSWORD: &str = "user-password-1";
/// The API client most tests seed.
pub const CLIENT_ID: &str = "seeded-client";
pub const CLIENT_SECRET: &str = "seeded-secret-0123456789abcdef";
/// A second client of the same owner, for recovering from a revoked first one.
pub const CLIENT2_ID: &str = "seeded-client-two";
pub const CLIENT2_SECRET: &str = "seeded-secret-two-0123456789abcdef";

/// An issuer with [`EMAIL`] and [`CLIENT_ID`].
pub fn builder() -> IssuerBuilder {
    Account::seeded().builder()
}

/// Starts `b` and returns once its signing key exists. The key is made in
/// the background, and with many issuers making theirs at once (every test
/// runs in this one process) a first token request could outlast a short
/// request timeout: a failure that no test meant to cause.
pub async fn start(b: IssuerBuilder) -> Issuer {
    let iss = b.start().await.expect("issuer starts");
    // the JWKS is served once the key is ready
    let jwks = tokio::time::timeout(DEADLINE, http().get(iss.jwks_url()).send())
        .await
        .expect("the signing key in time")
        .expect("the JWKS answers");
    assert!(jwks.status().is_success(), "{}", jwks.status());
    iss
}

/// An HTTP client for talking to an issuer directly: no proxy, bounded.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// An issuer served from a runtime of its own, for tests that are not
/// async; stopped (and its port closed) on drop. Derefs to the [`Issuer`].
pub struct TestIssuer {
    issuer: Option<Issuer>,
    rt: tokio::runtime::Runtime,
    /// The user and client it knows.
    pub account: Account,
}

impl TestIssuer {
    /// An issuer that knows `account`.
    pub fn start(account: Account) -> TestIssuer {
        Self::start_with(account, |b| b)
    }

    /// An issuer that knows `account`, built further by `setup` (token
    /// lifetime, test controls).
    pub fn start_with(
        account: Account,
        setup: impl FnOnce(IssuerBuilder) -> IssuerBuilder,
    ) -> TestIssuer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let issuer = rt.block_on(start(setup(account.builder())));
        TestIssuer {
            issuer: Some(issuer),
            rt,
            account,
        }
    }
}

impl Deref for TestIssuer {
    type Target = Issuer;
    fn deref(&self) -> &Issuer {
        self.issuer.as_ref().expect("a running issuer")
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(i) = self.issuer.take() {
            self.rt.block_on(i.shutdown());
        }
    }
}

/// One user and one API client of an issuer.
pub struct Account {
    pub email: String,
    pub password: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Account {
    /// [`EMAIL`] and [`CLIENT_ID`], which tests may name as constants.
    pub fn seeded() -> Account {
        Account {
            email: EMAIL.to_string(),
            password: PASSWORD.to_string(),
            client_id: CLIENT_ID.to_string(),
            client_secret: CLIENT_SECRET.to_string(),
        }
    }

    /// Credentials made up for one test, so that a secret found in some
    /// output can only have come from that test.
    pub fn random() -> Account {
        Account {
            email: "someone@example.com".to_string(),
            password: format!("pw-{}", uuid::Uuid::new_v4().simple()),
            client_id: uuid::Uuid::new_v4().to_string(),
            client_secret: format!("cs-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// An issuer that knows this user and client.
    pub fn builder(&self) -> IssuerBuilder {
        Issuer::builder()
            .user(&self.email, &self.password)
            .client(&self.client_id, &self.client_secret)
    }
}

/// A free TCP port on 127.0.0.1 below the kernel's ephemeral range, for a
/// test that stops an issuer and needs its port to stay closed (or free for
/// a restart) meanwhile: no `bind(0)` and no outgoing connection of the
/// tests running beside it can be given that port. Each call gives another.
pub fn quiet_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let base = low.saturating_sub(12_000).max(1024);
    let span = low - base;
    // spread concurrent test runs on one machine apart
    let start = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = base + start.wrapping_add(i) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{low}");
}

/// A claim of a JWT's header or payload, read without verification.
pub fn jwt_claim(token: &str, header: bool, key: &str) -> Option<serde_json::Value> {
    let part = token.split('.').nth(if header { 0 } else { 1 })?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get(key).cloned()
}

/// The `exp` claim of a JWT access token.
pub fn jwt_exp(token: &str) -> i64 {
    jwt_claim(token, false, "exp")
        .and_then(|v| v.as_i64())
        .expect("the access token is a JWT with an exp")
}
