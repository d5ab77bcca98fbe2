//! `ce-authd issuer`: runs the emulated issuer alone, announces where it
//! listens on stdout, logs requests to stderr and stops on SIGINT/SIGTERM.
//!
//! Users and clients come from files or standard input (`--users-file`,
//! `--clients-file`), which no other user can read; the `--user` and
//! `--client` forms still work but put the secrets in the command line, which
//! every local user can read in `/proc/PID/cmdline`, and say so.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use zeroize::Zeroizing;

use super::{DEV_USER_EMAIL, Issuer};

/// Arguments of `ce-authd issuer`.
#[derive(Debug, Clone, clap::Args)]
pub struct IssuerArgs {
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Users for the password grant, one EMAIL:PASSWORD a line, from a file
    /// no other user can read (mode 0600), or `-` for standard input.
    #[arg(long, value_name = "PATH")]
    pub users_file: Option<PathBuf>,
    /// Pre-seeded API clients, one ID:SECRET a line, from a file no other
    /// user can read (mode 0600), or `-` for standard input.
    #[arg(long, value_name = "PATH")]
    pub clients_file: Option<PathBuf>,
    /// A user as EMAIL:PASSWORD (repeatable). Visible to every local user
    /// in the process list: prefer --users-file.
    #[arg(long = "user", value_name = "EMAIL:PASSWORD")]
    pub users: Vec<String>,
    /// A pre-seeded API client as ID:SECRET (repeatable). Visible to every
    /// local user in the process list: prefer --clients-file.
    #[arg(long = "client", value_name = "ID:SECRET")]
    pub clients: Vec<String>,
    /// Lifetime of issued tokens in seconds.
    #[arg(long, default_value_t = 900)]
    pub token_lifetime: u64,
    /// Turn on counters and fault injection under /_test/, behind the
    /// random `test_key` printed in the ready line.
    #[arg(long)]
    pub test_controls: bool,
}

/// A command-line value that cannot be used. Messages never repeat the value,
/// which holds a password or secret.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ArgError {
    /// `--user` is not `EMAIL:PASSWORD`.
    #[error(
        "--user takes EMAIL:PASSWORD, e.g. --user me@example.com:my-password (value #{0} has {1})"
    )]
    User(usize, &'static str),
    /// `--client` is not `ID:SECRET`.
    #[error("--client takes ID:SECRET, e.g. --client my-client:my-secret (value #{0} has {1})")]
    Client(usize, &'static str),
    /// A line of `--users-file` or `--clients-file` is not `EMAIL:PASSWORD` / `ID:SECRET`.
    #[error("{option} {path}: line {line} is not {shape} (it has {why})")]
    FileLine {
        option: &'static str,
        path: String,
        line: usize,
        shape: &'static str,
        why: &'static str,
    },
    /// Both files name standard input.
    #[error("only one of --users-file and --clients-file can be - (standard input)")]
    StdinTwice,
    /// `--token-lifetime 0`.
    #[error("--token-lifetime must be at least 1 second")]
    Lifetime,
}

/// The longest users or clients file read.
const MAX_FILE: u64 = 1 << 20;

/// Splits `EMAIL:PASSWORD` (the password may contain ':').
pub fn parse_user(n: usize, value: &str) -> Result<(&str, &str), ArgError> {
    split_user(value).map_err(|why| ArgError::User(n, why))
}

/// Splits `ID:SECRET` (the secret may contain ':').
pub fn parse_client(n: usize, value: &str) -> Result<(&str, &str), ArgError> {
    split_client(value).map_err(|why| ArgError::Client(n, why))
}

fn split_user(value: &str) -> Result<(&str, &str), &'static str> {
    let (email, password) = value
        .split_once(':')
        .ok_or("no ':' between e-mail and password")?;
    let (local, domain) = email.split_once('@').ok_or("no '@' in the e-mail")?;
    if local.is_empty() || domain.is_empty() || email.chars().any(char::is_whitespace) {
        return Err("an e-mail that is not an address");
    }
    if password.is_empty() {
        return Err("an empty password");
    }
    Ok((email, password))
}

fn split_client(value: &str) -> Result<(&str, &str), &'static str> {
    let (id, secret) = value
        .split_once(':')
        .ok_or("no ':' between id and secret")?;
    if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an empty id or one with spaces");
    }
    if secret.is_empty() {
        return Err("an empty secret");
    }
    Ok((id, secret))
}

/// Reads a users or clients file (`-`: standard input), refusing one that
/// other users could read or change.
fn read_secret_file(option: &str, path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("{option} -: cannot read standard input"))?;
    } else {
        let shown = path.display();
        let file = std::fs::File::open(path).with_context(|| format!("{option} {shown}"))?;
        check_private(&file).with_context(|| format!("{option} {shown}"))?;
        (&file)
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("{option} {shown}: cannot read it"))?;
    }
    anyhow::ensure!(
        text.len() as u64 <= MAX_FILE,
        "{option} {}: longer than {MAX_FILE} bytes",
        path.display()
    );
    Ok(text)
}

/// A file others cannot read: checked on the opened file, so it is the one read.
#[cfg(unix)]
fn check_private(file: &std::fs::File) -> anyhow::Result<()> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let meta = file.metadata().context("cannot stat it")?;
    let kind = meta.file_type();
    // a pipe too, for `--users-file <(…)`
    anyhow::ensure!(
        kind.is_file() || kind.is_fifo(),
        "not a regular file or a pipe"
    );
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "it holds passwords or secrets but is open to other users (mode {mode:03o}); \
         fix it with chmod 600, or pass - and the lines on standard input"
    );
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_file: &std::fs::File) -> anyhow::Result<()> {
    Ok(())
}

/// The `NAME:SECRET` lines of a file: blank lines and lines starting with `#`
/// are skipped, a trailing `\r` is dropped.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    // a subscriber set up by the caller wins
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
}

/// Runs the issuer until interrupted; prints one JSON line with `base_url` and `token_url` first.
pub async fn run(args: IssuerArgs) -> anyhow::Result<()> {
    init_logging();
    if args.token_lifetime == 0 {
        return Err(ArgError::Lifetime.into());
    }
    let mut builder = Issuer::builder()
        .port(args.port)
        .token_lifetime(Duration::from_secs(args.token_lifetime))
        .test_controls(args.test_controls);
    if args.users_file.as_deref() == Some(Path::new("-"))
        && args.clients_file.as_deref() == Some(Path::new("-"))
    {
        return Err(ArgError::StdinTwice.into());
    }
    if !args.users.is_empty() {
        tracing::warn!(
            "--user puts passwords on the command line, where every local user can read them \
             (ps, /proc/PID/cmdline); use --users-file PATH (mode 0600) or --users-file - (standard input)"
        );
    }
    if !args.clients.is_empty() {
        tracing::warn!(
            "--client puts client secrets on the command line, where every local user can read them \
             (ps, /proc/PID/cmdline); use --clients-file PATH (mode 0600) or --clients-file - (standard input)"
        );
    }
    let mut emails = Vec::new();
    let mut users: Vec<(String, Zeroizing<String>)> = Vec::new();
    let mut clients: Vec<(String, Zeroizing<String>)> = Vec::new();
    for (n, value) in args.users.iter().enumerate() {
        let (email, password) = parse_user(n + 1, value)?;
        users.push((email.to_owned(), Zeroizing::new(password.to_owned())));
    }
    for (n, value) in args.clients.iter().enumerate() {
        let (id, secret) = parse_client(n + 1, value)?;
        clients.push((id.to_owned(), Zeroizing::new(secret.to_owned())));
    }
    if let Some(path) = &args.users_file {
        let text = read_secret_file("--users-file", path)?;
        for (line, value) in lines(&text) {
            let (email, password) = split_user(value).map_err(|why| ArgError::FileLine {
                option: "--users-file",
                path: path.display().to_string(),
                line,
                shape: "EMAIL:PASSWORD",
                why,
            })?;
            users.push((email.to_owned(), Zeroizing::new(password.to_owned())));
        }
    }
    if let Some(path) = &args.clients_file {
        let text = read_secret_file("--clients-file", path)?;
        for (line, value) in lines(&text) {
            let (id, secret) = split_client(value).map_err(|why| ArgError::FileLine {
                option: "--clients-file",
                path: path.display().to_string(),
                line,
                shape: "ID:SECRET",
                why,
            })?;
            clients.push((id.to_owned(), Zeroizing::new(secret.to_owned())));
        }
    }
    for (email, password) in &users {
        builder = builder.user(email, password);
        emails.push(email.clone());
    }
    for (id, secret) in &clients {
        builder = builder.client(id, secret);
    }
    if emails.is_empty() && !clients.is_empty() {
        emails.push(DEV_USER_EMAIL.to_owned());
    }
    let issuer = builder
        .start()
        .await
        .with_context(|| format!("cannot start the issuer on 127.0.0.1:{}", args.port))?;

    // before the ready line: whoever reads it may signal at once
    let stop = Stop::watch()?;
    let base = issuer.base_url();
    let mut ready = serde_json::json!({
        "base_url": base,
        "token_url": issuer.token_url(),
        "jwks_url": issuer.jwks_url(),
        "users_me_url": format!("{base}/api/v1/users/me"),
        "clients_url": format!("{base}/api/v1/clients/"),
        "users": emails,
        "clients": issuer.client_ids(),
        "token_lifetime": args.token_lifetime,
        "test_controls": args.test_controls,
        "pid": std::process::id(),
    });
    if let Some(key) = issuer.test_key() {
        // stdout is the caller's channel: the key goes nowhere else (not the log)
        ready["test_key"] = key.into();
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}").context("cannot write the ready line to stdout")?;
    stdout
        .flush()
        .context("cannot write the ready line to stdout")?;
    drop(stdout);
    tracing::info!("issuer listening on {base}");

    stop.wait().await?;
    tracing::info!("stopping");
    issuer.shutdown().await;
    Ok(())
}

/// A stop signal to wait for, watched from creation on.
#[cfg(not(unix))]
struct Stop;

#[cfg(not(unix))]
impl Stop {
    fn watch() -> anyhow::Result<Stop> {
        Ok(Stop)
    }

    async fn wait(self) -> anyhow::Result<()> {
        tokio::signal::ctrl_c().await.context("cannot watch Ctrl-C")
    }
}

/// SIGTERM and SIGINT, watched from creation on (so a signal sent right
/// after the ready line is not fatal).
#[cfg(unix)]
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Stop {
    fn watch() -> anyhow::Result<Stop> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Stop {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    async fn wait(mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_client_values_are_split_at_the_first_colon() {
        assert_eq!(parse_user(1, "a@b.c:p:w"), Ok(("a@b.c", "p:w")));
        assert_eq!(parse_client(1, "id:s:e"), Ok(("id", "s:e")));
    }

    #[test]
    fn file_lines_skip_blanks_and_comments_and_drop_carriage_returns() {
        let text = "# users\r\na@b.c:pw one\r\n\n  \nx@y.z:#not-a-comment\n";
        let got: Vec<(usize, &str)> = lines(text).collect();
        assert_eq!(
            got,
            [(2, "a@b.c:pw one"), (4, "  "), (5, "x@y.z:#not-a-comment")]
        );
        assert!(split_user("  ").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn files_open_to_others_are_refused_without_showing_their_lines() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("ce-issuer-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("users");
        std::fs::write(&path, "a@b.c:s3cr3t\n").expect("write");
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let r = read_secret_file("--users-file", &path);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}");
            if let Err(e) = r {
                let e = format!("{e:#}");
                assert!(e.contains("chmod 600") && e.contains("--users-file"), "{e}");
                assert!(!e.contains("s3cr3t"), "{e}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_values_get_errors_that_do_not_repeat_them() {
        for bad in ["nocolon", "noat:pw", "@b:pw", "a@:pw", "a b@c:pw", "a@b.c:"] {
            let e = parse_user(2, bad).expect_err(bad).to_string();
            assert!(e.contains("EMAIL:PASSWORD") && e.contains("#2"), "{e}");
            assert!(!e.contains("pw"), "{e}");
        }
        for bad in ["nocolon-s3cr3t", ":s3cr3t", "a b:s3cr3t", "id:"] {
            let e = parse_client(3, bad).expect_err(bad).to_string();
            assert!(e.contains("ID:SECRET") && e.contains("#3"), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }
}
