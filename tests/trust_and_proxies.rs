//! Trust roots and proxies with the real daemon: an issuer behind TLS with a
//! certificate from a CA made in the test, trusted only through
//! `SSL_CERT_FILE`, `SSL_CERT_DIR` or a profile's `ca_file`; and a real
//! CONNECT proxy on 127.0.0.1 that carries token requests to "remote"
//! issuers, with credentials that never reach a log, while loopback and
//! plain-http issuers are always reached directly.

use serde_json::json;

use crate::util::daemon::{Authd, Home, Spec};
use crate::util::issuer::{Account, CLIENT_ID, CLIENT_SECRET, TestIssuer};
use crate::util::line::error_code;
use crate::util::tls::{ConnectProxy, TestCa, TlsFront, basic};

const TOKEN_PATH: &str = "/api/v1/auth/jwt/token";
const PROXY_USER: &str = "proxy-user";
const PROXY_PASSWORD: &str = "proxy-pass-Zq81x";

/// A profile `name` at `token_url` with the seeded client, its secret in a
/// file of `home`, and `extra` lines.
fn profile(home: &Home, name: &str, token_url: &str, extra: &str) -> String {
    let secret = home.file(&format!("{name}.secret"), CLIENT_SECRET, 0o600);
    format!(
        "[profiles.{name}]\n\
         token_url = \"{token_url}\"\n\
         grant = \"client_credentials\"\n\
         auth_method = \"client_secret_basic\"\n\
         client_id = \"{CLIENT_ID}\"\n\
         client_secret_file = \"{}\"\n\
         timeout = 3\n\
         connect_timeout = 2\n\
         {extra}\n",
        secret.display()
    )
}

fn token(d: &Authd, profile: &str) -> serde_json::Value {
    d.client()
        .call(&json!({"op": "token", "profile": profile, "wait": 5}))
}

fn assert_token(reply: &serde_json::Value, what: &str) {
    assert_eq!(reply["ok"], true, "{what}: {reply}");
    assert!(
        reply["access_token"].as_str().is_some_and(|t| t.len() > 20),
        "{what}: {reply}"
    );
}

#[test]
fn a_private_ca_is_trusted_from_ssl_cert_file_ssl_cert_dir_or_ca_file_only() {
    let issuer = TestIssuer::start(Account::seeded());
    let ca = TestCa::new(&["localhost", "127.0.0.1"]);
    let front = TlsFront::start(&ca, issuer.local_addr());
    let url = format!("https://localhost:{}{TOKEN_PATH}", front.addr.port());

    // the system's store and the built-in roots alone: refused, and the
    // error says which roots were tried and how to add a CA
    let home = Home::new();
    let d = Authd::start_in(
        &home,
        Spec {
            config: Some(profile(&home, "tls", &url, "")),
            ..Spec::default()
        },
    );
    let r = token(&d, "tls");
    assert_eq!(r["ok"], false, "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    for needle in [
        "certificate",
        "system's certificate store",
        "SSL_CERT_FILE",
        "ca_file",
    ] {
        assert!(
            msg.contains(needle),
            "the error does not say {needle:?}: {msg}"
        );
    }
    assert_eq!(
        front.handshakes.lock().unwrap().0,
        0,
        "a handshake succeeded"
    );
    d.stop();

    // the CA only in SSL_CERT_FILE (which replaces the system's store)
    let home = Home::new();
    let ca_file = ca.write(home.path(), "inspecting-ca.pem");
    let d = Authd::start_in(
        &home,
        Spec {
            config: Some(profile(&home, "tls", &url, "")),
            env: vec![("SSL_CERT_FILE".into(), ca_file.display().to_string())],
            ..Spec::default()
        },
    );
    assert_token(&token(&d, "tls"), "SSL_CERT_FILE");
    d.stop();

    // the CA only in SSL_CERT_DIR
    let home = Home::new();
    let dir = home.path().join("certs");
    std::fs::create_dir(&dir).unwrap();
    ca.write(&dir, "inspecting-ca.pem");
    let d = Authd::start_in(
        &home,
        Spec {
            config: Some(profile(&home, "tls", &url, "")),
            env: vec![("SSL_CERT_DIR".into(), dir.display().to_string())],
            ..Spec::default()
        },
    );
    assert_token(&token(&d, "tls"), "SSL_CERT_DIR");
    d.stop();

    // the CA only in the profile's ca_file; another profile without it is
    // still refused
    let home = Home::new();
    let ca_file = ca.write(home.path(), "ca.pem");
    let config = profile(
        &home,
        "tls",
        &url,
        &format!("ca_file = \"{}\"", ca_file.display()),
    ) + &profile(&home, "other", &url, "");
    let d = Authd::start_in(
        &home,
        Spec {
            config: Some(config),
            ..Spec::default()
        },
    );
    assert_token(&token(&d, "tls"), "ca_file");
    let r = token(&d, "other");
    assert_eq!(
        r["ok"], false,
        "a profile without ca_file trusted the CA: {r}"
    );
    d.stop();
}

#[test]
fn https_proxy_carries_remote_token_requests_and_never_loopback_or_plain_http() {
    let issuer = TestIssuer::start(Account::seeded());
    let ca = TestCa::new(&["auth.example.test", "localhost"]);
    let front = TlsFront::start(&ca, issuer.local_addr());
    let proxy = ConnectProxy::start(front.addr);
    let home = Home::new();
    let ca_file = ca.write(home.path(), "ca.pem");
    let ca_line = format!("ca_file = \"{}\"", ca_file.display());
    let config = [
        // a remote issuer: its name never reaches DNS, the proxy tunnels it
        profile(
            &home,
            "remote",
            &format!("https://auth.example.test{TOKEN_PATH}"),
            &ca_line,
        ),
        // loopback over https: never proxied
        profile(
            &home,
            "local",
            &format!("https://localhost:{}{TOKEN_PATH}", front.addr.port()),
            &ca_line,
        ),
        // plain http (loopback only): never proxied, HTTP_PROXY is not used
        profile(&home, "plain", &issuer.token_url(), ""),
    ]
    .concat();
    let proxy_url = format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
        proxy.addr.port()
    );
    let d = Authd::start_in(
        &home,
        Spec {
            config: Some(config),
            log_level: Some("trace".into()),
            env: vec![
                ("HTTPS_PROXY".into(), proxy_url.clone()),
                ("ALL_PROXY".into(), proxy_url.clone()),
                ("HTTP_PROXY".into(), proxy_url.clone()),
                ("http_proxy".into(), proxy_url),
                // neither form matches auth.example.test
                ("NO_PROXY".into(), "other.test,10.0.0.0/8".into()),
            ],
            ..Spec::default()
        },
    );

    assert_token(&token(&d, "remote"), "through the proxy");
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].line, "CONNECT auth.example.test:443 HTTP/1.1");
    let basic = basic(PROXY_USER, PROXY_PASSWORD);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(basic.as_str()),
        "the proxy's credentials were not sent"
    );

    assert_token(&token(&d, "local"), "loopback https");
    assert_token(&token(&d, "plain"), "plain http");
    assert_eq!(
        proxy.seen().len(),
        1,
        "loopback or plain http went through the proxy: {:?}",
        proxy.seen()
    );
    let (_, log, out) = d.stop_with_output();
    for text in [&log, &out] {
        assert!(
            !text.contains(PROXY_PASSWORD) && !text.contains(&basic["Basic ".len()..]),
            "the proxy's credentials reached the log"
        );
    }
    assert!(log.contains("remote"), "trace logging was not on: {log}");
}

#[test]
fn a_proxy_that_refuses_is_named_without_its_credentials() {
    // the proxy answers every CONNECT, but tunnels into a port that is not
    // TLS: the handshake fails, and the error names neither user nor password
    let issuer = TestIssuer::start(Account::seeded());
    let proxy = ConnectProxy::start(issuer.local_addr());
    let home = Home::new();
    let config = profile(
        &home,
        "remote",
        &format!("https://auth.example.test{TOKEN_PATH}"),
        "",
    );
    let d = Authd::start_in(
        &home,
        Spec {
            config: Some(config),
            log_level: Some("trace".into()),
            env: vec![(
                "HTTPS_PROXY".into(),
                format!(
                    "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
                    proxy.addr.port()
                ),
            )],
            ..Spec::default()
        },
    );
    let r = token(&d, "remote");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(error_code(&r), "issuer_unavailable", "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(!msg.contains(PROXY_PASSWORD), "{msg}");
    assert!(!proxy.seen().is_empty(), "the proxy was not asked");
    let (_, log, _) = d.stop_with_output();
    assert!(
        !log.contains(PROXY_PASSWORD),
        "the proxy's password reached the log"
    );
}
