//! `ce-authd issuer` as a separate process: the ready line, real requests,
//! request logs without secrets, SIGTERM/SIGINT, users and clients from files
//! and standard input (never the command line), the test controls' key, and
//! refused arguments.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
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

/// Writes `text` to a fresh file of mode `mode` in `dir`.
fn secret_file(dir: &tempfile::TempDir, name: &str, text: &str, mode: u32) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_str().expect("utf-8 path").to_owned()
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
        let dir = tempfile::tempdir().expect("tempdir");
        let users = secret_file(
            &dir,
            "users",
            &format!("ci@example.com:{PASSWORD}\n"),
            0o600,
        );
        let clients = secret_file(&dir, "clients", &format!("# seeded\ncid:{SECRET}\n"), 0o600);
        let mut child = ce_authd()
            .args([
                "issuer",
                "--users-file",
                &users,
                "--clients-file",
                &clients,
                "--token-lifetime",
                "60",
                "--test-controls",
            ])
            .spawn()
            .expect("spawn ce-authd");
        let line = first_line(&mut child, Duration::from_secs(10));
        eprintln!("ready line after {:?}", started.elapsed());
        assert!(!line.contains(PASSWORD) && !line.contains(SECRET), "{line}");
        // nothing secret on the command line others can read
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).expect("cmdline");
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains(PASSWORD) && !cmdline.contains(SECRET),
            "{cmdline}"
        );
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
        let key = ready["test_key"].as_str().expect("test_key").to_owned();
        let r = c
            .get(format!("{base}/_test/counters"))
            .send()
            .await
            .expect("counters without the key");
        assert_eq!(r.status(), 401);
        let counters: Value = c
            .get(format!("{base}/_test/counters"))
            .bearer_auth(&key)
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
        for secret in [PASSWORD, SECRET, "wrong-9c7", access_token.as_str(), &key] {
            assert!(!log.contains(secret), "the log shows a secret: {log}");
        }
        assert!(!log.contains("command line"), "no argv warning: {log}");
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

/// Starts `ce-authd issuer ARGS` with `stdin` on its standard input; returns
/// the child and its ready line.
fn issuer_with_stdin(args: &[&str], stdin: &str) -> (Child, Value) {
    let mut child = ce_authd()
        .arg("issuer")
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn ce-authd");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let line = first_line(&mut child, Duration::from_secs(10));
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (child, ready)
}

fn stop(mut child: Child) -> String {
    kill_process(Pid::from_child(&child), Signal::TERM).expect("signal");
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());
    stderr_of(&mut child)
}

#[tokio::test]
async fn clients_come_from_standard_input_and_the_test_controls_need_the_key() {
    let (child, ready) = issuer_with_stdin(
        &["--clients-file", "-", "--test-controls"],
        &format!("cid:{SECRET}\r\n\nother:{SECRET}-2\n"),
    );
    assert_eq!(ready["clients"], serde_json::json!(["cid", "other"]));
    let key = ready["test_key"].as_str().expect("test_key").to_owned();
    // 256 random bits, URL-safe base64
    assert_eq!(key.len(), 43, "{key}");
    let base = ready["base_url"].as_str().expect("base_url").to_owned();
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = c
        .post(ready["token_url"].as_str().expect("token_url"))
        .basic_auth("other", Some(format!("{SECRET}-2")))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200);

    let revoke = serde_json::json!({"client_id": "cid"});
    let wrong = format!("{}x", &key[..42]);
    /// What was tried, the header sent (if any), and the status expected.
    type Attempt<'a> = (&'a str, Option<(&'a str, String)>, u16);
    let attempts: [Attempt; 5] = [
        ("no key", None, 401),
        ("wrong key", Some(("x-ce-test-key", wrong.clone())), 403),
        (
            "wrong bearer",
            Some(("authorization", format!("Bearer {wrong}"))),
            403,
        ),
        (
            "basic scheme",
            Some(("authorization", format!("Basic {key}"))),
            401,
        ),
        ("key as a query", None, 401),
    ];
    for (label, header, status) in attempts {
        let url = if label == "key as a query" {
            format!("{base}/_test/revoke?key={key}")
        } else {
            format!("{base}/_test/revoke")
        };
        let mut rq = c.post(url).json(&revoke);
        if let Some((name, value)) = header {
            rq = rq.header(name, value);
        }
        let r = rq.send().await.expect("revoke");
        assert_eq!(r.status(), status, "{label}");
        let body: Value = r.json().await.expect("json body");
        let text = body["error_description"].as_str().unwrap_or_default();
        assert!(
            text.contains("test_key") && text.contains("X-CE-Test-Key"),
            "{label}: {body}"
        );
        assert!(!text.contains(&key), "{label}: {body}");
    }
    // nothing was revoked by those
    let r = c
        .post(ready["token_url"].as_str().expect("token_url"))
        .basic_auth("cid", Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200);
    // with the key, in either header
    let r = c
        .post(format!("{base}/_test/faults"))
        .header("X-CE-Test-Key", &key)
        .json(&serde_json::json!({"fault": {"kind": "malformed"}, "count": 0}))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{base}/_test/revoke"))
        .bearer_auth(&key)
        .json(&revoke)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let log = stop(child);
    assert!(!log.contains(SECRET) && !log.contains(&key), "{log}");
}

#[test]
fn each_issuer_has_its_own_key_and_none_without_test_controls() {
    let (a, ra) = issuer_with_stdin(&["--test-controls"], "");
    let (b, rb) = issuer_with_stdin(&["--test-controls"], "");
    let (c, rc) = issuer_with_stdin(&[], "");
    assert_ne!(ra["test_key"], rb["test_key"]);
    assert!(ra["test_key"].is_string());
    assert!(rc.get("test_key").is_none(), "{rc}");
    for child in [a, b, c] {
        stop(child);
    }
}

#[test]
fn secrets_on_the_command_line_still_work_with_a_warning() {
    let (child, ready) = issuer_with_stdin(
        &[
            "--user",
            &format!("ci@example.com:{PASSWORD}"),
            "--client",
            &format!("cid:{SECRET}"),
        ],
        "",
    );
    assert_eq!(ready["users"], serde_json::json!(["ci@example.com"]));
    assert_eq!(ready["clients"], serde_json::json!(["cid"]));
    let log = stop(child);
    for option in ["--user puts passwords", "--client puts client secrets"] {
        let line = log
            .lines()
            .find(|l| l.contains(option))
            .unwrap_or_else(|| panic!("no warning for {option}: {log}"));
        assert!(
            line.contains("WARN") && line.contains("/proc/PID/cmdline") && line.contains("-file"),
            "{line}"
        );
    }
    assert!(!log.contains(PASSWORD) && !log.contains(SECRET), "{log}");
}

#[test]
fn files_open_to_others_and_bad_lines_are_refused_without_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = secret_file(&dir, "open", "ci@example.com:s3cr3t\n", 0o644);
    let group = secret_file(&dir, "group", "cid:s3cr3t\n", 0o640);
    let bad = secret_file(
        &dir,
        "bad",
        "ci@example.com:pw\nnot-an-email:s3cr3t\n",
        0o600,
    );
    let bad_client = secret_file(&dir, "bad-client", "# x\n\nid-without-secret:\n", 0o600);
    let cases: [(Vec<&str>, &str); 6] = [
        (vec!["--users-file", &open], "chmod 600"),
        (vec!["--clients-file", &group], "chmod 600"),
        (vec!["--users-file", &bad], "line 2 is not EMAIL:PASSWORD"),
        (
            vec!["--clients-file", &bad_client],
            "line 3 is not ID:SECRET",
        ),
        (
            vec!["--users-file", "/nonexistent/users"],
            "/nonexistent/users",
        ),
        (
            vec!["--users-file", "-", "--clients-file", "-"],
            "only one of",
        ),
    ];
    for (args, hint) in cases {
        let mut child = ce_authd()
            .arg("issuer")
            .args(&args)
            .spawn()
            .expect("spawn ce-authd");
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert!(!status.success(), "{args:?} accepted");
        let err = stderr_of(&mut child);
        assert!(err.contains(hint), "{args:?}: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
