//! Configuration: the TOML file, profiles and their validation.
//!
//! STUB: the token-engine work fills this in; names below are the contract.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Climate Engine's token endpoint, the default `token_url`.
pub const CLIMATE_ENGINE_TOKEN_URL: &str = "https://auth.climateengine.com/api/v1/auth/jwt/token";

/// One `[profiles.NAME]` table as written (also the `settings` of the `add` op).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// `client_credentials` (default) or `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// `client_secret_basic`, `client_secret_post` or `client_secret_jwt` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// Name of a systemd credential (a file in `$CREDENTIALS_DIRECTORY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_credential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_credential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Hosts (optionally `host/path` prefixes) whose git credentials this profile answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub git_hosts: Vec<String>,
    /// A file the daemon keeps holding the current token (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// The `[daemon]` table: settings of the socket server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// Extra uids allowed to connect besides the daemon's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_uids: Vec<u32>,
    /// Cap on concurrent connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Seconds a connection may stay silent (or a line stay incomplete) before it is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
}

/// A validated profile with its secret loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub spec: ProfileSpec,
    /// Client secret (client_credentials) or password (password grant).
    pub secret: Option<Secret>,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Where it was read from, if from a file.
    pub path: Option<PathBuf>,
    pub default_profile: Option<String>,
    pub daemon: DaemonSettings,
    pub profiles: BTreeMap<String, Profile>,
}

/// A configuration error naming file, profile and key, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}

impl Config {
    /// Reads and validates a configuration file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let _ = path;
        Ok(Config::default())
    }
}

impl Profile {
    /// Validates settings given at runtime (`add`), with the secret supplied directly.
    pub fn from_spec(
        name: &str,
        spec: ProfileSpec,
        secret: Option<Secret>,
    ) -> Result<Profile, ConfigError> {
        Ok(Profile {
            name: name.to_string(),
            spec,
            secret,
        })
    }
}
