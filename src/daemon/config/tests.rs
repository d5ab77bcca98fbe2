//! Unit tests of configuration parsing and validation.

use super::sources::{read_secret_file, resolve_path};
use super::*;
use crate::secret::Secret;
use std::io::Write;

/// A directory with a secret file of the given mode; returns (dir, path).
fn secret_file(contents: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.secret");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // Windows: an owner-only ACL for "0600" (the temporary directory's inherited one may be wider)
    #[cfg(windows)]
    if mode & 0o077 == 0 {
        use std::os::windows::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .access_mode(0x0004_0000 | 0x0002_0000) // WRITE_DAC | READ_CONTROL
            .open(&path)
            .unwrap();
        crate::win::acl::restrict_to_owner(&f).unwrap();
    }
    (dir, path)
}

fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path)
}

fn err_of(r: Result<Config, ConfigError>) -> String {
    match r {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.message,
    }
}

#[test]
fn full_client_credentials_profile() {
    let (dir, path) = secret_file("s3cret-value\n", 0o600);
    let text = format!(
        r#"
default_profile = "ce"
[daemon]
max_connections = 8
[profiles.ce]
token_url = "https://auth.example.com/api/v1/auth/jwt/token"
auth_method = "client_secret_post"
client_id = "abc"
client_secret_file = '{}'
scope = "read"
refresh_fraction = [0.4, 0.6]
refresh_margin = 30
idle_timeout = 600
default_lifetime = 120
connect_timeout = 3
timeout = 7
git_hosts = ["git.example.com"]
"#,
        path.display()
    );
    let c = parse_in(dir.path(), &text).unwrap();
    assert_eq!(c.default_profile.as_deref(), Some("ce"));
    assert_eq!(c.daemon.max_connections, Some(8));
    let p = &c.profiles["ce"];
    assert_eq!(p.name, "ce");
    assert_eq!(p.secret.as_ref().unwrap().expose(), "s3cret-value");
    let s = p;
    assert_eq!(s.grant, Grant::ClientCredentials);
    assert_eq!(s.auth_method, Some(AuthMethod::ClientSecretPost));
    assert_eq!(s.api_url, "https://auth.example.com");
    assert_eq!(s.refresh_fraction, (0.4, 0.6));
    assert_eq!(s.refresh_margin, Duration::from_secs(30));
    assert_eq!(s.timeout, Duration::from_secs(7));
    assert_eq!(s.scope.as_deref(), Some("read"));
    assert_eq!(
        c.path.as_deref(),
        Some(dir.path().join("config.toml").as_path())
    );
}

#[test]
fn defaults_apply() {
    let p = Profile::from_spec(
        "d",
        ProfileSpec {
            client_id: Some("id".into()),
            ..ProfileSpec::default()
        },
        Some(Secret::new("x".into())),
    )
    .unwrap();
    let s = p;
    assert_eq!(s.token_url, CLIMATE_ENGINE_TOKEN_URL);
    assert_eq!(s.api_url, "https://auth.climateengine.com");
    assert_eq!(s.auth_method, Some(AuthMethod::ClientSecretJwt));
    assert_eq!(s.refresh_fraction, DEFAULT_REFRESH_FRACTION);
    assert_eq!(s.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(s.default_lifetime, DEFAULT_LIFETIME);
}

#[test]
fn bad_grant_names_file_profile_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let m = err_of(parse_in(
        dir.path(),
        "[profiles.x]\ngrant = \"pasword\"\nusername = \"a@b\"\npassword_env = \"P\"\n",
    ));
    assert!(
        m.contains("config.toml: profile \"x\": key \"grant\""),
        "{m}"
    );
    assert!(
        m.contains("expected \"client_credentials\" or \"password\", got \"pasword\""),
        "{m}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = err_of(parse_in(
        dir.path(),
        "[profiles.x]\nclient_id = \"a\"\nclient_secret_env = \"S\"\ntoken_uri = \"https://a\"\n",
    ));
    assert!(
        m.contains("profile \"x\": unknown key \"token_uri\""),
        "{m}"
    );
    assert!(m.contains("token_url"), "should list valid keys: {m}");
    let m = err_of(parse_in(dir.path(), "colour = 1\n"));
    assert!(m.contains("unknown key \"colour\""), "{m}");
    let m = err_of(parse_in(dir.path(), "[daemon]\nmax_conns = 1\n"));
    assert!(m.contains("[daemon]") && m.contains("max_conns"), "{m}");
}

#[test]
fn wrong_types_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let m = err_of(parse_in(
        dir.path(),
        "[profiles.x]\nclient_id = 5\nclient_secret_env = \"S\"\n",
    ));
    assert!(m.contains("key \"client_id\""), "{m}");
    assert!(m.contains("integer 5"), "{m}");
    let m = err_of(parse_in(
        dir.path(),
        "[profiles.x]\nclient_id = \"a\"\nclient_secret_env = \"S\"\ntimeout = -3\n",
    ));
    assert!(m.contains("key \"timeout\""), "{m}");
}

#[test]
fn toml_syntax_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = err_of(parse_in(dir.path(), "[profiles.x\n"));
    assert!(m.contains("config.toml: not valid TOML"), "{m}");
}

#[test]
fn missing_file_is_an_error_but_load_or_empty_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let m = Config::load(&path).unwrap_err().message;
    assert!(m.contains("nope.toml: no such file"), "{m}");
    let c = Config::load_or_empty(&path).unwrap();
    assert!(c.profiles.is_empty());
    assert_eq!(c.path.as_deref(), Some(path.as_path()));
}

#[cfg(unix)]
#[test]
fn readable_secret_file_is_refused_with_chmod_hint() {
    let (dir, path) = secret_file("s", 0o644);
    let text = format!(
        "[profiles.x]\nclient_id = \"a\"\nclient_secret_file = \"{}\"\n",
        path.display()
    );
    let m = err_of(parse_in(dir.path(), &text));
    assert!(m.contains(&format!("chmod 600 {}", path.display())), "{m}");
    assert!(m.contains("key \"client_secret_file\""), "{m}");
}

#[test]
fn relative_and_tilde_paths() {
    let (dir, _path) = secret_file("rel-secret", 0o600);
    let c = parse_in(
        dir.path(),
        "[profiles.x]\nclient_id = \"a\"\nclient_secret_file = \"client.secret\"\n",
    )
    .unwrap();
    assert_eq!(
        c.profiles["x"].secret.as_ref().unwrap().expose(),
        "rel-secret"
    );
    // relative paths have no anchor in `add`
    let e = Profile::from_spec(
        "x",
        ProfileSpec {
            client_id: Some("a".into()),
            client_secret_file: Some("client.secret".into()),
            ..ProfileSpec::default()
        },
        None,
    )
    .unwrap_err();
    assert!(e.message.contains("relative"), "{}", e.message);
    let home = std::env::var("HOME").unwrap_or_default();
    if !home.is_empty() {
        assert_eq!(
            resolve_path("~/a/b", None).unwrap(),
            PathBuf::from(&home).join("a/b")
        );
    }
    assert!(resolve_path("~bob/x", None).is_err());
}

#[test]
fn exactly_one_secret_source() {
    let base = ProfileSpec {
        client_id: Some("a".into()),
        ..ProfileSpec::default()
    };
    let e = Profile::from_spec("x", base.clone(), None).unwrap_err();
    assert!(e.message.contains("no client secret"), "{}", e.message);
    let two = ProfileSpec {
        client_secret_env: Some("A".into()),
        client_secret_credential: Some("c".into()),
        ..base.clone()
    };
    let e = Profile::from_spec("x", two, None).unwrap_err();
    assert!(
        e.message.contains("both give the client secret"),
        "{}",
        e.message
    );
    let with_env = ProfileSpec {
        client_secret_env: Some("A".into()),
        ..base.clone()
    };
    let e = Profile::from_spec("x", with_env, Some(Secret::new("s".into()))).unwrap_err();
    assert!(e.message.contains("given directly"), "{}", e.message);
    let e = Profile::from_spec("x", base, Some(Secret::new(String::new()))).unwrap_err();
    assert!(e.message.contains("empty"), "{}", e.message);
}

#[test]
fn env_secret_source() {
    // a variable name unique to this test, set once
    let var = "CE_AUTH_TEST_ENV_SECRET_9F2";
    // SAFETY: no other test reads or writes this variable
    unsafe { std::env::set_var(var, "from-env") };
    let p = Profile::from_spec(
        "x",
        ProfileSpec {
            client_id: Some("a".into()),
            client_secret_env: Some(var.into()),
            ..ProfileSpec::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(p.secret.unwrap().expose(), "from-env");
    let e = Profile::from_spec(
        "x",
        ProfileSpec {
            client_id: Some("a".into()),
            client_secret_env: Some("CE_AUTH_TEST_UNSET_VAR_71".into()),
            ..ProfileSpec::default()
        },
        None,
    )
    .unwrap_err();
    assert!(
        e.message.contains("CE_AUTH_TEST_UNSET_VAR_71 is not set"),
        "{}",
        e.message
    );
}

#[test]
fn password_grant_rules() {
    let ok = Profile::from_spec(
        "p",
        ProfileSpec {
            grant: Some(Grant::Password),
            username: Some("me@example.com".into()),
            ..ProfileSpec::default()
        },
        Some(Secret::new("pw".into())),
    )
    .unwrap();
    assert_eq!(ok.grant, Grant::Password);
    assert_eq!(ok.auth_method, None);
    let e = Profile::from_spec(
        "p",
        ProfileSpec {
            grant: Some(Grant::Password),
            username: Some("me@example.com".into()),
            client_secret_env: Some("X".into()),
            ..ProfileSpec::default()
        },
        None,
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("key \"client_secret_env\": does not apply"),
        "{}",
        e.message
    );
    let e = Profile::from_spec(
        "p",
        ProfileSpec {
            grant: Some(Grant::Password),
            ..ProfileSpec::default()
        },
        Some(Secret::new("pw".into())),
    )
    .unwrap_err();
    assert!(
        e.message.contains("key \"username\": missing"),
        "{}",
        e.message
    );
}

#[test]
fn urls_must_be_https_or_loopback_http() {
    for ok in [
        "https://auth.example.com/token",
        "http://127.0.0.1:8080/t",
        "http://127.3.4.5/t",
        "http://[::1]:9/t",
        "http://localhost/t",
    ] {
        assert!(validate_url(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://auth.example.com/token",
        "http://10.0.0.1/t",
        "ftp://x/y",
        "https://user:pw@example.com/t",
        "not a url",
    ] {
        assert!(validate_url(bad).is_err(), "{bad}");
    }
    let e = Profile::from_spec(
        "x",
        ProfileSpec {
            token_url: Some("http://auth.example.com/t".into()),
            client_id: Some("a".into()),
            ..ProfileSpec::default()
        },
        Some(Secret::new("s".into())),
    )
    .unwrap_err();
    assert!(e.message.contains("key \"token_url\"") && e.message.contains("loopback"));
}

#[test]
fn refresh_tuning_is_range_checked() {
    let spec = |f: Vec<f64>| ProfileSpec {
        client_id: Some("a".into()),
        refresh_fraction: Some(f),
        ..ProfileSpec::default()
    };
    for bad in [
        vec![0.0, 0.5],
        vec![0.7, 0.5],
        vec![0.5, 1.0],
        vec![0.1, 0.2, 0.3],
    ] {
        let e = Profile::from_spec("x", spec(bad), Some(Secret::new("s".into()))).unwrap_err();
        assert!(e.message.contains("refresh_fraction"), "{}", e.message);
    }
    let e = Profile::from_spec(
        "x",
        ProfileSpec {
            client_id: Some("a".into()),
            timeout: Some(0),
            ..ProfileSpec::default()
        },
        Some(Secret::new("s".into())),
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("key \"timeout\": expected seconds between 1 and 600, got 0")
    );
}

#[test]
fn default_profile_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let m = err_of(parse_in(dir.path(), "default_profile = \"nope\"\n"));
    assert!(m.contains("no profile named \"nope\""), "{m}");
}

#[test]
fn bad_profile_names() {
    for bad in ["", "a b", "x/y", &"n".repeat(65)] {
        let e = Profile::from_spec(bad, ProfileSpec::default(), None).unwrap_err();
        assert!(e.message.contains("invalid name"), "{}", e.message);
    }
}

#[test]
fn credential_source_reads_the_credentials_directory() {
    // read_secret with an explicit directory avoids mutating the process env for others
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ce"), "cred-secret\n").unwrap();
    let s = read_secret_file(&dir.path().join("ce"), false).unwrap();
    assert_eq!(s.expose(), "cred-secret");
    let e = read_secret_file(&dir.path().join("missing"), false).unwrap_err();
    assert!(e.contains("cannot open"), "{e}");
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a cert").unwrap();
    let e = Profile::from_spec(
        "x",
        ProfileSpec {
            client_id: Some("a".into()),
            ca_file: Some(ca.display().to_string()),
            ..ProfileSpec::default()
        },
        Some(Secret::new("s".into())),
    )
    .unwrap_err();
    assert!(e.message.contains("key \"ca_file\""), "{}", e.message);
}

#[cfg(unix)]
#[test]
fn a_config_file_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "").unwrap();
    for mode in [0o620, 0o602, 0o666] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let m = err_of(Config::load(&path));
        assert!(
            m.contains("lets other users change it") && m.contains("chmod go-w"),
            "{m}"
        );
    }
    // readable by others is fine: it holds no secret
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Config::load(&path).unwrap();
}

#[test]
fn a_peer_may_not_name_daemon_files_or_variables() {
    let (_dir, path) = secret_file("s3cret\n", 0o600);
    let base = || ProfileSpec {
        client_id: Some("id".into()),
        ..ProfileSpec::default()
    };
    let secret = || Some(Secret::new("inline".into()));
    let cases: Vec<(&str, ProfileSpec)> = vec![
        (
            "client_secret_file",
            ProfileSpec {
                client_secret_file: Some(path.display().to_string()),
                ..base()
            },
        ),
        (
            "client_secret_env",
            ProfileSpec {
                client_secret_env: Some("HOME".into()),
                ..base()
            },
        ),
        (
            "client_secret_credential",
            ProfileSpec {
                client_secret_credential: Some("x".into()),
                ..base()
            },
        ),
        (
            "ca_file",
            ProfileSpec {
                ca_file: Some("/etc/ssl/certs/ca-certificates.crt".into()),
                ..base()
            },
        ),
        (
            "token_file",
            ProfileSpec {
                token_file: Some("/tmp/stolen".into()),
                ..base()
            },
        ),
        (
            "password_file",
            ProfileSpec {
                grant: Some(Grant::Password),
                username: Some("a@b.c".into()),
                password_file: Some(path.display().to_string()),
                ..ProfileSpec::default()
            },
        ),
        (
            "password_env",
            ProfileSpec {
                grant: Some(Grant::Password),
                username: Some("a@b.c".into()),
                password_env: Some("HOME".into()),
                ..ProfileSpec::default()
            },
        ),
    ];
    for (key, spec) in cases {
        // with or without an inline secret, the key is refused before anything is read
        for s in [secret(), None] {
            let e = Profile::from_peer("p", spec.clone(), s).unwrap_err();
            assert!(
                e.message.contains(&format!("key \"{key}\""))
                    && e.message.contains("configuration file"),
                "{key}: {}",
                e.message
            );
            assert!(!e.message.contains("s3cret"), "{}", e.message);
        }
        // the same settings are fine from the config file's side
        if key == "client_secret_file" {
            Profile::from_spec("p", spec, None).unwrap();
        }
    }
    // no secret at all over the socket
    let e = Profile::from_peer("p", base(), None).unwrap_err();
    assert!(e.message.contains("inline"), "{}", e.message);
    // the inline form works
    let p = Profile::from_peer("p", base(), secret()).unwrap();
    assert_eq!(p.secret.unwrap().expose(), "inline");
}

#[test]
fn control_characters_are_refused_in_every_string_setting() {
    let secret = || Some(Secret::new("s".into()));
    let with = |f: &dyn Fn(&mut ProfileSpec)| {
        let mut s = ProfileSpec {
            client_id: Some("id".into()),
            ..ProfileSpec::default()
        };
        f(&mut s);
        s
    };
    let cases: Vec<(&str, ProfileSpec)> = vec![
        (
            "token_url",
            with(&|s| s.token_url = Some("https://a.example/x\nINFO forged".into())),
        ),
        (
            "client_id",
            with(&|s| s.client_id = Some("id\u{1b}[31m".into())),
        ),
        ("scope", with(&|s| s.scope = Some("read\r\nwrite".into()))),
        ("audience", with(&|s| s.audience = Some("a\u{7}".into()))),
        ("resource", with(&|s| s.resource = Some("r\t".into()))),
        (
            "api_url",
            with(&|s| s.api_url = Some("https://a.example/\u{0}".into())),
        ),
        ("git_hosts", with(&|s| s.git_hosts = vec!["h\u{85}".into()])),
    ];
    for (key, spec) in cases {
        let e = Profile::from_spec("p", spec, secret()).unwrap_err();
        assert!(
            e.message.contains(&format!("key \"{key}\"")),
            "{key}: {}",
            e.message
        );
        assert!(e.message.contains("control character"), "{}", e.message);
        assert!(!e.message.chars().any(char::is_control), "{:?}", e.message);
    }
}

#[test]
fn the_token_url_is_kept_normalised() {
    let spec = ProfileSpec {
        client_id: Some("id".into()),
        token_url: Some("HTTPS://Auth.Example.COM:443/api/v1/../v1/auth/jwt/token".into()),
        ..ProfileSpec::default()
    };
    let p = Profile::from_spec("p", spec, Some(Secret::new("s".into()))).unwrap();
    assert_eq!(
        p.token_url,
        "https://auth.example.com/api/v1/auth/jwt/token"
    );
    assert_eq!(p.api_url, "https://auth.example.com");
}
