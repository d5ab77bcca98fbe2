//! `ce-authd issuer`: runs the emulated issuer alone.
//!
//! STUB: the issuer work fills this in.

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

/// Runs the issuer until interrupted; prints one JSON line with `base_url` and `token_url` first.
pub async fn run(args: IssuerArgs) -> anyhow::Result<()> {
    let _ = args;
    Ok(())
}
