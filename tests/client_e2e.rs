//! The real `ce-auth` binary against the real `ce-authd` binary and the
//! emulated issuer on 127.0.0.1: every command, and the exit statuses.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use ce_auth::exit::client as exit;
use ce_auth::protocol::StatusReply;
use ce_auth_issuer::Fault;

use crate::util::deadline::Deadline;
use crate::util::issuer::{CLIENT_ID, CLIENT_SECRET, EMAIL, PASSWORD};
use crate::util::load::heavy;
use crate::util::process::{assert_success, run_with_stdin, stderr};
use crate::util::world::{USER_COMMENT, World};

fn now() -> i64 {
    crate::util::now() as i64
}

#[test]
fn token_json_and_header_agree() {
    let w = World::started();
    let token = w.token();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert!(w.ok(&["token"]).ends_with('\n'));

    let json: serde_json::Value =
        serde_json::from_str(&w.ok(&["token", "--json", "-p", "dev", "--min-ttl", "30"]))
            .expect("token --json is JSON");
    assert_eq!(json["access_token"], token.as_str());
    assert_eq!(json["token_type"], "bearer");
    assert_eq!(json["profile"], "dev");
    let expires_at = json["expires_at"].as_i64().expect("expires_at is a number");
    assert!(expires_at > now() + 60, "{expires_at}");

    assert_eq!(
        w.ok(&["header"]),
        format!("Authorization: Bearer {token}\n")
    );
    // one issuer request served all of these
    assert_eq!(w.issuer.counters().tokens_issued, 1);
}

#[test]
fn exec_passes_the_token_and_the_exit_status_through() {
    let w = World::started();
    let token = w.token();
    let out = w.run(
        &[
            "exec",
            "--",
            "sh",
            "-c",
            "printf '%s\\n%s\\n' \"$CE_ACCESS_TOKEN\" \"$CE_AUTH_SOCK\"; exit 42",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(token.as_str()));
    assert_eq!(lines.next(), Some(w.socket.to_str().unwrap()));

    // the child replaces ce-auth, so a signal death is seen as such
    let out = w.run(&["exec", "--", "sh", "-c", "kill -TERM $$"], None);
    assert_eq!(out.status.signal(), Some(15), "{:?}", out.status);

    let out = w.run(&["exec", "--", "/nonexistent/program"], None);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("/nonexistent/program"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_shows_a_table_and_json() {
    let w = World::started();
    w.token();
    let table = w.ok(&["status"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("*dev"))
        .unwrap_or_else(|| panic!("the default profile is marked:\n{table}"));
    assert!(row.contains("fresh"), "{table}");
    assert!(
        table.contains("EXPIRES IN") && table.contains("NEXT REFRESH"),
        "{table}"
    );

    let status: StatusReply =
        serde_json::from_str(&w.ok(&["status", "--json"])).expect("status --json");
    assert_eq!(status.default_profile.as_deref(), Some("dev"));
    let dev = status.profiles.iter().find(|p| p.name == "dev").unwrap();
    assert!(dev.expires_at.unwrap() > now());
}

#[test]
fn status_of_a_thousand_profiles_comes_in_pages_and_ce_auth_joins_them() {
    use ce_auth::daemon::engine::MAX_PROFILES;
    use ce_auth::protocol::MAX_LINE;
    let mut w = World::new();
    let secret = w.home.path().join("dev.secret");
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    let mut names = vec!["dev".to_string()];
    for i in 0..MAX_PROFILES - 1 {
        let name = format!("team-project-{i:04}");
        text.push_str(&format!(
            "\n[profiles.{name}]\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             auth_method = \"client_secret_jwt\"\nclient_secret_file = \"{}\"\n",
            w.issuer.token_url(),
            secret.display()
        ));
        names.push(name);
    }
    names.sort();
    std::fs::write(&w.config, text).unwrap();
    w.start_daemon();

    // on the socket each reply fits one line; `after` walks the rest
    let mut c = crate::util::line::LineClient::connect(&w.socket);
    let mut seen: Vec<String> = Vec::new();
    let mut req = serde_json::json!({"op": "status"});
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 100, "status pages never end");
        let r = c.call(&req);
        assert_eq!(r["ok"], true, "{r}");
        let len = serde_json::to_string(&r).unwrap().len() + 1;
        assert!(len <= MAX_LINE, "a status line of {len} bytes");
        seen.extend(
            r["profiles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string()),
        );
        match r["next_after"].as_str() {
            Some(after) => {
                assert_eq!(Some(after), seen.last().map(String::as_str), "{r}");
                req = serde_json::json!({"op": "status", "after": after});
            }
            None => break,
        }
    }
    assert!(pages > 1, "{MAX_PROFILES} profiles fit one line?");
    assert_eq!(seen, names, "every profile once, in order");

    // ce-auth status asks for every page and shows them as one
    let status: StatusReply =
        serde_json::from_str(&w.ok(&["status", "--json"])).expect("status --json");
    let listed: Vec<&str> = status.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(listed, names, "status --json");
    assert_eq!(status.next_after, None);
    let table = w.ok(&["status"]);
    for n in [&names[0], &names[500], &names[MAX_PROFILES - 1]] {
        assert!(
            table.lines().any(|l| l.contains(n.as_str())),
            "{n} in\n{table}"
        );
    }
}

#[test]
fn add_from_stdin_then_token_then_remove() {
    let w = World::started();
    let token_url = w.issuer.token_url();
    let out = w.run(
        &[
            "add",
            "extra",
            "--token-url",
            &token_url,
            "--client-id",
            CLIENT_ID,
            "--auth-method",
            "client_secret_post",
        ],
        Some(&format!("{CLIENT_SECRET}\n")),
    );
    assert_success(&out, &["add"]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!all.contains(CLIENT_SECRET), "the secret is never echoed");

    let json: serde_json::Value =
        serde_json::from_str(&w.ok(&["token", "-p", "extra", "--json"])).unwrap();
    assert_eq!(json["profile"], "extra");
    assert_eq!(
        w.issuer
            .counters()
            .issued_by_method
            .get("client_secret_post"),
        Some(&1)
    );

    // a second add of the same name needs --replace
    let again = w.run(
        &[
            "add",
            "extra",
            "--token-url",
            &token_url,
            "--client-id",
            CLIENT_ID,
        ],
        Some(CLIENT_SECRET),
    );
    assert!(!again.status.success());

    w.ok(&["remove", "extra"]);
    let out = w.run(&["token", "-p", "extra"], None);
    assert_eq!(
        out.status.code(),
        Some(exit::UNKNOWN_PROFILE),
        "{}",
        stderr(&out)
    );

    // an empty secret is a usage error, caught before the daemon is asked
    let out = w.run(&["add", "empty", "--client-id", "x"], Some(""));
    assert_eq!(out.status.code(), Some(exit::USAGE), "{}", stderr(&out));
}

#[test]
fn refresh_gets_a_new_token_and_reload_picks_up_the_file() {
    let w = World::started();
    let first = w.token();
    let before = w.issuer.counters().tokens_issued;
    let out = w.ok(&["refresh"]);
    assert!(out.contains("dev"), "{out}");
    assert_eq!(w.issuer.counters().tokens_issued, before + 1);
    assert_ne!(w.token(), first);

    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str(&format!(
        "\n[profiles.second]\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\n",
        w.issuer.token_url(),
        w.home.path().join("dev.secret").display()
    ));
    std::fs::write(&w.config, text).unwrap();
    let out = w.ok(&["reload"]);
    assert!(out.contains("added: second"), "{out}");
    w.ok(&["token", "-p", "second"]);
}

#[test]
fn whoami_shows_the_user() {
    let mut w = World::new();
    // a password-grant profile so users/me names our user
    let pw = w.home.file("pw.secret", PASSWORD, 0o600);
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str(&format!(
        "\n[profiles.me]\ntoken_url = \"{}\"\ngrant = \"password\"\nusername = \"{EMAIL}\"\npassword_file = \"{}\"\n",
        w.issuer.token_url(),
        pw.display()
    ));
    std::fs::write(&w.config, text).unwrap();
    w.start_daemon();

    let out = w.ok(&["whoami", "-p", "me"]);
    assert!(out.contains(&format!("email: {EMAIL}")), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&w.ok(&["whoami", "-p", "me", "--json"])).unwrap();
    assert_eq!(json["email"], EMAIL);
}

#[test]
fn login_saves_a_working_profile_and_keeps_the_users_comment() {
    let w = World::started();
    let out = w.run(
        &[
            "login",
            "-p",
            "mine",
            "--email",
            EMAIL,
            "--token-url",
            &w.issuer.token_url(),
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_success(&out, &["login"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("ce-auth token -p mine works"), "{stdout}");

    let secret_file = w.home.path().join("mine.secret");
    let secret = std::fs::read_to_string(&secret_file).expect("secret file");
    assert!(secret.len() >= 16);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(!stdout.contains(&secret) && !stderr(&out).contains(&secret));
    assert!(!stdout.contains(PASSWORD) && !stderr(&out).contains(PASSWORD));

    let config = std::fs::read_to_string(&w.config).unwrap();
    assert!(config.contains(USER_COMMENT), "{config}");
    assert!(config.contains("[profiles.mine]"), "{config}");
    assert!(
        config.contains("auth_method = \"client_secret_jwt\""),
        "{config}"
    );
    assert!(config.contains("default_profile = \"dev\""), "{config}");

    w.ok(&["token", "-p", "mine"]);
    // the new client is a new client at the issuer
    assert_eq!(w.issuer.client_ids().len(), 2);

    // logging in again to the same profile needs --replace
    let out = w.run(
        &["login", "-p", "mine", "--email", EMAIL],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(out.status.code(), Some(exit::USAGE), "{}", stderr(&out));
    assert!(stderr(&out).contains("--replace"));
}

#[test]
fn login_with_a_wrong_password_is_credentials_rejected() {
    let w = World::started();
    let out = w.run(
        &[
            "login",
            "-p",
            "x",
            "--email",
            EMAIL,
            "--token-url",
            &w.issuer.token_url(),
        ],
        Some("wrong-password\n"),
    );
    assert_eq!(
        out.status.code(),
        Some(exit::CREDENTIALS_REJECTED),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("wrong-password"));
    assert!(!w.home.path().join("x.secret").exists());
}

#[test]
fn stop_stops_the_daemon() {
    let mut w = World::started();
    let out = w.ok(&["stop"]);
    assert!(out.starts_with("stopped ce-authd"), "{out}");
    let daemon = w.daemon().expect("daemon child");
    let status =
        Deadline::after(Duration::from_secs(15)).wait_for("ce-authd to exit", || daemon.try_wait());
    assert!(status.success(), "{status}");
    let out = w.run(&["status"], None);
    assert_eq!(out.status.code(), Some(exit::NOT_RUNNING));
}

#[test]
fn usage_unknown_profile_and_not_running_statuses() {
    let w = World::started();

    let out = w.run(&["token", "--bogus"], None);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let out = w.run(&["token", "-p", "nope"], None);
    assert_eq!(
        out.status.code(),
        Some(exit::UNKNOWN_PROFILE),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));

    let out = w.run(&["token", "--socket", "/nonexistent/ce-auth.sock"], None);
    assert_eq!(out.status.code(), Some(exit::NOT_RUNNING));
    let msg = stderr(&out);
    assert!(
        msg.contains("/nonexistent/ce-auth.sock") && msg.contains("ce-authd --daemon"),
        "{msg}"
    );
}

#[test]
fn issuer_unavailable_without_a_token_is_its_own_status() {
    let mut w = World::new();
    // a caller waits for a token at most the request timeout and 5 s more:
    // a short timeout keeps the test short, the outcome is the same
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str("timeout = 2\n");
    std::fs::write(&w.config, text).unwrap();
    w.start_daemon();
    w.issuer.inject(
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        1000,
    );
    let out = w.run(&["token"], None);
    assert_eq!(
        out.status.code(),
        Some(exit::ISSUER_UNAVAILABLE),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
}

#[test]
fn a_revoked_client_is_credentials_rejected() {
    let w = World::started();
    w.token();
    assert!(w.issuer.revoke_client(CLIENT_ID));
    let out = w.run(&["refresh"], None);
    assert_eq!(
        out.status.code(),
        Some(exit::CREDENTIALS_REJECTED),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(CLIENT_SECRET));
}

#[test]
fn a_hundred_concurrent_clients_cause_one_token_request() {
    let _heavy = heavy();
    let w = World::started();
    let children: Vec<_> = (0..100)
        .map(|_| {
            w.ce_auth()
                .arg("token")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn ce-auth")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for out in &outputs {
        assert_success(out, &["token"]);
    }
    let first = &outputs[0].stdout;
    assert!(
        outputs.iter().all(|o| &o.stdout == first),
        "one shared token"
    );
    assert_eq!(w.issuer.counters().token_requests, 1);
}

#[test]
fn autostart_starts_the_daemon_when_none_answers() {
    let w = World::new();
    let out = run_with_stdin(
        w.ce_auth().env_remove("CE_AUTH_NO_AUTOSTART").arg("token"),
        None,
    );
    assert_success(&out, &["token (autostart)"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).split('.').count(), 3);
    // the started daemon is detached: stop it through the socket
    w.ok(&["stop"]);
    let out = w.run(&["status"], None);
    assert_eq!(out.status.code(), Some(exit::NOT_RUNNING));
}

#[test]
fn completions_and_man_page_are_generated() {
    let w = World::new();
    let bash = w.ok(&["completions", "bash"]);
    assert!(
        bash.contains("git-credential"),
        "bash completion names the commands"
    );
    let man = w.ok(&["man"]);
    assert!(man.starts_with(".ie") || man.contains(".TH"), "{man}");
    assert!(man.contains("ce\\-auth"));
    let help = w.ok(&["--help"]);
    assert!(help.contains("Exit status:") && help.contains("3  ce-authd is not running"));
}
