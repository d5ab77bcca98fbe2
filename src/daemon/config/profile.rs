//! One profile: from its [`ProfileSpec`] (as written) to a validated
//! [`Profile`] with defaults applied and its secret loaded.
//!
//! Building goes through small steps, each checking one group of keys:
//! where the profile comes from ([`Origin`]), names and strings, URLs, grant
//! and client authentication, the credentials, the timing keys and the
//! daemon-side files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sources::{read_secret, resolve_path};
use super::{
    ConfigError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LIFETIME,
    DEFAULT_REFRESH_FRACTION, DEFAULT_REFRESH_MARGIN, DEFAULT_RETRY_FLOOR, DEFAULT_TIMEOUT,
    key_err,
};
use crate::secret::Secret;
use crate::spec::{AuthMethod, Grant, ProfileSpec, is_loopback_host, validate_profile_name};

/// Climate Engine's token endpoint, the default `token_url`.
pub const CLIMATE_ENGINE_TOKEN_URL: &str = "https://auth.climateengine.com/api/v1/auth/jwt/token";

/// A validated profile: its settings with defaults applied, and its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// The settings as written (compared on reload to keep unchanged profiles' tokens).
    pub spec: ProfileSpec,
    /// Client secret (client_credentials) or password (password grant).
    pub secret: Option<Secret>,
    /// The token endpoint, normalised.
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
    /// Least time between two attempts started for waiting callers.
    pub retry_floor: Duration,
    pub token_file: Option<PathBuf>,
    pub git_hosts: Vec<String>,
}

/// Where a profile's settings come from, which decides what they may name.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// The config file, or the daemon itself (`--dev`, tests): every key,
    /// relative paths anchored at `base` (the config file's directory).
    Trusted { base: Option<&'a Path> },
    /// The `add` op: any peer allowed on the socket. It may not make the
    /// daemon read or write its files or read its environment.
    Peer,
}

/// Keys that name files or environment variables of the daemon; over the
/// socket they would let a peer read or overwrite the daemon user's files or
/// read its environment, so they come only from the config file.
const DAEMON_SIDE_KEYS: &[&str] = &[
    "client_secret_file",
    "client_secret_env",
    "client_secret_credential",
    "password_file",
    "password_env",
    "password_credential",
    "ca_file",
    "token_file",
];

impl Profile {
    /// Validates settings given by the daemon itself (`--dev`, tests, embedding),
    /// with the secret supplied directly or read from the source the spec names.
    /// Relative paths are refused, as there is no config file to anchor them.
    pub fn from_spec(
        name: &str,
        spec: ProfileSpec,
        secret: Option<Secret>,
    ) -> Result<Profile, ConfigError> {
        Profile::build(name, spec, secret, Origin::Trusted { base: None })
    }

    /// Validates settings sent by a peer (the `add` op): the secret comes
    /// inline, and keys naming the daemon's files or environment are refused.
    pub fn from_peer(
        name: &str,
        spec: ProfileSpec,
        secret: Option<Secret>,
    ) -> Result<Profile, ConfigError> {
        Profile::build(name, spec, secret, Origin::Peer)
    }

    /// A profile of the config file whose relative paths are anchored at `base`.
    pub(super) fn from_file(
        name: &str,
        spec: ProfileSpec,
        base: Option<&Path>,
    ) -> Result<Profile, ConfigError> {
        Profile::build(name, spec, None, Origin::Trusted { base })
    }

    fn build(
        name: &str,
        spec: ProfileSpec,
        secret: Option<Secret>,
        origin: Origin<'_>,
    ) -> Result<Profile, ConfigError> {
        validate_profile_name(name).map_err(ConfigError::new)?;
        let err = |key: &str, msg: String| key_err(name, key, msg);
        check_origin(&spec, origin, secret.is_some()).map_err(|(k, m)| err(k, m))?;
        check_strings(&spec).map_err(|(k, m)| err(k, m))?;
        let (token_url, api_url) = urls(&spec).map_err(|(k, m)| err(k, m))?;
        let (grant, auth_method) = grant_and_method(&spec).map_err(|(k, m)| err(k, m))?;
        let creds = credentials(&spec, grant).map_err(|(k, m)| err(k, m))?;
        let (client_id, username) = creds.ids(name)?;
        let secret = load_secret(name, grant, secret, &creds.sources, origin)?;
        let timing = timing(&spec).map_err(|(k, m)| err(k, m))?;
        let base = match origin {
            Origin::Trusted { base } => base,
            Origin::Peer => None,
        };
        let (ca_file, token_file) = files(&spec, base).map_err(|(k, m)| err(k, m))?;
        Ok(Profile {
            name: name.to_string(),
            token_url,
            api_url,
            grant,
            auth_method,
            client_id,
            username,
            scope: spec.scope.clone(),
            audience: spec.audience.clone(),
            resource: spec.resource.clone(),
            refresh_fraction: timing.refresh_fraction,
            refresh_margin: timing.refresh_margin,
            idle_timeout: timing.idle_timeout,
            default_lifetime: timing.default_lifetime,
            ca_file,
            connect_timeout: timing.connect_timeout,
            timeout: timing.timeout,
            retry_floor: timing.retry_floor,
            token_file,
            git_hosts: spec.git_hosts.clone(),
            spec,
            secret,
        })
    }
}

/// A failed check: the key and what is wrong with it.
type KeyError = (&'static str, String);

/// A peer's `add` carries its secret inline and names nothing of the daemon's.
fn check_origin(spec: &ProfileSpec, origin: Origin<'_>, inline: bool) -> Result<(), KeyError> {
    if !matches!(origin, Origin::Peer) {
        return Ok(());
    }
    if let Some(key) = DAEMON_SIDE_KEYS.iter().copied().find(|k| spec_has(spec, k)) {
        return Err((
            key,
            format!(
                "names a file or environment variable of the daemon, which only the \
                 configuration file may do; {}",
                if key.contains("secret") || key.contains("password") {
                    "send the secret inline instead (ce-auth add reads it from standard input)"
                } else {
                    "put this profile in the configuration file and run `ce-auth reload`"
                }
            ),
        ));
    }
    if !inline {
        return Err((
            "secret",
            "missing; a profile added over the socket carries its secret inline".into(),
        ));
    }
    Ok(())
}

/// Whether the spec sets `key` (one of [`DAEMON_SIDE_KEYS`]).
fn spec_has(spec: &ProfileSpec, key: &str) -> bool {
    match key {
        "client_secret_file" => spec.client_secret_file.is_some(),
        "client_secret_env" => spec.client_secret_env.is_some(),
        "client_secret_credential" => spec.client_secret_credential.is_some(),
        "password_file" => spec.password_file.is_some(),
        "password_env" => spec.password_env.is_some(),
        "password_credential" => spec.password_credential.is_some(),
        "ca_file" => spec.ca_file.is_some(),
        "token_file" => spec.token_file.is_some(),
        _ => false,
    }
}

/// Every string setting, by key, for the checks that apply to all of them.
fn strings(spec: &ProfileSpec) -> Vec<(&'static str, &str)> {
    let mut out: Vec<(&'static str, &str)> = [
        ("token_url", &spec.token_url),
        ("client_id", &spec.client_id),
        ("client_secret_file", &spec.client_secret_file),
        ("client_secret_env", &spec.client_secret_env),
        ("client_secret_credential", &spec.client_secret_credential),
        ("username", &spec.username),
        ("password_file", &spec.password_file),
        ("password_env", &spec.password_env),
        ("password_credential", &spec.password_credential),
        ("scope", &spec.scope),
        ("audience", &spec.audience),
        ("resource", &spec.resource),
        ("token_file", &spec.token_file),
        ("ca_file", &spec.ca_file),
        ("api_url", &spec.api_url),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    .collect();
    out.extend(spec.git_hosts.iter().map(|h| ("git_hosts", h.as_str())));
    out
}

/// No string setting holds a control character (a newline would forge log
/// lines, an escape sequence would reach terminals through `status`), and
/// the optional request parameters are not blank.
fn check_strings(spec: &ProfileSpec) -> Result<(), KeyError> {
    for (key, value) in strings(spec) {
        if value.chars().any(char::is_control) {
            return Err((
                key,
                format!(
                    "\"{}\" contains a control character (newline, tab, escape, ...); remove it",
                    value.escape_debug()
                ),
            ));
        }
    }
    for h in &spec.git_hosts {
        if h.trim().is_empty() || h.contains(char::is_whitespace) {
            return Err((
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
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err((key, "is empty; remove it or give a value".into()));
        }
    }
    Ok(())
}

/// The token URL (normalised) and the API base URL.
fn urls(spec: &ProfileSpec) -> Result<(String, String), KeyError> {
    let token_url = validate_url(
        spec.token_url
            .as_deref()
            .unwrap_or(CLIMATE_ENGINE_TOKEN_URL),
    )
    .map_err(|m| ("token_url", m))?;
    let api_url = match &spec.api_url {
        Some(u) => validate_url(u)
            .map_err(|m| ("api_url", m))?
            .as_str()
            .trim_end_matches('/')
            .to_string(),
        None => token_url.origin().ascii_serialization(),
    };
    Ok((token_url.to_string(), api_url))
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

/// The grant, and the client authentication method for `client_credentials`.
fn grant_and_method(spec: &ProfileSpec) -> Result<(Grant, Option<AuthMethod>), KeyError> {
    let grant = spec.grant.unwrap_or(Grant::ClientCredentials);
    let method = match (grant, spec.auth_method) {
        (Grant::Password, None) => None,
        (Grant::Password, Some(_)) => {
            return Err((
                "auth_method",
                "applies only to grant \"client_credentials\"; remove it for the password grant"
                    .into(),
            ));
        }
        (Grant::ClientCredentials, m) => Some(m.unwrap_or(AuthMethod::ClientSecretJwt)),
    };
    Ok((grant, method))
}

/// The identity key and secret sources of a grant, as written.
struct Credentials<'a> {
    grant: Grant,
    /// The id key (`client_id` or `username`) and its value.
    id: (&'static str, Option<&'a str>),
    /// The grant's own secret sources that are set: (key, value).
    sources: Vec<(&'static str, &'a str)>,
}

/// Sorts the credential keys by grant, refusing keys of the other grant.
fn credentials(spec: &ProfileSpec, grant: Grant) -> Result<Credentials<'_>, KeyError> {
    let client = [
        ("client_secret_file", spec.client_secret_file.as_deref()),
        ("client_secret_env", spec.client_secret_env.as_deref()),
        (
            "client_secret_credential",
            spec.client_secret_credential.as_deref(),
        ),
    ];
    let password = [
        ("password_file", spec.password_file.as_deref()),
        ("password_env", spec.password_env.as_deref()),
        ("password_credential", spec.password_credential.as_deref()),
    ];
    let (own, foreign, id, other_id) = match grant {
        Grant::ClientCredentials => (
            client,
            password,
            ("client_id", spec.client_id.as_deref()),
            ("username", spec.username.as_deref()),
        ),
        Grant::Password => (
            password,
            client,
            ("username", spec.username.as_deref()),
            ("client_id", spec.client_id.as_deref()),
        ),
    };
    // keys of the other grant are mistakes, not harmless extras
    if let Some((key, _)) = std::iter::once(other_id)
        .chain(foreign)
        .find(|(_, v)| v.is_some())
    {
        return Err((
            key,
            format!(
                "does not apply to grant \"{}\"; remove it or set grant accordingly",
                grant.as_str()
            ),
        ));
    }
    Ok(Credentials {
        grant,
        id,
        sources: own.iter().filter_map(|(k, v)| v.map(|v| (*k, v))).collect(),
    })
}

impl Credentials<'_> {
    /// `(client_id, username)`: the grant's id, which must be present.
    fn ids(&self, name: &str) -> Result<(Option<String>, Option<String>), ConfigError> {
        let (key, id) = self.id;
        let id = match id.map(str::trim) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                return Err(key_err(
                    name,
                    key,
                    format!("missing; grant \"{}\" needs it", self.grant.as_str()),
                ));
            }
        };
        Ok(match self.grant {
            Grant::ClientCredentials => (Some(id), None),
            Grant::Password => (None, Some(id)),
        })
    }
}

/// What a grant's secret is called in messages.
fn secret_word(grant: Grant) -> &'static str {
    match grant {
        Grant::ClientCredentials => "client secret",
        Grant::Password => "password",
    }
}

/// The secret: given inline, or read from the one source the spec names.
fn load_secret(
    name: &str,
    grant: Grant,
    inline: Option<Secret>,
    sources: &[(&'static str, &str)],
    origin: Origin<'_>,
) -> Result<Option<Secret>, ConfigError> {
    let what = secret_word(grant);
    match (inline, sources) {
        (Some(s), []) if s.is_empty() => Err(ConfigError::new(format!(
            "profile \"{name}\": the {what} given is empty"
        ))),
        (Some(s), []) => Ok(Some(s)),
        (Some(_), [(key, _), ..]) => Err(key_err(
            name,
            key,
            format!(
                "the {what} was given directly, so remove this key (a profile takes exactly one {what} source)"
            ),
        )),
        (None, []) => {
            let keys = match grant {
                Grant::ClientCredentials => {
                    "client_secret_file, client_secret_env, client_secret_credential"
                }
                Grant::Password => "password_file, password_env, password_credential",
            };
            Err(ConfigError::new(format!(
                "profile \"{name}\": no {what}; set one of {keys}"
            )))
        }
        (None, [(key, value)]) => {
            let base = match origin {
                Origin::Trusted { base } => base,
                // check_origin refused every source key already
                Origin::Peer => None,
            };
            read_secret(name, key, value, base).map(Some)
        }
        (None, [(a, _), (b, _), ..]) => Err(ConfigError::new(format!(
            "profile \"{name}\": keys \"{a}\" and \"{b}\" both give the {what}; keep exactly one"
        ))),
    }
}

/// The timing keys, range-checked, with defaults applied.
struct Timing {
    refresh_fraction: (f64, f64),
    refresh_margin: Duration,
    idle_timeout: Duration,
    default_lifetime: Duration,
    connect_timeout: Duration,
    timeout: Duration,
    retry_floor: Duration,
}

fn timing(spec: &ProfileSpec) -> Result<Timing, KeyError> {
    let refresh_fraction = match spec.refresh_fraction.as_deref() {
        None => DEFAULT_REFRESH_FRACTION,
        Some(&[x]) => (x, x),
        Some(&[lo, hi]) => (lo, hi),
        Some(_) => {
            return Err((
                "refresh_fraction",
                "expected [low, high], e.g. [0.5, 0.7]".into(),
            ));
        }
    };
    let (lo, hi) = refresh_fraction;
    if !(lo > 0.0 && lo <= hi && hi < 1.0) {
        return Err((
            "refresh_fraction",
            format!("expected 0 < low <= high < 1, e.g. [0.5, 0.7], got [{lo}, {hi}]"),
        ));
    }
    const DAY: u64 = 24 * 3600;
    let secs = |key: &'static str, v: Option<u64>, default: Duration, min: u64, max: u64| match v {
        None => Ok(default),
        Some(s) if (min..=max).contains(&s) => Ok(Duration::from_secs(s)),
        Some(s) => Err((
            key,
            format!("expected seconds between {min} and {max}, got {s}"),
        )),
    };
    Ok(Timing {
        refresh_fraction,
        refresh_margin: secs(
            "refresh_margin",
            spec.refresh_margin,
            DEFAULT_REFRESH_MARGIN,
            0,
            DAY,
        )?,
        idle_timeout: secs(
            "idle_timeout",
            spec.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
            1,
            365 * DAY,
        )?,
        default_lifetime: secs(
            "default_lifetime",
            spec.default_lifetime,
            DEFAULT_LIFETIME,
            1,
            DAY,
        )?,
        connect_timeout: secs(
            "connect_timeout",
            spec.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            1,
            600,
        )?,
        timeout: secs("timeout", spec.timeout, DEFAULT_TIMEOUT, 1, 600)?,
        retry_floor: secs(
            "retry_floor",
            spec.retry_floor,
            DEFAULT_RETRY_FLOOR,
            1,
            3600,
        )?,
    })
}

/// The daemon-side files: a CA bundle that must hold a certificate, and a
/// token file whose directory must exist.
fn files(
    spec: &ProfileSpec,
    base: Option<&Path>,
) -> Result<(Option<PathBuf>, Option<PathBuf>), KeyError> {
    let ca_file = match &spec.ca_file {
        None => None,
        Some(p) => {
            let path = resolve_path(p, base).map_err(|m| ("ca_file", m))?;
            let pem = std::fs::read(&path)
                .map_err(|e| ("ca_file", format!("cannot read {}: {e}", path.display())))?;
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) if !certs.is_empty() => {}
                _ => {
                    return Err((
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
            let path = resolve_path(p, base).map_err(|m| ("token_file", m))?;
            if !path.parent().is_some_and(Path::is_dir) {
                return Err((
                    "token_file",
                    format!(
                        "the directory of {} does not exist; create it first",
                        path.display()
                    ),
                ));
            }
            Some(path)
        }
    };
    Ok((ca_file, token_file))
}
