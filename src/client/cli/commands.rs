//! One function per `ce-auth` command.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use zeroize::Zeroizing;

use super::{AddArgs, Cli, Command, GitAction, LoginArgs, TokenArgs, table};
use crate::client::config::{self as clientcfg, ClientConfigError, LoginProfile};
use crate::client::conn::{Autostart, Client, ClientError, autostart_disabled_by_env};
use crate::client::gitcred::{self, CredentialRequest};
use crate::exit::client as exit;
use crate::protocol::Request;
use crate::secret::Secret;
use crate::spec::ProfileSpec;

/// The most bytes read from standard input for a secret or a git request.
const MAX_STDIN: u64 = 64 * 1024;

/// A usage problem found after argument parsing (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Running a program for `exec` failed; carries the shell's conventional status.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program}")]
struct ExecError {
    program: String,
    status: i32,
    #[source]
    source: std::io::Error,
}

/// The exit status for an error, from the first typed cause in its chain.
pub(super) fn exit_code_of(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return c.exit_code();
        }
        if let Some(c) = cause.downcast_ref::<ClientConfigError>() {
            return match c {
                ClientConfigError::BadProfileName(_) => exit::USAGE,
                _ => exit::CONFIG,
            };
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return exit::USAGE;
        }
        if let Some(c) = cause.downcast_ref::<ExecError>() {
            return c.status;
        }
    }
    exit::FAILURE
}

/// Where and how to reach the daemon, resolved once from the global options.
struct Ctx {
    socket: PathBuf,
    config: PathBuf,
    explicit_config: Option<PathBuf>,
    autostart: bool,
}

impl Ctx {
    /// How to start the daemon when none answers, unless autostart is off.
    fn autostart(&self) -> Option<Autostart> {
        self.autostart.then(|| Autostart {
            program: None,
            config: self.explicit_config.clone(),
        })
    }

    fn connect(&self) -> Result<Client, ClientError> {
        match self.autostart() {
            Some(auto) => Client::connect_or_start(&self.socket, &auto),
            None => Client::connect(&self.socket),
        }
    }

    /// Connects and sends `request` with the handshake in one write (one round
    /// trip: what makes `ce-auth token` quick), starting the daemon if allowed.
    fn request<T: serde::de::DeserializeOwned>(&self, request: &Request) -> Result<T, ClientError> {
        let (_, reply) = match self.autostart() {
            Some(auto) => Client::connect_or_start_and_request(&self.socket, &auto, request)?,
            None => Client::connect_and_request(&self.socket, request)?,
        };
        Ok(reply)
    }

    /// For commands that make no sense against a daemon started just for them.
    fn connect_existing(&self) -> Result<Client, ClientError> {
        Client::connect(&self.socket)
    }
}

/// Runs a parsed command line; returns the exit status of a success.
pub(super) fn run(cli: Cli) -> anyhow::Result<i32> {
    let ctx = Ctx {
        socket: crate::paths::socket_path(cli.socket)?,
        config: crate::paths::config_path(cli.config.clone()),
        explicit_config: cli.config,
        autostart: !cli.no_autostart && !autostart_disabled_by_env(),
    };
    match cli.command {
        Command::Token { token, json } => cmd_token(&ctx, &token, json),
        Command::Header { token } => {
            let t = get_token(&ctx, &token)?;
            out(&Zeroizing::new(format!(
                "Authorization: Bearer {}\n",
                t.access_token.expose()
            )))
        }
        Command::Exec { token, command } => cmd_exec(&ctx, &token, command),
        Command::Status { profile, json } => cmd_status(&ctx, profile.profile.as_deref(), json),
        Command::Add(args) => cmd_add(&ctx, args),
        Command::Remove { profile } => {
            let r = ctx.connect()?.remove(&profile)?;
            out(&format!("removed profile {}\n", r.profile))
        }
        Command::Refresh { profile } => {
            let t = ctx.connect()?.refresh(profile.profile.as_deref())?;
            out(&format!(
                "refreshed profile {}: the token expires in {}\n",
                t.profile,
                table::human_duration(secs_until(t.expires_at))
            ))
        }
        Command::Reload => {
            let r = ctx.connect()?.reload()?;
            let mut s = String::new();
            for (what, names) in [
                ("added", &r.added),
                ("removed", &r.removed),
                ("changed", &r.changed),
                ("unchanged", &r.unchanged),
            ] {
                if !names.is_empty() {
                    s.push_str(&format!("{what}: {}\n", names.join(", ")));
                }
            }
            if s.is_empty() {
                s.push_str("reloaded: no profiles\n");
            }
            out(&s)
        }
        Command::Stop => cmd_stop(&ctx),
        Command::Login(args) => cmd_login(&ctx, args),
        Command::Whoami { profile, json } => cmd_whoami(&ctx, profile.profile.as_deref(), json),
        Command::GitCredential { action } => cmd_git_credential(&ctx, action),
        Command::Paths => out(&paths_text(&ctx)),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "ce-auth",
                &mut buf,
            );
            out_bytes(&buf)
        }
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut buf)
                .context("rendering the manual page")?;
            out_bytes(&buf)
        }
    }
}

/// Writes command output to stdout; a closed pipe is an error, not a crash.
fn out(s: &str) -> anyhow::Result<i32> {
    out_bytes(s.as_bytes())
}

fn out_bytes(b: &[u8]) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(b)
        .and_then(|()| stdout.flush())
        .context("writing to standard output")?;
    Ok(exit::OK)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn secs_until(at: i64) -> u64 {
    u64::try_from(at - now()).unwrap_or(0)
}

fn get_token(ctx: &Ctx, args: &TokenArgs) -> anyhow::Result<crate::protocol::TokenReply> {
    let reply = ctx.request(&Request::Token {
        profile: args.profile.profile.clone(),
        min_ttl: args.min_ttl,
        wait: args.wait,
    })?;
    Ok(crate::client::conn::checked(reply)?)
}

fn cmd_token(ctx: &Ctx, args: &TokenArgs, json: bool) -> anyhow::Result<i32> {
    let t = get_token(ctx, args)?;
    if json {
        // the token is the requested data here, so it goes out as is
        let mut s = Zeroizing::new(serde_json::to_string(&t).context("encoding the token")?);
        s.push('\n');
        out(&s)
    } else {
        out(&Zeroizing::new(format!("{}\n", t.access_token.expose())))
    }
}

fn cmd_exec(ctx: &Ctx, args: &TokenArgs, command: Vec<std::ffi::OsString>) -> anyhow::Result<i32> {
    let (program, rest) = command
        .split_first()
        .ok_or_else(|| UsageError("exec needs a command after `--`".into()))?;
    let t = get_token(ctx, args)?;
    let socket = std::path::absolute(&ctx.socket).unwrap_or_else(|_| ctx.socket.clone());
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest)
        .env("CE_ACCESS_TOKEN", t.access_token.expose())
        .env("CE_AUTH_SOCK", &socket);
    // a proxy for this profile: children that outlive the token use it instead
    if let Ok(status) = ctx.connect_existing().and_then(|mut c| c.status(None))
        && let Some(p) = status.proxies.iter().find(|p| p.profile == t.profile)
    {
        match &p.url {
            Some(url) => cmd.env("CE_API_URL", url),
            None => cmd.env("CE_API_SOCKET", p.listen.trim_start_matches("unix:")),
        };
    }
    let fail = |source: std::io::Error| ExecError {
        program: program.to_string_lossy().into_owned(),
        // the shells' conventions: 127 not found, 126 found but not runnable
        status: if source.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // replacing this process passes the child's exit status and signals through exactly
        let e = cmd.exec();
        Err(fail(e).into())
    }
    #[cfg(not(unix))]
    {
        let status = cmd.status().map_err(fail)?;
        Ok(status.code().unwrap_or(exit::FAILURE))
    }
}

/// `ce-auth paths`: the socket, the config file and the detached daemon's log.
fn paths_text(ctx: &Ctx) -> String {
    #[cfg(windows)]
    let (kind, log) = (
        "named pipe",
        crate::paths::windows_daemon_log().map(|p| p.display().to_string()),
    );
    #[cfg(not(windows))]
    let (kind, log) = (
        "Unix socket",
        ctx.socket
            .parent()
            .map(|d| d.join("ce-authd.log").display().to_string()),
    );
    format!(
        "socket: {} ({kind})\nconfig: {}\nlog:    {} (ce-authd --daemon)\n",
        ctx.socket.display(),
        ctx.config.display(),
        log.as_deref().unwrap_or("none"),
    )
}

fn cmd_status(ctx: &Ctx, profile: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let status = ctx.connect_existing()?.status(profile)?;
    if json {
        let s = serde_json::to_string_pretty(&status).context("encoding the status")?;
        out(&format!("{s}\n"))
    } else {
        out(&table::status_table(&status, now()))
    }
}

/// Reads a secret: from standard input when it is not a terminal (one
/// trailing newline dropped), else from a no-echo prompt.
fn read_secret(prompt: &str) -> anyhow::Result<Secret> {
    let text = if std::io::stdin().is_terminal() {
        Zeroizing::new(rpassword::prompt_password(prompt).context("reading from the terminal")?)
    } else {
        read_stdin()?
    };
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(UsageError(
            "the secret is empty: pipe it on standard input or type it at the prompt".into(),
        )
        .into());
    }
    Ok(Secret::new(line.to_string()))
}

fn read_stdin() -> anyhow::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_string(&mut text)
        .context("reading standard input")?;
    if text.len() as u64 > MAX_STDIN {
        return Err(UsageError("standard input is longer than 64 KiB".into()).into());
    }
    Ok(text)
}

fn cmd_add(ctx: &Ctx, a: AddArgs) -> anyhow::Result<i32> {
    let password_grant = a.grant == Some(crate::spec::Grant::Password);
    let prompt = match (&a.username, password_grant) {
        (Some(user), true) => format!("Password for {user}: "),
        (None, true) => format!("Password for profile {}: ", a.profile),
        _ => format!("Client secret for profile {}: ", a.profile),
    };
    let spec = ProfileSpec {
        token_url: a.token_url,
        grant: a.grant,
        auth_method: a.auth_method,
        client_id: a.client_id,
        username: a.username,
        scope: a.scope,
        audience: a.audience,
        git_hosts: a.git_hosts,
        ..ProfileSpec::default()
    };
    let secret = read_secret(&prompt)?;
    let r = ctx
        .connect()?
        .add(&a.profile, spec, Some(secret), a.replace)?;
    out(&format!(
        "added profile {} (held in memory until the daemon stops)\n",
        r.profile
    ))
}

fn cmd_stop(ctx: &Ctx) -> anyhow::Result<i32> {
    let mut client = ctx.connect_existing()?;
    let pid = client.daemon().pid;
    client.shutdown()?;
    drop(client);
    // `stop` returns once the daemon has let go of the socket, bounded
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if Client::connect_with_timeout(&ctx.socket, Duration::from_secs(1)).is_err() {
            return out(&format!("stopped ce-authd (pid {pid})\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(anyhow!(
        "ce-authd (pid {pid}) accepted `stop` but still answers on {} after 10 s",
        ctx.socket.display()
    ))
}

fn cmd_whoami(ctx: &Ctx, profile: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let r = ctx.connect()?.whoami(profile)?;
    if json {
        let s = serde_json::to_string_pretty(&r.user).context("encoding the user")?;
        return out(&format!("{s}\n"));
    }
    let mut s = format!("profile: {}\n", r.profile);
    match r.user.as_object() {
        Some(fields) => {
            for (k, v) in fields {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Bool(true) => "yes".into(),
                    serde_json::Value::Bool(false) => "no".into(),
                    other => other.to_string(),
                };
                // the issuer's words: inert on the terminal
                s.push_str(&format!(
                    "{}: {}\n",
                    table::printable(k),
                    table::printable(&v)
                ));
            }
        }
        None => s.push_str(&format!(
            "user: {}\n",
            table::printable(&r.user.to_string())
        )),
    }
    out(&s)
}

/// Asks a question on the terminal (stderr) and reads one line of stdin.
fn ask(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading standard input")?;
    Ok(line.trim().to_string())
}

fn cmd_login(ctx: &Ctx, a: LoginArgs) -> anyhow::Result<i32> {
    clientcfg::validate_profile_name(&a.profile)?;
    if !a.replace && clientcfg::has_profile(&ctx.config, &a.profile)? {
        return Err(UsageError(format!(
            "{} already has a profile {:?}; choose another with -p or pass --replace",
            ctx.config.display(),
            a.profile
        ))
        .into());
    }

    let (email, password) = if std::io::stdin().is_terminal() {
        let email = match a.email {
            Some(e) => e,
            None => ask("E-mail: ")?,
        };
        let pw = rpassword::prompt_password(format!("Password for {email}: "))
            .context("reading the password from the terminal")?;
        (email, Secret::new(pw))
    } else {
        // piped: the e-mail on the first line unless given, then the password
        let text = read_stdin()?;
        let mut lines = text.lines();
        let email = match a.email {
            Some(e) => e,
            None => lines.next().unwrap_or("").trim().to_string(),
        };
        (email, Secret::new(lines.next().unwrap_or("").to_string()))
    };
    if email.is_empty() || !email.contains('@') {
        return Err(UsageError(format!("{email:?} is not an e-mail address")).into());
    }
    if password.is_empty() {
        return Err(UsageError("the password is empty".into()).into());
    }

    let mut client = match ctx.connect_existing() {
        Ok(c) => c,
        // on a fresh machine the daemon started for us is told to use this
        // file, so it must exist first; it is made only once we know no daemon
        // answers (never because an untrusted one did)
        Err(e) if e.is_absent() && ctx.autostart => {
            clientcfg::ensure_exists(&ctx.config)?;
            ctx.connect()?
        }
        Err(e) => return Err(e.into()),
    };
    let reply = client
        .login(a.token_url.as_deref(), &email, password)
        .context("signing in")?;

    // both go into files the daemon reads back: plain text only
    if reply.client_id.is_empty() || reply.client_id.chars().any(char::is_control) {
        return Err(anyhow!(
            "the issuer returned a client id that is not plain text ({:?}); nothing was saved",
            table::printable(&reply.client_id)
        ));
    }
    if !reply
        .client_secret
        .expose()
        .chars()
        .all(|c| c.is_ascii_graphic())
    {
        return Err(anyhow!(
            "the issuer returned a client secret that is not plain text; nothing was saved"
        ));
    }
    let secret_file = clientcfg::secret_file_path(&ctx.config, &a.profile);
    // the secret file first, so the config never names a missing file
    clientcfg::write_secret_file(&secret_file, reply.client_secret.expose())?;
    clientcfg::save_login_profile(
        &ctx.config,
        &LoginProfile {
            profile: &a.profile,
            client_id: &reply.client_id,
            token_url: a.token_url.as_deref(),
            secret_file: &secret_file,
        },
    )?;

    let mut msg = format!(
        "created API client {} for {email}\nsaved profile {} in {} (secret in {}, mode 0600)\n",
        table::printable(&reply.client_id),
        a.profile,
        ctx.config.display(),
        secret_file.display()
    );
    if a.show_secret {
        msg.push_str(&format!(
            "client secret: {}\n",
            reply.client_secret.expose()
        ));
    }
    let check = client
        .reload()
        .context("asking ce-authd to reload its config")
        .and_then(|_| {
            client.token(Some(&a.profile), None).with_context(|| {
                format!(
                    "ce-authd cannot get a token for profile {} (is it running with --config {}?)",
                    a.profile,
                    ctx.config.display()
                )
            })
        });
    match check {
        Ok(t) => {
            msg.push_str(&format!(
                "ce-auth token -p {} works (the token expires in {})\n",
                a.profile,
                table::human_duration(secs_until(t.expires_at))
            ));
            out(&msg)
        }
        Err(e) => {
            // the profile is saved either way; say so before the error
            out(&msg)?;
            Err(e)
        }
    }
}

fn cmd_git_credential(ctx: &Ctx, action: GitAction) -> anyhow::Result<i32> {
    // git writes the request whatever the action; read it so git never sees a broken pipe
    let input = read_stdin()?;
    if action != GitAction::Get {
        // tokens are short-lived and live in the daemon: nothing to store or erase
        return Ok(exit::OK);
    }
    let req = CredentialRequest::parse(&input).context("parsing git's credential request")?;
    if !req.transport_is_safe() {
        return Ok(exit::OK);
    }
    let profiles = clientcfg::git_profiles(&ctx.config)?;
    let Some(profile) = gitcred::match_profile(&req, &profiles) else {
        // not ours: silence lets git ask its other helpers
        return Ok(exit::OK);
    };
    let t = ctx
        .connect()?
        .token_within(
            Some(&profile.name),
            None,
            Some(crate::client::conn::GIT_WAIT),
        )
        .with_context(|| format!("getting a token for git (profile {})", profile.name))?;
    let username = profile.client_id.as_deref().unwrap_or("ce-auth");
    let answer = gitcred::format_answer(&req, username, t.access_token.expose(), t.expires_at)
        .ok_or_else(|| anyhow!("the token cannot be passed to git (it contains a newline)"))?;
    let answer = Zeroizing::new(answer);
    out(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_causes_decide_the_exit_status() {
        let e = anyhow::Error::from(UsageError("x".into()));
        assert_eq!(exit_code_of(&e), exit::USAGE);
        let e = anyhow::Error::from(ClientError::Daemon(crate::protocol::WireError::new(
            crate::protocol::ErrorCode::UnknownProfile,
            "no such profile",
        )))
        .context("getting a token");
        assert_eq!(exit_code_of(&e), exit::UNKNOWN_PROFILE);
        let e = anyhow::Error::from(ClientConfigError::Invalid {
            path: "/c".into(),
            message: "bad".into(),
        });
        assert_eq!(exit_code_of(&e), exit::CONFIG);
        let e = anyhow::Error::from(ClientConfigError::BadProfileName("a/b".into()));
        assert_eq!(exit_code_of(&e), exit::USAGE);
        assert_eq!(exit_code_of(&anyhow!("plain")), exit::FAILURE);
    }
}
