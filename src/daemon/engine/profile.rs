//! One profile's token state machine: the cache, the refresher task that is
//! the only thing ever asking the issuer (hence single-flight), and the
//! waiting done by callers whose `min_ttl` the cache cannot meet.
//!
//! A profile that is removed, replaced or reloaded with new settings gets a
//! new [`Entry`]; the old one is marked `removed`, so a slow refresh finishing
//! late writes nothing back.

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::schedule;
use super::{Ctx, EngineError};
use crate::daemon::config::Profile;
use crate::daemon::oauth::{ErrorClass, Token, TokenError};
use crate::protocol::{ErrorCode, ProfileStatus, TokenReply};
use crate::secret::Secret;

/// A cached access token.
struct Cached {
    token: Secret,
    expires_at: i64,
}

/// The last failed attempt.
#[derive(Clone)]
struct Failure {
    class: ErrorClass,
    message: String,
}

/// Mutable state of a profile, behind a short `std::sync::Mutex`.
#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// A token request is in flight.
    inflight: bool,
    /// A caller needs a token the cache cannot give.
    demand: bool,
    /// An explicit refresh: ask now, whatever the backoff.
    force: bool,
    /// The last attempt's failure; `None` after a success.
    failure: Option<Failure>,
    failures_in_row: u32,
    /// Not before this time (backoff, or the slow retry after a permanent failure).
    next_attempt: Option<f64>,
    /// When the background refresh is due.
    next_refresh: Option<f64>,
    last_refresh: Option<f64>,
    last_used: Option<f64>,
    /// Background refresh stopped for lack of use.
    idle: bool,
    /// Replaced, removed or shut down: serve nothing, write nothing.
    removed: bool,
    /// Completed attempts, successful or not (waiters compare against it).
    attempts: u64,
    token_file_error: Option<String>,
    served: u64,
    refreshed: u64,
    failed: u64,
}

/// Why a wait ended without a token.
pub(super) enum WaitError {
    /// The entry was removed or replaced; look the name up again.
    Gone,
    Failed(EngineError),
}

/// A profile and its token state.
pub(super) struct Entry {
    pub profile: Profile,
    /// Whether it came from the configuration file (reload may remove it)
    /// rather than from `add`.
    pub from_config: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    /// Wakes the refresher (permit semantics: a wake is never lost).
    wake: Notify,
    /// Tells waiting callers that an attempt finished or the entry went away.
    changed: Notify,
}

fn err(code: ErrorCode, message: String) -> EngineError {
    EngineError { code, message }
}

impl Entry {
    pub(super) fn new(profile: Profile, from_config: bool) -> Arc<Entry> {
        Arc::new(Entry {
            profile,
            from_config: std::sync::atomic::AtomicBool::new(from_config),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // the state stays consistent between statements, so a panic elsewhere
        // does not make it unusable
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reply(&self, c: &Cached) -> TokenReply {
        TokenReply {
            access_token: c.token.clone(),
            token_type: "bearer".to_string(),
            expires_at: c.expires_at,
            profile: self.profile.name.clone(),
        }
    }

    /// The hot path: a cached token with at least `min_ttl` left, if any.
    pub(super) fn cached(&self, now: f64, min_ttl: f64) -> Option<TokenReply> {
        let mut st = self.lock();
        if st.removed {
            return None;
        }
        let c = st
            .token
            .as_ref()
            .filter(|c| usable(c.expires_at, now, min_ttl))?;
        let reply = self.reply(c);
        st.served += 1;
        st.last_used = Some(now);
        if st.idle {
            st.idle = false;
            self.wake.notify_one();
        }
        Some(reply)
    }

    /// Marks the entry gone, drops its token and wakes everyone so they notice.
    pub(super) fn stop(&self) {
        {
            let mut st = self.lock();
            st.removed = true;
            st.token = None;
        }
        self.changed.notify_waiters();
        self.wake.notify_one();
    }

    /// Waits for a token with `min_ttl` left, asking the refresher for one.
    /// Bounded by `wait`; never returns an expired token.
    pub(super) async fn wait_token(
        &self,
        ctx: &Ctx,
        min_ttl: f64,
        wait: Duration,
    ) -> Result<TokenReply, WaitError> {
        let deadline = tokio::time::Instant::now() + wait;
        let wall_deadline = ctx.clock.now() + wait.as_secs_f64();
        let name = &self.profile.name;
        let mut seen: Option<u64> = None;
        loop {
            let mut notified = pin!(self.changed.notified());
            // register before looking, so a notification in between is not missed
            notified.as_mut().enable();
            {
                let now = ctx.clock.now();
                let mut st = self.lock();
                if st.removed {
                    return Err(WaitError::Gone);
                }
                if let Some(c) = st
                    .token
                    .as_ref()
                    .filter(|c| usable(c.expires_at, now, min_ttl))
                {
                    let reply = self.reply(c);
                    st.served += 1;
                    st.last_used = Some(now);
                    return Ok(reply);
                }
                st.last_used = Some(now);
                st.idle = false;
                let seen = *seen.get_or_insert(st.attempts);
                let attempted = st.attempts > seen;
                match (&st.failure, attempted) {
                    (None, true) => {
                        // a token came after we asked and still is not enough
                        let lifetime = st
                            .token
                            .as_ref()
                            .map(|c| c.expires_at as f64 - now)
                            .unwrap_or(0.0);
                        return Err(WaitError::Failed(err(
                            ErrorCode::BadRequest,
                            format!(
                                "profile \"{name}\": the issuer's tokens last about {lifetime:.0} s, \
                                 less than the min_ttl of {min_ttl:.0} s asked for; ask for less"
                            ),
                        )));
                    }
                    (Some(f), _) if f.class == ErrorClass::Permanent => {
                        // no new request for a waiter: a rejected secret stays rejected
                        if attempted || st.next_attempt.is_some_and(|t| t > now) {
                            return Err(WaitError::Failed(rejected(name, f)));
                        }
                    }
                    (Some(f), _) => {
                        if let Some(t) = st.next_attempt.filter(|&t| t > wall_deadline) {
                            return Err(WaitError::Failed(unavailable(name, f, t - now)));
                        }
                    }
                    (None, false) => {}
                }
                if !st.inflight {
                    st.demand = true;
                    self.wake.notify_one();
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let st = self.lock();
                    let now = ctx.clock.now();
                    let why = match &st.failure {
                        Some(f) => format!("the last attempt failed: {}", f.message),
                        None => "no answer from the issuer yet".to_string(),
                    };
                    let next = match st.next_attempt {
                        Some(t) if t > now => format!("; next attempt in {:.0} s", t - now),
                        _ if st.inflight => "; a request is still in flight".to_string(),
                        _ => String::new(),
                    };
                    return Err(WaitError::Failed(err(
                        ErrorCode::IssuerUnavailable,
                        format!(
                            "profile \"{name}\": no token with {min_ttl:.0} s left after waiting {} s; {why}{next}",
                            wait.as_secs()
                        ),
                    )));
                }
            }
        }
    }

    /// An explicit refresh: asks the issuer now (ignoring backoff and a
    /// permanent failure) and waits for that attempt's outcome.
    pub(super) async fn force_refresh(
        &self,
        ctx: &Ctx,
        wait: Duration,
    ) -> Result<TokenReply, WaitError> {
        let deadline = tokio::time::Instant::now() + wait;
        let name = &self.profile.name;
        let target = {
            let mut st = self.lock();
            if st.removed {
                return Err(WaitError::Gone);
            }
            st.force = true;
            st.idle = false;
            st.last_used = Some(ctx.clock.now());
            self.wake.notify_one();
            // an attempt in flight was started before this call: wait for the next
            st.attempts + if st.inflight { 2 } else { 1 }
        };
        loop {
            let mut notified = pin!(self.changed.notified());
            notified.as_mut().enable();
            {
                let now = ctx.clock.now();
                let mut st = self.lock();
                if st.removed {
                    return Err(WaitError::Gone);
                }
                if st.attempts >= target {
                    if let Some(f) = &st.failure {
                        return Err(WaitError::Failed(match f.class {
                            ErrorClass::Permanent => rejected(name, f),
                            ErrorClass::Transient => {
                                unavailable(name, f, st.next_attempt.map_or(0.0, |t| t - now))
                            }
                        }));
                    }
                    if let Some(c) = st.token.as_ref().filter(|c| c.expires_at as f64 > now) {
                        let reply = self.reply(c);
                        st.served += 1;
                        return Ok(reply);
                    }
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(WaitError::Failed(err(
                        ErrorCode::IssuerUnavailable,
                        format!("profile \"{name}\": the refresh did not finish within {} s", wait.as_secs()),
                    )));
                }
            }
        }
    }

    /// The profile's state as `status` reports it.
    pub(super) fn status(&self, now: f64) -> ProfileStatus {
        let st = self.lock();
        let s = &self.profile;
        let valid = st.token.as_ref().filter(|c| c.expires_at as f64 > now);
        let state = if st.inflight {
            "refreshing"
        } else if st
            .failure
            .as_ref()
            .is_some_and(|f| f.class == ErrorClass::Permanent)
        {
            "failed"
        } else if st.failure.is_some() {
            "backoff"
        } else if st.idle {
            "idle"
        } else if valid.is_some() {
            "fresh"
        } else {
            "empty"
        };
        let next_refresh = if st.idle || st.removed {
            None
        } else if st.failure.is_some() {
            st.next_attempt
        } else {
            st.next_refresh.filter(|_| valid.is_some())
        };
        ProfileStatus {
            name: self.profile.name.clone(),
            state: state.to_string(),
            grant: s.grant.as_str().to_string(),
            auth_method: s.auth_method.map(|m| m.as_str().to_string()),
            token_url: s.token_url.clone(),
            expires_at: valid.map(|c| c.expires_at),
            next_refresh: next_refresh.map(|t| t.floor() as i64),
            last_refresh: st.last_refresh.map(|t| t.floor() as i64),
            last_error: st
                .failure
                .as_ref()
                .map(|f| f.message.clone())
                .or_else(|| st.token_file_error.clone()),
            served: st.served,
            refreshed: st.refreshed,
            failed: st.failed,
        }
    }
}

/// Whether a token expiring at `expires_at` may go to a caller who needs
/// `min_ttl` seconds at `now`: never once expired, even with a `min_ttl` of 0.
fn usable(expires_at: i64, now: f64, min_ttl: f64) -> bool {
    let left = expires_at as f64 - now;
    left > 0.0 && left >= min_ttl
}

fn rejected(name: &str, f: &Failure) -> EngineError {
    err(
        ErrorCode::CredentialsRejected,
        format!(
            "profile \"{name}\": {}; fix the credentials, then `ce-auth reload` or `ce-auth refresh`",
            f.message
        ),
    )
}

fn unavailable(name: &str, f: &Failure, next_in: f64) -> EngineError {
    err(
        ErrorCode::IssuerUnavailable,
        format!(
            "profile \"{name}\": issuer unavailable: {}; next attempt in {:.0} s",
            f.message,
            next_in.max(0.0)
        ),
    )
}

/// What the refresher does next.
enum Action {
    Stop,
    Fetch,
    Sleep(Option<f64>),
}

fn decide(entry: &Entry, st: &mut State, now: f64) -> Action {
    if st.removed {
        return Action::Stop;
    }
    let s = &entry.profile;
    if st.force {
        return Action::Fetch;
    }
    let in_use = st
        .last_used
        .is_some_and(|u| now - u <= s.idle_timeout.as_secs_f64());
    if !st.demand && !in_use {
        // nobody asked lately: no background refresh until someone does
        st.idle = st.last_used.is_some();
        return Action::Sleep(None);
    }
    st.idle = false;
    // no token (never fetched, or dropped once expired during an outage) is
    // always due: otherwise the retry after an outage would never come
    let due = st.token.is_none() || st.next_refresh.is_some_and(|t| now >= t);
    if !st.demand && !due {
        return Action::Sleep(st.next_refresh);
    }
    if let Some(t) = st.next_attempt.filter(|&t| now < t) {
        return Action::Sleep(Some(t));
    }
    Action::Fetch
}

/// The refresher: the one task per profile that talks to the issuer.
/// Shaped like mini-redis's purge task: `select! { sleep, notified }`.
pub(super) async fn refresher(entry: Arc<Entry>, ctx: Arc<Ctx>) {
    loop {
        let wake = entry.wake.notified();
        let now = ctx.clock.now();
        let action = {
            let mut st = entry.lock();
            let a = decide(&entry, &mut st, now);
            if let Action::Fetch = a {
                st.inflight = true;
                st.demand = false;
                st.force = false;
            }
            a
        };
        match action {
            Action::Stop => return,
            Action::Sleep(until) => {
                tokio::select! {
                    _ = tokio::time::sleep(schedule::sleep_for(now, until)) => {}
                    _ = wake => {}
                }
            }
            Action::Fetch => {
                let result = ctx.source.fetch(&entry.profile, now).await;
                if !apply(&entry, &ctx, result) {
                    return;
                }
                entry.changed.notify_waiters();
                write_token_file(&entry).await;
            }
        }
    }
}

/// Records an attempt's outcome; false when the entry is gone (result dropped).
fn apply(entry: &Entry, ctx: &Ctx, result: Result<Token, TokenError>) -> bool {
    let now = ctx.clock.now();
    let name = &entry.profile.name;
    let s = &entry.profile;
    let mut st = entry.lock();
    st.inflight = false;
    if st.removed {
        return false;
    }
    st.attempts += 1;
    match result {
        Ok(t) => {
            let (lo, hi) = s.refresh_fraction;
            let fraction = schedule::jittered(lo, hi, rand::random::<f64>());
            let expires = t.expires_at as f64;
            let due = schedule::refresh_due(
                t.obtained_at,
                expires,
                fraction,
                s.refresh_margin.as_secs_f64(),
            );
            tracing::info!(
                profile = %name,
                "new token, valid {:.0} s ({:?}); next refresh in {:.0} s",
                expires - now,
                t.expiry_source,
                due - now
            );
            st.token = Some(Cached {
                token: t.access_token,
                expires_at: t.expires_at,
            });
            st.next_refresh = Some(due);
            st.last_refresh = Some(now);
            st.refreshed += 1;
            st.failure = None;
            st.failures_in_row = 0;
            st.next_attempt = None;
        }
        Err(e) => {
            st.failed += 1;
            let wait = match e.class {
                ErrorClass::Transient => {
                    st.failures_in_row = st.failures_in_row.saturating_add(1);
                    schedule::backoff(st.failures_in_row, rand::random::<f64>(), e.retry_after)
                }
                ErrorClass::Permanent => schedule::PERMANENT_RETRY,
            };
            st.next_attempt = Some(now + wait);
            tracing::warn!(
                profile = %name,
                class = ?e.class,
                "token request failed: {}; next attempt in {wait:.1} s",
                e.message
            );
            st.failure = Some(Failure {
                class: e.class,
                message: e.message,
            });
            if st
                .token
                .as_ref()
                .is_some_and(|c| c.expires_at as f64 <= now)
            {
                st.token = None;
            }
        }
    }
    true
}

/// Writes the current token to the profile's `token_file`, if it has one:
/// a temporary file (0600) in the same directory, then a rename, so readers
/// never see half a token. Failures are reported in status, never fatal.
async fn write_token_file(entry: &Arc<Entry>) {
    let Some(path) = entry.profile.token_file.clone() else {
        return;
    };
    let token = {
        let st = entry.lock();
        if st.removed {
            return;
        }
        match &st.token {
            Some(c) => c.token.clone(),
            None => return,
        }
    };
    let shown = path.display().to_string();
    let result = tokio::task::spawn_blocking(move || {
        crate::atomic::replace_file(&path, token.expose().as_bytes(), 0o600)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let mut st = entry.lock();
    match result {
        Ok(()) => st.token_file_error = None,
        Err(e) => {
            let msg = format!("cannot write token_file {shown}: {e}");
            tracing::warn!(profile = %entry.profile.name, "{msg}");
            st.token_file_error = Some(msg);
        }
    }
}
