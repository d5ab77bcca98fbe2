//! Test controls: the queue of scripted faults, the counters, and the JSON
//! shape of a fault on `/_test/faults`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Counters, Fault, TokenRequest};

/// Random bytes in a test key: 256 bits, from the operating system's generator.
const TEST_KEY_BYTES: usize = 32;

/// A fresh key for the HTTP test controls: URL-safe base64 (43 characters).
pub(crate) fn new_test_key() -> std::io::Result<secrecy::SecretString> {
    use base64::Engine as _;
    use rand::TryRngCore as _;
    let mut bytes = zeroize::Zeroizing::new([0u8; TEST_KEY_BYTES]);
    rand::rngs::OsRng
        .try_fill_bytes(bytes.as_mut())
        .map_err(std::io::Error::other)?;
    Ok(secrecy::SecretString::from(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()),
    ))
}

/// Whether a `/_test/` request carries `key`, as `Authorization: Bearer KEY`
/// or `X-CE-Test-Key: KEY`; `None` when it carries no key at all. Compared
/// in constant time.
pub(crate) fn presented_key_matches(
    headers: &axum::http::HeaderMap,
    key: &secrecy::SecretString,
) -> Option<bool> {
    use secrecy::ExposeSecret as _;
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, k)| k.trim());
    let header = headers
        .get(TEST_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let sent = header.or(bearer)?;
    Some(super::store::secrets_equal(sent, key.expose_secret()))
}

/// The header that may carry the test key.
pub(crate) const TEST_KEY_HEADER: &str = "x-ce-test-key";

/// Token requests remembered by [`Controls::requests`]; older ones are
/// forgotten, so a long-running `ce-authd issuer` does not grow without bound.
pub(crate) const MAX_REQUEST_LOG: usize = 10_000;

/// The JSON form of a [`Fault`], tagged by `kind` (see docs/ISSUER.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum FaultSpec {
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    Delay {
        ms: u64,
    },
    Hang,
    Reset,
    Malformed,
    Truncated,
    MissingField {
        field: String,
    },
    Override {
        fields: serde_json::Value,
    },
}

impl From<Fault> for FaultSpec {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Status {
                status,
                retry_after,
            } => FaultSpec::Status {
                status,
                retry_after,
            },
            Fault::Delay(d) => FaultSpec::Delay {
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Fault::Hang => FaultSpec::Hang,
            Fault::Reset => FaultSpec::Reset,
            Fault::Malformed => FaultSpec::Malformed,
            Fault::Truncated => FaultSpec::Truncated,
            Fault::MissingField(field) => FaultSpec::MissingField { field },
            Fault::Override(fields) => FaultSpec::Override { fields },
        }
    }
}

impl TryFrom<FaultSpec> for Fault {
    type Error = String;

    fn try_from(spec: FaultSpec) -> Result<Self, String> {
        Ok(match spec {
            FaultSpec::Status {
                status,
                retry_after,
            } => {
                if !(400..=599).contains(&status) {
                    return Err(format!(
                        "status {status} is not an HTTP error status (400-599)"
                    ));
                }
                Fault::Status {
                    status,
                    retry_after,
                }
            }
            FaultSpec::Delay { ms } => Fault::Delay(Duration::from_millis(ms)),
            FaultSpec::Hang => Fault::Hang,
            FaultSpec::Reset => Fault::Reset,
            FaultSpec::Malformed => Fault::Malformed,
            FaultSpec::Truncated => Fault::Truncated,
            FaultSpec::MissingField { field } => Fault::MissingField(field),
            FaultSpec::Override { fields } => {
                if !fields.is_object() {
                    return Err("override fields must be a JSON object".into());
                }
                Fault::Override(fields)
            }
        })
    }
}

/// Counters and the fault queue, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    pub counters: Counters,
    queue: VecDeque<(Fault, u32)>,
    log: VecDeque<TokenRequest>,
}

impl Controls {
    /// Queues `fault` for the next `n` token requests, after those already queued.
    pub fn inject(&mut self, fault: Fault, n: u32) {
        if n > 0 {
            self.queue.push_back((fault, n));
        }
    }

    /// Counts a token request and takes the fault it is to suffer, if any.
    pub fn on_token_request(&mut self, grant: &str) -> Option<Fault> {
        self.counters.token_requests += 1;
        *self
            .counters
            .requests_by_grant
            .entry(grant.to_owned())
            .or_default() += 1;
        let fault = self.queue.front_mut().map(|(fault, left)| {
            *left -= 1;
            fault.clone()
        });
        if self.queue.front().is_some_and(|(_, left)| *left == 0) {
            self.queue.pop_front();
        }
        if self.log.len() == MAX_REQUEST_LOG {
            self.log.pop_front();
        }
        self.log.push_back(TokenRequest {
            at: SystemTime::now(),
            fault: fault.clone(),
        });
        fault
    }

    /// Drops every queued fault, keeping the counters; returns how many
    /// fault uses were still pending.
    pub fn clear_faults(&mut self) -> u64 {
        let pending = self.pending();
        self.queue.clear();
        pending
    }

    /// The token requests seen so far (the latest [`MAX_REQUEST_LOG`]), oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.iter().cloned().collect()
    }

    /// Counts a token delivered by `method` in a usable 200 answer.
    pub fn on_issued(&mut self, method: &str) {
        self.counters.tokens_issued += 1;
        *self
            .counters
            .issued_by_method
            .entry(method.to_owned())
            .or_default() += 1;
    }

    /// Faults still queued (sum of remaining uses).
    pub fn pending(&self) -> u64 {
        self.queue.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// Forgets counters and queued faults.
    pub fn reset(&mut self) {
        *self = Controls::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_apply_in_order_for_their_count() {
        let mut c = Controls::default();
        c.inject(Fault::Hang, 2);
        c.inject(Fault::Reset, 1);
        c.inject(Fault::Malformed, 0);
        assert_eq!(c.pending(), 3);
        assert_eq!(c.on_token_request("password"), Some(Fault::Hang));
        assert_eq!(c.on_token_request("password"), Some(Fault::Hang));
        assert_eq!(c.on_token_request("client_credentials"), Some(Fault::Reset));
        assert_eq!(c.on_token_request("password"), None);
        assert_eq!(c.counters.token_requests, 4);
        let log = c.requests();
        assert_eq!(log.len(), 4);
        assert_eq!(log[2].fault, Some(Fault::Reset));
        assert_eq!(log[3].fault, None);
        assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(c.counters.requests_by_grant["password"], 3);
        c.on_issued("none");
        assert_eq!(c.counters.issued_by_method["none"], 1);
        c.reset();
        assert_eq!(c.counters, Counters::default());
        assert!(c.requests().is_empty());
    }

    #[test]
    fn clearing_faults_keeps_the_counts() {
        let mut c = Controls::default();
        c.inject(Fault::Malformed, 5);
        c.inject(Fault::Reset, 2);
        assert_eq!(c.on_token_request("password"), Some(Fault::Malformed));
        assert_eq!(c.clear_faults(), 6);
        assert_eq!(c.pending(), 0);
        assert_eq!(c.on_token_request("password"), None);
        assert_eq!(c.counters.token_requests, 2);
        assert_eq!(c.requests().len(), 2);
    }

    #[test]
    fn the_request_log_is_bounded() {
        let mut c = Controls::default();
        for _ in 0..MAX_REQUEST_LOG + 3 {
            c.on_token_request("password");
        }
        assert_eq!(c.requests().len(), MAX_REQUEST_LOG);
        assert_eq!(c.counters.token_requests, MAX_REQUEST_LOG as u64 + 3);
    }

    #[test]
    fn every_fault_round_trips_through_its_json_form() {
        let faults = [
            Fault::Status {
                status: 429,
                retry_after: Some(3),
            },
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            Fault::Delay(Duration::from_millis(250)),
            Fault::Hang,
            Fault::Reset,
            Fault::Malformed,
            Fault::Truncated,
            Fault::MissingField("expires_at".into()),
            Fault::Override(serde_json::json!({"token_type": "Bearer", "expires_at": null})),
        ];
        for fault in faults {
            let json = serde_json::to_value(FaultSpec::from(fault.clone())).expect("serialize");
            let back: FaultSpec = serde_json::from_value(json).expect("deserialize");
            assert_eq!(Fault::try_from(back), Ok(fault));
        }
    }

    #[test]
    fn bad_fault_json_is_refused_with_a_reason() {
        let bad = [
            serde_json::json!({"kind": "status", "status": 200}),
            serde_json::json!({"kind": "override", "fields": [1]}),
        ];
        for json in bad {
            let spec: FaultSpec = serde_json::from_value(json).expect("shape is valid");
            assert!(Fault::try_from(spec).is_err());
        }
        assert!(
            serde_json::from_value::<FaultSpec>(serde_json::json!({"kind": "explode"})).is_err()
        );
    }
}
