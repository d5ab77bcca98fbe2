//! The socket protocol (v1): request and reply types shared by `ce-authd` and `ce-auth`.
//!
//! Framing lives in [`crate::framing`]; this module only says what a line means.
//! Every request is one JSON object tagged by `op`; every reply is one JSON
//! object with `"ok": true` and the op's fields, or `"ok": false` and an
//! [`WireError`]. See `docs/PROTOCOL.md` for the full description.

use serde::{Deserialize, Serialize};

use crate::exit::client as exit;
use crate::secret::Secret;
use crate::spec::ProfileSpec;

/// The protocol version this build speaks. Bumped only for incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line, in bytes including the `\n`, either side may send.
pub const MAX_LINE: usize = 64 * 1024;

/// The `min_ttl` used when a `token` request names none, in seconds.
pub const DEFAULT_MIN_TTL: u64 = 60;

/// The `wait` used when a `token` request names none, in seconds: a caller
/// without a usable token gets a token or `issuer_unavailable` within it.
pub const DEFAULT_WAIT: u64 = 10;

/// The longest `wait` honoured, in seconds; longer ones are cut to this.
pub const MAX_WAIT: u64 = 300;

/// The longest access token accepted, in bytes (issuers' JWTs are 1–2 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Whether `t` is an RFC 6750 `b64token` (`[A-Za-z0-9-._~+/]+=*`) of at most
/// [`MAX_TOKEN_LEN`] bytes: safe in an HTTP header, an environment variable
/// and on a terminal. The daemon accepts no other token from an issuer, and
/// clients check again before they print one.
pub fn is_bearer_token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && t.len() <= MAX_TOKEN_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Version handshake; a client should send it first.
    Hello {
        /// The protocol version the client speaks.
        version: u32,
        /// Free-form client name, for logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// A fresh access token for a profile (the default profile when absent).
    Token {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// Seconds the token must still be valid for; [`DEFAULT_MIN_TTL`] when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_ttl: Option<u64>,
        /// Seconds to wait for a token when none held will do ([`DEFAULT_WAIT`]
        /// when absent, at most [`MAX_WAIT`]); 0 answers at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait: Option<u64>,
    },
    /// Daemon and per-profile state.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// Only the profiles whose names sort after this one: the next page
        /// when a reply had `next_after` (it would not fit one line).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Load a profile and its secret at runtime, held in memory only.
    Add {
        profile: String,
        /// The profile's settings, with the same keys as a `[profiles.NAME]` table.
        settings: Box<ProfileSpec>,
        /// The client secret (client_credentials) or password (password grant).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<Secret>,
        /// Replace a profile of the same name instead of refusing.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replace: bool,
    },
    /// Forget a profile, its secret and its token.
    Remove { profile: String },
    /// Obtain a new token now (the default profile when absent), even if the cached one is fresh.
    Refresh {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// Seconds to wait for the attempt (the request timeout and 2 s when
        /// absent, at most [`MAX_WAIT`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait: Option<u64>,
    },
    /// Re-read the configuration file; unchanged profiles keep their tokens.
    Reload {},
    /// The issuer's `users/me` for a profile's token (the default profile when absent).
    Whoami {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// The tutorial's bootstrap, done by the daemon: password grant with `email`
    /// and `password`, then create an API client (`POST /api/v1/clients/`).
    Login {
        /// The token endpoint; Climate Engine's when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_url: Option<String>,
        email: String,
        password: Secret,
    },
    /// Stop the daemon after answering.
    Shutdown {},
}

impl Request {
    /// The op name as it appears on the wire, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Token { .. } => "token",
            Request::Status { .. } => "status",
            Request::Add { .. } => "add",
            Request::Remove { .. } => "remove",
            Request::Refresh { .. } => "refresh",
            Request::Reload {} => "reload",
            Request::Whoami { .. } => "whoami",
            Request::Login { .. } => "login",
            Request::Shutdown {} => "shutdown",
        }
    }
}

/// Stable error codes carried in failure replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line was not a valid request (bad JSON, unknown op or field, wrong type).
    BadRequest,
    /// The line was longer than [`MAX_LINE`]; the daemon closes the connection after this reply.
    LineTooLong,
    /// The client's protocol version is not supported.
    UnsupportedVersion,
    /// No profile of that name, or no default profile.
    UnknownProfile,
    /// A profile of that name already exists (`add` without `replace`).
    ProfileExists,
    /// The issuer refused the credentials (invalid_client, invalid_grant, other permanent errors).
    CredentialsRejected,
    /// The issuer could not be reached or answered with a transient error, and no
    /// token with enough time left is held.
    IssuerUnavailable,
    /// The configuration (file or `add` settings) is invalid.
    ConfigError,
    /// The peer is not allowed to talk to this daemon.
    PermissionDenied,
    /// Too many connections; try again.
    Busy,
    /// The daemon is shutting down.
    ShuttingDown,
    /// A bug in the daemon; the message says more.
    Internal,
}

impl ErrorCode {
    /// The `ce-auth` exit status for this error (documented in the README).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::UnknownProfile => exit::UNKNOWN_PROFILE,
            ErrorCode::CredentialsRejected => exit::CREDENTIALS_REJECTED,
            ErrorCode::IssuerUnavailable => exit::ISSUER_UNAVAILABLE,
            ErrorCode::ConfigError => exit::CONFIG,
            ErrorCode::PermissionDenied => exit::NOT_RUNNING,
            _ => exit::FAILURE,
        }
    }
}

/// The error object of a failure reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    /// A human-readable, actionable message. Never contains a secret or token.
    pub message: String,
}

impl WireError {
    /// A new error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

/// Reply to `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The protocol version the daemon speaks.
    pub version: u32,
    /// The daemon's name and package version, e.g. `ce-authd 0.1.0`.
    pub daemon: String,
    /// The daemon's process id.
    pub pid: u32,
}

/// Reply to `token` and `refresh`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenReply {
    pub access_token: Secret,
    /// Always `bearer` (lower case), whatever the issuer's spelling.
    pub token_type: String,
    /// Expiry, in seconds since the Unix epoch.
    pub expires_at: i64,
    /// The profile the token belongs to (resolved when the request named none).
    pub profile: String,
}

/// State of one profile, as reported by `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileStatus {
    pub name: String,
    /// One of `empty` (no token yet), `fresh`, `refreshing`, `backoff`, `failed`, `idle`.
    pub state: String,
    pub grant: String,
    /// Client authentication method; absent for the password grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    pub token_url: String,
    /// Expiry of the held token (Unix seconds), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When the next background refresh is due (Unix seconds), if scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh: Option<i64>,
    /// When the last token was obtained (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<i64>,
    /// The last failure, as a readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Tokens handed to callers.
    pub served: u64,
    /// Tokens obtained from the issuer.
    pub refreshed: u64,
    /// Failed token requests.
    pub failed: u64,
}

/// Reply to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub version: u32,
    pub daemon: String,
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime: u64,
    /// Whether secret memory is locked against swap.
    pub memory_locked: bool,
    /// Whether the daemon is dumpable (its memory readable by other processes
    /// of the user, core files possible); `None` where the OS has no such notion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumpable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    pub profiles: Vec<ProfileStatus>,
    /// The local API proxies (`[[proxy]]`), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<ProxyStatus>,
    /// Set when `profiles` stops short to keep the reply within [`MAX_LINE`]:
    /// the last name listed, to send as `after` for the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// `s` with control characters (newlines, escape sequences) written as
/// escapes, so text from a peer or the issuer cannot forge log lines or
/// terminal output, nor drive a terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// One local API proxy in a `status` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// The address it listens on (`127.0.0.1:8787`, `unix:/path`).
    pub listen: String,
    /// `http://ADDR` for a TCP proxy: what programs use as the API's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where requests go.
    pub upstream: String,
    /// Whose token is added.
    pub profile: String,
    /// Requests from the daemon's user.
    pub requests: u64,
    /// Connections refused (another uid, or an owner that could not be found).
    pub refused: u64,
    /// Connections closed at once because the proxy was serving its most.
    #[serde(default)]
    pub turned_away: u64,
    /// Requests the proxy itself answered with a 5xx (no token, upstream unreachable).
    pub errors: u64,
    /// Refresh-and-retries after an upstream 401.
    pub refreshes: u64,
    /// Connections open now.
    pub connections: u64,
}

/// Reply to `add` and `remove`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileReply {
    pub profile: String,
}

/// Reply to `reload`: which profiles changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// Reply to `whoami`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoamiReply {
    pub profile: String,
    /// The issuer's `users/me` object, as returned.
    pub user: serde_json::Value,
}

/// Reply to `login`: the new API client. The secret is shown once; store it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginReply {
    pub client_id: String,
    pub client_secret: Secret,
    /// The user the client belongs to.
    pub user_id: String,
}

/// Reply to `shutdown`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// Appends `{"ok":true, ...fields of body}\n` to `out` without an intermediate buffer.
pub fn write_ok<T: Serialize>(out: &mut Vec<u8>, body: &T) {
    let start = out.len();
    out.extend_from_slice(b"{\"ok\":true");
    let body_at = out.len();
    if serde_json::to_writer(&mut *out, body).is_err() || out.get(body_at) != Some(&b'{') {
        out.truncate(start);
        write_err(
            out,
            &WireError::new(ErrorCode::Internal, "reply could not be serialised"),
        );
        return;
    }
    if out.len() - body_at == 2 {
        // an empty object: `{"ok":true{}` becomes `{"ok":true}`
        out.truncate(body_at);
        out.push(b'}');
    } else {
        // splice the body's fields after `"ok":true`
        out[body_at] = b',';
    }
    out.push(b'\n');
}

/// Appends `{"ok":false,"error":{...}}\n` to `out`.
pub fn write_err(out: &mut Vec<u8>, error: &WireError) {
    #[derive(Serialize)]
    struct Err<'a> {
        ok: bool,
        error: &'a WireError,
    }
    // a struct of a bool, an enum and a string always serialises
    serde_json::to_writer(&mut *out, &Err { ok: false, error }).expect("error reply serialises");
    out.push(b'\n');
}

/// Parses a reply line into `T` on success, or the daemon's [`WireError`].
///
/// Returns `Err(None)` when the line is not a valid reply at all.
pub fn parse_reply<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, Option<WireError>> {
    #[derive(Deserialize)]
    struct Envelope {
        ok: bool,
        #[serde(default)]
        error: Option<WireError>,
    }
    let env: Envelope = serde_json::from_slice(line).map_err(|_| None)?;
    if env.ok {
        serde_json::from_slice(line).map_err(|_| None)
    } else {
        Err(env.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_b64tokens() {
        for ok in ["a", "eyJ.eyJ.c2ln", "A-b_c~d+e/f==", "x="] {
            assert!(is_bearer_token(ok), "{ok}");
        }
        for bad in [
            "",
            "=",
            "a b",
            "tok\nX-Injected: 1",
            "t\u{1b}[31m",
            "a=b",
            "é",
            "a\r",
        ] {
            assert!(!is_bearer_token(bad), "{bad:?}");
        }
        assert!(is_bearer_token(&"a".repeat(MAX_TOKEN_LEN)));
        assert!(!is_bearer_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
    }
}
