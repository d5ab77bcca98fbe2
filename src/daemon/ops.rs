//! One function per socket op: turns a request into a reply.
//!
//! Replies are serialised straight into the connection's write buffer, one
//! line each, so a batch of pipelined requests is answered with one write.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::daemon::config::DaemonSettings;
use crate::daemon::config::{Config, Profile};
use crate::daemon::engine::Engine;
use crate::protocol::{
    self, DEFAULT_MIN_TTL, DEFAULT_WAIT, Empty, ErrorCode, HelloReply, LoginReply,
    PROTOCOL_VERSION, ProfileReply, ReloadReply, Request, StatusReply, TokenReply, WhoamiReply,
    WireError,
};
use crate::secret::Secret;

/// What every connection handler shares.
pub struct Shared {
    pub engine: Arc<Engine>,
    /// The config file `reload` re-reads; `None` when the daemon runs without one (e.g. `--dev` only).
    pub config_path: Option<PathBuf>,
    pub settings: DaemonSettings,
    pub started: Instant,
    /// Fires when a client sends `shutdown`; `run` then returns.
    pub shutdown: tokio::sync::Notify,
    /// The local API proxies.
    pub proxies: crate::daemon::proxy::Proxies,
}

impl Shared {
    /// Shared state for a daemon started now.
    pub fn new(
        engine: Arc<Engine>,
        config_path: Option<PathBuf>,
        settings: DaemonSettings,
    ) -> Shared {
        Shared {
            engine,
            config_path,
            settings,
            started: Instant::now(),
            shutdown: tokio::sync::Notify::new(),
            proxies: crate::daemon::proxy::Proxies::new(),
        }
    }
}

/// The daemon's name and version as reported by `hello` and `status`.
pub fn daemon_name() -> String {
    concat!("ce-authd ", env!("CARGO_PKG_VERSION")).to_string()
}

/// What a peer may ask of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The daemon's own user: every op.
    Owner,
    /// A uid admitted by `[daemon] allow_uids`: `hello`, `token` and `status`
    /// only. It may use tokens, not change profiles, secrets or the daemon.
    ReadOnly,
}

impl Role {
    /// The role of a peer with effective uid `uid` (`None` where the OS has no uids).
    pub fn of(uid: Option<u32>) -> Role {
        match uid {
            Some(uid) if uid != crate::paths::current_uid() => Role::ReadOnly,
            _ => Role::Owner,
        }
    }

    /// Whether this role may send `req`.
    fn allows(self, req: &Request) -> bool {
        self == Role::Owner
            || matches!(
                req,
                Request::Hello { .. } | Request::Token { .. } | Request::Status { .. }
            )
    }
}

/// Parses one request line from a peer of `role` and answers what needs no
/// waiting: appends the reply for a `token` the cache can satisfy, `hello`,
/// `status`, a bad request or a refused op, and returns `None`. Any other
/// request is returned parsed, for [`handle`] to answer (the server runs it
/// on the main runtime), so every line gets exactly one reply.
///
/// Never fails: bad input becomes a `bad_request` reply. The raw line is never
/// logged, since requests may carry secrets.
pub fn answer_now(shared: &Shared, line: &[u8], out: &mut Vec<u8>, role: Role) -> Option<Request> {
    if let Some((profile, min_ttl)) = fast_token(line) {
        let min_ttl = Duration::from_secs(min_ttl.unwrap_or(DEFAULT_MIN_TTL));
        if shared.engine.cached_token_line(profile, min_ttl, out) {
            return None;
        }
    }
    match parse_request(line) {
        Ok(req) if !role.allows(&req) => {
            tracing::warn!(
                op = req.op(),
                "refused: an allow_uids peer may not use this op"
            );
            let e = WireError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "`{}` is for the daemon's own user; a uid admitted by allow_uids may use \
                     hello, token and status only",
                    req.op()
                ),
            );
            protocol::write_err(out, &e);
            None
        }
        Ok(Request::Hello { version, client }) => {
            respond(out, hello(version, client.as_deref()));
            None
        }
        Ok(Request::Status { profile, after }) => {
            respond(
                out,
                status(shared, profile.as_deref(), after.as_deref()).map(fit_one_line),
            );
            None
        }
        Ok(req) => Some(req),
        Err(e) => {
            // names the client chose are quoted with control characters escaped (json_error)
            tracing::debug!(error = %e.message, "bad request");
            protocol::write_err(out, &e);
            None
        }
    }
}

/// Parses a request line, with an actionable `bad_request` error on failure.
pub fn parse_request(line: &[u8]) -> Result<Request, WireError> {
    let text = std::str::from_utf8(line).map_err(|e| {
        WireError::new(
            ErrorCode::BadRequest,
            format!(
                "request is not valid UTF-8 (bad byte at offset {}); send one JSON object per line",
                e.valid_up_to()
            ),
        )
    })?;
    // serde would also take `[tag, ...]` arrays for a tagged enum; the protocol is objects only
    if !text.trim_start().starts_with('{') {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            r#"bad request: a request is one JSON object per line, e.g. {"op":"hello","version":1}"#,
        ));
    }
    serde_json::from_str(text).map_err(|e| WireError::new(ErrorCode::BadRequest, json_error(&e)))
}

/// Answers one parsed request, appending one reply line to `out`.
pub async fn handle(shared: &Shared, req: Request, out: &mut Vec<u8>) {
    match req {
        Request::Hello { version, client } => respond(out, hello(version, client.as_deref())),
        Request::Token {
            profile,
            min_ttl,
            wait,
        } => respond(out, token(shared, profile.as_deref(), min_ttl, wait).await),
        Request::Status { profile, after } => respond(
            out,
            status(shared, profile.as_deref(), after.as_deref()).map(fit_one_line),
        ),
        Request::Add {
            profile,
            settings,
            secret,
            replace,
        } => respond(out, add(shared, &profile, *settings, secret, replace)),
        Request::Remove { profile } => respond(out, remove(shared, &profile)),
        Request::Refresh { profile, wait } => {
            respond(out, refresh(shared, profile.as_deref(), wait).await)
        }
        Request::Reload {} => respond(out, reload(shared)),
        Request::Whoami { profile } => respond(out, whoami(shared, profile.as_deref()).await),
        Request::Login {
            token_url,
            email,
            password,
        } => respond(
            out,
            login(shared, token_url.as_deref(), &email, &password).await,
        ),
        Request::Shutdown {} => respond(out, shutdown(shared)),
    }
}

/// `hello`: the version handshake. Only the daemon's own major version is accepted.
pub fn hello(version: u32, client: Option<&str>) -> Result<HelloReply, WireError> {
    if version != PROTOCOL_VERSION {
        return Err(WireError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "this daemon speaks protocol v{PROTOCOL_VERSION}, the client v{version}; \
                 use a ce-auth and ce-authd of matching versions (restart the daemon after upgrading)"
            ),
        ));
    }
    if let Some(client) = client {
        tracing::debug!(client = %client.escape_debug(), "hello");
    }
    Ok(HelloReply {
        version: PROTOCOL_VERSION,
        daemon: daemon_name(),
        pid: std::process::id(),
    })
}

/// `token`: a token with at least `min_ttl` seconds left ([`DEFAULT_MIN_TTL`]
/// when absent), waiting at most `wait` seconds ([`DEFAULT_WAIT`] when absent).
pub async fn token(
    shared: &Shared,
    profile: Option<&str>,
    min_ttl: Option<u64>,
    wait: Option<u64>,
) -> Result<TokenReply, WireError> {
    let min_ttl = Duration::from_secs(min_ttl.unwrap_or(DEFAULT_MIN_TTL));
    let wait = Duration::from_secs(wait.unwrap_or(DEFAULT_WAIT));
    Ok(shared.engine.token_within(profile, min_ttl, wait).await?)
}

/// `status`: daemon information and the state of one or every profile (of
/// those after `after`). On the socket the reply goes through
/// [`fit_one_line`].
pub fn status(
    shared: &Shared,
    profile: Option<&str>,
    after: Option<&str>,
) -> Result<StatusReply, WireError> {
    let mut profiles = shared.engine.status(profile)?;
    if let Some(after) = after {
        profiles.retain(|p| p.name.as_str() > after);
    }
    let reply = StatusReply {
        version: PROTOCOL_VERSION,
        daemon: daemon_name(),
        pid: std::process::id(),
        uptime: shared.started.elapsed().as_secs(),
        memory_locked: crate::secret::memory_locked(),
        dumpable: crate::daemon::hardening::is_dumpable(),
        default_profile: shared.engine.default_profile(),
        profiles,
        proxies: shared.proxies.status(),
        next_after: None,
    };
    Ok(reply)
}

/// `reply` with as many of its profiles as keep its line within
/// [`protocol::MAX_LINE`] (1,000 profiles take several times that), and
/// `next_after` naming the last one kept when some were left out.
pub fn fit_one_line(mut reply: StatusReply) -> StatusReply {
    let line_len = |r: &StatusReply| {
        let mut v = Vec::new();
        protocol::write_ok(&mut v, r);
        v.len()
    };
    if line_len(&reply) <= protocol::MAX_LINE {
        return reply;
    }
    let rest = std::mem::take(&mut reply.profiles);
    // room for `,"next_after":"NAME"`, however the name is escaped
    let longest = rest.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let mut used = line_len(&reply) + 16 + 6 * longest;
    let mut keep = 0;
    for p in &rest {
        // the entry and its comma
        let n = serde_json::to_vec(p).map_or(usize::MAX, |v| v.len()) + 1;
        if used.saturating_add(n) > protocol::MAX_LINE {
            break;
        }
        used += n;
        keep += 1;
    }
    let keep = keep.max(1);
    reply.profiles = rest;
    reply.profiles.truncate(keep);
    reply.next_after = reply.profiles.last().map(|p| p.name.clone());
    reply
}

/// `add`: validates the settings and loads the profile.
pub fn add(
    shared: &Shared,
    profile: &str,
    settings: crate::spec::ProfileSpec,
    secret: Option<Secret>,
    replace: bool,
) -> Result<ProfileReply, WireError> {
    let p = Profile::from_peer(profile, settings, secret)
        .map_err(|e| WireError::new(ErrorCode::ConfigError, e.message))?;
    shared.engine.add(p, replace)?;
    tracing::info!(profile = %profile.escape_debug(), "profile added");
    Ok(ProfileReply {
        profile: profile.to_string(),
    })
}

/// `remove`: forgets a profile, its secret and its token.
pub fn remove(shared: &Shared, profile: &str) -> Result<ProfileReply, WireError> {
    shared.engine.remove(profile)?;
    tracing::info!(profile = %profile.escape_debug(), "profile removed");
    Ok(ProfileReply {
        profile: profile.to_string(),
    })
}

/// `refresh`: a new token now, even if the cached one is fresh.
pub async fn refresh(
    shared: &Shared,
    profile: Option<&str>,
    wait: Option<u64>,
) -> Result<TokenReply, WireError> {
    let wait = wait.map(Duration::from_secs);
    Ok(shared.engine.refresh_within(profile, wait).await?)
}

/// `reload` (and SIGHUP): re-reads the configuration file and applies it.
///
/// A broken file, or one that would go past the profile cap, leaves the
/// running configuration untouched and is reported as `config_error`.
pub fn reload(shared: &Shared) -> Result<ReloadReply, WireError> {
    let Some(path) = shared.config_path.as_deref() else {
        return Err(WireError::new(
            ErrorCode::ConfigError,
            "the daemon runs without a configuration file; start it with --config to use reload",
        ));
    };
    crate::daemon::systemd::notify_reloading();
    // new proxy addresses are bound first, so a busy port changes nothing
    let result = Config::load(path)
        .map_err(|e| e.message)
        .and_then(|config| {
            let proxies = shared.proxies.prepare(&config.proxies)?;
            let reply = shared.engine.reload(config).map_err(|e| e.message)?;
            shared.proxies.commit(&shared.engine, proxies);
            Ok(reply)
        });
    let result = match result {
        Ok(reply) => {
            tracing::info!(
                added = reply.added.len(),
                removed = reply.removed.len(),
                changed = reply.changed.len(),
                "configuration reloaded"
            );
            Ok(reply)
        }
        Err(message) => {
            tracing::warn!(error = %message, "reload failed; keeping the running configuration");
            Err(WireError::new(
                ErrorCode::ConfigError,
                format!("{message}; the running configuration is unchanged"),
            ))
        }
    };
    crate::daemon::systemd::notify_ready();
    result
}

/// `whoami`: the issuer's `users/me` for a profile's token.
pub async fn whoami(shared: &Shared, profile: Option<&str>) -> Result<WhoamiReply, WireError> {
    Ok(shared.engine.whoami(profile).await?)
}

/// `login`: password grant, then a new API client.
pub async fn login(
    shared: &Shared,
    token_url: Option<&str>,
    email: &str,
    password: &Secret,
) -> Result<LoginReply, WireError> {
    Ok(shared.engine.login(token_url, email, password).await?)
}

/// `shutdown`: answers, then asks the server to stop.
pub fn shutdown(shared: &Shared) -> Result<Empty, WireError> {
    tracing::info!("shutdown requested over the socket");
    // a stored permit: the server sees it even if it is not waiting right now
    shared.shutdown.notify_one();
    Ok(Empty {})
}

/// Appends the reply line for `result` to `out`.
pub fn respond<T: Serialize>(out: &mut Vec<u8>, result: Result<T, WireError>) {
    match result {
        Ok(body) => protocol::write_ok(out, &body),
        Err(e) => protocol::write_err(out, &e),
    }
}

/// The `token` request in its common shape, parsed without building a [`Request`]:
/// `Some((profile, min_ttl))`, or `None` to use [`parse_request`] instead.
///
/// Anything unusual (escapes, other ops, errors) returns `None` and takes the
/// full path, so the two parsers cannot disagree on what they both accept.
pub fn fast_token(line: &[u8]) -> Option<(Option<&str>, Option<u64>)> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fast<'a> {
        #[serde(borrow)]
        op: &'a str,
        #[serde(default, borrow)]
        profile: Option<&'a str>,
        #[serde(default)]
        min_ttl: Option<u64>,
    }
    // serde reads a struct from a JSON array too (`["token"]`); the protocol is objects only
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    // from_slice validates UTF-8 inside the borrowed strings it returns
    let f: Fast<'_> = serde_json::from_slice(line).ok()?;
    (f.op == "token").then_some((f.profile, f.min_ttl))
}

/// A serde_json error as an actionable message that never echoes values
/// (a mistyped field could hold a secret).
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let msg = e.to_string();
    // serde_json appends " at line L column C"; keep the column for the client
    let (what, place) = match msg.rfind(" at line ") {
        Some(i) => (&msg[..i], &msg[i..]),
        None => (msg.as_str(), ""),
    };
    let what = if let Some(rest) = what
        .strip_prefix("invalid type: ")
        .or_else(|| what.strip_prefix("invalid value: "))
    {
        match rest.find(", expected ") {
            Some(i) => format!("wrong type or value, expected {}", &rest[i + 11..]),
            None => "wrong type or value".to_string(),
        }
    } else {
        what.to_string()
    };
    let what = what
        .replace(
            "internally tagged enum Request",
            "a request object with an `op`",
        )
        .replace("variant identifier", "an op name");
    let hint = match e.classify() {
        Category::Syntax | Category::Eof => "; send one JSON object per line",
        Category::Data => "; see docs/PROTOCOL.md for the ops and their fields",
        Category::Io => "",
    };
    crate::protocol::printable(&format!("bad request: {what}{place}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ok_splices_fields_and_handles_empty_bodies() {
        let mut out = Vec::new();
        protocol::write_ok(&mut out, &Empty {});
        protocol::write_ok(
            &mut out,
            &ProfileReply {
                profile: "dev".into(),
            },
        );
        assert_eq!(out, b"{\"ok\":true}\n{\"ok\":true,\"profile\":\"dev\"}\n");
    }

    #[test]
    fn fast_path_agrees_with_the_full_parser() {
        let cases: &[&[u8]] = &[
            br#"{"op":"token"}"#,
            br#"{"op":"token","profile":"dev","min_ttl":5}"#,
            br#"{"op":"token","profile":null}"#,
            br#"{"op":"token","profile":"d\"ev"}"#,
            br#"{"op":"token","extra":1}"#,
            br#"{"op":"status"}"#,
            br#"{"op":"token","min_ttl":-1}"#,
            br#"["token"]"#,
            br#"["token","dev",5]"#,
            br#" ["token"]"#,
        ];
        for line in cases {
            let full = parse_request(line);
            // when the fast path returns None the full parser decides alone
            if let Some((p, t)) = fast_token(line) {
                match full {
                    Ok(Request::Token {
                        profile,
                        min_ttl,
                        wait: None,
                    }) => {
                        assert_eq!(p, profile.as_deref());
                        assert_eq!(t, min_ttl);
                    }
                    other => panic!("fast path accepted what the full parser gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn arrays_never_take_the_fast_path() {
        assert_eq!(fast_token(br#"{"op":"token"}"#), Some((None, None)));
        assert_eq!(fast_token(br#" {"op":"token"}"#), Some((None, None)));
        for line in [
            &br#"["token"]"#[..],
            br#"["token","dev",5]"#,
            b"\t[\"token\"]",
        ] {
            assert_eq!(fast_token(line), None, "{}", String::from_utf8_lossy(line));
            assert!(parse_request(line).is_err());
        }
    }

    #[test]
    fn op_and_field_names_cannot_forge_lines() {
        for line in [
            &b"{\"op\":\"x\\nINFO forged\\u001b[31m\"}"[..],
            b"{\"op\":\"token\",\"a\\r\\nb\":1}",
        ] {
            let e = parse_request(line).unwrap_err();
            assert!(!e.message.chars().any(char::is_control), "{:?}", e.message);
            assert!(e.message.contains("\\n"), "{:?}", e.message);
        }
    }

    #[test]
    fn json_errors_never_echo_values() {
        let e = parse_request(br#"{"op":"token","min_ttl":"hunter2"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert!(e.message.contains("expected u64"), "{}", e.message);
        let e = parse_request(b"[1,2]").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        let e = parse_request(br#"{"op":7}"#).unwrap_err();
        assert!(e.message.contains("op name"), "{}", e.message);
        let e = parse_request(br#"{"op":"tokn"}"#).unwrap_err();
        assert!(
            e.message.contains("unknown variant `tokn`"),
            "{}",
            e.message
        );
        let e = parse_request(b"\xff\xfe").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }

    #[test]
    fn hello_accepts_only_our_major_version() {
        assert_eq!(
            hello(PROTOCOL_VERSION, None).unwrap().version,
            PROTOCOL_VERSION
        );
        let e = hello(PROTOCOL_VERSION + 1, Some("x")).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    }
}
