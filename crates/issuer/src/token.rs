//! Access tokens: RS256 JWTs with the claims the Climate Engine service puts in
//! them, and their verification by the resource endpoints.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::SigningKey;

/// FastAPI Users' audience for its JWT strategy.
pub(crate) const AUDIENCE: &str = "fastapi-users:auth";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    pub user_id: Uuid,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub aud: Vec<String>,
    pub iss: String,
    pub exp: u64,
    pub jti: String,
    pub iat: u64,
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs an access token for `user_id` lasting `lifetime` seconds from `iat`.
pub(crate) fn mint(
    key: &SigningKey,
    issuer: &str,
    user_id: Uuid,
    iat: u64,
    lifetime: u64,
) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
    let claims = AccessClaims {
        user_id,
        groups: Vec::new(),
        roles: vec!["user".to_owned()],
        aud: vec![AUDIENCE.to_owned()],
        iss: issuer.to_owned(),
        exp: iat + lifetime,
        jti: Uuid::new_v4().to_string(),
        iat,
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding)?;
    Ok((token, claims))
}

/// Checks signature, expiry (no leeway: an expired token is refused at once),
/// audience and issuer.
pub(crate) fn verify(
    key: &SigningKey,
    issuer: &str,
    token: &str,
) -> Result<AccessClaims, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation).map(|d| d.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_others_do_not() {
        let key = SigningKey::generate().expect("key");
        let other = SigningKey::generate().expect("key");
        let user = Uuid::new_v4();
        let (token, claims) = mint(&key, "http://iss", user, now(), 60).expect("mint");
        assert_eq!(claims.exp, claims.iat + 60);
        let got = verify(&key, "http://iss", &token).expect("valid");
        assert_eq!(got.user_id, user);
        assert!(verify(&key, "http://elsewhere", &token).is_err());
        assert!(verify(&other, "http://iss", &token).is_err());
        let (old, _) = mint(&key, "http://iss", user, now() - 120, 60).expect("mint");
        assert!(verify(&key, "http://iss", &old).is_err());
    }
}
