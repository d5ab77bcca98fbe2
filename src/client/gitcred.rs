//! git's credential-helper protocol (gitcredentials(7), git-credential(1)):
//! parsing git's request, choosing a profile by host, and formatting the answer.
//!
//! Pure functions; `ce-auth git-credential` does the I/O.

use std::fmt::Write as _;

/// What git asks about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CredentialRequest {
    pub protocol: Option<String>,
    /// Host, with `:port` when git has one.
    pub host: Option<String>,
    /// Repository path; only sent when `credential.useHttpPath` is on.
    pub path: Option<String>,
    pub username: Option<String>,
    /// `capability[]` values git announced (e.g. `authtype`, `state`).
    pub capabilities: Vec<String>,
}

/// A malformed request from git.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum GitCredError {
    #[error("line {0} of git's credential request has no `=`")]
    NoEquals(usize),
    #[error("git's credential request has an invalid url: {0}")]
    BadUrl(String),
}

impl CredentialRequest {
    /// Parses `key=value` lines up to a blank line or the end of input.
    /// Unknown keys are ignored, as the protocol asks.
    pub(super) fn parse(input: &str) -> Result<CredentialRequest, GitCredError> {
        let mut req = CredentialRequest::default();
        for (i, line) in input.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let (key, value) = line.split_once('=').ok_or(GitCredError::NoEquals(i + 1))?;
            match key {
                "protocol" => req.protocol = Some(value.to_string()),
                "host" => req.host = Some(value.to_string()),
                "path" => req.path = Some(value.to_string()),
                "username" => req.username = Some(value.to_string()),
                "capability[]" => req.capabilities.push(value.to_string()),
                "url" => req.apply_url(value)?,
                _ => {}
            }
        }
        Ok(req)
    }

    fn apply_url(&mut self, value: &str) -> Result<(), GitCredError> {
        let url = url::Url::parse(value).map_err(|e| GitCredError::BadUrl(e.to_string()))?;
        self.protocol = Some(url.scheme().to_string());
        self.host = url.host_str().map(|h| match url.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        });
        let path = url.path().trim_start_matches('/');
        self.path = (!path.is_empty()).then(|| path.to_string());
        if !url.username().is_empty() {
            self.username = Some(url.username().to_string());
        }
        Ok(())
    }

    /// Whether git announced a capability.
    pub(super) fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }

    /// Whether a bearer token may be handed out for this request: HTTPS, or
    /// plain HTTP to a loopback host only (the token would travel in clear text).
    pub(super) fn transport_is_safe(&self) -> bool {
        match self.protocol.as_deref() {
            Some("https") => true,
            Some("http") => self
                .host
                .as_deref()
                .is_some_and(|h| crate::spec::is_loopback_host(strip_port(h))),
            _ => false,
        }
    }
}

fn strip_port(host: &str) -> &str {
    // `[::1]:8080`, `example.com:8080`; a bare IPv6 address has several colons
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A profile's `git_hosts` entries, for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GitProfile {
    pub name: String,
    /// Entries `host`, `host:port` or `host/path-prefix`.
    pub git_hosts: Vec<String>,
    /// The profile's client id, answered as git's username.
    pub client_id: Option<String>,
}

/// How specific a `git_hosts` entry's match is: `None` for no match,
/// else the length of its path prefix (longer wins).
fn match_entry(entry: &str, host: &str, path: Option<&str>) -> Option<usize> {
    let entry = entry.trim();
    let entry = entry
        .strip_prefix("https://")
        .or_else(|| entry.strip_prefix("http://"))
        .unwrap_or(entry);
    let (entry_host, entry_path) = match entry.split_once('/') {
        Some((h, p)) => (h, p.trim_matches('/')),
        None => (entry, ""),
    };
    let host_matches = entry_host.eq_ignore_ascii_case(host)
        // an entry without a port matches the host on any port
        || (!entry_host.contains(':') && entry_host.eq_ignore_ascii_case(strip_port(host)));
    if !host_matches {
        return None;
    }
    if entry_path.is_empty() {
        return Some(0);
    }
    let path = path?.trim_matches('/');
    let rest = path.strip_prefix(entry_path)?;
    // prefix on a path-segment boundary: `org` matches `org/repo`, not `orgx/repo`
    (rest.is_empty() || rest.starts_with('/')).then_some(entry_path.len())
}

/// The profile whose `git_hosts` best match the request (the longest path prefix;
/// on a tie the first in name order), or `None`.
pub(super) fn match_profile<'a>(
    req: &CredentialRequest,
    profiles: &'a [GitProfile],
) -> Option<&'a GitProfile> {
    let host = req.host.as_deref()?;
    let mut best: Option<(usize, &GitProfile)> = None;
    for p in profiles {
        for entry in &p.git_hosts {
            if let Some(score) = match_entry(entry, host, req.path.as_deref())
                && best.is_none_or(|(s, _)| score > s)
            {
                best = Some((score, p));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Formats the answer to `get`: a bearer credential when git understands
/// `authtype`, else a username and the token as password.
///
/// Returns `None` when a value cannot be carried by the protocol (a newline or NUL).
pub(super) fn format_answer(
    req: &CredentialRequest,
    username: &str,
    token: &str,
    expires_at: i64,
) -> Option<String> {
    let clean = |s: &str| !s.contains(['\n', '\0']);
    if !clean(token) || !clean(username) {
        return None;
    }
    let mut out = String::new();
    // writing to a String cannot fail
    if req.has_capability("authtype") {
        let _ = writeln!(out, "capability[]=authtype");
        let _ = writeln!(out, "authtype=Bearer");
        let _ = writeln!(out, "credential={token}");
        // a token that lapses in minutes is not worth storing in another helper
        let _ = writeln!(out, "ephemeral=true");
    } else {
        if req.username.is_none() {
            let _ = writeln!(out, "username={username}");
        }
        let _ = writeln!(out, "password={token}");
    }
    let _ = writeln!(out, "password_expiry_utc={expires_at}");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> Vec<GitProfile> {
        vec![
            GitProfile {
                name: "all".into(),
                git_hosts: vec!["git.example.com".into()],
                client_id: None,
            },
            GitProfile {
                name: "team".into(),
                git_hosts: vec!["git.example.com/team".into()],
                client_id: Some("cid".into()),
            },
            GitProfile {
                name: "port".into(),
                git_hosts: vec!["other.example:8443".into()],
                client_id: None,
            },
        ]
    }

    fn req(text: &str) -> CredentialRequest {
        CredentialRequest::parse(text).unwrap()
    }

    #[test]
    fn parses_keys_until_the_blank_line() {
        let r = req(
            "protocol=https\nhost=git.example.com\ncapability[]=authtype\ncapability[]=state\n\nhost=ignored\n",
        );
        assert_eq!(r.protocol.as_deref(), Some("https"));
        assert_eq!(r.host.as_deref(), Some("git.example.com"));
        assert!(r.has_capability("authtype") && r.has_capability("state"));
        assert_eq!(r.path, None);
    }

    #[test]
    fn parses_crlf_unknown_keys_and_url() {
        let r = req(
            "wwwauth[]=Bearer realm=x\r\nurl=https://me@git.example.com:8443/team/repo.git\r\n",
        );
        assert_eq!(r.host.as_deref(), Some("git.example.com:8443"));
        assert_eq!(r.path.as_deref(), Some("team/repo.git"));
        assert_eq!(r.username.as_deref(), Some("me"));
        assert_eq!(r.protocol.as_deref(), Some("https"));
    }

    #[test]
    fn rejects_lines_without_equals() {
        assert_eq!(
            CredentialRequest::parse("protocol=https\nnonsense\n"),
            Err(GitCredError::NoEquals(2))
        );
        assert!(matches!(
            CredentialRequest::parse("url=::not a url"),
            Err(GitCredError::BadUrl(_))
        ));
    }

    #[test]
    fn longest_path_prefix_wins_and_host_alone_matches() {
        let ps = profiles();
        let pick = |t: &str| match_profile(&req(t), &ps).map(|p| p.name.as_str());
        assert_eq!(pick("host=git.example.com\n"), Some("all"));
        assert_eq!(
            pick("host=GIT.example.com\npath=team/repo.git\n"),
            Some("team")
        );
        assert_eq!(
            pick("host=git.example.com\npath=teamx/repo.git\n"),
            Some("all")
        );
        assert_eq!(pick("host=git.example.com:443\n"), Some("all"));
        assert_eq!(pick("host=other.example:8443\n"), Some("port"));
        assert_eq!(pick("host=other.example\n"), None);
        assert_eq!(pick("host=nowhere.example\n"), None);
        assert_eq!(pick("protocol=https\n"), None);
    }

    #[test]
    fn path_entries_need_git_to_send_the_path() {
        let ps = vec![profiles().remove(1)];
        assert!(match_profile(&req("host=git.example.com\n"), &ps).is_none());
    }

    #[test]
    fn plain_answer_has_username_password_and_expiry() {
        let r = req("protocol=https\nhost=h\n");
        let out = format_answer(&r, "cid", "tok", 1700000000).unwrap();
        assert_eq!(
            out,
            "username=cid\npassword=tok\npassword_expiry_utc=1700000000\n"
        );
        let r = req("protocol=https\nhost=h\nusername=given\n");
        let out = format_answer(&r, "cid", "tok", 5).unwrap();
        assert!(!out.contains("username="), "{out}");
    }

    #[test]
    fn authtype_answer_is_a_bearer_credential() {
        let r = req("protocol=https\nhost=h\ncapability[]=authtype\n");
        let out = format_answer(&r, "cid", "tok", 5).unwrap();
        assert_eq!(
            out,
            "capability[]=authtype\nauthtype=Bearer\ncredential=tok\nephemeral=true\npassword_expiry_utc=5\n"
        );
    }

    #[test]
    fn values_with_newlines_are_refused() {
        let r = req("host=h\n");
        assert_eq!(format_answer(&r, "u", "a\nb", 1), None);
        assert_eq!(format_answer(&r, "u\0", "t", 1), None);
    }

    #[test]
    fn tokens_only_travel_over_https_or_loopback_http() {
        assert!(req("protocol=https\nhost=h\n").transport_is_safe());
        assert!(req("protocol=http\nhost=127.0.0.1:8080\n").transport_is_safe());
        assert!(req("protocol=http\nhost=localhost\n").transport_is_safe());
        assert!(req("protocol=http\nhost=[::1]:80\n").transport_is_safe());
        assert!(!req("protocol=http\nhost=example.com\n").transport_is_safe());
        assert!(!req("protocol=ssh\nhost=example.com\n").transport_is_safe());
        assert!(!req("host=example.com\n").transport_is_safe());
    }

    proptest::proptest! {
        #[test]
        fn any_input_parses_or_errors_without_panicking(input in "(?s).{0,400}") {
            if let Ok(r) = CredentialRequest::parse(&input) {
                let _ = r.transport_is_safe();
                let _ = match_profile(&r, &profiles());
            }
        }

        #[test]
        fn answers_parse_back_to_the_token(
            token in "[A-Za-z0-9._~+/=-]{1,300}",
            expires_at in 0i64..4_000_000_000,
            authtype in proptest::bool::ANY,
        ) {
            let r = CredentialRequest {
                capabilities: if authtype { vec!["authtype".into()] } else { vec![] },
                ..CredentialRequest::default()
            };
            let out = format_answer(&r, "u", &token, expires_at).unwrap();
            let key = if authtype { "credential" } else { "password" };
            let got: Vec<&str> = out
                .lines()
                .filter_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .collect();
            proptest::prop_assert_eq!(got, vec![token.as_str()]);
        }
    }
}
