//! `ce-authd issuer`: runs the emulated issuer alone, announces where it
//! listens on stdout, logs requests to stderr and stops on SIGINT/SIGTERM.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;

use super::{DEV_USER_EMAIL, Issuer};

/// Arguments of `ce-authd issuer`.
#[derive(Debug, Clone, clap::Args)]
pub struct IssuerArgs {
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// A user for the password grant, as EMAIL:PASSWORD (repeatable).
    #[arg(long = "user", value_name = "EMAIL:PASSWORD")]
    pub users: Vec<String>,
    /// A pre-seeded API client, as ID:SECRET (repeatable).
    #[arg(long = "client", value_name = "ID:SECRET")]
    pub clients: Vec<String>,
    /// Lifetime of issued tokens in seconds.
    #[arg(long, default_value_t = 900)]
    pub token_lifetime: u64,
    /// Turn on counters and fault injection under /_test/.
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
    /// `--token-lifetime 0`.
    #[error("--token-lifetime must be at least 1 second")]
    Lifetime,
}

/// Splits `EMAIL:PASSWORD` (the password may contain ':').
pub fn parse_user(n: usize, value: &str) -> Result<(&str, &str), ArgError> {
    let (email, password) = value
        .split_once(':')
        .ok_or(ArgError::User(n, "no ':' between e-mail and password"))?;
    let (local, domain) = email
        .split_once('@')
        .ok_or(ArgError::User(n, "no '@' in the e-mail"))?;
    if local.is_empty() || domain.is_empty() || email.chars().any(char::is_whitespace) {
        return Err(ArgError::User(n, "an e-mail that is not an address"));
    }
    if password.is_empty() {
        return Err(ArgError::User(n, "an empty password"));
    }
    Ok((email, password))
}

/// Splits `ID:SECRET` (the secret may contain ':').
pub fn parse_client(n: usize, value: &str) -> Result<(&str, &str), ArgError> {
    let (id, secret) = value
        .split_once(':')
        .ok_or(ArgError::Client(n, "no ':' between id and secret"))?;
    if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ArgError::Client(n, "an empty id or one with spaces"));
    }
    if secret.is_empty() {
        return Err(ArgError::Client(n, "an empty secret"));
    }
    Ok((id, secret))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // a subscriber set up by the caller wins
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
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
    let mut emails = Vec::new();
    for (n, value) in args.users.iter().enumerate() {
        let (email, password) = parse_user(n + 1, value)?;
        builder = builder.user(email, password);
        emails.push(email.to_owned());
    }
    for (n, value) in args.clients.iter().enumerate() {
        let (id, secret) = parse_client(n + 1, value)?;
        builder = builder.client(id, secret);
    }
    if emails.is_empty() && !args.clients.is_empty() {
        emails.push(DEV_USER_EMAIL.to_owned());
    }
    let issuer = builder
        .start()
        .await
        .with_context(|| format!("cannot start the issuer on 127.0.0.1:{}", args.port))?;

    let base = issuer.base_url();
    let ready = serde_json::json!({
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
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}").context("cannot write the ready line to stdout")?;
    stdout
        .flush()
        .context("cannot write the ready line to stdout")?;
    drop(stdout);
    tracing::info!("issuer listening on {base}");

    wait_for_signal().await?;
    tracing::info!("stopping");
    issuer.shutdown().await;
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("cannot watch Ctrl-C")
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
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
