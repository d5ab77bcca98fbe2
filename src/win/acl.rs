//! Who may read a file, from its security descriptor: the Windows
//! counterpart of "mode 0600" for secret files.
//!
//! The rule is pure code over the DACL's bytes (tested everywhere with
//! forged ACLs); [`check_private`] reads a real file's owner and DACL.
//!
//! A file is private when its DACL is present and every ACE that allows
//! reading it, or changing who may (`WRITE_DAC`, `WRITE_OWNER`), names the
//! user, SYSTEM or the Administrators group, and its owner is one of those.
//! Deny ACEs are not credited (a file whose privacy rests on a deny ACE is
//! refused, which errs on the safe side); ACEs that only pass down to
//! children (`INHERIT_ONLY_ACE`) do not apply to the file itself.

// the client only writes private files; reading a file's ACL is the daemon's
#![cfg_attr(not(feature = "daemon"), allow(dead_code, unused_imports))]

use super::sid::Sid;

/// `FILE_READ_DATA`: reading the contents.
const FILE_READ_DATA: u32 = 0x0001;
/// `WRITE_DAC`: rewriting the DACL, so granting oneself read.
const WRITE_DAC: u32 = 0x0004_0000;
/// `WRITE_OWNER`: taking ownership, so rewriting the DACL.
const WRITE_OWNER: u32 = 0x0008_0000;
/// `GENERIC_ALL`.
const GENERIC_ALL: u32 = 0x1000_0000;
/// `GENERIC_READ`.
const GENERIC_READ: u32 = 0x8000_0000;
/// `MAXIMUM_ALLOWED`.
const MAXIMUM_ALLOWED: u32 = 0x0200_0000;
/// Rights that let a trustee read the file now or after changing its DACL.
const READS: u32 =
    FILE_READ_DATA | WRITE_DAC | WRITE_OWNER | GENERIC_ALL | GENERIC_READ | MAXIMUM_ALLOWED;

/// `ACCESS_ALLOWED_ACE_TYPE`, `ACCESS_ALLOWED_CALLBACK_ACE_TYPE`.
const ALLOW_TYPES: [u8; 2] = [0, 9];
/// `INHERIT_ONLY_ACE`.
const INHERIT_ONLY: u8 = 0x08;

/// The Administrators group.
const ADMINISTRATORS: &str = "S-1-5-32-544";

/// Whether `sid` may hold a secret file of `own`: the user, SYSTEM or the
/// Administrators (who can read anything anyway).
fn trusted(sid: &Sid, own: &Sid) -> bool {
    sid == own || *sid == Sid::system() || Sid::parse(ADMINISTRATORS).is_some_and(|a| a == *sid)
}

/// The trustees other than the user, SYSTEM and Administrators that the DACL
/// in `acl` (an `ACL` header and its ACEs, as in memory) lets read the file,
/// as SID strings; `Err` when the bytes are not a well-formed ACL.
pub(crate) fn foreign_readers(acl: &[u8], own: &Sid) -> Result<Vec<String>, String> {
    let bad = |why: &str| Err(format!("malformed ACL: {why}"));
    if acl.len() < 8 {
        return bad("shorter than its header");
    }
    let size = usize::from(u16::from_le_bytes([acl[2], acl[3]]));
    let count = usize::from(u16::from_le_bytes([acl[4], acl[5]]));
    if size > acl.len() || size < 8 {
        return bad("size out of range");
    }
    let mut out = Vec::new();
    let mut at = 8;
    for _ in 0..count {
        let Some(head) = acl.get(at..at + 4) else {
            return bad("an ACE runs past the end");
        };
        let (ty, flags) = (head[0], head[1]);
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let Some(ace) = acl
            .get(at..at + len)
            .filter(|_| len >= 8 && at + len <= size)
        else {
            return bad("an ACE runs past the end");
        };
        at += len;
        if !ALLOW_TYPES.contains(&ty) || flags & INHERIT_ONLY != 0 {
            continue;
        }
        let mask = u32::from_le_bytes([ace[4], ace[5], ace[6], ace[7]]);
        if mask & READS == 0 {
            continue;
        }
        // the SID follows the mask; a callback ACE may carry data after it
        let sid_bytes = &ace[8..];
        let n = usize::from(*sid_bytes.get(1).unwrap_or(&0));
        let Some(sid) = sid_bytes.get(..8 + 4 * n).and_then(Sid::from_bytes) else {
            return bad("an ACE's SID is malformed");
        };
        if !trusted(&sid, own) {
            out.push(sid.to_string());
        }
    }
    Ok(out)
}

/// Why `owner` may not own a secret file of `own`, if it may not.
pub(crate) fn foreign_owner(owner: &Sid, own: &Sid) -> Option<String> {
    (!trusted(owner, own)).then(|| owner.to_string())
}

#[cfg(all(windows, test))]
pub(crate) use imp::set_protected_dacl;
#[cfg(windows)]
pub(crate) use imp::{check_private, restrict_to_owner};

#[cfg(windows)]
mod imp {
    use std::io;
    use std::os::windows::io::AsRawHandle;

    use windows_sys::Win32::Security::Authorization::{GetSecurityInfo, SE_FILE_OBJECT};
    use windows_sys::Win32::Security::{
        ACL, DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
        SetKernelObjectSecurity,
    };

    use super::{foreign_owner, foreign_readers};
    use crate::win::{LocalBox, current_user, sid_from_ptr};

    /// Checks that no one but the user, SYSTEM and Administrators can read
    /// the open file (nor change who can); `Err` says who else can and how to
    /// fix it. `shown` names the file in messages.
    pub(crate) fn check_private(file: &std::fs::File, shown: &str) -> Result<(), String> {
        let own = current_user().map_err(|e| format!("cannot tell which user this is: {e}"))?;
        let mut owner: PSID = std::ptr::null_mut();
        let mut dacl: *mut ACL = std::ptr::null_mut();
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: the handle is an open file; the out pointers point into the
        // descriptor returned in `sd`, which LocalBox frees after use.
        let err = unsafe {
            GetSecurityInfo(
                file.as_raw_handle(),
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                &mut owner,
                std::ptr::null_mut(),
                &mut dacl,
                std::ptr::null_mut(),
                &mut sd,
            )
        };
        let _sd = LocalBox(sd);
        if err != 0 {
            return Err(format!(
                "cannot read the permissions of {shown}: {}",
                io::Error::from_raw_os_error(err as i32)
            ));
        }
        let fix = format!(
            "run `icacls \"{shown}\" /inheritance:r /grant:r \"%USERNAME%:F\"` so only you can read it"
        );
        if dacl.is_null() {
            return Err(format!(
                "{shown} has no access control list, so everyone can read it; {fix}"
            ));
        }
        // SAFETY: a present DACL from GetSecurityInfo is a valid ACL of AclSize bytes.
        let bytes = unsafe {
            let size = usize::from((*dacl).AclSize);
            std::slice::from_raw_parts(dacl.cast::<u8>(), size)
        };
        let readers = foreign_readers(bytes, &own).map_err(|e| format!("{shown}: {e}"))?;
        if !readers.is_empty() {
            return Err(format!(
                "{shown} can be read by other users ({}); {fix}",
                readers.join(", ")
            ));
        }
        if !owner.is_null() {
            // SAFETY: a present owner from GetSecurityInfo is a valid SID.
            let owner = unsafe { sid_from_ptr(owner) }.map_err(|e| format!("{shown}: {e}"))?;
            if let Some(o) = foreign_owner(&owner, &own) {
                return Err(format!(
                    "{shown} belongs to {o}, not to you ({own}); a secret file must be yours"
                ));
            }
        }
        Ok(())
    }

    /// Replaces the DACL of the open file (opened with `WRITE_DAC`) by a
    /// protected one granting full access to the user and SYSTEM only: the
    /// Windows form of mode 0600.
    pub(crate) fn restrict_to_owner(file: &std::fs::File) -> io::Result<()> {
        let own = current_user()?;
        set_protected_dacl(file, &format!("D:P(A;;FA;;;{own})(A;;FA;;;SY)"))
    }

    /// Replaces the DACL of the open file (opened with `WRITE_DAC`) by the
    /// protected DACL written in SDDL (`D:P(...)`).
    pub(crate) fn set_protected_dacl(file: &std::fs::File, dacl_sddl: &str) -> io::Result<()> {
        let _sd = crate::win::descriptor_from_sddl(dacl_sddl)?;
        let sd: PSECURITY_DESCRIPTOR = _sd.0;
        // the descriptor as is (its DACL marked protected by `D:P`), not
        // SetSecurityInfo: Wine 8's SetSecurityInfo on a file handle leaves
        // it open to everyone (mode 0775), SetKernelObjectSecurity does not
        // SAFETY: the handle is an open file; `sd` is valid while `_sd` lives.
        if unsafe { SetKernelObjectSecurity(file.as_raw_handle(), DACL_SECURITY_INFORMATION, sd) }
            == 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "S-1-5-21-1-2-3-1001";
    const BOB: &str = "S-1-5-21-1-2-3-1002";

    /// An ACL of (type, flags, mask, SID) entries, laid out as Windows does.
    fn acl(aces: &[(u8, u8, u32, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for &(ty, flags, mask, sid) in aces {
            let sid = Sid::parse(sid).unwrap();
            let len = 8 + sid.as_bytes().len();
            body.extend_from_slice(&[ty, flags]);
            body.extend_from_slice(&(len as u16).to_le_bytes());
            body.extend_from_slice(&mask.to_le_bytes());
            body.extend_from_slice(sid.as_bytes());
        }
        let mut out = vec![2, 0];
        out.extend_from_slice(&((8 + body.len()) as u16).to_le_bytes());
        out.extend_from_slice(&(aces.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend(body);
        out
    }

    #[test]
    fn owner_system_and_administrators_only_is_private() {
        let own = Sid::parse(ALICE).unwrap();
        let a = acl(&[
            (0, 0, 0x001f_01ff, ALICE),
            (0, 0, 0x001f_01ff, "S-1-5-18"),
            (0, 0x10, 0x001f_01ff, "S-1-5-32-544"),
        ]);
        assert_eq!(foreign_readers(&a, &own), Ok(vec![]));
        assert_eq!(
            foreign_readers(&acl(&[]), &own),
            Ok(vec![]),
            "empty DACL: nobody"
        );
    }

    #[test]
    fn others_who_can_read_are_named() {
        let own = Sid::parse(ALICE).unwrap();
        // what Wine makes of mode 0644, and a typical inherited Users grant
        let a = acl(&[
            (0, 0, 0x001f_01ff, "S-1-5-18"),
            (0, 0, 0x0012_019f, ALICE),
            (0, 0, 0x0012_0089, "S-1-1-0"),
            (0, 0x10, 0x0012_00a9, "S-1-5-32-545"),
            (0, 0, GENERIC_READ, BOB),
            (0, 0, WRITE_DAC, "S-1-5-11"),
        ]);
        assert_eq!(
            foreign_readers(&a, &own).unwrap(),
            ["S-1-1-0", "S-1-5-32-545", BOB, "S-1-5-11"]
        );
    }

    #[test]
    fn rights_without_reading_deny_aces_and_inherit_only_aces_do_not_count() {
        let own = Sid::parse(ALICE).unwrap();
        let a = acl(&[
            (0, 0, 0x0010_0080, "S-1-1-0"), // SYNCHRONIZE | FILE_READ_ATTRIBUTES
            (1, 0, 0x001f_01ff, BOB),       // a deny ACE
            (0, INHERIT_ONLY, GENERIC_ALL, "S-1-3-0"), // CREATOR OWNER, children only
        ]);
        assert_eq!(foreign_readers(&a, &own), Ok(vec![]));
    }

    #[test]
    fn malformed_acls_are_errors() {
        let own = Sid::parse(ALICE).unwrap();
        assert!(foreign_readers(&[2, 0, 8], &own).is_err());
        let mut a = acl(&[(0, 0, GENERIC_READ, BOB)]);
        a[4] = 2; // claims two ACEs
        assert!(foreign_readers(&a, &own).is_err());
        let mut a = acl(&[(0, 0, GENERIC_READ, BOB)]);
        a[10] = 0xff; // the ACE claims 511 bytes
        a[11] = 0x01;
        assert!(foreign_readers(&a, &own).is_err());
    }

    /// A file in a fresh directory, opened so its DACL can be set.
    #[cfg(windows)]
    fn file_with_dacl(dacl: impl FnOnce(&Sid) -> String) -> (tempfile::TempDir, std::fs::File) {
        use std::os::windows::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .access_mode(0x8000_0000 | 0x4000_0000 | WRITE_DAC)
            .open(dir.path().join("s.secret"))
            .unwrap();
        let own = crate::win::current_user().unwrap();
        set_protected_dacl(&f, &dacl(&own)).unwrap();
        (dir, f)
    }

    #[cfg(windows)]
    #[test]
    fn a_real_files_acl_is_read_and_judged() {
        let (_d, f) = file_with_dacl(|own| format!("D:P(A;;FA;;;{own})(A;;FA;;;SY)"));
        check_private(&f, "s.secret").unwrap();
        let (_d, f) = file_with_dacl(|own| format!("D:P(A;;FA;;;{own})(A;;FR;;;WD)"));
        let e = check_private(&f, "s.secret").unwrap_err();
        assert!(
            e.contains("can be read by other users (S-1-1-0)") && e.contains("icacls"),
            "{e}"
        );
        // what the client writes (login's secret file) passes the daemon's check
        let (_d, f) = file_with_dacl(|_| "D:P(A;;FR;;;WD)".into());
        restrict_to_owner(&f).unwrap();
        check_private(&f, "s.secret").unwrap();
    }

    #[test]
    fn owners_other_than_the_user_system_or_administrators_are_refused() {
        let own = Sid::parse(ALICE).unwrap();
        assert_eq!(foreign_owner(&own, &own), None);
        assert_eq!(foreign_owner(&Sid::system(), &own), None);
        assert_eq!(
            foreign_owner(&Sid::parse("S-1-5-32-544").unwrap(), &own),
            None
        );
        assert_eq!(
            foreign_owner(&Sid::parse(BOB).unwrap(), &own),
            Some(BOB.to_string())
        );
    }
}
