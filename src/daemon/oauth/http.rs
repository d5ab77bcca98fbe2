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

pub use super::stream::ApiClient;
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
/// so connections are reused and each profile's limits apply; and one TLS
/// configuration per CA file, shared by its token and API clients, so both
/// trust exactly the same roots and the root store is held once.
#[derive(Default)]
pub struct HttpClients {
    clients: Mutex<HashMap<ClientKey, Client>>,
    api: Mutex<HashMap<ClientKey, ApiClient>>,
    tls: Mutex<HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    ca_file: Option<PathBuf>,
    connect_timeout: Duration,
    /// The whole request's limit; for [`HttpClients::streaming_for_profile`]
    /// the limit on silence instead (a download may take hours).
    timeout: Duration,
}

/// How long a proxied API response may go without a byte before it is cut.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(300);

impl HttpClients {
    /// An empty cache.
    pub fn new() -> Self {
        HttpClients::default()
    }

    /// The client for a profile's settings, built on first use.
    pub fn for_profile(&self, p: &Profile) -> Result<Client, TokenError> {
        self.get(p.ca_file.clone(), p.connect_timeout, p.timeout)
    }

    /// The client for API requests proxied for a profile: its roots and
    /// connect timeout, no limit on the whole request (responses are
    /// streamed), [`STREAM_READ_TIMEOUT`] between reads.
    pub fn streaming_for_profile(&self, p: &Profile) -> Result<ApiClient, TokenError> {
        let key = ClientKey {
            ca_file: p.ca_file.clone(),
            connect_timeout: p.connect_timeout,
            timeout: STREAM_READ_TIMEOUT,
        };
        let mut clients = self.api.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let env = |k: &str| std::env::var(k).ok();
        let client = ApiClient::new(
            self.tls_for(&key.ca_file)?,
            proxy_from(&env)?,
            key.connect_timeout,
            key.timeout,
            describe_roots(key.ca_file.as_deref(), &env).into(),
        );
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The TLS configuration trusting `ca_file`'s roots besides the system's
    /// and the built-in ones, built on first use.
    fn tls_for(&self, ca_file: &Option<PathBuf>) -> Result<Arc<rustls::ClientConfig>, TokenError> {
        let mut tls = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = tls.get(ca_file) {
            return Ok(Arc::clone(c));
        }
        let config = Arc::new(tls_config(ca_file.as_deref())?);
        tls.insert(ca_file.clone(), Arc::clone(&config));
        Ok(config)
    }

    /// The client for a CA file and timeouts, built on first use.
    pub fn get(
        &self,
        ca_file: Option<PathBuf>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Client, TokenError> {
        self.cached(ClientKey {
            ca_file,
            connect_timeout,
            timeout,
        })
    }

    fn cached(&self, key: ClientKey) -> Result<Client, TokenError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let tls = self.tls_for(&key.ca_file)?;
        let client = build_client(&key, &tls, &|k| std::env::var(k).ok())?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// Where https requests to remote hosts go: `HTTPS_PROXY` (or `ALL_PROXY`)
/// minus `NO_PROXY` and loopback. Its URL may hold the proxy's password,
/// so it never appears in a message, nor in `Debug` output.
#[derive(Clone)]
pub(crate) struct ProxyRule {
    url: String,
    no_proxy: String,
}

impl std::fmt::Debug for ProxyRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRule")
            .field("url", &"<redacted>")
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxyRule {
    fn reqwest(&self) -> reqwest::Proxy {
        // checked in `proxy_from`
        reqwest::Proxy::https(&self.url)
            .expect("a proxy URL checked when read")
            .no_proxy(reqwest::NoProxy::from_string(&self.no_proxy))
    }

    /// The same rule for hyper-util's connectors (reqwest uses this matcher
    /// itself, so both clients choose alike).
    pub(crate) fn matcher(&self) -> hyper_util::client::proxy::matcher::Matcher {
        hyper_util::client::proxy::matcher::Matcher::builder()
            .https(self.url.as_str())
            .no(self.no_proxy.as_str())
            .build()
    }
}

/// The proxy for https requests, from the environment (`HTTPS_PROXY`,
/// `https_proxy`, `ALL_PROXY`, `all_proxy`, first set wins), with
/// `NO_PROXY` / `no_proxy` and loopback exempt. `None` when none is set.
fn proxy_from(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<ProxyRule>, TokenError> {
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
    let url = url.trim().to_string();
    // the value may hold the proxy's password: never in a message
    let valid = reqwest::Proxy::https(&url).is_ok()
        && url
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
    if !valid {
        return Err(TokenError::permanent(format!(
            "{name} is not a valid proxy URL (expected http://[user:password@]host:port); \
             fix or unset it in ce-authd's environment"
        )));
    }
    Ok(Some(ProxyRule { url, no_proxy }))
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
    tls: &rustls::ClientConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Client, TokenError> {
    let inner = builder(key, tls, env)?.build().map_err(|e| {
        TokenError::permanent(format!("cannot build the HTTP client: {}", chain(&e)))
    })?;
    Ok(Client {
        inner,
        roots: describe_roots(key.ca_file.as_deref(), env).into(),
    })
}

/// The client's settings: timeouts, no redirects, the proxy and the roots.
fn builder(
    key: &ClientKey,
    tls: &rustls::ClientConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<reqwest::ClientBuilder, TokenError> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(key.connect_timeout)
        .use_preconfigured_tls(tls.clone())
        .timeout(key.timeout)
        // a token endpoint that redirects is misconfigured; following a POST
        // redirect could also send credentials elsewhere
        .redirect(reqwest::redirect::Policy::none())
        // reqwest's own proxy rules would send plain http (and loopback) to
        // HTTP_PROXY; ours are set below
        .no_proxy();
    if let Some(proxy) = proxy_from(env)? {
        b = b.proxy(proxy.reqwest());
    }
    Ok(b)
}

/// What every HTTPS connection trusts: Mozilla's roots built in, the
/// system's (`SSL_CERT_FILE` / `SSL_CERT_DIR` instead when set), and
/// `ca_file`'s certificates. HTTP/1.1 only: one token request at a time per
/// profile, and downloads stream faster without HTTP/2's flow control.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TokenError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // stores often hold a few certificates rustls cannot use (ancient or
    // malformed): skipped, as other tools do
    let native = rustls_native_certs::load_native_certs();
    let (valid, invalid) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(
        valid,
        invalid,
        errors = native.errors.len(),
        "system roots loaded"
    );
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            TokenError::permanent(format!("cannot read ca_file {}: {e}", path.display()))
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                TokenError::permanent(format!(
                    "ca_file {}: not PEM certificates: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(TokenError::permanent(format!(
                "ca_file {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                TokenError::permanent(format!(
                    "ca_file {}: a certificate rustls cannot use as a root: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TokenError::permanent(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The advice appended to a certificate failure.
pub(crate) fn untrusted_hint(roots: &str) -> String {
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
    fn no_proxy_cidr_ranges_and_suffixes_decide_the_api_route() {
        // no connection: an address inside the range would leave the machine
        let rule = proxy_from(&env(&[
            ("HTTPS_PROXY", "http://p.example.test:3128"),
            ("NO_PROXY", "10.0.0.0/8, .corp.test, 2001:db8::/32"),
        ]))
        .unwrap()
        .unwrap();
        let m = rule.matcher();
        let proxied = |u: &str| m.intercept(&u.parse().unwrap()).is_some();
        for direct in [
            "https://10.1.2.3/",
            "https://10.255.0.1:8443/x",
            "https://api.corp.test/",
            "https://[2001:db8::7]/",
            "https://127.0.0.1:9/",
            "https://[::1]:9/",
            "https://localhost/",
        ] {
            assert!(!proxied(direct), "{direct} should go direct");
        }
        for via in [
            "https://11.0.0.1/",
            "https://192.0.2.7/",
            "https://api.climateengine.org/",
            "https://corp.test.evil.example/",
            "https://[2001:db9::1]/",
        ] {
            assert!(proxied(via), "{via} should go through the proxy");
        }
    }

    #[test]
    fn a_bad_proxy_url_is_named_without_its_value() {
        let e = proxy_from(&env(&[("HTTPS_PROXY", "http://u:hunter2@[bad")])).unwrap_err();
        assert!(e.message.contains("HTTPS_PROXY"), "{}", e.message);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }

    /// Where one https request from a client built with `env` went: to the
    /// proxy (`Some` with its CONNECT line) or straight to the host (`None`).
    /// Names resolve to `direct`, a listener on 127.0.0.1 that stands in for
    /// a remote host; no request leaves the machine.
    async fn route(
        env_pairs: &'static [(&'static str, &'static str)],
        url: &str,
    ) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let direct = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://127.0.0.1:{}", proxy.local_addr().unwrap().port());
        let proxy_url: &'static str = Box::leak(proxy_url.into_boxed_str());
        let env = move |k: &str| {
            if k == "HTTPS_PROXY" {
                return Some(proxy_url.to_string());
            }
            env_pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let key = ClientKey {
            ca_file: None,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        };
        let direct_addr = direct.local_addr().unwrap();
        let url = url.replace("PORT", &direct_addr.port().to_string());
        let host = url::Url::parse(&url)
            .unwrap()
            .host_str()
            .unwrap()
            .to_string();
        let tls = tls_config(None).unwrap();
        let client = builder(&key, &tls, &env)
            .unwrap()
            .resolve(&host, direct_addr)
            .build()
            .unwrap();
        let request = tokio::spawn(async move { client.get(url).send().await });
        let seen = tokio::select! {
            c = proxy.accept() => {
                let (mut s, _) = c.unwrap();
                let mut head = vec![0u8; 1024];
                let n = s.read(&mut head).await.unwrap();
                let head = String::from_utf8_lossy(&head[..n]).to_string();
                Some(head.lines().next().unwrap_or_default().to_string())
            }
            c = direct.accept() => { c.unwrap(); None }
            _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("no connection for {host}"),
        };
        request.abort();
        seen
    }

    #[tokio::test]
    async fn no_proxy_sends_matching_hosts_direct_and_the_rest_through_the_proxy() {
        const NO: &[(&str, &str)] = &[("NO_PROXY", ".example.test, 10.0.0.0/8")];
        // a domain suffix matches the domain and its subdomains
        assert_eq!(route(NO, "https://auth.example.test:PORT/t").await, None);
        assert_eq!(route(NO, "https://example.test:PORT/t").await, None);
        // other hosts, and addresses outside the CIDR range, go through the proxy
        let line = route(NO, "https://auth.other.test:PORT/t")
            .await
            .expect("proxied");
        assert!(line.starts_with("CONNECT auth.other.test:"), "{line}");
        let line = route(NO, "https://192.0.2.7:443/t").await.expect("proxied");
        assert_eq!(line, "CONNECT 192.0.2.7:443 HTTP/1.1");
        // loopback never goes through a proxy, whatever NO_PROXY says
        assert_eq!(route(&[], "https://localhost:PORT/t").await, None);
        assert_eq!(route(&[], "https://127.0.0.1:PORT/t").await, None);
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
