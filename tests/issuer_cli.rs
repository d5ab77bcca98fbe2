//! `ce-authd issuer` as a separate process: the ready line, real requests,
//! request logs without secrets, SIGTERM/SIGINT, and refused arguments.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

const PASSWORD: &str = "pw-8f3a1c";
const SECRET: &str = "client-secret-5d2e9b";

fn ce_authd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ce-authd"));
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads the child's first stdout line, giving up after `limit`.
fn first_line(child: &mut Child, limit: Duration) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(limit).expect("a ready line in time")
}

/// Waits for the child to exit, failing after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the issuer did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut text)
        .expect("read stderr");
    text
}

#[tokio::test]
async fn runs_announces_serves_logs_without_secrets_and_stops_on_signals() {
    for signal in [Signal::TERM, Signal::INT] {
        let started = Instant::now();
        let mut child = ce_authd()
            .args([
                "issuer",
                "--user",
                &format!("ci@example.com:{PASSWORD}"),
                "--client",
                &format!("cid:{SECRET}"),
                "--token-lifetime",
                "60",
                "--test-controls",
            ])
            .spawn()
            .expect("spawn ce-authd");
        let line = first_line(&mut child, Duration::from_secs(10));
        eprintln!("ready line after {:?}", started.elapsed());
        assert!(!line.contains(PASSWORD) && !line.contains(SECRET), "{line}");
        let ready: Value = serde_json::from_str(&line).expect("ready line is JSON");
        let base = ready["base_url"].as_str().expect("base_url").to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        assert_eq!(ready["token_url"], format!("{base}/api/v1/auth/jwt/token"));
        assert_eq!(ready["jwks_url"], format!("{base}/.well-known/jwks.json"));
        assert_eq!(ready["users"], serde_json::json!(["ci@example.com"]));
        assert_eq!(ready["clients"], serde_json::json!(["cid"]));

        let c = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let token_url = ready["token_url"].as_str().expect("token_url");
        let r = c
            .post(token_url)
            .form(&[
                ("grant_type", "password"),
                ("username", "ci@example.com"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .expect("password grant");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        let access_token = body["access_token"].as_str().expect("token").to_owned();
        assert_eq!(body["expires_in"], 60);
        let r = c
            .post(token_url)
            .basic_auth("cid", Some(SECRET))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("client credentials");
        assert_eq!(r.status(), 200);
        let r = c
            .post(token_url)
            .basic_auth("cid", Some("wrong-9c7"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("wrong secret");
        assert_eq!(r.status(), 401);
        let counters: Value = c
            .get(format!("{base}/_test/counters"))
            .send()
            .await
            .expect("counters")
            .json()
            .await
            .expect("json");
        assert_eq!(counters["token_requests"], 3);
        assert_eq!(counters["tokens_issued"], 2);

        kill_process(Pid::from_child(&child), signal).expect("signal");
        let status = wait_exit(&mut child, Duration::from_secs(5));
        assert!(status.success(), "{signal:?}: {status}");
        let log = stderr_of(&mut child);
        assert!(log.contains("/api/v1/auth/jwt/token"), "{log}");
        assert!(
            log.contains("client_credentials") && log.contains("cid"),
            "{log}"
        );
        assert!(
            log.contains("401") && log.contains("client_secret_basic"),
            "{log}"
        );
        for secret in [PASSWORD, SECRET, "wrong-9c7", access_token.as_str()] {
            assert!(!log.contains(secret), "the log shows a secret: {log}");
        }
    }
}

#[test]
fn bad_arguments_get_a_clear_error_without_the_secret() {
    let cases: [&[&str]; 4] = [
        &["--user", "ci@example.com-nocolon-s3cr3t"],
        &["--user", "not-an-email:s3cr3t"],
        &["--client", "id-without-secret:"],
        &["--token-lifetime", "0"],
    ];
    for args in cases {
        let mut child = ce_authd()
            .arg("issuer")
            .args(args)
            .spawn()
            .expect("spawn ce-authd");
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert!(!status.success(), "{args:?} accepted");
        let err = stderr_of(&mut child);
        assert!(
            err.contains("EMAIL:PASSWORD")
                || err.contains("ID:SECRET")
                || err.contains("at least 1 second"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
