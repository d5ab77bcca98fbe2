//! What every request handler shares: configuration, the signing key, the
//! store and the test controls.

use std::sync::{Arc, Mutex, MutexGuard};

use secrecy::SecretString;
use tokio::sync::SetOnce;

use super::errors::OAuthError;
use super::faults::Controls;
use super::keys::{KeyError, SigningKey};
use super::store::Store;

/// Path of the token endpoint.
pub(crate) const TOKEN_PATH: &str = "/api/v1/auth/jwt/token";

/// State shared by all connections of one issuer.
pub(crate) struct Shared {
    /// e.g. `http://127.0.0.1:41234`; also the `iss` of access tokens.
    pub base_url: String,
    /// The token endpoint URLs a client assertion may name as `aud`, from
    /// the bound address alone (never from a request's `Host`).
    pub audiences: Vec<String>,
    /// Lifetime of access tokens, in seconds (at least 1).
    pub lifetime: u64,
    /// The key every `/_test/*` request must carry; `None` when the test
    /// controls are not served at all.
    pub test_key: Option<SecretString>,
    /// Filled once by the background key generation.
    pub key: SetOnce<Result<Arc<SigningKey>, KeyError>>,
    pub store: Mutex<Store>,
    pub controls: Mutex<Controls>,
}

/// Locks a mutex, carrying on if a panicking thread poisoned it: every change
/// to the store is a single insert or flag, so no half-done state can be seen.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// `{base_url}/api/v1/auth/jwt/token`
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url)
    }

    /// The signing key, waiting for its generation to finish if need be.
    pub async fn signing_key(&self) -> Result<Arc<SigningKey>, OAuthError> {
        self.key
            .wait()
            .await
            .clone()
            .map_err(|e| OAuthError::server_error(e.to_string()))
    }
}
