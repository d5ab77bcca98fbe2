//! The profile spec: the settings of one profile as written, in a
//! `[profiles.NAME]` table of the config file or in the `add` op, and the
//! rules both sides apply to names and hosts.

use serde::{Deserialize, Serialize};

/// The OAuth2 grant a profile uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// `client_credentials`: an API client id and secret.
    ClientCredentials,
    /// `password`: a user's e-mail and password, no client authentication.
    Password,
}

/// How a `client_credentials` request authenticates the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with `client_id:client_secret`.
    ClientSecretBasic,
    /// `client_id` and `client_secret` as form fields.
    ClientSecretPost,
    /// An HS256 client assertion signed with the secret (OIDC Core §9).
    ClientSecretJwt,
}

impl Grant {
    /// Every grant, in the order messages list them.
    pub const ALL: [Grant; 2] = [Grant::ClientCredentials, Grant::Password];

    /// The name used in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
        }
    }
}

impl AuthMethod {
    /// Every method, in the order messages list them.
    pub const ALL: [AuthMethod; 3] = [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::ClientSecretJwt,
    ];

    /// The name used in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretJwt => "client_secret_jwt",
        }
    }
}

/// Parses a name from `all` by [`as_str`](Grant::as_str), with a message
/// listing the valid names (for command-line flags).
fn parse_name<T: Copy>(s: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T, String> {
    all.iter().copied().find(|v| name(*v) == s).ok_or_else(|| {
        let names: Vec<String> = all.iter().map(|v| format!("\"{}\"", name(*v))).collect();
        format!(
            "expected {}, got \"{}\"",
            names.join(" or "),
            s.escape_debug()
        )
    })
}

impl std::str::FromStr for Grant {
    type Err = String;
    fn from_str(s: &str) -> Result<Grant, String> {
        parse_name(s, &Grant::ALL, Grant::as_str)
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<AuthMethod, String> {
        parse_name(s, &AuthMethod::ALL, AuthMethod::as_str)
    }
}

/// One `[profiles.NAME]` table as written (also the `settings` of the `add` op).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// The token endpoint; Climate Engine's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// `client_credentials` (default) or `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// `client_secret_basic`, `client_secret_post` or `client_secret_jwt` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<AuthMethod>,
    /// The API client's id (client_credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A file holding the client secret (mode 0600 or stricter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    /// An environment variable of the daemon holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// Name of a systemd credential (a file in `$CREDENTIALS_DIRECTORY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_credential: Option<String>,
    /// The user's e-mail (password grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password (mode 0600 or stricter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// An environment variable of the daemon holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Name of a systemd credential holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_credential: Option<String>,
    /// `scope` form parameter of token requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `audience` form parameter of token requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `resource` form parameter of token requests (RFC 8707).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Hosts (optionally `host/path` prefixes) whose git credentials this profile answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub git_hosts: Vec<String>,
    /// A file the daemon keeps holding the current token (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Background refresh happens at a random point in this window, as
    /// fractions of the token's lifetime: `[low, high]` (default `[0.5, 0.7]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_fraction: Option<Vec<f64>>,
    /// Seconds before expiry by which a refresh is due at the latest (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_margin: Option<u64>,
    /// Seconds without use after which background refresh stops (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// Token lifetime in seconds assumed when the issuer gives none (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_lifetime: Option<u64>,
    /// Extra CA certificates (PEM) to trust for the token and API endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Seconds to wait for a TCP/TLS connection (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<u64>,
    /// Seconds a whole request may take (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Least seconds between two attempts made because callers are waiting
    /// for a token the daemon cannot serve (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_floor: Option<u64>,
    /// Base URL of the API (`users/me`, `clients/`); the token URL's origin when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Every key of a profile table, for "unknown key" messages.
#[cfg(feature = "daemon")]
pub(crate) const SPEC_KEYS: &[&str] = &[
    "token_url",
    "grant",
    "auth_method",
    "client_id",
    "client_secret_file",
    "client_secret_env",
    "client_secret_credential",
    "username",
    "password_file",
    "password_env",
    "password_credential",
    "scope",
    "audience",
    "resource",
    "git_hosts",
    "token_file",
    "refresh_fraction",
    "refresh_margin",
    "idle_timeout",
    "default_lifetime",
    "ca_file",
    "connect_timeout",
    "timeout",
    "retry_floor",
    "api_url",
];

/// Checks a profile name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`, not
/// starting with `.` or `-`. Names end up in file names (`<profile>.secret`)
/// and on command lines, so they stay plain.
pub fn validate_profile_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "profile \"{}\": invalid name; use 1 to 64 letters, digits, '.', '_' or '-', \
             not starting with '.' or '-'",
            name.escape_debug()
        ))
    }
}

/// Whether `host` (a name or an IP address, IPv6 in brackets or not, no port)
/// is the loopback interface: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_are_plain() {
        for ok in ["dev", "climate-engine", "a.b_c", "A1", &"x".repeat(64)] {
            assert!(validate_profile_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-flag",
            "a/b",
            "a b",
            "é",
            "..",
            &"x".repeat(65),
        ] {
            assert!(validate_profile_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grant_and_method_names_round_trip() {
        for g in Grant::ALL {
            assert_eq!(g.as_str().parse::<Grant>(), Ok(g));
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(json, format!("\"{}\"", g.as_str()));
        }
        for m in AuthMethod::ALL {
            assert_eq!(m.as_str().parse::<AuthMethod>(), Ok(m));
        }
        let e = "pasword".parse::<Grant>().unwrap_err();
        assert_eq!(
            e,
            "expected \"client_credentials\" or \"password\", got \"pasword\""
        );
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.org", "10.0.0.1", "localhost.example.org", "[::2]"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
