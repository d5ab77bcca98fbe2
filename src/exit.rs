//! Exit statuses of both binaries: one definition for the code, the `--help`
//! texts (built from the tables here) and the docs.

/// Statuses of `ce-auth` (and of the Python client's command line).
pub mod client {
    /// Success.
    pub const OK: i32 = 0;
    /// Any other failure.
    pub const FAILURE: i32 = 1;
    /// Bad command-line usage.
    pub const USAGE: i32 = 2;
    /// No daemon answers on the socket (and autostart is off or failed), or
    /// the one answering may not be trusted or refuses this client.
    pub const NOT_RUNNING: i32 = 3;
    /// The profile does not exist (or there is no default profile).
    pub const UNKNOWN_PROFILE: i32 = 4;
    /// The issuer rejected the profile's credentials.
    pub const CREDENTIALS_REJECTED: i32 = 5;
    /// The issuer is unavailable and no fresh-enough token is held.
    pub const ISSUER_UNAVAILABLE: i32 = 6;
    /// The configuration is invalid.
    pub const CONFIG: i32 = 7;

    /// Every status with the words `--help` shows for it.
    pub const TABLE: &[(i32, &str)] = &[
        (OK, "success"),
        (FAILURE, "failure (anything not listed below)"),
        (USAGE, "usage error"),
        (
            NOT_RUNNING,
            "ce-authd is not running (and autostart is off or failed), or may not be trusted",
        ),
        (UNKNOWN_PROFILE, "unknown profile (or no default profile)"),
        (CREDENTIALS_REJECTED, "credentials rejected by the issuer"),
        (
            ISSUER_UNAVAILABLE,
            "issuer unavailable, and no token with enough time left",
        ),
        (CONFIG, "configuration error"),
    ];
}

/// Statuses of `ce-authd`.
pub mod daemon {
    /// The daemon ran and stopped cleanly (or `--daemon` started it).
    pub const OK: u8 = 0;
    /// Any other failure (I/O, pidfile, issuer start-up, ...).
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage.
    pub const USAGE: u8 = 2;
    /// Another `ce-authd` already serves the socket.
    pub const IN_USE: u8 = 3;
    /// The configuration is invalid.
    pub const CONFIG: u8 = 7;

    /// Every status with the words `--help` shows for it.
    pub const TABLE: &[(u8, &str)] = &[
        (OK, "stopped cleanly (with --daemon: the daemon is ready)"),
        (FAILURE, "any other failure (I/O, pidfile, issuer start-up)"),
        (USAGE, "bad command-line usage"),
        (IN_USE, "another ce-authd already serves the socket"),
        (CONFIG, "the configuration is invalid"),
    ];
}

/// The "Exit status:" section of a `--help` text, one line per entry of `table`.
pub fn help<C: std::fmt::Display>(table: &[(C, &str)]) -> String {
    let mut out = String::from("Exit status:\n");
    for (code, words) in table {
        out.push_str(&format!("  {code}  {words}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_status_once_in_order() {
        let text = help(client::TABLE);
        assert!(text.starts_with("Exit status:\n  0  success\n"), "{text}");
        assert!(text.contains("\n  3  ce-authd is not running"), "{text}");
        assert!(text.contains("\n  7  configuration error\n"), "{text}");
        let daemon = help(daemon::TABLE);
        assert!(daemon.contains("\n  3  another ce-authd"), "{daemon}");
        let mut codes: Vec<i32> = client::TABLE.iter().map(|(c, _)| *c).collect();
        codes.dedup();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 7]);
    }
}
