//! Locked memory and the profile cap, against the real `ce-authd` binary with
//! its own `RLIMIT_MEMLOCK` (set on the daemon only, with `CAP_IPC_LOCK`
//! dropped so root sees what a user sees): thousands of profiles fit in a few
//! locked pages, the cap is enforced on `add`, at start-up and on reload, and
//! `status.memory_locked` agrees with the kernel's `VmLck`.
#![cfg(target_os = "linux")]

use crate::util::daemon::{Authd, Home, Spec};
use crate::util::deadline::wait_for;
use crate::util::line::LineClient;
use crate::util::process::Proc;
use ce_auth::daemon::engine::MAX_PROFILES;
use ce_auth_issuer::Issuer;
use serde_json::{Value, json};

/// How many `add`s the tests try: well past the cap.
const ADDS: usize = 3 * MAX_PROFILES;

/// The common default `RLIMIT_MEMLOCK` (8 MiB), set explicitly so the test
/// does not depend on the machine's.
const DEFAULT_MEMLOCK: u64 = 8 << 20;

/// An emulated issuer with one API client, served from its own runtime.
struct TestIssuer {
    issuer: Option<Issuer>,
    rt: tokio::runtime::Runtime,
    client_id: String,
    client_secret: String,
}

impl TestIssuer {
    fn start() -> TestIssuer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client_id = uuid::Uuid::new_v4().to_string();
        let client_secret = format!("cs-{}", uuid::Uuid::new_v4().simple());
        let issuer = rt
            .block_on(Issuer::builder().client(&client_id, &client_secret).start())
            .expect("issuer starts");
        TestIssuer {
            issuer: Some(issuer),
            rt,
            client_id,
            client_secret,
        }
    }

    fn token_url(&self) -> String {
        self.issuer.as_ref().unwrap().token_url()
    }

    /// The `add` request for profile `name` against this issuer.
    fn add(&self, name: &str) -> Value {
        json!({"op": "add", "profile": name,
               "settings": {"token_url": self.token_url(), "client_id": self.client_id,
                            "auth_method": "client_secret_post"},
               "secret": self.client_secret})
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(i) = self.issuer.take() {
            self.rt.block_on(i.shutdown());
        }
    }
}

/// Sends `requests` pipelined, a batch at a time (the daemon stops reading a
/// client that does not read its replies), and returns the replies in order.
fn pipeline(c: &mut LineClient, requests: &[Value]) -> Vec<Value> {
    let mut replies = Vec::with_capacity(requests.len());
    for batch in requests.chunks(100) {
        let mut out = Vec::new();
        for r in batch {
            serde_json::to_writer(&mut out, r).unwrap();
            out.push(b'\n');
        }
        c.send_raw(&out);
        replies.extend(batch.iter().map(|_| c.recv()));
    }
    replies
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("p{i}")).collect()
}

/// `status.memory_locked`, asked for one profile (the full list of a
/// thousand profiles is more than one reply line may carry).
fn memory_locked(c: &mut LineClient, profile: &str) -> bool {
    let st = c.call(&json!({"op": "status", "profile": profile}));
    assert_eq!(st["ok"], true, "{st}");
    st["memory_locked"].as_bool().expect("memory_locked")
}

/// Lines of the daemon's log that warn about locking.
fn lock_warnings(d: &Authd) -> usize {
    d.stderr()
        .lines()
        .filter(|l| l.contains("cannot lock secret memory"))
        .count()
}

fn with_memlock(bytes: u64) -> Spec {
    Spec {
        memlock: Some(bytes),
        log_level: Some("info".into()),
        ..Spec::default()
    }
}

#[test]
fn thousands_of_adds_stay_in_few_locked_pages_and_the_cap_holds() {
    let issuer = TestIssuer::start();
    let d = Authd::start(with_memlock(DEFAULT_MEMLOCK));
    let mut c = d.client();
    let adds: Vec<Value> = names(0..ADDS).iter().map(|n| issuer.add(n)).collect();
    let replies = pipeline(&mut c, &adds);
    for (i, r) in replies.iter().enumerate() {
        if i < MAX_PROFILES {
            assert_eq!(r["ok"], true, "add #{i}: {r}");
        } else {
            assert_eq!(r["error"]["code"], "config_error", "add #{i}: {r}");
            let m = r["error"]["message"].as_str().unwrap();
            assert!(
                m.contains(&format!("at most {MAX_PROFILES} profiles")) && m.contains("remove"),
                "{m}"
            );
        }
    }
    // replacing one at the cap is fine; a new name only after a removal
    let mut again = issuer.add("p0");
    again["replace"] = json!(true);
    assert_eq!(c.call(&again)["ok"], true);
    assert_eq!(
        c.call(&json!({"op": "remove", "profile": "p1"}))["ok"],
        true
    );
    assert_eq!(c.call(&issuer.add("late"))["ok"], true);
    assert_eq!(
        c.call(&issuer.add("later"))["error"]["code"],
        "config_error"
    );

    // a token for every profile: a secret and a token each in locked memory
    let mut live = names(2..MAX_PROFILES);
    live.extend(["p0".to_string(), "late".to_string()]);
    let tokens: Vec<Value> = live
        .iter()
        .map(|n| json!({"op": "token", "profile": n}))
        .collect();
    for (n, r) in live.iter().zip(pipeline(&mut c, &tokens)) {
        assert_eq!(r["ok"], true, "token for {n}: {r}");
    }
    assert!(memory_locked(&mut c, "p0"), "all of it fits under 8 MiB");
    let locked = d.status_kb("VmLck");
    eprintln!(
        "{MAX_PROFILES} profiles with tokens: VmLck {} KiB ({} pages)",
        locked / 1024,
        locked / 4096
    );
    assert!(locked > 0, "status says locked but VmLck is 0");
    // one page per secret would be 2,000 pages (8 MB): the whole limit
    assert!(
        locked <= 2 << 20,
        "VmLck {locked} bytes for {MAX_PROFILES} profiles"
    );
    assert_eq!(lock_warnings(&d), 0, "{}", d.stderr());
    assert!(d.stop().success());
}

#[test]
fn no_lockable_memory_is_reported_and_warned_about_once() {
    let issuer = TestIssuer::start();
    let d = Authd::start(with_memlock(0));
    let mut c = d.client();
    let adds: Vec<Value> = names(0..200).iter().map(|n| issuer.add(n)).collect();
    assert!(pipeline(&mut c, &adds).iter().all(|r| r["ok"] == true));
    let tokens: Vec<Value> = names(0..200)
        .iter()
        .map(|n| json!({"op": "token", "profile": n}))
        .collect();
    assert!(pipeline(&mut c, &tokens).iter().all(|r| r["ok"] == true));
    assert!(!memory_locked(&mut c, "p0"));
    assert_eq!(d.status_kb("VmLck"), 0);
    // with no profile left there is nothing to lock, and still no way to
    assert_eq!(
        pipeline(
            &mut c,
            &names(0..200)
                .iter()
                .map(|n| json!({"op": "remove", "profile": n}))
                .collect::<Vec<_>>()
        )
        .iter()
        .filter(|r| r["ok"] == true)
        .count(),
        200
    );
    let st = c.call(&json!({"op": "status"}));
    assert_eq!(st["memory_locked"], false, "{st}");
    let (status, stderr, _) = d.stop_with_output();
    assert!(status.success());
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot lock secret memory"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("LimitMEMLOCK"), "{}", warnings[0]);
}

#[test]
fn locked_memory_that_runs_out_turns_status_false_until_the_unlocked_secrets_go() {
    // room for the client secrets (64-byte slots) but not for every token
    let limit: u64 = 128 << 10;
    let issuer = TestIssuer::start();
    let d = Authd::start(with_memlock(limit));
    let mut c = d.client();
    let all = names(0..MAX_PROFILES);
    let adds: Vec<Value> = all.iter().map(|n| issuer.add(n)).collect();
    assert!(pipeline(&mut c, &adds).iter().all(|r| r["ok"] == true));
    assert!(
        memory_locked(&mut c, "p0"),
        "{MAX_PROFILES} secrets fit in 128 KiB"
    );
    let tokens: Vec<Value> = all
        .iter()
        .map(|n| json!({"op": "token", "profile": n}))
        .collect();
    assert!(pipeline(&mut c, &tokens).iter().all(|r| r["ok"] == true));
    assert!(!memory_locked(&mut c, "p0"), "some tokens cannot be locked");
    let locked = d.status_kb("VmLck");
    assert!(locked > 0 && locked <= limit, "VmLck {locked}");
    assert_eq!(lock_warnings(&d), 1, "{}", d.stderr());

    // the profiles made last hold the unlocked tokens; once they are gone,
    // every live secret is locked again
    let removes: Vec<Value> = all[50..]
        .iter()
        .map(|n| json!({"op": "remove", "profile": n}))
        .collect();
    assert!(pipeline(&mut c, &removes).iter().all(|r| r["ok"] == true));
    wait_for("status to say memory is locked again", || {
        memory_locked(&mut c, "p0").then_some(())
    });
    assert!(d.status_kb("VmLck") > 0);
    // and a fresh token for a remaining profile is locked too
    assert_eq!(
        c.call(&json!({"op": "refresh", "profile": "p7"}))["ok"],
        true
    );
    assert!(memory_locked(&mut c, "p0"));
    assert_eq!(lock_warnings(&d), 1, "one warning in all");
    assert!(d.stop().success());
}

/// A config file with `n` profiles against `issuer`, sharing one secret file.
fn config_with(issuer: &TestIssuer, dir: &std::path::Path, n: usize) -> String {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("client.secret");
    std::fs::write(&secret, &issuer.client_secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[profiles.f{i}]\ntoken_url = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\n\n",
            issuer.token_url(),
            issuer.client_id,
            secret.display()
        ));
    }
    text
}

#[test]
fn the_cap_holds_for_the_config_file_at_start_and_on_reload() {
    let issuer = TestIssuer::start();

    // too many in the file: the daemon does not start (exit 7, like any bad config)
    let home = Home::new();
    let spec = Spec {
        config: Some(config_with(&issuer, home.path(), MAX_PROFILES + 1)),
        ..Spec::default()
    };
    let mut child = Proc::spawn(&mut home.daemon_command(&spec), home.path(), "ce-authd");
    let st = wait_for("ce-authd to refuse the file", || child.try_wait());
    let stderr = child.stderr();
    assert_eq!(st.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains(&format!("has {} profiles", MAX_PROFILES + 1))
            && stderr.contains(&format!("at most {MAX_PROFILES} profiles")),
        "{stderr}"
    );

    // at the cap with the file and one added at runtime, a reload that adds
    // one more to the file is refused whole
    let home = Home::new();
    let spec = Spec {
        config: Some(config_with(&issuer, home.path(), MAX_PROFILES - 1)),
        ..Spec::default()
    };
    let d = Authd::start_in(&home, spec);
    let mut c = d.client();
    assert_eq!(c.call(&issuer.add("runtime"))["ok"], true);
    assert_eq!(
        c.call(&issuer.add("one-more"))["error"]["code"],
        "config_error"
    );
    home.write_config(&config_with(&issuer, home.path(), MAX_PROFILES));
    let r = c.call(&json!({"op": "reload"}));
    assert_eq!(r["error"]["code"], "config_error", "{r}");
    let m = r["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("1 more were added at runtime")
            && m.contains(&format!("at most {MAX_PROFILES}"))
            && m.contains("unchanged"),
        "{m}"
    );
    let last = format!("f{}", MAX_PROFILES - 1);
    assert_eq!(
        c.call(&json!({"op": "status", "profile": last}))["error"]["code"],
        "unknown_profile",
        "the refused file was not applied"
    );
    // making room lets the same file in
    assert_eq!(
        c.call(&json!({"op": "remove", "profile": "runtime"}))["ok"],
        true
    );
    let r = c.call(&json!({"op": "reload"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["added"], json!([last]));
    assert!(d.stop().success());
}
