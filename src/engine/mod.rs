//! The token engine: per-profile token cache, single-flight acquisition,
//! proactive refresh, backoff and status.
//!
//! STUB: the token-engine work fills this in; the public API below is the
//! contract the daemon wires to the socket.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Profile};
use crate::protocol::{
    ErrorCode, LoginReply, ProfileStatus, ReloadReply, TokenReply, WhoamiReply, WireError,
};
use crate::secret::Secret;

/// An engine error with a stable wire code and an actionable message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub code: ErrorCode,
    pub message: String,
}

impl From<EngineError> for WireError {
    fn from(e: EngineError) -> WireError {
        WireError::new(e.code, e.message)
    }
}

/// Holds every profile and its token; cheap to share behind an `Arc`.
pub struct Engine {
    _private: (),
}

impl Engine {
    /// Builds an engine for a configuration. Call inside a tokio runtime.
    pub fn new(config: Config) -> Arc<Engine> {
        let _ = config;
        Arc::new(Engine { _private: () })
    }

    /// A token for `profile` (the default when `None`) with at least `min_ttl` left.
    pub async fn token(
        &self,
        profile: Option<&str>,
        min_ttl: Duration,
    ) -> Result<TokenReply, EngineError> {
        let _ = (profile, min_ttl);
        Err(EngineError {
            code: ErrorCode::Internal,
            message: "not implemented".into(),
        })
    }

    /// Obtains a new token now, even if the cached one is fresh.
    pub async fn refresh(&self, profile: Option<&str>) -> Result<TokenReply, EngineError> {
        let _ = profile;
        Err(EngineError {
            code: ErrorCode::Internal,
            message: "not implemented".into(),
        })
    }

    /// Status of one profile, or of all when `None`.
    pub fn status(&self, profile: Option<&str>) -> Result<Vec<ProfileStatus>, EngineError> {
        let _ = profile;
        Ok(Vec::new())
    }

    /// The default profile's name, if any.
    pub fn default_profile(&self) -> Option<String> {
        None
    }

    /// Adds (or with `replace`, replaces) a profile at runtime.
    pub fn add(&self, profile: Profile, replace: bool) -> Result<(), EngineError> {
        let _ = (profile, replace);
        Ok(())
    }

    /// Removes a profile, dropping its secret and token.
    pub fn remove(&self, name: &str) -> Result<(), EngineError> {
        let _ = name;
        Ok(())
    }

    /// Applies a new configuration; unchanged profiles keep their tokens.
    pub fn reload(&self, config: Config) -> ReloadReply {
        let _ = config;
        ReloadReply::default()
    }

    /// The issuer's `users/me` object, fetched with the profile's token.
    pub async fn whoami(&self, profile: Option<&str>) -> Result<WhoamiReply, EngineError> {
        let _ = profile;
        Err(EngineError {
            code: ErrorCode::Internal,
            message: "not implemented".into(),
        })
    }

    /// The tutorial's bootstrap: password grant, then `POST /api/v1/clients/`.
    /// Not tied to any profile; `token_url` defaults to Climate Engine's.
    pub async fn login(
        &self,
        token_url: Option<&str>,
        email: &str,
        password: &Secret,
    ) -> Result<LoginReply, EngineError> {
        let _ = (token_url, email, password);
        Err(EngineError {
            code: ErrorCode::Internal,
            message: "not implemented".into(),
        })
    }

    /// Stops background refreshes and drops every secret.
    pub async fn shutdown(&self) {}
}
