//! `ce-authd`: the ce-auth daemon.
//!
//! STUB: the lifecycle work fills this in.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ce-authd",
    version,
    about = "Keeps Climate Engine access tokens fresh and serves them over a local socket"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the emulated Climate Engine issuer alone.
    Issuer(ce_auth::issuer::cli::IssuerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Issuer(args)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(ce_auth::issuer::cli::run(args)),
        None => Ok(()),
    }
}
