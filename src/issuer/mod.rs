//! The emulated Climate Engine authorization server, for `ce-authd --dev`,
//! `ce-authd issuer` and tests.
//!
//! STUB: the issuer work fills this in; the public API below is the contract
//! tests and the daemon rely on.

use std::time::Duration;

/// A scripted fault applied to upcoming token requests (test controls only).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this HTTP status (e.g. 500, 502, 503, 429) and an RFC 6749 error body;
    /// `retry_after` adds a `Retry-After` header (seconds).
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Never answer (until the client gives up or the issuer stops).
    Hang,
    /// Reset the TCP connection without an HTTP answer.
    Reset,
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Answer 200 with a JSON body cut off half-way.
    Truncated,
    /// Answer 200 with a valid token response missing this field.
    MissingField(String),
    /// Answer 200 with a valid token response, overriding fields with these
    /// (e.g. `{"expires_in": -5}`, `{"token_type": "mac"}`; JSON null removes the field).
    Override(serde_json::Value),
}

/// Counts kept by the issuer (test controls only).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Every request that reached the token endpoint, faulted or not.
    pub token_requests: u64,
    /// Tokens actually issued.
    pub tokens_issued: u64,
    /// Token requests by grant type (`password`, `client_credentials`, or what was sent).
    pub requests_by_grant: std::collections::BTreeMap<String, u64>,
    /// Tokens issued by client authentication method (`none` for the password grant).
    pub issued_by_method: std::collections::BTreeMap<String, u64>,
}

/// How to build an emulated issuer.
#[derive(Debug, Clone)]
pub struct IssuerBuilder {
    _private: (),
}

/// A running emulated issuer. Dropping it stops the server.
pub struct Issuer {
    _private: (),
}

impl Issuer {
    /// A builder with no users, no clients, 900 s tokens, an ephemeral port and test controls off.
    pub fn builder() -> IssuerBuilder {
        IssuerBuilder { _private: () }
    }

    /// e.g. `http://127.0.0.1:41234`
    pub fn base_url(&self) -> String {
        unimplemented!()
    }

    /// `{base_url}/api/v1/auth/jwt/token`
    pub fn token_url(&self) -> String {
        unimplemented!()
    }

    /// The counters so far (test controls must be on).
    pub fn counters(&self) -> Counters {
        unimplemented!()
    }

    /// Applies `fault` to the next `n` token requests (test controls must be on).
    pub fn inject(&self, fault: Fault, n: u32) {
        let _ = (fault, n);
        unimplemented!()
    }

    /// Stops the server and waits until its port is closed.
    pub async fn shutdown(self) {}
}

impl IssuerBuilder {
    /// Adds a user for the password grant.
    pub fn user(self, email: &str, password: &str) -> Self {
        let _ = (email, password);
        self
    }
    /// Pre-seeds an API client.
    pub fn client(self, client_id: &str, client_secret: &str) -> Self {
        let _ = (client_id, client_secret);
        self
    }
    /// Lifetime of issued tokens (down to 1 s).
    pub fn token_lifetime(self, lifetime: Duration) -> Self {
        let _ = lifetime;
        self
    }
    /// TCP port on 127.0.0.1; 0 (the default) picks a free one.
    pub fn port(self, port: u16) -> Self {
        let _ = port;
        self
    }
    /// Turns on counters and fault injection (also over HTTP, under `/_test/`).
    pub fn test_controls(self, on: bool) -> Self {
        let _ = on;
        self
    }
    /// Binds and starts serving. Call inside a tokio runtime.
    pub async fn start(self) -> std::io::Result<Issuer> {
        unimplemented!()
    }
}
pub mod cli;
