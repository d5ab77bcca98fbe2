//! The client's side of the configuration file: reading profiles' `git_hosts`,
//! and saving a profile created by `ce-auth login` without losing the user's
//! comments and layout (`toml_edit`), with its secret in a 0600 file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::gitcred::GitProfile;
use crate::spec::ProfileSpec;

/// A problem with the configuration file as the client sees it.
#[derive(Debug, thiserror::Error)]
pub(super) enum ClientConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The message of [`crate::spec::validate_profile_name`].
    #[error("{0}")]
    BadProfileName(String),
}

/// The parts of the file the client reads. Profiles use the daemon's
/// [`ProfileSpec`] so both sides agree on what a profile may contain.
#[derive(Debug, Default, Deserialize)]
struct FileView {
    #[serde(default)]
    profiles: BTreeMap<String, ProfileSpec>,
}

/// Checks a profile name by the rule the daemon applies ([`crate::spec::validate_profile_name`]).
pub(super) fn validate_profile_name(name: &str) -> Result<(), ClientConfigError> {
    crate::spec::validate_profile_name(name).map_err(ClientConfigError::BadProfileName)
}

fn read_text(path: &Path) -> Result<Option<String>, ClientConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ClientConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_view(path: &Path) -> Result<FileView, ClientConfigError> {
    let Some(text) = read_text(path)? else {
        return Ok(FileView::default());
    };
    toml::from_str(&text).map_err(|e| ClientConfigError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Every profile with `git_hosts` in the file at `path` (none when the file is missing).
pub(super) fn git_profiles(path: &Path) -> Result<Vec<GitProfile>, ClientConfigError> {
    Ok(read_view(path)?
        .profiles
        .into_iter()
        .filter(|(_, spec)| !spec.git_hosts.is_empty())
        .map(|(name, spec)| GitProfile {
            name,
            git_hosts: spec.git_hosts,
            client_id: spec.client_id,
        })
        .collect())
}

/// Whether the file at `path` has a `[profiles.NAME]` table.
pub(super) fn has_profile(path: &Path, name: &str) -> Result<bool, ClientConfigError> {
    Ok(read_view(path)?.profiles.contains_key(name))
}

/// `<config dir>/<profile>.secret`, where `login` keeps a profile's client secret.
pub(super) fn secret_file_path(config: &Path, profile: &str) -> PathBuf {
    config
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{profile}.secret"))
}

/// What `login` saves for a profile.
#[derive(Debug, Clone)]
pub(super) struct LoginProfile<'a> {
    pub profile: &'a str,
    pub client_id: &'a str,
    pub token_url: Option<&'a str>,
    pub secret_file: &'a Path,
}

/// Keys that belong to other ways of supplying credentials; a login profile
/// drops them so the daemon sees one unambiguous source.
const CONFLICTING_KEYS: &[&str] = &[
    "client_secret_env",
    "client_secret_credential",
    "username",
    "password_file",
    "password_env",
    "password_credential",
];

/// Returns `text` (a config file, possibly empty) with `[profiles.NAME]` set up
/// for `client_credentials` + `client_secret_jwt`, and `default_profile` set
/// when the file had none. Everything else, comments included, is kept.
pub(super) fn edit_login_profile(text: &str, p: &LoginProfile<'_>) -> Result<String, String> {
    use toml_edit::{DocumentMut, Item, Table, value};

    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    if !doc.contains_key("default_profile") {
        doc.insert("default_profile", value(p.profile));
        // keep `default_profile` at the very top, above any other root key
        if let Some(mut key) = doc.key_mut("default_profile") {
            key.leaf_decor_mut().set_prefix("");
        }
    }
    let profiles = doc
        .entry("profiles")
        .or_insert_with(|| {
            let mut t = Table::new();
            // `[profiles.NAME]` headers only, no empty `[profiles]`
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or("`profiles` is not a table")?;
    let table = profiles
        .entry(p.profile)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| format!("`profiles.{}` is not a table", p.profile))?;
    for key in CONFLICTING_KEYS {
        table.remove(key);
    }
    if let Some(url) = p.token_url {
        table["token_url"] = value(url);
    }
    table["grant"] = value("client_credentials");
    table["auth_method"] = value("client_secret_jwt");
    table["client_id"] = value(p.client_id);
    table["client_secret_file"] = value(p.secret_file.to_string_lossy().as_ref());
    Ok(doc.to_string())
}

/// Adds or updates the login profile in the config file at `config`
/// (created, with its directory 0700, when missing). The file is replaced
/// atomically, keeping its permissions.
pub(super) fn save_login_profile(
    config: &Path,
    p: &LoginProfile<'_>,
) -> Result<(), ClientConfigError> {
    let text = read_text(config)?.unwrap_or_default();
    let new = edit_login_profile(&text, p).map_err(|message| ClientConfigError::Invalid {
        path: config.to_path_buf(),
        message,
    })?;
    let mode = existing_mode(config).unwrap_or(0o600);
    write_atomically(config, new.as_bytes(), mode).map_err(|source| ClientConfigError::Write {
        path: config.to_path_buf(),
        source,
    })
}

/// Writes a secret to `path` with mode 0600 from the moment the file exists
/// (a new file renamed over any old one), never chmod'ed after the fact.
pub(super) fn write_secret_file(path: &Path, secret: &str) -> Result<(), ClientConfigError> {
    write_atomically(path, secret.as_bytes(), 0o600).map_err(|source| ClientConfigError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(unix)]
fn existing_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn existing_mode(_: &Path) -> Option<u32> {
    None
}

/// Creates `config` (and its directory, 0700) holding only a comment, when it
/// does not exist yet: a daemon started for `login` with `--config` must find
/// the file it is told to use.
pub(super) fn ensure_exists(config: &Path) -> Result<(), ClientConfigError> {
    if read_text(config)?.is_some() {
        return Ok(());
    }
    write_atomically(
        config,
        b"# ce-auth configuration: see docs/CONFIG.md\n",
        0o600,
    )
    .map_err(|source| ClientConfigError::Write {
        path: config.to_path_buf(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    crate::atomic::replace_file(path, contents, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_FILE: &str = "\
# my settings, keep this comment
default_profile = \"work\"

[profiles.work] # the work account
token_url = \"https://auth.example.com/token\"
client_id = \"w\"
client_secret_file = \"/x/work.secret\"
git_hosts = [\"git.example.com\"]
";

    fn login<'a>(profile: &'a str, secret_file: &'a Path) -> LoginProfile<'a> {
        LoginProfile {
            profile,
            client_id: "new-client",
            token_url: Some("http://127.0.0.1:9/api/v1/auth/jwt/token"),
            secret_file,
        }
    }

    #[test]
    fn adding_a_profile_keeps_comments_and_other_profiles() {
        let sf = PathBuf::from("/cfg/dev.secret");
        let out = edit_login_profile(USER_FILE, &login("dev", &sf)).unwrap();
        assert!(out.contains("# my settings, keep this comment"), "{out}");
        assert!(out.contains("[profiles.work] # the work account"), "{out}");
        assert!(out.contains("default_profile = \"work\""), "{out}");
        assert!(!out.contains("\n[profiles]\n"), "{out}");
        let view: FileView = toml::from_str(&out).unwrap();
        let dev = &view.profiles["dev"];
        assert_eq!(dev.client_id.as_deref(), Some("new-client"));
        assert_eq!(dev.grant.map(|v| v.as_str()), Some("client_credentials"));
        assert_eq!(
            dev.auth_method.map(|v| v.as_str()),
            Some("client_secret_jwt")
        );
        assert_eq!(dev.client_secret_file.as_deref(), Some("/cfg/dev.secret"));
        assert_eq!(view.profiles["work"].git_hosts, vec!["git.example.com"]);
    }

    #[test]
    fn an_empty_file_gets_a_default_profile() {
        let sf = PathBuf::from("/cfg/ce.secret");
        let out = edit_login_profile("", &login("ce", &sf)).unwrap();
        assert!(out.starts_with("default_profile = \"ce\"\n"), "{out}");
        assert!(out.contains("[profiles.ce]"), "{out}");
        let table: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(table["default_profile"].as_str(), Some("ce"));
    }

    #[test]
    fn updating_a_profile_drops_conflicting_keys_and_keeps_the_rest() {
        let text = "[profiles.p]\ngrant = \"password\"\nusername = \"me@x\"\npassword_file = \"/p\"\nscope = \"read\"\n";
        let sf = PathBuf::from("/cfg/p.secret");
        let mut p = login("p", &sf);
        p.token_url = None;
        let out = edit_login_profile(text, &p).unwrap();
        let view: FileView = toml::from_str(&out).unwrap();
        let spec = &view.profiles["p"];
        assert_eq!(spec.username, None);
        assert_eq!(spec.password_file, None);
        assert_eq!(spec.scope.as_deref(), Some("read"));
        assert_eq!(spec.grant.map(|v| v.as_str()), Some("client_credentials"));
        assert_eq!(spec.token_url, None);
    }

    #[test]
    fn invalid_toml_is_an_error_not_a_rewrite() {
        let sf = PathBuf::from("/s");
        assert!(edit_login_profile("[profiles\n", &login("p", &sf)).is_err());
        assert!(edit_login_profile("profiles = 3\n", &login("p", &sf)).is_err());
    }

    #[test]
    fn profile_names_are_plain() {
        for ok in ["dev", "climate-engine", "a.b_c-1"] {
            assert!(validate_profile_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "../x", "a b", "é"] {
            assert!(validate_profile_name(bad).is_err(), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn files_are_written_with_their_mode_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sub/config.toml");
        let secret = secret_file_path(&config, "dev");
        write_secret_file(&secret, "s3cret").unwrap();
        write_secret_file(&secret, "s3cret-2").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret-2");
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(dir.path().join("sub"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);

        std::fs::write(&config, "# mine\n[profiles.gh]\ngit_hosts = [\"h\"]\n").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
        save_login_profile(&config, &login("dev", &secret)).unwrap();
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(has_profile(&config, "dev").unwrap());
        assert!(!has_profile(&config, "nope").unwrap());
        let table: toml::Table =
            toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        assert_eq!(table["default_profile"].as_str(), Some("dev"));
        let git = git_profiles(&config).unwrap();
        assert_eq!(git.len(), 1);
        assert_eq!(git[0].name, "gh");
        assert!(
            std::fs::read_to_string(&config)
                .unwrap()
                .starts_with("default_profile")
        );
        assert!(std::fs::read_to_string(&config).unwrap().contains("# mine"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_missing_file_has_no_profiles() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            git_profiles(&dir.path().join("none.toml"))
                .unwrap()
                .is_empty()
        );
    }
}
