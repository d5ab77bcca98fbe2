//! The emulated Climate Engine authorization server, for `ce-authd --dev`,
//! `ce-authd issuer` and tests.
//!
//! A real HTTP server on 127.0.0.1 that speaks the service's API: the token
//! endpoint (password and client_credentials grants, three client
//! authentication methods), `users/me`, client creation and a JWKS. Test
//! controls add counters and scripted faults. See docs/ISSUER.md.
//!
//! Module map: [`keys`] (the RSA signing key), `token` (access tokens),
//! `store` (users, clients, assertion ids), `client_auth`, `form`, `errors`,
//! `faults` (test controls), `routes` (the endpoints), `serve` (accept loop),
//! [`cli`] (`ce-authd issuer`).

pub mod cli;
mod client_auth;
mod errors;
mod faults;
mod form;
pub mod keys;
mod routes;
mod serve;
mod state;
mod store;
mod token;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{SetOnce, watch};
use tokio::task::JoinHandle;

use secrecy::SecretString as Secret;
use state::{Shared, TOKEN_PATH, lock};
pub use store::{
    MAX_CLIENTS_PER_USER, MAX_JTIS_PER_CLIENT, generate_client_id, generate_client_secret,
};

/// E-mail of the built-in user that owns pre-seeded clients when no user is configured.
/// It cannot log in with the password grant.
pub const DEV_USER_EMAIL: &str = "dev@example.com";

/// A scripted fault applied to upcoming token requests (test controls only).
///
/// Its JSON form (used by `POST /_test/faults`) is tagged by `kind`; see docs/ISSUER.md.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "faults::FaultSpec", try_from = "faults::FaultSpec")]
pub enum Fault {
    /// Answer with this HTTP status (e.g. 500, 502, 503, 429) and an RFC 6749 error body;
    /// `retry_after` adds a `Retry-After` header (seconds).
    Status {
        /// An HTTP error status, 400 to 599.
        status: u16,
        /// Seconds for the `Retry-After` header, if any.
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
    /// Tokens actually issued: 200 answers whose body carries an access token
    /// (so not those cut short by `Truncated` or `Malformed`).
    pub tokens_issued: u64,
    /// Token requests by grant type (`password`, `client_credentials`, or what was sent).
    pub requests_by_grant: std::collections::BTreeMap<String, u64>,
    /// Tokens issued by client authentication method (`none` for the password grant).
    pub issued_by_method: std::collections::BTreeMap<String, u64>,
}

/// One request to the token endpoint, as the test controls saw it arrive.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRequest {
    /// When it arrived (wall-clock time).
    pub at: std::time::SystemTime,
    /// The scripted fault it was given, if any.
    pub fault: Option<Fault>,
}

/// How to build an emulated issuer.
#[derive(Debug, Clone)]
pub struct IssuerBuilder {
    users: Vec<(String, Secret)>,
    clients: Vec<(String, Secret)>,
    lifetime: u64,
    port: u16,
    test_controls: bool,
}

/// A running emulated issuer. Dropping it stops the server.
pub struct Issuer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// A builder with no users, no clients, 900 s tokens, an ephemeral port and test controls off.
    pub fn builder() -> IssuerBuilder {
        IssuerBuilder {
            users: Vec::new(),
            clients: Vec::new(),
            lifetime: 900,
            port: 0,
            test_controls: false,
        }
    }

    /// e.g. `http://127.0.0.1:41234`
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `{base_url}/api/v1/auth/jwt/token`
    pub fn token_url(&self) -> String {
        self.shared.token_url()
    }

    /// `{base_url}/.well-known/jwks.json`
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.shared.base_url)
    }

    /// The socket address the issuer listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key the HTTP test controls require (`Authorization: Bearer KEY`
    /// or `X-CE-Test-Key: KEY`), when they are served; `ce-authd issuer`
    /// prints it in its ready line as `test_key`.
    pub fn test_key(&self) -> Option<String> {
        use secrecy::ExposeSecret as _;
        self.shared
            .test_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned())
    }

    /// The counters so far. Counting is always on; the builder's test-controls
    /// switch only decides whether `/_test/` is served over HTTP.
    pub fn counters(&self) -> Counters {
        lock(&self.shared.controls).counters.clone()
    }

    /// Applies `fault` to the next `n` token requests, after any faults already
    /// queued. Works in-process whether or not `/_test/` is served.
    pub fn inject(&self, fault: Fault, n: u32) {
        lock(&self.shared.controls).inject(fault, n);
    }

    /// Drops every queued fault (the issuer is healthy again from the next
    /// request on), keeping the counters and the request log. Returns how
    /// many fault uses were still pending.
    pub fn clear_faults(&self) -> u64 {
        lock(&self.shared.controls).clear_faults()
    }

    /// Every token request so far (the latest 10 000), oldest first: when it
    /// arrived and which fault it got. Lets tests check the spacing of retries.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.controls).requests()
    }

    /// Forgets counters, the request log and queued faults.
    pub fn reset_controls(&self) {
        lock(&self.shared.controls).reset();
    }

    /// Makes a client's secret invalid: its later token requests get 401
    /// `invalid_client`. Tokens already issued stay valid until they expire.
    /// Returns false if there is no such client.
    pub fn revoke_client(&self, client_id: &str) -> bool {
        lock(&self.shared.store).revoke(client_id)
    }

    /// The ids of all clients, pre-seeded and created.
    pub fn client_ids(&self) -> Vec<String> {
        lock(&self.shared.store).client_ids()
    }

    /// Stops the server and waits until its port is closed. Requests in
    /// progress, hung ones included, are dropped.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            // the serve task has no panicking paths; a JoinError would mean the
            // runtime is going away, when the port closes anyway
            let _ = task.await;
        }
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        // dropping the sender is the stop signal
        self.stop.take();
    }
}

impl IssuerBuilder {
    /// Adds a user for the password grant.
    pub fn user(mut self, email: &str, password: &str) -> Self {
        self.users
            .push((email.to_owned(), Secret::from(password.to_owned())));
        self
    }

    /// Pre-seeds an API client, owned by the first user (or by
    /// [`DEV_USER_EMAIL`] when there is none).
    pub fn client(mut self, client_id: &str, client_secret: &str) -> Self {
        self.clients
            .push((client_id.to_owned(), Secret::from(client_secret.to_owned())));
        self
    }

    /// Lifetime of issued tokens, in whole seconds, at least 1 s.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.as_secs().max(1);
        self
    }

    /// TCP port on 127.0.0.1; 0 (the default) picks a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Turns on the test controls over HTTP, under `/_test/`, behind a
    /// random key ([`Issuer::test_key`]).
    pub fn test_controls(mut self, on: bool) -> Self {
        self.test_controls = on;
        self
    }

    /// Binds and starts serving. Call inside a tokio runtime.
    ///
    /// Returns as soon as the port is bound; the RSA key is generated in the
    /// background and token requests wait for it.
    pub async fn start(self) -> std::io::Result<Issuer> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let mut store = store::Store::default();
        let mut emails = HashSet::new();
        for (email, password) in self.users {
            if !emails.insert(email.to_ascii_lowercase()) {
                return Err(invalid(format!("user {email} is given twice")));
            }
            store.add_user(&email, Some(password));
        }
        let owner = match store.first_user() {
            Some(id) => id,
            None => store.add_user(DEV_USER_EMAIL, None),
        };
        let mut ids = HashSet::new();
        for (client_id, secret) in self.clients {
            if !ids.insert(client_id.clone()) {
                return Err(invalid(format!("client {client_id} is given twice")));
            }
            store.add_client(&client_id, secret, owner);
        }

        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            audiences: audiences(addr),
            lifetime: self.lifetime,
            test_key: if self.test_controls {
                Some(faults::new_test_key()?)
            } else {
                None
            },
            key: SetOnce::new(),
            store: Mutex::new(store),
            controls: Mutex::default(),
        });
        let for_key = shared.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let key = keys::SigningKey::generate().map(Arc::new);
            tracing::debug!("RSA-2048 key generated in {:?}", started.elapsed());
            // set once, here only
            let _ = for_key.key.set(key);
        });
        let (stop, stopped) = watch::channel(());
        let task = tokio::spawn(serve::serve(
            listener,
            routes::router(shared.clone()),
            stopped,
        ));
        Ok(Issuer {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// The token endpoint's URLs on the bound loopback address: by address and
/// as `localhost` (what a client configured with either name signs as `aud`).
fn audiences(addr: SocketAddr) -> Vec<String> {
    vec![
        format!("http://{addr}{TOKEN_PATH}"),
        format!("http://localhost:{}{TOKEN_PATH}", addr.port()),
    ]
}

/// Path of the token endpoint, relative to the base URL.
pub const TOKEN_ENDPOINT_PATH: &str = TOKEN_PATH;
