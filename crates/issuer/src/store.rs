//! Users, API clients and the memory of client-assertion `jti`s.

use std::collections::HashMap;

use base64::Engine as _;
use uuid::Uuid;

use super::client_auth::SKEW;
use secrecy::{ExposeSecret, SecretString as Secret};

/// At most this many `jti`s of unexpired assertions are remembered for one
/// client; beyond it the client's new assertions are refused rather than
/// forgetting unexpired ones (which would allow replay). Each client has its
/// own, so one client filling it locks out only itself. With assertions of
/// 60 s (ce-authd's) that is over 8 a second; with authlib's hour, one every
/// 3.6 s.
pub const MAX_JTIS_PER_CLIENT: usize = 1_000;

/// At most this many API clients per user (revoked ones count: they are
/// kept), so a token holder cannot grow the issuer's memory without bound.
pub const MAX_CLIENTS_PER_USER: usize = 1_000;

/// Longest `jti` accepted, so the memory above stays bounded.
pub(crate) const MAX_JTI_LEN: usize = 256;

/// A user of the password grant (FastAPI Users' user model).
pub(crate) struct User {
    pub id: Uuid,
    pub email: String,
    /// `None` for the built-in owner of pre-seeded clients, who cannot log in.
    pub password: Option<Secret>,
}

/// An API client. Secrets live only in memory, wrapped so they are zeroed on drop.
pub(crate) struct Client {
    pub secret: Secret,
    pub user_id: Uuid,
    pub revoked: bool,
}

/// Why a `jti` was not accepted.
#[derive(Debug, PartialEq)]
pub(crate) enum JtiRefusal {
    Replayed,
    Full,
}

/// Everything the endpoints read and change.
#[derive(Default)]
pub(crate) struct Store {
    users: Vec<User>,
    clients: HashMap<String, Client>,
    /// client_id -> jti -> when it may be forgotten (the assertion's exp plus the skew allowed)
    jtis: HashMap<String, HashMap<String, u64>>,
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn secrets_equal(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

impl Store {
    /// Adds a user and returns its id.
    pub fn add_user(&mut self, email: &str, password: Option<Secret>) -> Uuid {
        let id = Uuid::new_v4();
        self.users.push(User {
            id,
            email: email.to_owned(),
            password,
        });
        id
    }

    /// The first user, the owner of pre-seeded clients.
    pub fn first_user(&self) -> Option<Uuid> {
        self.users.first().map(|u| u.id)
    }

    /// The user with this id.
    pub fn user(&self, id: Uuid) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    /// The user whose e-mail (compared without regard to case) and password match.
    pub fn check_password(&self, email: &str, password: &str) -> Option<Uuid> {
        let user = self
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))?;
        let stored = user.password.as_ref()?;
        secrets_equal(stored.expose_secret(), password).then_some(user.id)
    }

    /// Adds a client with a known id and secret (pre-seeded).
    pub fn add_client(&mut self, client_id: &str, secret: Secret, user_id: Uuid) {
        self.clients.insert(
            client_id.to_owned(),
            Client {
                secret,
                user_id,
                revoked: false,
            },
        );
    }

    /// Creates a client for `user_id`; returns its id and secret (shown
    /// once), or `None` when the user has [`MAX_CLIENTS_PER_USER`] already.
    pub fn create_client(&mut self, user_id: Uuid) -> Option<(String, Secret)> {
        let owned = self
            .clients
            .values()
            .filter(|c| c.user_id == user_id)
            .count();
        if owned >= MAX_CLIENTS_PER_USER {
            return None;
        }
        let id = generate_client_id();
        let secret = generate_client_secret();
        self.add_client(&id, Secret::from(secret.clone()), user_id);
        Some((id, Secret::from(secret)))
    }

    /// The client with this id, unless revoked.
    pub fn active_client(&self, client_id: &str) -> Option<&Client> {
        self.clients.get(client_id).filter(|c| !c.revoked)
    }

    /// Revokes a client; true if it existed.
    pub fn revoke(&mut self, client_id: &str) -> bool {
        match self.clients.get_mut(client_id) {
            Some(c) => {
                c.revoked = true;
                true
            }
            None => false,
        }
    }

    /// The ids of all clients.
    pub fn client_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.clients.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Records a client's `jti` for as long as an assertion with this `exp`
    /// is accepted; refuses one seen before, or one more than
    /// [`MAX_JTIS_PER_CLIENT`] unexpired ones for this client.
    pub fn remember_jti(
        &mut self,
        client_id: &str,
        jti: &str,
        exp: u64,
        now: u64,
    ) -> Result<(), JtiRefusal> {
        let seen = self.jtis.entry(client_id.to_owned()).or_default();
        if seen.contains_key(jti) {
            return Err(JtiRefusal::Replayed);
        }
        if seen.len() >= MAX_JTIS_PER_CLIENT {
            // an assertion past exp + SKEW is refused on its exp anyway, so
            // forgetting it cannot allow a replay
            seen.retain(|_, forget_at| *forget_at >= now);
            if seen.len() >= MAX_JTIS_PER_CLIENT {
                return Err(JtiRefusal::Full);
            }
        }
        seen.insert(jti.to_owned(), exp.saturating_add(SKEW));
        Ok(())
    }
}

/// A fresh client id: a UUID v4.
pub fn generate_client_id() -> String {
    Uuid::new_v4().to_string()
}

/// A fresh client secret: 32 random bytes, URL-safe base64 without padding (43 characters).
pub fn generate_client_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
impl Store {
    fn jti_count(&self, client_id: &str) -> usize {
        self.jtis.get(client_id).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_and_secrets_have_the_documented_shape() {
        let id = generate_client_id();
        assert_eq!(Uuid::parse_str(&id).map(|u| u.get_version_num()), Ok(4));
        let secret = generate_client_secret();
        assert_eq!(secret.len(), 43);
        assert!(
            secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(secret, generate_client_secret());
    }

    #[test]
    fn passwords_match_by_email_without_case_and_exact_password() {
        let mut store = Store::default();
        let id = store.add_user("Me@Example.com", Some(Secret::from("pw".to_string())));
        store.add_user("nologin@example.com", None);
        assert_eq!(store.check_password("me@example.com", "pw"), Some(id));
        assert_eq!(store.check_password("me@example.com", "pw "), None);
        assert_eq!(store.check_password("other@example.com", "pw"), None);
        assert_eq!(store.check_password("nologin@example.com", ""), None);
    }

    #[test]
    fn jtis_are_refused_when_replayed_and_memory_is_bounded() {
        let mut store = Store::default();
        assert_eq!(store.remember_jti("c", "a", 100, 50), Ok(()));
        assert_eq!(
            store.remember_jti("c", "a", 100, 50),
            Err(JtiRefusal::Replayed)
        );
        // the same jti from another client is another assertion
        assert_eq!(store.remember_jti("d", "a", 100, 50), Ok(()));
        for i in 0..MAX_JTIS_PER_CLIENT - 1 {
            assert_eq!(store.remember_jti("c", &i.to_string(), 100, 50), Ok(()));
        }
        assert_eq!(store.remember_jti("c", "x", 100, 50), Err(JtiRefusal::Full));
        // once the remembered ones have expired there is room again
        assert_eq!(store.remember_jti("c", "x", 300, 200), Ok(()));
        assert_eq!(store.jti_count("c"), 1);
        assert_eq!(store.jti_count("d"), 1);
    }

    #[test]
    fn one_client_filling_its_jti_memory_leaves_the_others_room() {
        let mut store = Store::default();
        for i in 0..MAX_JTIS_PER_CLIENT {
            assert_eq!(store.remember_jti("a", &i.to_string(), 4000, 50), Ok(()));
        }
        assert_eq!(
            store.remember_jti("a", "x", 4000, 50),
            Err(JtiRefusal::Full)
        );
        assert_eq!(store.remember_jti("b", "x", 4000, 50), Ok(()));
        assert_eq!(
            store.remember_jti("b", "x", 4000, 50),
            Err(JtiRefusal::Replayed)
        );
    }

    #[test]
    fn jtis_are_remembered_as_long_as_their_assertion_is_accepted() {
        let mut store = Store::default();
        for i in 0..MAX_JTIS_PER_CLIENT {
            assert_eq!(store.remember_jti("c", &i.to_string(), 100, 50), Ok(()));
        }
        // past exp but within the clock skew allowed, the assertions still
        // verify, so forgetting their jtis would allow a replay
        let now = 100 + SKEW / 2;
        assert_eq!(
            store.remember_jti("c", "new", 200, now),
            Err(JtiRefusal::Full)
        );
        assert_eq!(
            store.remember_jti("c", "0", 100, now),
            Err(JtiRefusal::Replayed)
        );
        // once they can no longer verify they are forgotten
        let later = 100 + SKEW + 1;
        assert_eq!(store.remember_jti("c", "new", 200, later), Ok(()));
        assert_eq!(store.jti_count("c"), 1);
    }

    #[test]
    fn each_user_has_at_most_max_clients() {
        let mut store = Store::default();
        let one = store.add_user("one@example.com", None);
        let two = store.add_user("two@example.com", None);
        for _ in 0..MAX_CLIENTS_PER_USER {
            assert!(store.create_client(one).is_some());
        }
        assert!(store.create_client(one).is_none());
        // revoking does not make room (the client is kept); others are unaffected
        let first = store.client_ids()[0].clone();
        store.revoke(&first);
        assert!(store.create_client(one).is_none());
        assert!(store.create_client(two).is_some());
        assert_eq!(store.client_ids().len(), MAX_CLIENTS_PER_USER + 1);
    }

    #[test]
    fn revoked_clients_are_not_active() {
        let mut store = Store::default();
        let user = store.add_user("u@example.com", None);
        let (id, _secret) = store.create_client(user).unwrap();
        assert!(store.active_client(&id).is_some());
        assert!(store.revoke(&id));
        assert!(store.active_client(&id).is_none());
        assert!(!store.revoke("unknown"));
    }
}
