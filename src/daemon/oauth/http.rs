//! The HTTP clients of token and API requests: which roots are trusted,
//! which requests go through a proxy, and the timeouts.
//!
//! Trust: the system's roots (the OS store, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` instead, as OpenSSL does), Mozilla's roots built in, and a
//! profile's `ca_file`. So a network with TLS inspection or a private CA works
//! with no ce-auth setting once its CA is where other tools look for it.
//!
//! Proxies: `HTTPS_PROXY` (or `ALL_PROXY`) for https requests to remote
//! hosts, minus `NO_PROXY` (domain suffixes, IP addresses and CIDR ranges).
//! Plain-http requests (allowed only to loopback) and anything to loopback
//! never go through a proxy: a token request carries a secret in its body,
//! and a proxy is usually another machine. `HTTP_PROXY` is not used at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{TokenError, USER_AGENT};
use crate::daemon::config::Profile;
use crate::daemon::error_chain as chain;

/// Always reached directly, whatever `NO_PROXY` says.
const NEVER_PROXIED: &str = "localhost,127.0.0.0/8,::1";

/// An HTTP client and a description of the roots it trusts (for TLS errors).
#[derive(Clone)]
pub struct Client {
    pub(super) inner: reqwest::Client,
    pub(super) roots: Arc<str>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// HTTP clients shared by all profiles: one per distinct (CA file, timeouts),
/// so connections are reused and each profile's limits apply.
#[derive(Default)]
pub struct HttpClients {
    clients: Mutex<HashMap<ClientKey, Client>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    ca_file: Option<PathBuf>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl HttpClients {
    /// An empty cache.
    pub fn new() -> Self {
        HttpClients::default()
    }

    /// The client for a profile's settings, built on first use.
    pub fn for_profile(&self, p: &Profile) -> Result<Client, TokenError> {
        self.get(p.ca_file.clone(), p.connect_timeout, p.timeout)
    }

    /// The client for a CA file and timeouts, built on first use.
    pub fn get(
        &self,
        ca_file: Option<PathBuf>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Client, TokenError> {
        let key = ClientKey {
            ca_file,
            connect_timeout,
            timeout,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = build_client(&key, &|k| std::env::var(k).ok())?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// The proxy for https requests, from the environment (`HTTPS_PROXY`,
/// `https_proxy`, `ALL_PROXY`, `all_proxy`, first set wins), with
/// `NO_PROXY` / `no_proxy` and loopback exempt. `None` when none is set.
fn proxy_from(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<reqwest::Proxy>, TokenError> {
    let Some((name, url)) = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .into_iter()
        .find_map(|k| env(k).filter(|v| !v.trim().is_empty()).map(|v| (k, v)))
    else {
        return Ok(None);
    };
    let no_proxy = env("NO_PROXY")
        .or_else(|| env("no_proxy"))
        .filter(|v| !v.trim().is_empty())
        .map(|v| format!("{v},{NEVER_PROXIED}"))
        .unwrap_or_else(|| NEVER_PROXIED.to_string());
    // the value may hold the proxy's password: never in a message
    let proxy = reqwest::Proxy::https(url.trim()).map_err(|_| {
        TokenError::permanent(format!(
            "{name} is not a valid proxy URL (expected http://[user:password@]host:port); \
             fix or unset it in ce-authd's environment"
        ))
    })?;
    Ok(Some(
        proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy)),
    ))
}

/// What a client trusts, for messages: `SSL_CERT_FILE` / `SSL_CERT_DIR` when
/// set (they replace the OS store), else the OS store; the built-in roots;
/// the profile's CA file.
fn describe_roots(ca_file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut parts = Vec::new();
    let file = env("SSL_CERT_FILE").filter(|v| !v.is_empty());
    let dir = env("SSL_CERT_DIR").filter(|v| !v.is_empty());
    match (&file, &dir) {
        (None, None) => parts.push("the system's certificate store".to_string()),
        _ => {
            if let Some(f) = file {
                parts.push(format!("SSL_CERT_FILE={f}"));
            }
            if let Some(d) = dir {
                parts.push(format!("SSL_CERT_DIR={d}"));
            }
        }
    }
    parts.push("Mozilla's roots built into ce-authd".into());
    if let Some(ca) = ca_file {
        parts.push(format!("ca_file {}", ca.display()));
    }
    parts.join(", ")
}

fn build_client(
    key: &ClientKey,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Client, TokenError> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(key.connect_timeout)
        .timeout(key.timeout)
        // a token endpoint that redirects is misconfigured; following a POST
        // redirect could also send credentials elsewhere
        .redirect(reqwest::redirect::Policy::none())
        // reqwest's own proxy rules would send plain http (and loopback) to
        // HTTP_PROXY; ours are set below
        .no_proxy();
    if let Some(proxy) = proxy_from(env)? {
        b = b.proxy(proxy);
    }
    if let Some(path) = &key.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            TokenError::permanent(format!("cannot read ca_file {}: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            TokenError::permanent(format!(
                "ca_file {}: not PEM certificates: {e}",
                path.display()
            ))
        })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    let inner = b.build().map_err(|e| {
        TokenError::permanent(format!("cannot build the HTTP client: {}", chain(&e)))
    })?;
    Ok(Client {
        inner,
        roots: describe_roots(key.ca_file.as_deref(), env).into(),
    })
}

/// The advice appended to a certificate failure.
pub(super) fn untrusted_hint(roots: &str) -> String {
    format!(
        "; trusted roots: {roots}. To trust a private or inspecting CA, add it to the system \
         store (e.g. update-ca-certificates), point SSL_CERT_FILE or SSL_CERT_DIR at it in \
         ce-authd's environment, or set ca_file in the profile"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_proxy_without_the_environment() {
        assert!(
            proxy_from(&env(&[("HTTP_PROXY", "http://p:1")]))
                .unwrap()
                .is_none()
        );
        assert!(proxy_from(&env(&[])).unwrap().is_none());
        assert!(
            proxy_from(&env(&[("HTTPS_PROXY", "http://p:1")]))
                .unwrap()
                .is_some()
        );
        assert!(
            proxy_from(&env(&[("all_proxy", "http://p:1")]))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_bad_proxy_url_is_named_without_its_value() {
        let e = proxy_from(&env(&[("HTTPS_PROXY", "http://u:hunter2@[bad")])).unwrap_err();
        assert!(e.message.contains("HTTPS_PROXY"), "{}", e.message);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }

    #[test]
    fn roots_are_described() {
        let d = describe_roots(Some(Path::new("/ca.pem")), &env(&[]));
        assert!(
            d.contains("system's certificate store") && d.contains("ca_file /ca.pem"),
            "{d}"
        );
        let d = describe_roots(None, &env(&[("SSL_CERT_FILE", "/x.pem")]));
        assert!(
            d.contains("SSL_CERT_FILE=/x.pem") && !d.contains("system"),
            "{d}"
        );
    }
}
