//! The secret sources a profile may name: files (private to the user),
//! environment variables of the daemon and systemd credentials; and the
//! expansion of paths written in the config file.

use std::path::{Path, PathBuf};

use super::{ConfigError, key_err};
use crate::secret::Secret;

/// Secret files larger than this are refused (a secret is a line, not a file dump).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Expands `~` and anchors relative paths at `base` (the config file's directory).
pub(super) fn resolve_path(p: &str, base: Option<&Path>) -> Result<PathBuf, String> {
    if p.trim().is_empty() {
        return Err("is empty; give a path".into());
    }
    let expanded = if p == "~" || p.starts_with("~/") {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            // Windows sets USERPROFILE, not HOME
            .or_else(|| {
                cfg!(windows)
                    .then(|| std::env::var_os("USERPROFILE"))
                    .flatten()
                    .filter(|h| !h.is_empty())
            })
            .ok_or_else(|| {
                format!("cannot expand \"{p}\": $HOME is not set; use an absolute path")
            })?;
        let mut h = PathBuf::from(home);
        if let Some(rest) = p.strip_prefix("~/") {
            h.push(rest);
        }
        h
    } else if p.starts_with('~') {
        return Err(format!(
            "\"{p}\": only \"~/\" (your own home) is expanded; use an absolute path"
        ));
    } else {
        PathBuf::from(p)
    };
    if expanded.is_absolute() {
        Ok(expanded)
    } else {
        match base {
            Some(b) => Ok(b.join(expanded)),
            None => Err(format!(
                "\"{p}\" is relative; use an absolute path or one starting with ~/"
            )),
        }
    }
}

/// Reads the secret a profile names from a file, the environment or a systemd credential.
pub(super) fn read_secret(
    profile: &str,
    key: &str,
    value: &str,
    base: Option<&Path>,
) -> Result<Secret, ConfigError> {
    let err = |msg: String| key_err(profile, key, msg);
    if key.ends_with("_env") {
        let v = std::env::var(value).map_err(|_| {
            err(format!(
                "the environment variable {value} is not set (or not UTF-8) in the daemon's environment"
            ))
        })?;
        let s = Secret::new(v);
        if s.is_empty() {
            return Err(err(format!("the environment variable {value} is empty")));
        }
        return Ok(s);
    }
    let (path, check_mode) = if key.ends_with("_credential") {
        if value.is_empty() || value.contains('/') || value == "." || value == ".." {
            return Err(err(format!(
                "\"{}\" is not a credential name",
                value.escape_debug()
            )));
        }
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            err(format!(
                "$CREDENTIALS_DIRECTORY is not set; run under systemd with LoadCredential={value}:PATH \
                 or use a _file key instead"
            ))
        })?;
        // systemd makes the directory private to the service; its files' modes are its business
        (PathBuf::from(dir).join(value), false)
    } else {
        (resolve_path(value, base).map_err(&err)?, true)
    };
    read_secret_file(&path, check_mode).map_err(err)
}

pub(super) fn read_secret_file(path: &Path, check_mode: bool) -> Result<Secret, String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    #[cfg(unix)]
    if check_mode {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} is accessible by group or others (mode {:03o}); run `chmod 600 {shown}`",
                mode & 0o777
            ));
        }
    }
    // Windows: the ACL must let no other user read the file (nor change who can)
    #[cfg(windows)]
    if check_mode {
        crate::win::acl::check_private(&file, &shown.to_string())?;
    }
    #[cfg(not(any(unix, windows)))]
    let _ = check_mode;
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "{shown} is {} bytes, too large for a secret (at most {MAX_SECRET_FILE})",
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    // `echo secret > file` leaves a newline that is not part of the secret
    let keep = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(keep);
    let s = Secret::new(text);
    if s.is_empty() {
        return Err(format!("{shown} is empty; put the secret in it"));
    }
    Ok(s)
}
