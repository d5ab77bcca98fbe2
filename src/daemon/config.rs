//! Configuration: the TOML file, profiles and their validation.
//!
//! Validation is pure apart from reading the secret sources a profile names
//! (files, environment variables, systemd credentials), which happens once at
//! load time. Every error names the file, the profile and the key, and says
//! how to fix it. `docs/CONFIG.md` documents every key.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
pub use crate::spec::ProfileSpec;
use crate::spec::{SPEC_KEYS, is_loopback_host};

/// Climate Engine's token endpoint, the default `token_url`.
pub const CLIMATE_ENGINE_TOKEN_URL: &str = "https://auth.climateengine.com/api/v1/auth/jwt/token";

/// Default refresh window, as fractions of a token's lifetime.
pub const DEFAULT_REFRESH_FRACTION: (f64, f64) = (0.5, 0.7);
/// Default `refresh_margin`: refresh no later than this long before expiry.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(120);
/// Default `idle_timeout`: stop background refresh after this long without use.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `default_lifetime`: assumed when the issuer says nothing about expiry.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `timeout` (whole token request).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Secret files larger than this are refused (a secret is a line, not a file dump).
const MAX_SECRET_FILE: u64 = 64 * 1024;
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

/// The OAuth2 grant a profile uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grant {
    /// `client_credentials`: an API client id and secret.
    ClientCredentials,
    /// `password`: a user's e-mail and password, no client authentication.
    Password,
}

impl Grant {
    /// The name used in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
        }
    }
}

/// How a `client_credentials` request authenticates the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// HTTP Basic with `client_id:client_secret`.
    ClientSecretBasic,
    /// `client_id` and `client_secret` as form fields.
    ClientSecretPost,
    /// An HS256 client assertion signed with the secret (OIDC Core §9).
    ClientSecretJwt,
}

impl AuthMethod {
    /// The name used in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretJwt => "client_secret_jwt",
        }
    }
}

/// A profile's settings, validated and with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub token_url: String,
    /// Base URL for `users/me` and `clients/`, without a trailing slash.
    pub api_url: String,
    pub grant: Grant,
    /// `None` for the password grant.
    pub auth_method: Option<AuthMethod>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    /// `(low, high)`, with `0 < low <= high < 1`.
    pub refresh_fraction: (f64, f64),
    pub refresh_margin: Duration,
    pub idle_timeout: Duration,
    pub default_lifetime: Duration,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub token_file: Option<PathBuf>,
    pub git_hosts: Vec<String>,
}

/// A validated profile with its secret loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// The settings as written.
    pub spec: ProfileSpec,
    /// The settings as used.
    pub settings: Settings,
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

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
        }
    }
}

/// Builds `profile "NAME": key "KEY": MSG`.
fn key_err(profile: &str, key: &str, msg: impl std::fmt::Display) -> ConfigError {
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
                            Profile::build(&name, spec, None, base.as_deref()).map_err(prefix)?;
                        config.profiles.insert(name, profile);
                    }
                }
                other => {
                    return Err(ConfigError::new(format!(
                        "{file}: unknown key \"{other}\"; expected default_profile, [daemon] or [profiles.NAME]"
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
    if meta.len() > MAX_CONFIG_FILE {
        return Err(ConfigError::new(format!(
            "{shown}: {} bytes is too large for a configuration file (at most {MAX_CONFIG_FILE})",
            meta.len()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("{shown}: cannot read: {e}")))
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
            return Err(key_err(
                name,
                key,
                format!("{msg} (got {})", describe(value)),
            ));
        }
    }
    toml::Value::Table(table)
        .try_into::<ProfileSpec>()
        .map_err(|e| ConfigError::new(format!("profile \"{name}\": {}", e.message())))
}

impl Profile {
    /// Validates settings given at runtime (`add`), with the secret supplied directly.
    ///
    /// When `secret` is `None` the profile must name exactly one secret source
    /// (file, environment variable or systemd credential), which is read now.
    /// Relative paths are refused here, as there is no config file to anchor them.
    pub fn from_spec(
        name: &str,
        spec: ProfileSpec,
        secret: Option<Secret>,
    ) -> Result<Profile, ConfigError> {
        Profile::build(name, spec, secret, None)
    }

    fn build(
        name: &str,
        spec: ProfileSpec,
        secret: Option<Secret>,
        base: Option<&Path>,
    ) -> Result<Profile, ConfigError> {
        crate::spec::validate_profile_name(name).map_err(ConfigError::new)?;
        let err = |key: &str, msg: String| key_err(name, key, msg);

        let token_url = spec
            .token_url
            .clone()
            .unwrap_or_else(|| CLIMATE_ENGINE_TOKEN_URL.to_string());
        let parsed = validate_url(&token_url).map_err(|m| err("token_url", m))?;
        let api_url = match &spec.api_url {
            Some(u) => {
                validate_url(u).map_err(|m| err("api_url", m))?;
                u.trim_end_matches('/').to_string()
            }
            None => parsed.origin().ascii_serialization(),
        };

        let grant = match spec.grant.as_deref() {
            None | Some("client_credentials") => Grant::ClientCredentials,
            Some("password") => Grant::Password,
            Some(other) => {
                return Err(err(
                    "grant",
                    format!(
                        "expected \"client_credentials\" or \"password\", got \"{}\"",
                        other.escape_debug()
                    ),
                ));
            }
        };
        let auth_method = match (grant, spec.auth_method.as_deref()) {
            (Grant::Password, None) => None,
            (Grant::Password, Some(_)) => {
                return Err(err(
                    "auth_method",
                    "applies only to grant \"client_credentials\"; remove it for the password grant"
                        .into(),
                ));
            }
            (Grant::ClientCredentials, None | Some("client_secret_jwt")) => {
                Some(AuthMethod::ClientSecretJwt)
            }
            (Grant::ClientCredentials, Some("client_secret_basic")) => {
                Some(AuthMethod::ClientSecretBasic)
            }
            (Grant::ClientCredentials, Some("client_secret_post")) => {
                Some(AuthMethod::ClientSecretPost)
            }
            (Grant::ClientCredentials, Some(other)) => {
                return Err(err(
                    "auth_method",
                    format!(
                        "expected \"client_secret_basic\", \"client_secret_post\" or \"client_secret_jwt\", got \"{}\"",
                        other.escape_debug()
                    ),
                ));
            }
        };

        // keys of the other grant are mistakes, not harmless extras
        let (own, foreign, id_key) = match grant {
            Grant::ClientCredentials => (
                [
                    ("client_secret_file", &spec.client_secret_file),
                    ("client_secret_env", &spec.client_secret_env),
                    ("client_secret_credential", &spec.client_secret_credential),
                ],
                [
                    ("username", &spec.username),
                    ("password_file", &spec.password_file),
                    ("password_env", &spec.password_env),
                    ("password_credential", &spec.password_credential),
                ],
                "client_id",
            ),
            Grant::Password => (
                [
                    ("password_file", &spec.password_file),
                    ("password_env", &spec.password_env),
                    ("password_credential", &spec.password_credential),
                ],
                [
                    ("client_id", &spec.client_id),
                    ("client_secret_file", &spec.client_secret_file),
                    ("client_secret_env", &spec.client_secret_env),
                    ("client_secret_credential", &spec.client_secret_credential),
                ],
                "username",
            ),
        };
        if let Some((key, _)) = foreign.iter().find(|(_, v)| v.is_some()) {
            return Err(err(
                key,
                format!(
                    "does not apply to grant \"{}\"; remove it or set grant accordingly",
                    grant.as_str()
                ),
            ));
        }
        let id = match grant {
            Grant::ClientCredentials => &spec.client_id,
            Grant::Password => &spec.username,
        };
        let id = match id.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                return Err(err(
                    id_key,
                    format!("missing; grant \"{}\" needs it", grant.as_str()),
                ));
            }
        };
        let (client_id, username) = match grant {
            Grant::ClientCredentials => (Some(id), None),
            Grant::Password => (None, Some(id)),
        };

        let sources: Vec<(&str, &String)> = own
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
            .collect();
        let what = match grant {
            Grant::ClientCredentials => "client secret",
            Grant::Password => "password",
        };
        let secret = match (secret, sources.as_slice()) {
            (Some(s), []) => {
                if s.is_empty() {
                    return Err(ConfigError::new(format!(
                        "profile \"{name}\": the {what} given is empty"
                    )));
                }
                Some(s)
            }
            (Some(_), [(key, _), ..]) => {
                return Err(err(
                    key,
                    format!(
                        "the {what} was given directly, so remove this key (a profile takes exactly one {what} source)"
                    ),
                ));
            }
            (None, []) => {
                let keys: Vec<&str> = own.iter().map(|(k, _)| *k).collect();
                return Err(ConfigError::new(format!(
                    "profile \"{name}\": no {what}; set one of {}",
                    keys.join(", ")
                )));
            }
            (None, [(key, value)]) => Some(read_secret(name, key, value, base)?),
            (None, [(a, _), (b, _), ..]) => {
                return Err(ConfigError::new(format!(
                    "profile \"{name}\": keys \"{a}\" and \"{b}\" both give the {what}; keep exactly one"
                )));
            }
        };

        let refresh_fraction = match spec.refresh_fraction.as_deref() {
            None => DEFAULT_REFRESH_FRACTION,
            Some(&[x]) => (x, x),
            Some(&[lo, hi]) => (lo, hi),
            Some(_) => {
                return Err(err(
                    "refresh_fraction",
                    "expected [low, high], e.g. [0.5, 0.7]".into(),
                ));
            }
        };
        let (lo, hi) = refresh_fraction;
        if !(lo > 0.0 && lo <= hi && hi < 1.0) {
            return Err(err(
                "refresh_fraction",
                format!("expected 0 < low <= high < 1, e.g. [0.5, 0.7], got [{lo}, {hi}]"),
            ));
        }
        let secs = |key: &str, v: Option<u64>, default: Duration, min: u64, max: u64| match v {
            None => Ok(default),
            Some(s) if (min..=max).contains(&s) => Ok(Duration::from_secs(s)),
            Some(s) => Err(err(
                key,
                format!("expected seconds between {min} and {max}, got {s}"),
            )),
        };
        const DAY: u64 = 24 * 3600;
        let refresh_margin = secs(
            "refresh_margin",
            spec.refresh_margin,
            DEFAULT_REFRESH_MARGIN,
            0,
            DAY,
        )?;
        let idle_timeout = secs(
            "idle_timeout",
            spec.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
            1,
            365 * DAY,
        )?;
        let default_lifetime = secs(
            "default_lifetime",
            spec.default_lifetime,
            DEFAULT_LIFETIME,
            1,
            DAY,
        )?;
        let connect_timeout = secs(
            "connect_timeout",
            spec.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            1,
            600,
        )?;
        let timeout = secs("timeout", spec.timeout, DEFAULT_TIMEOUT, 1, 600)?;

        let ca_file = match &spec.ca_file {
            None => None,
            Some(p) => {
                let path = resolve_path(p, base).map_err(|m| err("ca_file", m))?;
                let pem = std::fs::read(&path)
                    .map_err(|e| err("ca_file", format!("cannot read {}: {e}", path.display())))?;
                match reqwest::Certificate::from_pem_bundle(&pem) {
                    Ok(certs) if !certs.is_empty() => {}
                    _ => {
                        return Err(err(
                            "ca_file",
                            format!("{} holds no PEM certificate", path.display()),
                        ));
                    }
                }
                Some(path)
            }
        };
        let token_file = match &spec.token_file {
            None => None,
            Some(p) => {
                let path = resolve_path(p, base).map_err(|m| err("token_file", m))?;
                match path.parent() {
                    Some(dir) if dir.is_dir() => {}
                    _ => {
                        return Err(err(
                            "token_file",
                            format!(
                                "the directory of {} does not exist; create it first",
                                path.display()
                            ),
                        ));
                    }
                }
                Some(path)
            }
        };
        for h in &spec.git_hosts {
            if h.trim().is_empty() || h.contains(char::is_whitespace) {
                return Err(err(
                    "git_hosts",
                    format!("\"{}\" is not a host name", h.escape_debug()),
                ));
            }
        }
        for (key, v) in [
            ("scope", &spec.scope),
            ("audience", &spec.audience),
            ("resource", &spec.resource),
        ] {
            if let Some(v) = v
                && v.trim().is_empty()
            {
                return Err(err(key, "is empty; remove it or give a value".into()));
            }
        }

        let settings = Settings {
            token_url,
            api_url,
            grant,
            auth_method,
            client_id,
            username,
            scope: spec.scope.clone(),
            audience: spec.audience.clone(),
            resource: spec.resource.clone(),
            refresh_fraction,
            refresh_margin,
            idle_timeout,
            default_lifetime,
            ca_file,
            connect_timeout,
            timeout,
            token_file,
            git_hosts: spec.git_hosts.clone(),
        };
        Ok(Profile {
            name: name.to_string(),
            spec,
            settings,
            secret,
        })
    }
}

/// Checks a token or API URL: `https`, or `http` only to a loopback host, and
/// no user name or password in it.
pub fn validate_url(s: &str) -> Result<url::Url, String> {
    let u =
        url::Url::parse(s).map_err(|e| format!("\"{}\" is not a URL: {e}", s.escape_debug()))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "must not contain a user name or password; credentials go in the secret keys"
                .to_string(),
        );
    }
    match u.scheme() {
        "https" => {}
        "http" if u.host_str().is_some_and(is_loopback_host) => {}
        "http" => {
            return Err(format!(
                "\"{s}\" uses plain http, which is allowed only for loopback hosts \
                 (127.0.0.0/8, ::1, localhost); use https"
            ));
        }
        other => return Err(format!("scheme \"{other}\" is not supported; use https")),
    }
    if u.host().is_none() {
        return Err(format!("\"{s}\" has no host"));
    }
    Ok(u)
}

/// Expands `~` and anchors relative paths at `base` (the config file's directory).
fn resolve_path(p: &str, base: Option<&Path>) -> Result<PathBuf, String> {
    if p.trim().is_empty() {
        return Err("is empty; give a path".into());
    }
    let expanded = if p == "~" || p.starts_with("~/") {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                format!("cannot expand \"{p}\": $HOME is not set; use an absolute path")
            })?;
        let mut h = PathBuf::from(home);
        if let Some(rest) = p.strip_prefix("~/") {
            h.push(rest);
        }
        h
    } else if p.starts_with('~') {
        return Err(format!(
            "\"{p}\": only \"~/\" (your own home) is expanded; use an absolute path"
        ));
    } else {
        PathBuf::from(p)
    };
    if expanded.is_absolute() {
        Ok(expanded)
    } else {
        match base {
            Some(b) => Ok(b.join(expanded)),
            None => Err(format!(
                "\"{p}\" is relative; use an absolute path or one starting with ~/"
            )),
        }
    }
}

/// Reads the secret a profile names from a file, the environment or a systemd credential.
fn read_secret(
    profile: &str,
    key: &str,
    value: &str,
    base: Option<&Path>,
) -> Result<Secret, ConfigError> {
    let err = |msg: String| key_err(profile, key, msg);
    if key.ends_with("_env") {
        let v = std::env::var(value).map_err(|_| {
            err(format!(
                "the environment variable {value} is not set (or not UTF-8) in the daemon's environment"
            ))
        })?;
        let s = Secret::new(v);
        if s.is_empty() {
            return Err(err(format!("the environment variable {value} is empty")));
        }
        return Ok(s);
    }
    let (path, check_mode) = if key.ends_with("_credential") {
        if value.is_empty() || value.contains('/') || value == "." || value == ".." {
            return Err(err(format!(
                "\"{}\" is not a credential name",
                value.escape_debug()
            )));
        }
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            err(format!(
                "$CREDENTIALS_DIRECTORY is not set; run under systemd with LoadCredential={value}:PATH \
                 or use a _file key instead"
            ))
        })?;
        // systemd makes the directory private to the service; its files' modes are its business
        (PathBuf::from(dir).join(value), false)
    } else {
        (resolve_path(value, base).map_err(&err)?, true)
    };
    read_secret_file(&path, check_mode).map_err(err)
}

fn read_secret_file(path: &Path, check_mode: bool) -> Result<Secret, String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    #[cfg(unix)]
    if check_mode {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} is accessible by group or others (mode {:03o}); run `chmod 600 {shown}`",
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = check_mode;
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "{shown} is {} bytes, too large for a secret (at most {MAX_SECRET_FILE})",
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    // `echo secret > file` leaves a newline that is not part of the secret
    let keep = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(keep);
    let s = Secret::new(text);
    if s.is_empty() {
        return Err(format!("{shown} is empty; put the secret in it"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
