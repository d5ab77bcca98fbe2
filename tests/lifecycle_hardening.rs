//! `hardening::harden` in a process of its own: afterwards the process is not
//! dumpable and may write no core file. Every other test shares the test
//! binary's process, so this one runs in a fresh copy of it.

use crate::util::process::isolated;

#[test]
#[cfg(target_os = "linux")]
fn harden_makes_the_process_non_dumpable_without_core_files() {
    isolated(
        "lifecycle_hardening::harden_makes_the_process_non_dumpable_without_core_files",
        || {
            use ce_auth::daemon::hardening;
            assert_eq!(
                hardening::is_dumpable(),
                Some(true),
                "a fresh test process is dumpable"
            );
            let report = hardening::harden();
            assert!(report.is_complete(), "{:?}", report.warnings());
            assert_eq!(hardening::is_dumpable(), Some(false));
            assert_eq!(hardening::core_limit(), (Some(0), Some(0)));
            // and the kernel agrees, as other tools would see it
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
            let core = limits
                .lines()
                .find(|l| l.starts_with("Max core file size"))
                .expect("core limit line");
            let fields: Vec<&str> = core.split_whitespace().collect();
            assert_eq!(&fields[4..6], &["0", "0"], "{core}");
            // a second call is harmless
            assert!(hardening::harden().is_complete());
        },
    );
}
