//! Process hardening: not dumpable, no core files. On Windows "not
//! dumpable" is a process DACL that keeps the user's other processes out of
//! the daemon's memory (`crate::win::restrict_process_access`); there are no
//! core files to disable.
//!
//! [`harden`] runs first thing in `ce-authd`, before any secret is read, so a
//! crash never writes secrets to a core file and other processes of the same
//! user cannot `ptrace` the daemon or read its memory through `/proc`.

/// What [`harden`] could not do. Each failure is a reason to warn, not to stop:
/// the daemon still works, only with less protection.
#[derive(Debug, Default)]
pub struct HardeningReport {
    /// Why the process could not be made non-dumpable, if it could not.
    pub dumpable: Option<std::io::Error>,
    /// Why the core file size limit could not be set to 0, if it could not.
    pub core_limit: Option<std::io::Error>,
}

impl HardeningReport {
    /// True when every measure took effect.
    pub fn is_complete(&self) -> bool {
        self.dumpable.is_none() && self.core_limit.is_none()
    }

    /// One readable warning per measure that failed.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.dumpable {
            out.push(format!(
                "could not mark the process non-dumpable ({e}); other processes of this user may be able to read its memory"
            ));
        }
        if let Some(e) = &self.core_limit {
            out.push(format!(
                "could not set the core file size limit to 0 ({e}); a crash may write secrets to a core file"
            ));
        }
        out
    }
}

/// Makes the process non-dumpable (Linux `PR_SET_DUMPABLE` 0) and sets the core
/// file size limit to 0 (soft and hard). Returns what failed; never panics.
pub fn harden() -> HardeningReport {
    HardeningReport {
        dumpable: set_not_dumpable().err(),
        core_limit: disable_core_files().err(),
    }
}

/// Whether the process is dumpable (`None` where the OS has no such notion or
/// the query fails).
pub fn is_dumpable() -> Option<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::process::DumpableBehavior;
        rustix::process::dumpable_behavior()
            .ok()
            .map(|b| b != DumpableBehavior::NotDumpable)
    }
    #[cfg(windows)]
    {
        Some(crate::win::process_memory_open())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", windows)))]
    {
        None
    }
}

/// The current core file size limit (soft, hard); `None` means unlimited.
#[cfg(unix)]
pub fn core_limit() -> (Option<u64>, Option<u64>) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Core);
    (l.current, l.maximum)
}

fn set_not_dumpable() -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
        Ok(())
    }
    // Windows: a process DACL that keeps the user's other processes out of its memory
    #[cfg(windows)]
    {
        crate::win::restrict_process_access()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", windows)))]
    {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "not supported on this OS",
        ))
    }
}

fn disable_core_files() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        // the hard limit goes to 0 as well, so nothing in the process can raise it again
        setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_name_each_failed_measure() {
        let r = HardeningReport {
            dumpable: Some(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
            core_limit: None,
        };
        assert!(!r.is_complete());
        let w = r.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("non-dumpable"), "{w:?}");
        assert!(HardeningReport::default().is_complete());
        assert!(HardeningReport::default().warnings().is_empty());
    }
}
