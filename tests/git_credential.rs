//! `ce-auth git-credential` driven by real `git credential fill`, against the
//! real daemon and the emulated issuer.

use std::process::Command;

use crate::util::issuer::CLIENT_ID;
use crate::util::process::{CE_AUTH, assert_success, run_with_stdin};
use crate::util::world::{GIT_HOST, World};

/// `git credential fill` with only our helper configured, no user or system config.
fn git_fill(w: &World, input: &str) -> std::process::Output {
    let helper = format!("!{CE_AUTH} git-credential");
    let mut cmd = Command::new("git");
    cmd.args(["-c", "credential.helper="])
        .args(["-c", &format!("credential.helper={helper}")])
        .args(["credential", "fill"])
        .env("HOME", w.home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("CE_AUTH_SOCK", &w.socket)
        .env("CE_AUTH_CONFIG", &w.config)
        .env("CE_AUTH_NO_AUTOSTART", "1");
    run_with_stdin(&mut cmd, Some(input))
}

fn fields(out: &std::process::Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field<'a>(f: &'a [(String, String)], key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn git_gets_username_and_token_as_password() {
    let w = World::started();
    let out = git_fill(&w, &format!("protocol=https\nhost={GIT_HOST}\n\n"));
    assert_success(&out, &["git credential fill"]);
    let f = fields(&out);
    let token = w.token();
    assert_eq!(field(&f, "password"), Some(token.as_str()));
    assert_eq!(field(&f, "username"), Some(CLIENT_ID));
    let expiry: i64 = field(&f, "password_expiry_utc")
        .expect("expiry")
        .parse()
        .expect("a number");
    assert!(expiry > 0);
}

#[test]
fn git_with_authtype_gets_a_bearer_credential() {
    let w = World::started();
    let out = git_fill(
        &w,
        &format!("capability[]=authtype\nprotocol=https\nhost={GIT_HOST}\npath=any/repo.git\n\n"),
    );
    assert_success(&out, &["git credential fill (authtype)"]);
    let f = fields(&out);
    let token = w.token();
    assert_eq!(field(&f, "authtype"), Some("Bearer"));
    assert_eq!(field(&f, "credential"), Some(token.as_str()));
    assert_eq!(field(&f, "password"), None, "{f:?}");
}

#[test]
fn other_hosts_get_no_answer_so_git_asks_elsewhere() {
    let w = World::started();
    let helper = |input: &str, action: &str| {
        run_with_stdin(w.ce_auth().args(["git-credential", action]), Some(input))
    };
    for input in [
        "protocol=https\nhost=elsewhere.example\n\n",
        // a token never goes over plain http to a remote host
        &format!("protocol=http\nhost={GIT_HOST}\n\n"),
    ] {
        let out = helper(input, "get");
        assert_success(&out, &["git-credential get"]);
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for action in ["store", "erase"] {
        let out = helper(
            &format!("protocol=https\nhost={GIT_HOST}\nusername=u\npassword=p\n\n"),
            action,
        );
        assert_success(&out, &[action]);
        assert!(out.stdout.is_empty());
    }
    // and real git, with nothing else to ask, fails rather than prompting
    let out = git_fill(&w, "protocol=https\nhost=elsewhere.example\n\n");
    assert!(!out.status.success());
    assert_eq!(w.issuer.counters().token_requests, 0);
}
