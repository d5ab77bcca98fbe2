//! Links the `ce-auth` client statically (static-pie) on Linux with glibc,
//! while `ce-authd` stays dynamic (it needs glibc's resolver and NSS).
//!
//! Why: `ce-auth token` is run once per use by scripts, git and curl, so its
//! start-up is its cost. A static client skips the dynamic loader (loading and
//! binding libc and libgcc_s), which is most of the gap to `/bin/echo`; see
//! docs/BENCHMARKS.md.
//!
//! How: cargo can pass link arguments to one binary (`rustc-link-arg-bin`) but
//! cannot change the libraries rustc links (`-lgcc_s -lc ...`, chosen by the
//! crate-wide `crt-static` feature). So the client gets `-static-pie` and a
//! library directory, searched first, in which each of those libraries is a
//! linker script naming the static archive (`libc.so` -> `GROUP(libc.a ...)`).
//! Where any archive is missing (no libc6-dev static files), or with
//! `CE_AUTH_DYNAMIC_CLIENT=1`, the client is linked dynamically as before.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CE_AUTH_DYNAMIC_CLIENT");
    println!("cargo:rerun-if-env-changed=CC");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let opted_out = std::env::var_os("CE_AUTH_DYNAMIC_CLIENT").is_some_and(|v| v != "0");
    // the archives are looked up with the build machine's C compiler, so only
    // a native build can use them
    let native = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
    // a crate-wide crt-static build is static already
    if os != "linux"
        || env != "gnu"
        || !native
        || features.split(',').any(|f| f == "crt-static")
        || opted_out
    {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    match static_libs(&out.join("static-client")) {
        Some(dir) => {
            println!("cargo:rustc-link-arg-bin=ce-auth=-static-pie");
            println!("cargo:rustc-link-arg-bin=ce-auth=-L{}", dir.display());
            // packed relative relocations (glibc >= 2.36 applies them in static-pie
            // start-up) and identical-code folding: smaller without cost at run time
            if default_lld() {
                println!("cargo:rustc-link-arg-bin=ce-auth=-Wl,--icf=all");
                if glibc_at_least(2, 36) {
                    println!("cargo:rustc-link-arg-bin=ce-auth=-Wl,--pack-dyn-relocs=relr");
                }
            }
        }
        None => println!(
            "cargo:warning=static libc archives not found (install libc6-dev); ce-auth is linked dynamically"
        ),
    }
}

/// Writes the redirecting linker scripts into `dir`; `None` when an archive is missing.
fn static_libs(dir: &Path) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let find = |name: &str| -> Option<PathBuf> {
        let out = Command::new(&cc)
            .arg(format!("-print-file-name={name}"))
            .output()
            .ok()?;
        let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        // cc echoes the bare name when it finds nothing
        (path.is_absolute() && path.is_file()).then_some(path)
    };
    // the libraries rustc names for std on linux-gnu, and what each becomes
    let plan: [(&str, &[&str]); 7] = [
        ("gcc_s", &["libgcc_eh.a", "libgcc.a"]),
        ("util", &["libutil.a"]),
        ("rt", &["librt.a"]),
        ("pthread", &["libpthread.a"]),
        ("m", &["libm.a"]),
        ("dl", &["libdl.a"]),
        ("c", &["libc.a", "libgcc.a", "libgcc_eh.a"]),
    ];
    // static-pie start-up code
    find("rcrt1.o")?;
    std::fs::create_dir_all(dir).ok()?;
    for (lib, archives) in plan {
        let mut paths = Vec::new();
        for a in archives {
            paths.push(format!("\"{}\"", find(a)?.display()));
        }
        let script = format!(
            "/* ce-auth client: static {lib} (see build.rs) */\nGROUP ( {} )\n",
            paths.join(" ")
        );
        std::fs::write(dir.join(format!("lib{lib}.so")), script).ok()?;
    }
    Some(dir.to_path_buf())
}

/// Whether rustc links with its bundled lld (the default on x86_64 Linux since
/// Rust 1.90) rather than a linker chosen by the user, whose options may differ.
fn default_lld() -> bool {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linker_env = std::env::vars_os().any(|(k, _)| {
        k.to_str()
            .is_some_and(|k| k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER"))
    });
    arch == "x86_64"
        && !linker_env
        && !["linker", "link-self-contained", "fuse-ld"]
            .iter()
            .any(|f| flags.contains(f))
}

/// Whether the build machine's glibc (whose libc.a is linked in) is at least
/// `major.minor`; static-pie start-up applies packed (RELR) relocations from 2.36.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(v) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}
