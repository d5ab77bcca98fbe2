//! Windows security identifiers (SIDs) as plain bytes, and the trust rules
//! both ends of the named pipe apply to them.
//!
//! Pure Rust with no system calls, so the rules are unit-tested on every
//! platform with forged SIDs — the one part of the two-user story that Wine
//! cannot exercise, since every process in a Wine prefix runs as the same
//! user.

use std::fmt;

/// The SID of `NT AUTHORITY\SYSTEM` (Windows' root).
pub(crate) const SYSTEM: &str = "S-1-5-18";

/// The binary form of a SID: revision 1, a count of sub-authorities (at most
/// 15), a 48-bit big-endian identifier authority, then each sub-authority as a
/// little-endian u32. Two SIDs are the same principal exactly when their bytes
/// are equal (what `EqualSid` compares).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Sid(Vec<u8>);

impl Sid {
    /// The most sub-authorities a SID may have (`SID_MAX_SUB_AUTHORITIES`).
    const MAX_SUB: usize = 15;

    /// A SID from its binary form; `None` unless the bytes are exactly one valid SID.
    pub(crate) fn from_bytes(b: &[u8]) -> Option<Sid> {
        let (&rev, rest) = b.split_first()?;
        let (&n, _) = rest.split_first()?;
        let n = usize::from(n);
        (rev == 1 && n <= Self::MAX_SUB && b.len() == 8 + 4 * n).then(|| Sid(b.to_vec()))
    }

    /// A SID from its string form, `S-1-<authority>-<sub>...` (the authority in
    /// decimal, or hexadecimal with `0x` as Windows writes ones of 2^32 and
    /// over).
    pub(crate) fn parse(s: &str) -> Option<Sid> {
        let mut parts = s.split('-');
        if !parts.next()?.eq_ignore_ascii_case("s") || parts.next()? != "1" {
            return None;
        }
        let auth = parts.next()?;
        let auth = match auth.strip_prefix("0x").or_else(|| auth.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => digits(auth)?,
        };
        if auth >= 1 << 48 {
            return None;
        }
        let subs = parts
            .map(|p| digits(p).and_then(|v| u32::try_from(v).ok()))
            .collect::<Option<Vec<u32>>>()?;
        if subs.len() > Self::MAX_SUB {
            return None;
        }
        let mut b = vec![1, subs.len() as u8];
        b.extend_from_slice(&auth.to_be_bytes()[2..]);
        for s in subs {
            b.extend_from_slice(&s.to_le_bytes());
        }
        Some(Sid(b))
    }

    /// The binary form.
    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `NT AUTHORITY\SYSTEM`.
    pub(crate) fn system() -> Sid {
        Sid::parse(SYSTEM).expect("a valid SID")
    }
}

/// Decimal digits only (no sign, no spaces), as a u64.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let mut auth = [0u8; 8];
        auth[2..].copy_from_slice(&b[2..8]);
        let auth = u64::from_be_bytes(auth);
        if auth < 1 << 32 {
            write!(f, "S-1-{auth}")?;
        } else {
            write!(f, "S-1-0x{auth:012X}")?;
        }
        for sub in b[8..].chunks_exact(4) {
            write!(
                f,
                "-{}",
                u32::from_le_bytes([sub[0], sub[1], sub[2], sub[3]])
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({self})")
    }
}

/// The daemon's rule: it serves a peer only when the peer process runs as the
/// daemon's own user. SYSTEM and administrators are not let in either (as on
/// Unix, where root is refused unless listed in `allow_uids`).
#[cfg(any(feature = "daemon", test))]
pub(crate) fn daemon_accepts(peer: &Sid, own: &Sid) -> bool {
    peer == own
}

/// The client's rule: it talks to a pipe only when the process serving it runs
/// as the client's own user, or as SYSTEM (a service; root on Unix is trusted
/// the same way).
pub(crate) fn client_trusts(server: &Sid, own: &Sid) -> bool {
    server == own || *server == Sid::system()
}

/// The security descriptor (SDDL) the daemon gives its pipe: owned by `own`,
/// a protected DACL (nothing inherited) granting full access to `own` and to
/// SYSTEM only. Everyone else, administrators included, cannot open it.
#[cfg(any(feature = "daemon", test))]
pub(crate) fn pipe_sddl(own: &Sid) -> String {
    format!("O:{own}D:P(A;;GA;;;{own})(A;;GA;;;SY)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "S-1-5-21-1004336348-1177238915-682003330-1001";
    const BOB: &str = "S-1-5-21-1004336348-1177238915-682003330-1002";
    const WINE_USER: &str = "S-1-5-21-0-0-0-1000";

    #[test]
    fn strings_round_trip_through_the_binary_form() {
        for s in [
            ALICE,
            BOB,
            WINE_USER,
            SYSTEM,
            "S-1-1-0",
            "S-1-5-32-544",
            "S-1-0x123456789ABC-7",
        ] {
            let sid = Sid::parse(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(sid.to_string(), s);
            assert_eq!(Sid::from_bytes(sid.as_bytes()), Some(sid.clone()));
        }
        // the binary layout Windows uses (GetLengthSid = 8 + 4 * count)
        let sys = Sid::system();
        assert_eq!(sys.as_bytes(), &[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]);
        assert_eq!(Sid::parse("s-1-5-18"), Some(sys));
    }

    #[test]
    fn malformed_sids_are_rejected() {
        for s in [
            "",
            "S-1",
            "S-2-5-18",
            "X-1-5-18",
            "S-1-5--18",
            "S-1-5-18-",
            "S-1-5-+18",
            "S-1-5-4294967296",
            "S-1-281474976710656-1",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
        ] {
            assert_eq!(Sid::parse(s), None, "{s:?}");
        }
        assert_eq!(Sid::from_bytes(&[]), None);
        assert_eq!(
            Sid::from_bytes(&[1, 1, 0, 0, 0, 0, 0, 5]),
            None,
            "too short"
        );
        assert_eq!(
            Sid::from_bytes(&[2, 0, 0, 0, 0, 0, 0, 5]),
            None,
            "revision 2"
        );
        assert_eq!(
            Sid::from_bytes(&[1, 0, 0, 0, 0, 0, 0, 5, 0]),
            None,
            "trailing byte"
        );
    }

    #[test]
    fn the_daemon_serves_its_own_user_only() {
        let alice = Sid::parse(ALICE).unwrap();
        let bob = Sid::parse(BOB).unwrap();
        assert!(daemon_accepts(&alice, &alice));
        assert!(!daemon_accepts(&bob, &alice), "another user");
        assert!(!daemon_accepts(&Sid::system(), &alice), "SYSTEM");
        let admins = Sid::parse("S-1-5-32-544").unwrap();
        assert!(!daemon_accepts(&admins, &alice), "administrators");
        // one sub-authority apart is another principal
        let near = Sid::parse("S-1-5-21-1004336348-1177238915-682003330").unwrap();
        assert!(!daemon_accepts(&near, &alice));
    }

    #[test]
    fn the_client_trusts_its_own_user_or_system_only() {
        let alice = Sid::parse(ALICE).unwrap();
        let bob = Sid::parse(BOB).unwrap();
        assert!(client_trusts(&alice, &alice));
        assert!(client_trusts(&Sid::system(), &alice));
        assert!(!client_trusts(&bob, &alice), "a squatter of another user");
        assert!(!client_trusts(&Sid::parse("S-1-1-0").unwrap(), &alice));
    }

    #[test]
    fn the_pipe_grants_the_owner_and_system_only() {
        let alice = Sid::parse(ALICE).unwrap();
        assert_eq!(
            pipe_sddl(&alice),
            format!("O:{ALICE}D:P(A;;GA;;;{ALICE})(A;;GA;;;SY)")
        );
    }
}
