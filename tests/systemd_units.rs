//! The units in `systemd/` pass `systemd-analyze verify` without a warning,
//! and say what the daemon relies on.

use std::path::Path;
use std::process::Command;

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(UNITS).join(name)).expect("unit file is readable")
}

#[test]
fn units_verify_cleanly() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    // verify checks that ExecStart exists: point it at the binary this build made
    let service =
        read("ce-authd.service").replace("%h/.cargo/bin/ce-authd", env!("CARGO_BIN_EXE_ce-authd"));
    assert!(service.contains(env!("CARGO_BIN_EXE_ce-authd")));
    std::fs::write(dir.path().join("ce-authd.service"), service).unwrap();
    std::fs::write(dir.path().join("ce-authd.socket"), read("ce-authd.socket")).unwrap();

    let out = Command::new("systemd-analyze")
        .args(["verify", "--user", "--man=no"])
        .arg(dir.path().join("ce-authd.service"))
        .arg(dir.path().join("ce-authd.socket"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// The settings the daemon's design depends on; `verify` accepts units without them.
#[test]
fn service_has_the_settings_the_daemon_relies_on() {
    let service = read("ce-authd.service");
    let lines: Vec<&str> = service
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "SystemCallArchitectures=native",
        "LimitCORE=0",
        "UMask=0077",
        "ProtectHome=read-only",
    ] {
        assert!(lines.contains(&want), "ce-authd.service lacks {want:?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("WatchdogSec=")));
    assert!(lines.iter().any(|l| l.starts_with("LimitMEMLOCK=")));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ExecStart=") && l.ends_with("ce-authd --foreground"))
    );
    // the example credential matches the config key documented beside it
    assert!(service.contains("LoadCredential=climate-engine.secret:"));
    assert!(service.contains("client_secret_credential = \"climate-engine.secret\""));

    let socket = read("ce-authd.socket");
    for want in [
        "ListenStream=%t/ce-auth/agent.sock",
        "SocketMode=0600",
        "DirectoryMode=0700",
    ] {
        assert!(
            socket.lines().any(|l| l.trim() == want),
            "ce-authd.socket lacks {want:?}"
        );
    }
}
