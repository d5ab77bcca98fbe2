//! Human-readable output for `ce-auth status`: durations and the profile table.

use crate::protocol::{ProfileStatus, StatusReply};

pub(crate) use crate::protocol::printable;

/// A duration in seconds as `1h 2m`, `14m 3s` or `42s`.
pub(crate) fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h >= 24 {
        format!("{}d {}h", h / 24, h % 24)
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Time from `now` until `at` (both Unix seconds), `expired` when past.
fn until(at: Option<i64>, now: i64, past: &str) -> String {
    match at {
        None => "-".into(),
        Some(t) if t <= now => past.into(),
        Some(t) => human_duration((t - now) as u64),
    }
}

/// The status table: one row per profile, the default marked with `*`.
pub(crate) fn status_table(status: &StatusReply, now: i64) -> String {
    let header = [
        "PROFILE",
        "STATE",
        "EXPIRES IN",
        "NEXT REFRESH",
        "LAST ERROR",
    ];
    let mut rows: Vec<[String; 5]> = Vec::new();
    for p in &status.profiles {
        rows.push(row(p, status.default_profile.as_deref(), now));
    }
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "{} (pid {}), up {}, protocol v{}, memory {}{}\n",
        printable(&status.daemon),
        status.pid,
        human_duration(status.uptime),
        status.version,
        if status.memory_locked {
            "locked"
        } else {
            "not locked"
        },
        match status.dumpable {
            Some(false) => ", not dumpable",
            // worth saying loudly: other processes of the user can read its memory
            Some(true) => ", DUMPABLE",
            None => "",
        },
    );
    if rows.is_empty() {
        out.push_str(
            "no profiles: add one with `ce-auth add` or `ce-auth login`, or in the config file\n",
        );
        return out;
    }
    let header = header.map(String::from);
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for p in &status.proxies {
        out.push_str(&format!(
            "proxy {} -> {} (profile {}): {} requests, {} refused, {} turned away, {} errors, {} refreshes, {} open\n",
            printable(p.url.as_deref().unwrap_or(&p.listen)),
            printable(&p.upstream),
            printable(&p.profile),
            p.requests,
            p.refused,
            p.turned_away,
            p.errors,
            p.refreshes,
            p.connections
        ));
    }
    out
}

fn row(p: &ProfileStatus, default: Option<&str>, now: i64) -> [String; 5] {
    let mark = if default == Some(p.name.as_str()) {
        "*"
    } else {
        " "
    };
    let error = p
        .last_error
        .as_deref()
        .map(|e| printable(&e.replace(['\n', '\r'], " ")))
        .unwrap_or_else(|| "-".into());
    // every string comes from the daemon, and through it from the issuer:
    // nothing reaches the terminal unescaped
    [
        format!("{mark}{}", printable(&p.name)),
        printable(&p.state),
        until(p.expires_at, now, "expired"),
        until(p.next_refresh, now, "due"),
        error,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str) -> ProfileStatus {
        ProfileStatus {
            name: name.into(),
            state: "fresh".into(),
            grant: "client_credentials".into(),
            auth_method: Some("client_secret_jwt".into()),
            token_url: "https://x/token".into(),
            expires_at: None,
            next_refresh: None,
            last_refresh: None,
            last_error: None,
            served: 0,
            refreshed: 0,
            failed: 0,
        }
    }

    #[test]
    fn issuer_text_is_printed_inert() {
        assert_eq!(printable("a\nFORGED\u{1b}[31m"), "a\\nFORGED\\u{1b}[31m");
        assert_eq!(printable("plain é"), "plain é");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(61), "1m 1s");
        assert_eq!(human_duration(3600 + 120 + 5), "1h 2m");
        assert_eq!(human_duration(50 * 3600), "2d 2h");
    }

    #[test]
    fn table_marks_default_and_aligns_columns() {
        let now = 1_000_000;
        let mut a = profile("dev");
        a.expires_at = Some(now + 842);
        a.next_refresh = Some(now + 300);
        let mut b = profile("climate-engine");
        b.state = "failed".into();
        b.expires_at = Some(now - 5);
        b.last_error = Some("the issuer rejected\nthe client".into());
        let status = StatusReply {
            version: 1,
            daemon: "ce-authd 0.1.0".into(),
            pid: 42,
            uptime: 3700,
            memory_locked: true,
            dumpable: Some(false),
            default_profile: Some("dev".into()),
            profiles: vec![a, b],
            proxies: vec![],
            next_after: None,
        };
        let t = status_table(&status, now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "ce-authd 0.1.0 (pid 42), up 1h 1m, protocol v1, memory locked, not dumpable"
        );
        assert!(lines[1].starts_with("PROFILE          STATE"), "{t}");
        assert!(
            lines[2].starts_with("*dev             fresh   14m 2s      5m 0s"),
            "{t}"
        );
        assert!(
            lines[3].starts_with(" climate-engine  failed  expired     -"),
            "{t}"
        );
        assert!(lines[3].ends_with("the issuer rejected the client"), "{t}");
        let col = lines[1].find("STATE").unwrap();
        assert_eq!(lines[2].find("fresh"), Some(col));
    }

    #[test]
    fn nothing_from_the_daemon_reaches_the_terminal_unescaped() {
        let mut p = profile("dev\u{1b}]0;owned\u{7}");
        p.state = "fresh\u{1b}[2J".into();
        p.last_error = Some("bad\u{1b}[31m red".into());
        let status = StatusReply {
            version: 1,
            daemon: "ce-authd\u{1b}[H".into(),
            pid: 1,
            uptime: 0,
            memory_locked: true,
            dumpable: None,
            default_profile: None,
            profiles: vec![p],
            proxies: vec![crate::protocol::ProxyStatus {
                listen: "127.0.0.1:1".into(),
                url: Some("http://127.0.0.1:1\u{1b}[K".into()),
                upstream: "https://a.example/".into(),
                profile: "dev".into(),
                requests: 0,
                refused: 0,
                turned_away: 0,
                errors: 0,
                refreshes: 0,
                connections: 0,
            }],
            next_after: None,
        };
        let t = status_table(&status, 0);
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert!(t.contains("\\u{1b}[31m"), "{t}");
    }

    #[test]
    fn empty_status_says_how_to_add_a_profile() {
        let status = StatusReply {
            version: 1,
            daemon: "d".into(),
            pid: 1,
            uptime: 0,
            memory_locked: false,
            dumpable: Some(true),
            default_profile: None,
            profiles: vec![],
            proxies: vec![],
            next_after: None,
        };
        let t = status_table(&status, 0);
        assert!(t.contains("ce-auth add"), "{t}");
        assert!(
            t.starts_with("d (pid 1), up 0s, protocol v1, memory not locked, DUMPABLE\n"),
            "{t}"
        );
    }
}
