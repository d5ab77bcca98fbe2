//! The `[[proxy]]` tables: local API proxies that add a profile's token to
//! every request and forward it to the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, validate_url};
use crate::spec::validate_profile_name;

/// Where a proxy listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProxyListen {
    /// A TCP address on loopback (`127.0.0.0/8` or `::1`); port 0 picks one.
    Tcp(SocketAddr),
    /// A Unix socket at this path.
    Unix(PathBuf),
}

impl std::fmt::Display for ProxyListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyListen::Tcp(a) => write!(f, "{a}"),
            ProxyListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What the proxy does with an `Authorization` header the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuthorization {
    /// Drop it and send the profile's token (the default).
    #[default]
    Replace,
    /// Answer 400: the client should not hold a token at all.
    Refuse,
}

/// One validated `[[proxy]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: ProxyListen,
    /// The API's base URL; a request for `/p?q` goes to `upstream` + `/p?q`.
    pub upstream: url::Url,
    /// The profile whose token is added.
    pub profile: String,
    /// Path prefixes that may be requested; empty allows every path.
    pub allow_paths: Vec<String>,
    pub client_authorization: ClientAuthorization,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    upstream: String,
    profile: String,
    #[serde(default)]
    allow_paths: Vec<String>,
    #[serde(default)]
    client_authorization: Option<String>,
}

/// The keys a `[[proxy]]` table may have.
const KEYS: &str = "listen, upstream, profile, allow_paths, client_authorization";

/// Validates the `proxy` array of tables. `base` resolves relative Unix
/// socket paths.
pub(super) fn parse(
    value: toml::Value,
    base: Option<&Path>,
) -> Result<Vec<ProxyConfig>, ConfigError> {
    let toml::Value::Array(items) = value else {
        return Err(ConfigError::new(
            "key \"proxy\": expected [[proxy]] tables (an array of tables)",
        ));
    };
    let mut out: Vec<ProxyConfig> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("[[proxy]] #{}", i + 1);
        let err = |m: String| ConfigError::new(format!("{at}: {m}"));
        let raw: Raw = item.try_into().map_err(|e: toml::de::Error| {
            let m = e.message().to_string();
            if m.starts_with("unknown field") || m.starts_with("missing field") {
                err(format!("{}; the keys are {KEYS}", m.replace('`', "\"")))
            } else {
                err(m)
            }
        })?;
        let p = validate(raw, base).map_err(err)?;
        if let Some(other) = out.iter().position(|o| o.listen == p.listen) {
            return Err(err(format!(
                "listen \"{}\" is also [[proxy]] #{}'s; each proxy needs its own address",
                p.listen,
                other + 1
            )));
        }
        out.push(p);
    }
    Ok(out)
}

fn validate(raw: Raw, base: Option<&Path>) -> Result<ProxyConfig, String> {
    for (key, v) in [
        ("listen", &raw.listen),
        ("upstream", &raw.upstream),
        ("profile", &raw.profile),
    ] {
        if v.chars().any(char::is_control) {
            return Err(format!("key \"{key}\": control characters are not allowed"));
        }
    }
    let listen = parse_listen(&raw.listen, base).map_err(|m| format!("key \"listen\": {m}"))?;
    let upstream = validate_url(&raw.upstream).map_err(|m| format!("key \"upstream\": {m}"))?;
    if upstream.query().is_some() || upstream.fragment().is_some() {
        return Err("key \"upstream\": a base URL has no query or fragment".into());
    }
    validate_profile_name(&raw.profile).map_err(|m| format!("key \"profile\": {m}"))?;
    for p in &raw.allow_paths {
        if !p.starts_with('/') || p.chars().any(|c| c.is_control() || c == '?' || c == '#') {
            return Err(format!(
                "key \"allow_paths\": \"{}\" is not a path prefix (it must start with / and \
                 hold no query)",
                p.escape_debug()
            ));
        }
    }
    let client_authorization = match raw.client_authorization.as_deref() {
        None | Some("replace") => ClientAuthorization::Replace,
        Some("refuse") => ClientAuthorization::Refuse,
        Some(other) => {
            return Err(format!(
                "key \"client_authorization\": \"{}\" is not one of \"replace\" (the default), \"refuse\"",
                other.escape_debug()
            ));
        }
    };
    Ok(ProxyConfig {
        listen,
        upstream,
        profile: raw.profile,
        allow_paths: raw.allow_paths,
        client_authorization,
    })
}

/// `127.0.0.1:PORT`, `[::1]:PORT`, `localhost:PORT` or `unix:PATH`.
fn parse_listen(s: &str, base: Option<&Path>) -> Result<ProxyListen, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        let path = super::sources::resolve_path(path, base)?;
        return Ok(ProxyListen::Unix(path));
    }
    let addr = if let Some(port) = s.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        s.to_string()
    };
    let addr: SocketAddr = addr.parse().map_err(|_| {
        format!(
            "\"{}\" is not an address; use \"127.0.0.1:PORT\", \"[::1]:PORT\" or \"unix:PATH\"",
            s.escape_debug()
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "\"{s}\" is not a loopback address; the proxy adds your token to every request, so \
             it listens on 127.0.0.1, ::1 or a Unix socket only"
        ));
    }
    Ok(ProxyListen::Tcp(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Vec<ProxyConfig>, String> {
        let t: toml::Table = text.parse().unwrap();
        parse(
            t["proxy"].clone(),
            Some(Path::new("/home/u/.config/ce-auth")),
        )
        .map_err(|e| e.message)
    }

    #[test]
    fn a_proxy_table_is_validated() {
        let p = one(
            "[[proxy]]\nlisten = \"127.0.0.1:8787\"\nupstream = \"https://api.example.org/v1\"\n\
             profile = \"dev\"\nallow_paths = [\"/api/\"]\nclient_authorization = \"refuse\"\n",
        )
        .unwrap();
        assert_eq!(
            p[0].listen,
            ProxyListen::Tcp("127.0.0.1:8787".parse().unwrap())
        );
        assert_eq!(p[0].client_authorization, ClientAuthorization::Refuse);
        let p = one("[[proxy]]\nlisten = \"unix:api.sock\"\nupstream = \"http://127.0.0.1:9/\"\nprofile = \"dev\"\n").unwrap();
        assert_eq!(
            p[0].listen,
            ProxyListen::Unix("/home/u/.config/ce-auth/api.sock".into())
        );
    }

    #[test]
    fn bad_proxy_tables_are_refused_with_the_reason() {
        for (text, needle) in [
            (
                "listen = \"0.0.0.0:8080\"\nupstream = \"https://a.org\"\nprofile = \"p\"",
                "not a loopback",
            ),
            (
                "listen = \"192.168.1.2:80\"\nupstream = \"https://a.org\"\nprofile = \"p\"",
                "not a loopback",
            ),
            (
                "listen = \"8080\"\nupstream = \"https://a.org\"\nprofile = \"p\"",
                "not an address",
            ),
            (
                "listen = \"127.0.0.1:1\"\nupstream = \"http://api.example.org\"\nprofile = \"p\"",
                "plain http",
            ),
            (
                "listen = \"127.0.0.1:1\"\nupstream = \"https://a.org\"\nprofile = \"-p\"",
                "profile",
            ),
            (
                "listen = \"127.0.0.1:1\"\nupstream = \"https://a.org\"\nprofile = \"p\"\nallow_paths = [\"api\"]",
                "path prefix",
            ),
            (
                "listen = \"127.0.0.1:1\"\nupstream = \"https://a.org\"\nprofile = \"p\"\nlisten_on = 1",
                "unknown field",
            ),
            ("listen = \"127.0.0.1:1\"\nprofile = \"p\"", "missing field"),
            (
                "listen = \"127.0.0.1:1\"\nupstream = \"https://a.org\"\nprofile = \"p\"\nclient_authorization = \"keep\"",
                "client_authorization",
            ),
        ] {
            let e = one(&format!("[[proxy]]\n{text}\n")).unwrap_err();
            assert!(
                e.contains(needle) && e.contains("[[proxy]] #1"),
                "{text}: {e}"
            );
        }
        let e = one(
            "[[proxy]]\nlisten = \"127.0.0.1:7\"\nupstream = \"https://a.org\"\nprofile = \"p\"\n\
             [[proxy]]\nlisten = \"127.0.0.1:7\"\nupstream = \"https://b.org\"\nprofile = \"p\"\n",
        )
        .unwrap_err();
        assert!(e.contains("#2") && e.contains("own address"), "{e}");
    }
}
