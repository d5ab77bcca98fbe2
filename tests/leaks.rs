//! Leaks and access, against the real `ce-authd` binary: at log level `trace`
//! every op (and the HTTP face) runs and no client secret, password or access
//! token shows up in anything the daemon writes, in its command line or its
//! environment; secret files open to others are refused; the socket directory
//! and socket are private; `status` reports the daemon's hardening.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

use crate::util::daemon::{Authd, Home, Spec};
use crate::util::deadline::{DEADLINE, wait_for};
use crate::util::issuer::{Account, TestIssuer};
use crate::util::process::{CE_AUTH, Proc};

/// Checks a token reply and adds its token to the secrets to look for.
fn keep_token(secrets: &mut Vec<(String, String)>, what: &str, r: &Value) {
    assert_eq!(r["ok"], true, "{what}: {r}");
    let t = r["access_token"].as_str().unwrap().to_string();
    secrets.push((format!("access token ({what})"), t));
}

/// One HTTP/1.1 request over the socket; the whole answer.
fn http_get(socket: &std::path::Path, target: &str) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn no_secret_or_token_in_any_output_at_trace_level() {
    let issuer = TestIssuer::start(Account::random());
    let account = &issuer.account;
    let home = Home::new();
    let secret = home.file("alpha.secret", &account.client_secret, 0o600);
    let password = home.file("pw.password", &account.password, 0o600);
    let config = format!(
        "default_profile = \"alpha\"\n\n\
         [profiles.alpha]\ntoken_url = \"{url}\"\nauth_method = \"client_secret_basic\"\n\
         client_id = \"{id}\"\nclient_secret_file = \"{secret}\"\n\n\
         [profiles.jwt]\ntoken_url = \"{url}\"\nauth_method = \"client_secret_jwt\"\n\
         client_id = \"{id}\"\nclient_secret_file = \"{secret}\"\n\n\
         [profiles.pw]\ntoken_url = \"{url}\"\ngrant = \"password\"\n\
         username = \"{email}\"\npassword_file = \"{password}\"\n",
        url = issuer.token_url(),
        id = account.client_id,
        secret = secret.display(),
        email = account.email,
        password = password.display(),
    );
    let d = Authd::start_in(
        &home,
        Spec {
            config: Some(config),
            log_level: Some("trace".into()),
            ..Spec::default()
        },
    );
    let mut c = d.client();
    let mut secrets: Vec<(String, String)> = vec![
        ("client secret".into(), account.client_secret.clone()),
        ("password".into(), account.password.clone()),
    ];

    // every op, on one connection and with the tokens collected
    assert_eq!(
        c.call(&json!({"op": "hello", "version": 1, "client": "leaks"}))["ok"],
        true
    );
    for p in ["alpha", "jwt", "pw"] {
        keep_token(
            &mut secrets,
            p,
            &c.call(&json!({"op": "token", "profile": p})),
        );
    }
    keep_token(
        &mut secrets,
        "default",
        &c.call(&json!({"op": "token", "min_ttl": 30})),
    );
    keep_token(
        &mut secrets,
        "refresh",
        &c.call(&json!({"op": "refresh", "profile": "alpha"})),
    );
    let status = c.call(&json!({"op": "status"}));
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(
        c.call(&json!({"op": "status", "profile": "pw"}))["ok"],
        true
    );
    let r = c.call(&json!({"op": "add", "profile": "beta",
        "settings": {"token_url": issuer.token_url(), "auth_method": "client_secret_post",
                     "client_id": account.client_id},
        "secret": account.client_secret}));
    assert_eq!(r["ok"], true, "{r}");
    keep_token(
        &mut secrets,
        "beta",
        &c.call(&json!({"op": "token", "profile": "beta"})),
    );
    assert_eq!(
        c.call(&json!({"op": "whoami", "profile": "pw"}))["ok"],
        true
    );
    let login = c.call(&json!({"op": "login", "token_url": issuer.token_url(),
        "email": account.email, "password": account.password}));
    assert_eq!(login["ok"], true, "{login}");
    secrets.push((
        "created client secret".into(),
        login["client_secret"].as_str().unwrap().to_string(),
    ));
    assert_eq!(
        c.call(&json!({"op": "remove", "profile": "beta"}))["ok"],
        true
    );
    assert_eq!(c.call(&json!({"op": "reload"}))["ok"], true);
    // failures that carry a secret where it does not belong
    let wrong = [
        json!({"op": "token", "min_ttl": account.client_secret}),
        json!({"op": "add", "profile": "bad", "settings": {"client_id": account.password}}),
        json!({"op": "add", "profile": "bad", "settings": {"bogus": account.client_secret}}),
        json!({"op": "login", "email": account.email, "password": 5}),
        json!({"op": "login", "token_url": issuer.token_url(), "email": account.email,
               "password": format!("{}-wrong", account.password)}),
        json!({"op": "hello", "version": 99, "client": account.password}),
    ];
    for req in wrong {
        let r = c.call(&req);
        assert_eq!(r["ok"], false, "{req} -> {r}");
    }
    // an op name that tries to forge a log line
    c.send_raw(b"{\"op\":\"x\\nINFO forged line\\u001b[2K\"}\n");
    assert_eq!(c.recv()["error"]["code"], "bad_request");
    // the HTTP face
    let h = http_get(&d.socket, "/v1/token?profile=alpha");
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    let body: Value = serde_json::from_str(h.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    keep_token(&mut secrets, "http", &body);
    assert!(http_get(&d.socket, "/v1/status").starts_with("HTTP/1.1 200"));

    // the process as others see it
    let pid = d.pid();
    for f in ["cmdline", "environ"] {
        if let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{f}")) {
            let text = String::from_utf8_lossy(&bytes);
            for (what, s) in &secrets {
                assert!(!text.contains(s.as_str()), "{what} in /proc/{pid}/{f}");
            }
        }
    }
    // hardening, as status reports it and as the kernel sees it
    assert_eq!(status["dumpable"], false, "{status}");
    let locked = status["memory_locked"].as_bool().expect("memory_locked");
    if locked {
        assert!(
            d.status_kb("VmLck") > 0,
            "status says locked but VmLck is 0"
        );
    }

    let (st, stderr, stdout) = d.stop_with_output();
    assert!(st.success(), "{st}\n{stderr}");
    // the test can fail: trace logging really was on and saw the requests
    assert!(stderr.contains("TRACE"), "no trace output:\n{stderr}");
    assert!(
        stderr.lines().count() > 50,
        "suspiciously little output:\n{stderr}"
    );
    for (what, s) in &secrets {
        assert!(
            !stderr.contains(s.as_str()),
            "{what} in the daemon's stderr"
        );
        assert!(
            !stdout.contains(s.as_str()),
            "{what} in the daemon's stdout"
        );
    }
    // nor a recognisable part of one (JWT segments, the secret's random part)
    for (what, s) in &secrets {
        for part in s.split(['.', '-']).filter(|p| p.len() >= 16) {
            assert!(!stderr.contains(part), "part of the {what} in stderr");
        }
    }
    assert!(
        !stderr.lines().any(|l| l.starts_with("INFO forged")),
        "a forged log line:\n{stderr}"
    );
    println!(
        "trace-level run: {} bytes / {} lines of daemon output checked for {} secrets",
        stderr.len(),
        stderr.lines().count(),
        secrets.len()
    );
}

#[test]
fn secret_files_open_to_group_or_others_are_refused() {
    let secret_text = format!("cs-{}", uuid::Uuid::new_v4().simple());
    for mode in [0o640, 0o604, 0o660] {
        let home = Home::new();
        let secret = home.file("alpha.secret", &secret_text, mode);
        let config = format!(
            "[profiles.alpha]\ntoken_url = \"http://127.0.0.1:9/token\"\n\
             client_id = \"x\"\nclient_secret_file = \"{}\"\n",
            secret.display()
        );
        let spec = Spec {
            config: Some(config),
            log_level: Some("trace".into()),
            ..Spec::default()
        };
        let mut child = Proc::spawn(&mut home.daemon_command(&spec), home.path(), "ce-authd");
        let st = wait_for("ce-authd to refuse the configuration", || child.try_wait());
        let stderr = child.stderr();
        assert_eq!(
            st.code(),
            Some(ce_auth::exit::client::CONFIG),
            "mode {mode:o}: {stderr}"
        );
        assert!(stderr.contains("accessible by group or others"), "{stderr}");
        assert!(stderr.contains("chmod 600"), "{stderr}");
        assert!(!stderr.contains(&secret_text), "the secret in the refusal");
        assert!(!home.socket().exists());
    }

    // a profile added at runtime may not name a file at all (the daemon's
    // files are the config file's business), open to others or not
    let home = Home::new();
    let open = home.file("open.secret", &secret_text, 0o644);
    let d = Authd::start_in(&home, Spec::default());
    let r = d.client().call(&json!({"op": "add", "profile": "p",
        "settings": {"token_url": "http://127.0.0.1:9/token", "client_id": "x",
                     "client_secret_file": open.display().to_string()}}));
    assert_eq!(r["error"]["code"], "config_error", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("key \"client_secret_file\"") && msg.contains("configuration file"),
        "{msg}"
    );
    assert!(!msg.contains(&secret_text));
    assert!(d.stop().success());
}

#[test]
fn the_socket_directory_and_socket_are_private() {
    // the daemon creates a missing directory 0700 and the socket 0600
    let home = Home::new();
    std::fs::remove_dir(home.run_dir()).unwrap();
    let d = Authd::start_in(&home, Spec::default());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.socket.parent().unwrap()), 0o700);
    assert_eq!(mode(&d.socket), 0o600);
    assert!(d.stop().success());

    // an existing directory open to others is refused, not silently "fixed"
    for open in [0o755, 0o770, 0o707] {
        let home = Home::new();
        let run = home.run_dir();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(open)).unwrap();
        let mut child = Proc::spawn(
            &mut home.daemon_command(&Spec::default()),
            home.path(),
            "ce-authd",
        );
        let st = wait_for("ce-authd to refuse the directory", || child.try_wait());
        let stderr = child.stderr();
        assert!(!st.success(), "mode {open:o} accepted: {stderr}");
        assert!(stderr.contains("chmod 700"), "{stderr}");
        assert_eq!(mode(&run), open, "the directory was changed");
        assert!(!run.join("agent.sock").exists());
    }
}

#[test]
fn ce_auth_status_shows_the_daemons_hardening() {
    let d = Authd::start(Spec::default());
    let status = d.client().call(&json!({"op": "status"}));
    assert_eq!(status["dumpable"], false, "{status}");
    let locked = status["memory_locked"].as_bool().expect("memory_locked");
    let out = std::process::Command::new(CE_AUTH)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", d.home.path())
        .env("CE_AUTH_NO_AUTOSTART", "1")
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = stdout.lines().next().unwrap_or_default();
    assert!(header.ends_with(", not dumpable"), "{header}");
    let memory = if locked {
        "memory locked"
    } else {
        "memory not locked"
    };
    assert!(header.contains(memory), "{header}");
    assert!(d.stop().success());
}

/// Runs of 43 or more URL-safe base64 characters: the shape of the dev
/// client secret and dev password (`generate_client_secret`), and of the
/// parts of any JWT (token or client assertion).
fn secret_shaped(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|run| run.len() >= 43)
        .collect()
}

#[test]
fn dev_mode_keeps_its_generated_secrets_out_of_argv_logs_and_the_environment() {
    let d = Authd::start(Spec {
        args: vec!["--dev".into()],
        log_level: Some("trace".into()),
        env: vec![("CE_AUTH_MARKER".into(), "x".into())],
        ..Spec::default()
    });
    let mut c = d.client();
    // the dev profile works: its secret exists and signs client assertions
    for _ in 0..2 {
        let t = c.call(&json!({"op": "refresh"}));
        assert_eq!(t["ok"], true, "{t}");
        assert_eq!(t["profile"], "dev", "{t}");
    }
    // the command line is exactly what was run, and the environment what was set
    let pid = d.pid();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        args[1..],
        [
            "--foreground".to_string(),
            "--socket".into(),
            d.socket.display().to_string(),
            "--log-level".into(),
            "trace".into(),
            "--dev".into()
        ],
        "{args:?}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('=')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "CE_AUTH_MARKER",
            "HOME",
            "PATH",
            "XDG_CONFIG_HOME",
            "XDG_RUNTIME_DIR"
        ],
        "the daemon's environment grew"
    );
    let (st, stderr, stdout) = d.stop_with_output();
    assert!(st.success(), "{st}\n{stderr}");
    assert!(stderr.contains("TRACE"), "no trace output:\n{stderr}");
    assert!(stdout.contains("--dev"), "the dev notes: {stdout}");
    let found: Vec<&str> = secret_shaped(&stderr)
        .into_iter()
        .chain(secret_shaped(&stdout))
        .collect();
    assert!(
        found.is_empty(),
        "secret-shaped text in the daemon's output: {found:?}"
    );
}
