//! docs/examples/get_token.py (standard-library Python) and docs/examples/token.sh
//! against the real daemon and the emulated issuer.

use std::process::Command;

use ce_auth::exit::client as exit;

use crate::util::process::{CE_AUTH, assert_success, run_with_stdin, stderr};
use crate::util::world::World;

fn example(name: &str) -> String {
    format!("{}/docs/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn python(w: &World, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("python3");
    cmd.arg(example("get_token.py"))
        .args(args)
        .env("CE_AUTH_SOCK", &w.socket);
    run_with_stdin(&mut cmd, None)
}

#[test]
fn the_python_example_prints_the_same_token_as_ce_auth() {
    let w = World::started();
    let out = python(&w, &["-p", "dev", "--min-ttl", "30"]);
    assert_success(&out, &["get_token.py"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), w.token());
}

#[test]
fn the_python_example_exits_like_ce_auth() {
    let w = World::started();
    let out = python(&w, &["-p", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(exit::UNKNOWN_PROFILE),
        "{}",
        stderr(&out)
    );
    let out = python(&w, &["--socket", "/nonexistent/agent.sock"]);
    assert_eq!(
        out.status.code(),
        Some(exit::NOT_RUNNING),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_shell_example_gets_a_token_three_ways() {
    let w = World::started();
    // put the freshly built ce-auth first on PATH for the script
    let bin_dir = std::path::Path::new(CE_AUTH).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg(example("token.sh"))
        .arg("dev")
        .env("PATH", path)
        .env("CE_AUTH_SOCK", &w.socket)
        .env("CE_AUTH_CONFIG", &w.config)
        .env("CE_AUTH_NO_AUTOSTART", "1")
        .env_remove("API_URL");
    let out = run_with_stdin(&mut cmd, None);
    assert_success(&out, &["token.sh"]);
    let len = w.token().len();
    assert!(
        stderr(&out).contains(&format!("got a token of {len} characters")),
        "{}",
        stderr(&out)
    );
}
