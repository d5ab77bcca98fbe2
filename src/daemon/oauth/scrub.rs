//! Text from the issuer, made safe to store and show: the secrets the request
//! carried are cut out in every form an issuer might echo them, and the rest
//! is one bounded line.
//!
//! An issuer's error body may quote the request (a debugging proxy, a
//! misconfigured server), so the daemon never trusts it to be free of the
//! client secret or password it was sent.

use base64::Engine as _;

use crate::secret::Secret;

/// What replaces a secret in issuer text.
const REDACTED: &str = "[redacted]";
/// Longest issuer text kept, in characters.
const MAX_CHARS: usize = 300;

/// The secrets of one request, in each encoding the issuer may echo.
#[derive(Default)]
pub(crate) struct Scrub {
    /// Longest first, so a secret inside a longer encoded form goes with it.
    needles: Vec<Secret>,
}

impl Scrub {
    /// Nothing to cut out.
    #[cfg(test)]
    pub(crate) fn none() -> Scrub {
        Scrub::default()
    }

    /// The secrets `values` carried: each raw, form-encoded (`+` for space),
    /// percent-encoded and in standard and URL-safe base64.
    pub(crate) fn of(values: &[&str]) -> Scrub {
        let mut needles = Vec::new();
        for v in values.iter().filter(|v| !v.is_empty()) {
            let b64 = base64::engine::general_purpose::STANDARD;
            let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            for form in [
                v.to_string(),
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect(),
                percent_encoding(v),
                b64.encode(v),
                b64.encode(v).trim_end_matches('=').to_string(),
                b64url.encode(v),
            ] {
                if !needles.iter().any(|n: &Secret| n.expose() == form) {
                    needles.push(Secret::new(form));
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.expose().len()));
        Scrub { needles }
    }

    /// `text` with every secret cut out, control characters as spaces, and
    /// at most [`MAX_CHARS`] characters.
    pub(crate) fn clean(&self, text: &str) -> String {
        let mut t = text.to_string();
        // cut before truncating, so no prefix of a secret survives the cut
        for n in &self.needles {
            if t.contains(n.expose()) {
                t = t.replace(n.expose(), REDACTED);
            }
        }
        let mut out: String = t
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_CHARS)
            .collect();
        if t.chars().count() > MAX_CHARS {
            out.push('…');
        }
        out
    }
}

/// Every byte outside the unreserved set as `%XX` (RFC 3986).
fn percent_encoding(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_echoed_form_is_cut_out() {
        let secret = "s3cr+t/value=with space&more";
        let scrub = Scrub::of(&[secret, "id:other"]);
        let b64 = base64::engine::general_purpose::STANDARD;
        for echoed in [
            secret.to_string(),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
            percent_encoding(secret),
            b64.encode(secret),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            format!("Basic {}", b64.encode("id:other")),
        ] {
            let text = format!("invalid request: got {echoed} from you");
            let clean = scrub.clean(&text);
            assert!(clean.contains(REDACTED), "{clean}");
            assert!(!clean.contains("s3cr"), "{clean}");
            assert!(!clean.contains(&echoed), "{clean}");
        }
    }

    #[test]
    fn text_is_one_bounded_line() {
        let s = Scrub::none().clean(&format!("a\nb\u{1b}[31m{}", "x".repeat(500)));
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert_eq!(s.chars().count(), MAX_CHARS + 1);
        // a secret across the truncation point is cut before truncating
        let secret = "y".repeat(50);
        let text = format!("{}{secret}", "x".repeat(280));
        let s = Scrub::of(&[&secret]).clean(&text);
        assert!(!s.contains("yyyy"), "{s}");
    }
}
