//! The `ce-auth` command line: argument definitions and the entry point the
//! thin binary calls. Synchronous throughout; no async runtime.

mod commands;
pub(super) mod table;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::client as exit;
use crate::spec::{AuthMethod, Grant};

/// What `--help` shows after the commands: the exit statuses, from
/// [`crate::exit::client::TABLE`], and the environment.
fn after_help() -> String {
    format!(
        "{}\nEnvironment: CE_AUTH_SOCK (socket), CE_AUTH_CONFIG (config file),\n\
         CE_AUTH_NO_AUTOSTART=1 (never start ce-authd).",
        crate::exit::help(crate::exit::client::TABLE)
    )
}

/// Get Climate Engine API access tokens from ce-authd.
#[derive(Debug, Parser)]
#[command(
    name = "ce-auth",
    version,
    about = "Get always-fresh Climate Engine API access tokens from ce-authd",
    after_help = after_help()
)]
pub(super) struct Cli {
    /// The daemon's socket [default: $CE_AUTH_SOCK, else $XDG_RUNTIME_DIR/ce-auth/agent.sock, else /run/user/UID/ce-auth/agent.sock, else ~/.cache/ce-auth/HOST/agent.sock]
    #[arg(long, global = true, env = "CE_AUTH_SOCK", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// The config file (read by `git-credential`, edited by `login`)
    /// [default: $XDG_CONFIG_HOME/ce-auth/config.toml]
    #[arg(long, global = true, env = "CE_AUTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Never start ce-authd when none answers (also CE_AUTH_NO_AUTOSTART=1)
    #[arg(long, global = true)]
    pub no_autostart: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// A profile choice shared by several commands.
#[derive(Debug, Args)]
pub(super) struct ProfileArg {
    /// The profile [default: the daemon's default profile]
    #[arg(short, long, value_name = "PROFILE")]
    pub profile: Option<String>,
}

/// Options of commands that hand out a token.
#[derive(Debug, Args)]
pub(super) struct TokenArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// Seconds the token must still be valid for [default: 60]
    #[arg(long, value_name = "SECS")]
    pub min_ttl: Option<u64>,
    /// Seconds to wait for a token when the daemon holds none that will do;
    /// 0 fails at once [default: 10, at most 300]
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Print an access token (and a newline)
    Token {
        #[command(flatten)]
        token: TokenArgs,
        /// Print a JSON object with access_token, token_type, expires_at, profile
        #[arg(long)]
        json: bool,
    },
    /// Print an HTTP header line: `Authorization: Bearer <token>`
    Header {
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Run a command with the token in CE_ACCESS_TOKEN (and CE_AUTH_SOCK set)
    #[command(
        after_help = "The command replaces ce-auth, so its exit status is the command's own."
    )]
    Exec {
        #[command(flatten)]
        token: TokenArgs,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Show the daemon's profiles and their tokens' state
    Status {
        #[command(flatten)]
        profile: ProfileArg,
        /// Print the daemon's JSON status reply
        #[arg(long)]
        json: bool,
    },
    /// Load a profile into the daemon (memory only); the secret is read from
    /// standard input, or prompted for without echo on a terminal
    Add(AddArgs),
    /// Forget a profile, its secret and its token
    Remove {
        /// The profile
        profile: String,
    },
    /// Get a new token now, even if the held one is fresh
    Refresh {
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Make the daemon re-read its config file
    Reload,
    /// Stop the daemon
    Stop,
    /// Sign in with e-mail and password, create an API client and save it as a profile
    Login(LoginArgs),
    /// Show the user a profile's token belongs to (the issuer's users/me)
    Whoami {
        #[command(flatten)]
        profile: ProfileArg,
        /// Print the issuer's JSON object as is
        #[arg(long)]
        json: bool,
    },
    /// git credential helper: `git config credential.helper '!ce-auth git-credential'`
    GitCredential {
        /// What git asks for
        #[arg(value_enum)]
        action: GitAction,
    },
    /// Show where ce-auth finds the daemon's socket (a named pipe on
    /// Windows), the config file and the detached daemon's log
    Paths,
    /// Print a shell completion script
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) for `man -l -`
    Man,
}

/// `ce-auth add` options.
#[derive(Debug, Args)]
pub(super) struct AddArgs {
    /// The new profile's name
    pub profile: String,
    /// The token endpoint [default: Climate Engine's]
    #[arg(long, value_name = "URL")]
    pub token_url: Option<String>,
    /// The OAuth2 grant
    #[arg(long)]
    pub grant: Option<Grant>,
    /// Client authentication (client_credentials only)
    #[arg(long, value_name = "METHOD")]
    pub auth_method: Option<AuthMethod>,
    /// The API client id (client_credentials)
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// The e-mail to sign in with (password grant)
    #[arg(long, value_name = "EMAIL")]
    pub username: Option<String>,
    /// OAuth2 scope parameter
    #[arg(long)]
    pub scope: Option<String>,
    /// OAuth2 audience parameter
    #[arg(long)]
    pub audience: Option<String>,
    /// Host (or host/path prefix) whose git credentials this profile answers; repeatable
    #[arg(long = "git-host", value_name = "HOST")]
    pub git_hosts: Vec<String>,
    /// Replace a profile of the same name
    #[arg(long)]
    pub replace: bool,
}

/// `ce-auth login` options.
#[derive(Debug, Args)]
pub(super) struct LoginArgs {
    /// The profile to save
    #[arg(short, long, value_name = "PROFILE", default_value = "climate-engine")]
    pub profile: String,
    /// The account's e-mail (asked for when absent)
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// The token endpoint [default: Climate Engine's]
    #[arg(long, value_name = "URL")]
    pub token_url: Option<String>,
    /// Overwrite a profile of the same name in the config file
    #[arg(long)]
    pub replace: bool,
    /// Also print the new client secret (it is saved either way)
    #[arg(long)]
    pub show_secret: bool,
}

/// git's credential actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum GitAction {
    Get,
    Store,
    Erase,
}

// the flags take exactly the names the config file does
impl ValueEnum for Grant {
    fn value_variants<'a>() -> &'a [Self] {
        &Grant::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

impl ValueEnum for AuthMethod {
    fn value_variants<'a>() -> &'a [Self] {
        &AuthMethod::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// Runs `ce-auth` with the process's arguments; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // help and version requests are successes; everything else is usage
            return exit_code(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match commands::run(cli) {
        Ok(code) => exit_code(code),
        Err(e) => {
            eprintln!("ce-auth: {e:#}");
            exit_code(commands::exit_code_of(&e))
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_exit_code_with_its_value() {
        let help = Cli::command().render_long_help().to_string();
        for (code, words) in crate::exit::client::TABLE {
            let line = format!("  {code}  {words}");
            assert!(help.contains(&line), "missing {line:?} in {help}");
        }
    }

    #[test]
    fn exec_takes_the_command_after_the_double_dash() {
        let cli =
            Cli::try_parse_from(["ce-auth", "exec", "-p", "dev", "--", "sh", "-c", "x"]).unwrap();
        match cli.command {
            Command::Exec { token, command } => {
                assert_eq!(token.profile.profile.as_deref(), Some("dev"));
                assert_eq!(command, ["sh", "-c", "x"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["ce-auth", "exec"]).is_err());
    }

    #[test]
    fn secrets_have_no_command_line_option() {
        let help = Cli::command()
            .find_subcommand_mut("add")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("--client-id"));
        assert!(
            !help.contains("--secret") && !help.contains("--password"),
            "{help}"
        );
    }
}
