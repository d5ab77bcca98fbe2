//! Configuration: the TOML file and the `[daemon]` table; profiles are
//! validated in [`profile`], their secrets read in `sources`.
//!
//! Every error names the file, the profile and the key, and says how to fix
//! it. `docs/CONFIG.md` documents every key.

mod profile;
mod proxy;
mod sources;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::SPEC_KEYS;
pub use crate::spec::{AuthMethod, Grant, ProfileSpec};
pub use profile::{CLIMATE_ENGINE_TOKEN_URL, Profile, validate_url};
pub use proxy::{ClientAuthorization, ProxyConfig, ProxyListen};

/// Default refresh window, as fractions of a token's lifetime.
pub const DEFAULT_REFRESH_FRACTION: (f64, f64) = (0.5, 0.7);
/// Default `refresh_margin`: refresh no later than this long before expiry.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(120);
/// Default `idle_timeout`: stop background refresh after this long without use.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `default_lifetime`: assumed when the issuer says nothing about expiry.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `timeout` (whole token request). Short enough that a request
/// stuck on a hung issuer gives way to a new one well within a caller's
/// default wait once the issuer answers again; a token endpoint answers in
/// well under a second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(8);
/// Default `retry_floor`: while callers wait for a token the daemon cannot
/// serve, it asks the issuer again as soon as this long has passed since the
/// last attempt began, whatever the background backoff says.
pub const DEFAULT_RETRY_FLOOR: Duration = Duration::from_secs(2);

/// Config files larger than this are refused.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

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

/// A loaded, validated configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Where it was read from, if from a file.
    pub path: Option<PathBuf>,
    pub default_profile: Option<String>,
    pub daemon: DaemonSettings,
    pub profiles: BTreeMap<String, Profile>,
    /// The `[[proxy]]` tables.
    pub proxies: Vec<ProxyConfig>,
}

/// A configuration error naming file, profile and key, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}

impl ConfigError {
    pub(super) fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
        }
    }
}

/// Builds `profile "NAME": key "KEY": MSG`.
pub(super) fn key_err(profile: &str, key: &str, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(format!("profile \"{profile}\": key \"{key}\": {msg}"))
}

impl Config {
    /// Reads and validates a configuration file. A missing file is an error
    /// (see [`Config::load_or_empty`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        Config::parse(&text, Some(path))
    }

    /// Like [`Config::load`], but a missing file is an empty configuration
    /// (for the default path, where no file simply means no profiles yet).
    pub fn load_or_empty(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config {
                path: Some(path.to_path_buf()),
                ..Config::default()
            }),
            _ => Config::load(path),
        }
    }

    /// Validates configuration text. Relative paths in it are taken relative to
    /// `path`'s directory; without a `path` they are an error.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "config".to_string());
        let prefix = |e: ConfigError| ConfigError::new(format!("{file}: {}", e.message));
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new(format!(
                "{file}: not valid TOML: {}",
                e.to_string().trim_end()
            ))
        })?;
        let base = path.and_then(Path::parent).map(Path::to_path_buf);
        let mut config = Config {
            path: path.map(Path::to_path_buf),
            ..Config::default()
        };
        for (key, value) in table {
            match key.as_str() {
                "default_profile" => match value {
                    toml::Value::String(s) => config.default_profile = Some(s),
                    other => {
                        return Err(ConfigError::new(format!(
                            "{file}: key \"default_profile\": expected a profile name (a string), got {}",
                            describe(&other)
                        )));
                    }
                },
                "daemon" => {
                    config.daemon = value.try_into().map_err(|e: toml::de::Error| {
                        ConfigError::new(format!("{file}: [daemon]: {}", e.message()))
                    })?;
                }
                "profiles" => {
                    let toml::Value::Table(profiles) = value else {
                        return Err(ConfigError::new(format!(
                            "{file}: key \"profiles\": expected tables [profiles.NAME], got {}",
                            describe(&value)
                        )));
                    };
                    for (name, value) in profiles {
                        let toml::Value::Table(t) = value else {
                            return Err(ConfigError::new(format!(
                                "{file}: key \"profiles.{name}\": expected a table [profiles.{name}], got {}",
                                describe(&value)
                            )));
                        };
                        let spec = spec_from_table(&name, t).map_err(prefix)?;
                        let profile =
                            Profile::from_file(&name, spec, base.as_deref()).map_err(prefix)?;
                        config.profiles.insert(name, profile);
                    }
                }
                "proxy" => {
                    config.proxies = proxy::parse(value, base.as_deref()).map_err(prefix)?;
                }
                other => {
                    return Err(ConfigError::new(format!(
                        "{file}: unknown key \"{other}\"; expected default_profile, [daemon], [profiles.NAME] or [[proxy]]"
                    )));
                }
            }
        }
        if let Some(d) = &config.default_profile
            && !config.profiles.contains_key(d)
        {
            let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
            return Err(ConfigError::new(format!(
                "{file}: key \"default_profile\": no profile named \"{d}\"; add [profiles.{d}] or use one of: {}",
                if known.is_empty() {
                    "(none defined)".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(config)
    }
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ConfigError::new(format!(
                "{shown}: no such file; create it (see docs/CONFIG.md) or add profiles with `ce-auth add`"
            ))
        } else {
            ConfigError::new(format!("{shown}: cannot read: {e}"))
        }
    })?;
    if !meta.is_file() {
        return Err(ConfigError::new(format!("{shown}: not a regular file")));
    }
    check_config_owner(path, &meta)?;
    if meta.len() > MAX_CONFIG_FILE {
        return Err(ConfigError::new(format!(
            "{shown}: {} bytes is too large for a configuration file (at most {MAX_CONFIG_FILE})",
            meta.len()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("{shown}: cannot read: {e}")))
}

/// Refuses a config file that another user could have written, as ssh
/// treats `authorized_keys`: it names the token endpoint the secrets go to and
/// the files the daemon reads and writes. It must belong to the daemon's user
/// (or root) and be writable by nobody else.
fn check_config_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let shown = path.display();
        let own = rustix::process::geteuid().as_raw();
        if meta.uid() != own && meta.uid() != 0 {
            return Err(ConfigError::new(format!(
                "{shown}: belongs to uid {}, not to you (uid {own}); a config file must be yours \
                 (`chown {own} {shown}`)",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(ConfigError::new(format!(
                "{shown}: mode {mode:03o} lets other users change it; run `chmod go-w {shown}`"
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    Ok(())
}

/// A short description of a TOML value for "expected X, got Y" messages.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string \"{}\"", s.escape_debug()),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(_) => "a date".to_string(),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

/// Deserialises one profile table, checking key by key so an error names the key.
fn spec_from_table(name: &str, table: toml::Table) -> Result<ProfileSpec, ConfigError> {
    for (key, value) in &table {
        let mut one = toml::Table::new();
        one.insert(key.clone(), value.clone());
        if let Err(e) = toml::Value::Table(one).try_into::<ProfileSpec>() {
            let msg = e.message().to_string();
            if msg.starts_with("unknown field") {
                return Err(ConfigError::new(format!(
                    "profile \"{name}\": unknown key \"{key}\"; valid keys are {}",
                    SPEC_KEYS.join(", ")
                )));
            }
            // serde names enum variants in backquotes; say it as every other message does
            let typed = match (key.as_str(), value) {
                ("grant", toml::Value::String(v)) => v.parse::<Grant>().err(),
                ("auth_method", toml::Value::String(v)) => v.parse::<AuthMethod>().err(),
                _ => None,
            };
            return Err(key_err(
                name,
                key,
                typed.unwrap_or_else(|| format!("{msg} (got {})", describe(value))),
            ));
        }
    }
    toml::Value::Table(table)
        .try_into::<ProfileSpec>()
        .map_err(|e| ConfigError::new(format!("profile \"{name}\": {}", e.message())))
}

#[cfg(test)]
mod tests;
