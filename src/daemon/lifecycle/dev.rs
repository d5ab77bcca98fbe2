//! `--dev`: the emulated issuer on 127.0.0.1, its `dev` profile, and the
//! notes that tell the user what to run next.

use std::path::Path;

use super::LifecycleError;
use crate::daemon::config::{AuthMethod, Grant, Profile, ProfileSpec};
use crate::secret::Secret;
use ce_auth_issuer::Issuer;

/// The name of the profile `--dev` adds.
pub(super) const DEV_PROFILE: &str = "dev";
/// The e-mail of the dev user of `--dev`.
pub(super) const DEV_USER: &str = "dev@example.com";

pub(super) async fn start_dev_issuer() -> Result<(Issuer, Profile), LifecycleError> {
    let client_id = ce_auth_issuer::generate_client_id();
    let client_secret = Secret::new(ce_auth_issuer::generate_client_secret());
    let password = Secret::new(ce_auth_issuer::generate_client_secret());
    let issuer = Issuer::builder()
        .user(DEV_USER, password.expose())
        .client(&client_id, client_secret.expose())
        .start()
        .await
        .map_err(LifecycleError::Issuer)?;
    let spec = ProfileSpec {
        token_url: Some(issuer.token_url()),
        grant: Some(Grant::ClientCredentials),
        auth_method: Some(AuthMethod::ClientSecretJwt),
        client_id: Some(client_id),
        ..ProfileSpec::default()
    };
    let profile = Profile::from_spec(DEV_PROFILE, spec, Some(client_secret))
        .map_err(LifecycleError::Config)?;
    tracing::info!("emulated issuer for --dev at {}", issuer.base_url());
    Ok((issuer, profile))
}

pub(super) fn dev_notes(socket: &Path, issuer: &Issuer) -> String {
    let sock = shell_quote(&socket.to_string_lossy());
    let base = issuer.base_url();
    let cli = client_command();
    format!(
        "ce-authd --dev: serving tokens from an emulated Climate Engine issuer\n\
         \x20 socket:  {sock}\n\
         \x20 profile: {DEV_PROFILE} (client_credentials + client_secret_jwt; the default profile)\n\
         \x20 issuer:  {base} (token endpoint {token}, user {DEV_USER})\n\
         \n\
         Try, in another terminal:\n\
         \x20 export CE_AUTH_SOCK={sock}\n\
         \x20 {cli} token\n\
         \x20 {cli} status\n\
         \x20 {cli} header | curl -H @- {base}/api/v1/users/me\n\
         \n",
        token = issuer.token_url(),
    )
}

/// How the user should call the client: `ce-auth` when it is on `PATH`,
/// else the binary built next to this one (as after `cargo run`).
pub(super) fn client_command() -> String {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("ce-auth").is_file()));
    if !on_path
        && let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("ce-auth")))
            .filter(|p| p.is_file())
    {
        return shell_quote(&sibling.to_string_lossy());
    }
    "ce-auth".to_string()
}

/// Quotes `s` for a POSIX shell when it holds anything but safe characters.
pub(super) fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("/run/user/1000/ce-auth/agent.sock"),
            "/run/user/1000/ce-auth/agent.sock"
        );
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_quote("/tmp/$(rm -rf x)"), "'/tmp/$(rm -rf x)'");
        assert_eq!(shell_quote(""), "''");
    }
}
