//! The issuer's RSA signing key: generated fresh at start, never written anywhere,
//! published as a JWKS.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use zeroize::Zeroizing;

/// Why the signing key could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot generate the issuer's RSA signing key: {0}")]
pub struct KeyError(String);

/// An RS256 signing key with its public half and key id.
pub struct SigningKey {
    /// RFC 7638 thumbprint of the public key, used as `kid`.
    pub kid: String,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    /// base64url modulus and exponent for the JWKS.
    n: String,
    e: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh RSA-2048 key. Takes tens to hundreds of milliseconds:
    /// call it off the async threads.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| KeyError(e.to_string()))?;
        let pkcs8 = pair.as_der().map_err(|e| KeyError(e.to_string()))?;
        // jsonwebtoken's DER constructor wants PKCS#1, which aws-lc-rs does not
        // export; its PEM reader unwraps PKCS#8 for us, so go through PEM in memory.
        let b64 = Zeroizing::new(STANDARD.encode(pkcs8.as_ref()));
        let mut pem = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
        for line in b64.as_bytes().chunks(64) {
            // base64 output is ASCII, so any chunk is valid UTF-8
            pem.push_str(std::str::from_utf8(line).map_err(|e| KeyError(e.to_string()))?);
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let encoding =
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| KeyError(e.to_string()))?;

        let public = pair.public_key();
        let n_raw = public.modulus().big_endian_without_leading_zero();
        let e_raw = public.exponent().big_endian_without_leading_zero();
        let decoding = DecodingKey::from_rsa_raw_components(n_raw, e_raw);
        let n = URL_SAFE_NO_PAD.encode(n_raw);
        let e = URL_SAFE_NO_PAD.encode(e_raw);
        Ok(SigningKey {
            kid: thumbprint(&n, &e),
            encoding,
            decoding,
            n,
            e,
        })
    }

    /// The public key as a JWK (`kty`, `n`, `e`, `kid`, `alg`, `use`).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "n": self.n,
            "e": self.e,
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
        })
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no spaces.
fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_and_verifies_and_publishes_a_jwk() {
        let start = std::time::Instant::now();
        let key = SigningKey::generate().expect("key generation");
        eprintln!("RSA-2048 key generation took {:?}", start.elapsed());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        let claims = serde_json::json!({"exp": u64::MAX / 2, "x": 1});
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).expect("sign");
        let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key.decoding, &validation)
            .expect("verify");
        assert_eq!(data.claims["x"], 1);

        let jwk = key.jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["e"], "AQAB");
        // 2048-bit modulus: 256 bytes, 342 base64url characters unpadded
        assert_eq!(jwk["n"].as_str().map(str::len), Some(342));
        assert_eq!(jwk["kid"].as_str().map(str::len), Some(43));
    }

    #[test]
    fn two_keys_differ() {
        let a = SigningKey::generate().expect("key generation");
        let b = SigningKey::generate().expect("key generation");
        assert_ne!(a.kid, b.kid);
    }
}
