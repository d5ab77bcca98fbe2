//! docs/PROTOCOL.md stays true: every request and reply example parses into
//! its type and round-trips, every op is shown, and the error table matches
//! the code.

use ce_auth::protocol::{
    self, Empty, ErrorCode, HelloReply, LoginReply, ProfileReply, ReloadReply, Request,
    StatusReply, TokenReply, WhoamiReply, WireError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const DOC: &str = include_str!("../docs/PROTOCOL.md");

/// Fenced blocks as (info string, body).
fn blocks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let info = info.trim().to_string();
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            out.push((info, body));
        }
    }
    out
}

fn roundtrip_ok<T: DeserializeOwned + Serialize>(body: &str) {
    let original: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    let typed: T = protocol::parse_reply(body.trim().as_bytes())
        .unwrap_or_else(|e| panic!("{body} does not parse as a success reply: {e:?}"));
    let mut line = Vec::new();
    protocol::write_ok(&mut line, &typed);
    let again: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(original, again, "example does not round-trip");
}

#[test]
fn every_example_parses_into_its_type_and_round_trips() {
    let mut requests = 0;
    let mut replies = 0;
    for (info, body) in blocks() {
        let words: Vec<&str> = info.split_whitespace().collect();
        match words.as_slice() {
            ["json", "request"] => {
                requests += 1;
                let original: Value = serde_json::from_str(&body).unwrap();
                let req: Request = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("request example {body} does not parse: {e}"));
                let again: Value = serde_json::to_value(&req).unwrap();
                assert_eq!(original, again, "request example does not round-trip");
            }
            ["json", "reply", kind] => {
                replies += 1;
                match *kind {
                    "hello" => roundtrip_ok::<HelloReply>(&body),
                    "token" => roundtrip_ok::<TokenReply>(&body),
                    "status" => roundtrip_ok::<StatusReply>(&body),
                    "profile" => roundtrip_ok::<ProfileReply>(&body),
                    "reload" => roundtrip_ok::<ReloadReply>(&body),
                    "whoami" => roundtrip_ok::<WhoamiReply>(&body),
                    "login" => roundtrip_ok::<LoginReply>(&body),
                    "empty" => roundtrip_ok::<Empty>(&body),
                    "error" => {
                        let original: Value = serde_json::from_str(&body).unwrap();
                        let err: WireError = protocol::parse_reply::<Empty>(body.trim().as_bytes())
                            .expect_err("an error example parsed as success")
                            .expect("error example is a valid failure reply");
                        let mut line = Vec::new();
                        protocol::write_err(&mut line, &err);
                        let again: Value = serde_json::from_slice(&line).unwrap();
                        assert_eq!(original, again);
                    }
                    other => panic!("unknown reply kind `{other}` in docs/PROTOCOL.md"),
                }
            }
            ["json", ..] => panic!("untagged json block in docs/PROTOCOL.md: {info}"),
            _ => {}
        }
    }
    assert!(requests >= 10, "only {requests} request examples");
    assert!(replies >= 10, "only {replies} reply examples");
}

#[test]
fn every_op_has_a_request_example() {
    let mut seen = std::collections::BTreeSet::new();
    for (info, body) in blocks() {
        if info == "json request" {
            let req: Request = serde_json::from_str(&body).unwrap();
            seen.insert(req.op());
        }
    }
    for op in [
        "hello", "token", "status", "add", "remove", "refresh", "reload", "whoami", "login",
        "shutdown",
    ] {
        assert!(seen.contains(op), "no request example for `{op}`");
        assert!(
            DOC.contains(&format!("### `{op}`")) || op == "hello",
            "no section for `{op}`"
        );
    }
}

#[test]
fn error_table_matches_codes_and_exit_statuses() {
    let mut rows = 0;
    for line in DOC.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `code` | meaning | exit |
        if cells.len() == 5 && cells[1].starts_with('`') && cells[3].parse::<i32>().is_ok() {
            let name = cells[1].trim_matches('`');
            let code: ErrorCode = serde_json::from_value(Value::String(name.into()))
                .unwrap_or_else(|_| panic!("`{name}` in the table is not an error code"));
            assert_eq!(
                code.exit_code(),
                cells[3].parse::<i32>().unwrap(),
                "exit status of {name}"
            );
            rows += 1;
        }
    }
    let all = [
        ErrorCode::BadRequest,
        ErrorCode::LineTooLong,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownProfile,
        ErrorCode::ProfileExists,
        ErrorCode::CredentialsRejected,
        ErrorCode::IssuerUnavailable,
        ErrorCode::ConfigError,
        ErrorCode::PermissionDenied,
        ErrorCode::Busy,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];
    assert_eq!(
        rows,
        all.len(),
        "the table should list every error code once"
    );
    for code in all {
        let name = serde_json::to_value(code).unwrap();
        let name = name.as_str().unwrap();
        assert!(DOC.contains(&format!("| `{name}` |")), "`{name}` missing");
    }
    // the exit-status table matches exit::client
    for (status, value) in [
        ("0", ce_auth::exit::client::OK),
        ("1", ce_auth::exit::client::FAILURE),
        ("2", ce_auth::exit::client::USAGE),
        ("3", ce_auth::exit::client::NOT_RUNNING),
        ("4", ce_auth::exit::client::UNKNOWN_PROFILE),
        ("5", ce_auth::exit::client::CREDENTIALS_REJECTED),
        ("6", ce_auth::exit::client::ISSUER_UNAVAILABLE),
        ("7", ce_auth::exit::client::CONFIG),
    ] {
        assert_eq!(status.parse::<i32>().unwrap(), value);
        assert!(
            DOC.contains(&format!("| {status} | ")),
            "exit status {status} missing"
        );
    }
}

#[test]
fn documented_limits_match_the_code() {
    assert_eq!(protocol::MAX_LINE, 64 * 1024);
    assert!(DOC.contains("64 KiB"));
    assert!(DOC.contains(&format!(
        "| concurrent connections | {}, and never more than the open file limit less {} |",
        ce_auth::daemon::server::DEFAULT_MAX_CONNECTIONS,
        ce_auth::daemon::server::FD_RESERVE
    )));
    assert!(DOC.contains(&format!(
        "{} s, then the connection is closed",
        ce_auth::daemon::server::DEFAULT_IDLE_TIMEOUT.as_secs()
    )));
    assert!(DOC.contains(&format!(
        "| finishing a started line | {} s",
        ce_auth::daemon::server::LINE_TIMEOUT.as_secs()
    )));
    assert!(DOC.contains(&format!(
        "| finishing in-flight requests at shutdown | {} s |",
        ce_auth::daemon::server::DRAIN_TIMEOUT.as_secs()
    )));
}
