//! `ce-authd`: the ce-auth daemon. Parses arguments, sets up logging and
//! hardening, then hands over to [`ce_auth::daemon::lifecycle::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ce_auth::daemon::lifecycle::{self, Mode, Options};
use ce_auth::exit::daemon as exit;
use clap::{Args, Parser, Subcommand};

/// The text `--help` shows after the options; the exit statuses come from
/// [`ce_auth::exit::daemon::TABLE`].
const MODES: &str = "\
Modes:
  Without --daemon, ce-authd stays in the foreground and logs to stderr (what
  systemd, containers and terminals want). With --daemon it detaches once the
  socket is ready and prints `CE_AUTH_SOCK=<path>; export CE_AUTH_SOCK;`, so
  `eval \"$(ce-authd --daemon)\"` works like ssh-agent. The detached daemon logs
  to ce-authd.log beside the socket (mode 0600); on Windows it is a detached
  copy of ce-authd serving the named pipe, logging to
  %LOCALAPPDATA%\\ce-auth\\ce-authd.log.";

const SIGNALS: &str = "Signals: SIGTERM/SIGINT stop the daemon cleanly; SIGHUP reloads the configuration \
     (on Windows Ctrl-C, Ctrl-Break or closing the console stop it; `ce-auth reload` reloads).";

fn after_help() -> String {
    format!(
        "{MODES}\n\n{}\n{SIGNALS}",
        ce_auth::exit::help(ce_auth::exit::daemon::TABLE)
    )
}

#[derive(Parser)]
#[command(
    name = "ce-authd",
    version,
    about = "Keeps Climate Engine access tokens fresh and serves them over a local socket",
    after_help = after_help(),
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: DaemonArgs,
    /// Log level (error, warn, info, debug, trace or a RUST_LOG filter); overrides RUST_LOG.
    #[arg(long, value_name = "LEVEL", global = true, value_parser = log_filter)]
    log_level: Option<tracing_subscriber::filter::Targets>,
}

#[derive(Args)]
struct DaemonArgs {
    /// Configuration file [default: $CE_AUTH_CONFIG, else ~/.config/ce-auth/config.toml].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Socket to serve [default: $CE_AUTH_SOCK, else $XDG_RUNTIME_DIR/ce-auth/agent.sock, else /run/user/UID/ce-auth/agent.sock, else ~/.cache/ce-auth/HOST/agent.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Stay in the foreground (the default).
    #[arg(long, conflicts_with = "daemon")]
    foreground: bool,
    /// Detach once ready and print `CE_AUTH_SOCK=...; export CE_AUTH_SOCK;`.
    #[arg(long)]
    daemon: bool,
    /// Run the emulated issuer on 127.0.0.1 with a `dev` profile (no network, no account).
    #[arg(long)]
    dev: bool,
    /// Pidfile [default: ce-authd.pid beside the socket].
    #[arg(long, value_name = "PATH")]
    pidfile: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the emulated Climate Engine issuer alone.
    Issuer(ce_auth_issuer::cli::IssuerArgs),
}

fn main() -> ExitCode {
    // before anything reads a secret: no core files, no ptrace by other processes
    let hardening = ce_auth::daemon::hardening::harden();
    let cli = Cli::parse();
    init_logging(cli.log_level.clone());
    for w in hardening.warnings() {
        tracing::warn!("{w}");
    }
    match cli.command {
        Some(Command::Issuer(args)) => match run_issuer(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ce-authd issuer: {e:#}");
                ExitCode::from(exit::FAILURE)
            }
        },
        None => {
            let d = cli.daemon;
            let opts = Options {
                config: d.config,
                socket: d.socket,
                mode: if d.daemon {
                    Mode::Daemon
                } else {
                    Mode::Foreground
                },
                dev: d.dev,
                pidfile: d.pidfile,
            };
            match lifecycle::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ce-authd: {}", ce_auth::daemon::error_chain(&e));
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

fn run_issuer(args: ce_auth_issuer::cli::IssuerArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(ce_auth_issuer::cli::run(args))
}

/// Logs to stderr: readable in a terminal; when stderr is the journal, no
/// timestamps or colours (the journal adds its own) and a `<N>` syslog priority
/// prefix per line, so `journalctl -p warning` works.
fn init_logging(level: Option<tracing_subscriber::filter::Targets>) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let info = || Targets::new().with_default(tracing::Level::INFO);
    let filter: Targets = match level {
        Some(t) => t,
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => log_filter(&v).unwrap_or_else(|e| {
                eprintln!("ce-authd: RUST_LOG ignored, logging at info: {e}");
                info()
            }),
            _ => info(),
        },
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    // a subscriber set up earlier (e.g. by a test harness) is not worth stopping for
    let _ = if stderr_is_journal() {
        let plain = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_level(false);
        registry
            .with(
                layer
                    .with_ansi(false)
                    .event_format(journal::Prefixed(plain)),
            )
            .try_init()
    } else {
        registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .try_init()
    };
}

/// A log filter: `level` or `target=level,...` (what RUST_LOG holds in
/// practice), parsed by tracing-subscriber's `Targets`, which needs no regex
/// engine (EnvFilter's would stay resident). A bare word must be a level:
/// `Targets` would take `verbose` as a target's name and log nothing.
fn log_filter(spec: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    use tracing_subscriber::filter::LevelFilter;
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=') && d.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "{d:?} is not a level: use off, error, warn, info, debug or trace, \
                 or TARGET=LEVEL for one module (e.g. ce_auth=debug,warn)"
            ));
        }
    }
    spec.parse().map_err(|e| {
        format!("{spec:?} is not a log filter ({e}); e.g. debug, or ce_auth=debug,warn")
    })
}

mod journal {
    //! Log lines for the journal: a syslog priority prefix, then the line.

    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    /// Wraps a formatter, prefixing `<3>` (error) to `<7>` (debug) as sd-daemon(3) describes.
    pub struct Prefixed<F>(pub F);

    impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        F: FormatEvent<S, N>,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> std::fmt::Result {
            let priority = match *event.metadata().level() {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                _ => 7,
            };
            write!(writer, "<{priority}>")?;
            self.0.format_event(ctx, writer, event)
        }
    }
}

/// No journal outside Unix.
#[cfg(not(unix))]
fn stderr_is_journal() -> bool {
    false
}

/// True when stderr is the journal stream systemd set up (`JOURNAL_STREAM`
/// names its device and inode), not merely inherited by a child's redirect.
#[cfg(unix)]
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}
