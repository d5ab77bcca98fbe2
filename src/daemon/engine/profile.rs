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
    /// What follows the token in its `token` reply line, serialised once when
    /// it arrived: the hot path copies [`REPLY_HEAD`], the token and this
    /// instead of building a reply per request. Holds no secret, so it needs
    /// no locked memory. `None` for a token JSON would escape (never seen:
    /// tokens are checked to be b64token), which takes the serde path.
    reply_tail: Option<Box<[u8]>>,
    expires_at: i64,
    /// When the request that brought it was sent.
    obtained_at: f64,
}

/// How every `token` reply line starts, up to the token itself.
const REPLY_HEAD: &[u8] = br#"{"ok":true,"access_token":""#;

/// The bytes after the token in `reply`'s line, or `None` if the line is not
/// [`REPLY_HEAD`], the token verbatim, then the tail.
fn reply_tail(reply: &TokenReply) -> Option<Box<[u8]>> {
    let token = reply.access_token.expose().as_bytes();
    // sized so it never grows: a reallocation would leave a copy of the token behind
    let room = 2 * token.len() + 6 * reply.profile.len() + 128;
    let mut line = zeroize::Zeroizing::new(Vec::with_capacity(room));
    crate::protocol::write_ok(&mut line, reply);
    let rest = line.strip_prefix(REPLY_HEAD)?.strip_prefix(token)?;
    Some(rest.into())
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
    /// The background retry's next attempt (backoff, or the slow retry after
    /// a permanent failure); waiting callers may come sooner (`retry_floor`).
    next_attempt: Option<f64>,
    /// When the last attempt started.
    last_attempt: Option<f64>,
    /// When the current run of failures began.
    failing_since: Option<f64>,
    /// The issuer's `Retry-After` runs out at this time: no attempt before it.
    retry_after_until: Option<f64>,
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

    /// A new token as cached, with the rest of its reply line.
    fn cache(&self, t: Token) -> Cached {
        let reply = TokenReply {
            access_token: t.access_token,
            token_type: "bearer".to_string(),
            expires_at: t.expires_at,
            profile: self.profile.name.clone(),
        };
        let reply_tail = reply_tail(&reply);
        Cached {
            token: reply.access_token,
            reply_tail,
            expires_at: reply.expires_at,
            obtained_at: t.obtained_at,
        }
    }

    /// The hot path: a cached token with at least `min_ttl` left, if any.
    pub(super) fn cached(&self, now: f64, min_ttl: f64) -> Option<TokenReply> {
        self.serve_cached(now, min_ttl, |c| self.reply(c))
    }

    /// [`Entry::cached`] as its reply line, appended to `out`; false when no
    /// cached token has `min_ttl` left.
    pub(super) fn cached_line(&self, now: f64, min_ttl: f64, out: &mut Vec<u8>) -> bool {
        self.serve_cached(now, min_ttl, |c| match &c.reply_tail {
            Some(tail) => {
                out.extend_from_slice(REPLY_HEAD);
                out.extend_from_slice(c.token.expose().as_bytes());
                out.extend_from_slice(tail);
            }
            None => crate::protocol::write_ok(out, &self.reply(c)),
        })
        .is_some()
    }

    /// Serves the cached token through `give` if it has `min_ttl` left, and
    /// counts the use (waking an idle refresher).
    fn serve_cached<T>(
        &self,
        now: f64,
        min_ttl: f64,
        give: impl FnOnce(&Cached) -> T,
    ) -> Option<T> {
        let mut st = self.lock();
        if st.removed {
            return None;
        }
        let c = st
            .token
            .as_ref()
            .filter(|c| usable(c.expires_at, now, min_ttl))?;
        let given = give(c);
        st.served += 1;
        st.last_used = Some(now);
        if st.idle {
            st.idle = false;
            self.wake.notify_one();
        }
        Some(given)
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
    /// Bounded by `wait` (0: answer at once); never returns an expired token.
    pub(super) async fn wait_token(
        &self,
        ctx: &Ctx,
        min_ttl: f64,
        wait: Duration,
    ) -> Result<TokenReply, WaitError> {
        let wall_deadline = ctx.clock.now() + wait.as_secs_f64();
        let name = &self.profile.name;
        let floor = self.profile.retry_floor.as_secs_f64();
        let mut seen: Option<u64> = None;
        let check = |st: &mut State, now: f64| {
            if let Some(c) = st
                .token
                .as_ref()
                .filter(|c| usable(c.expires_at, now, min_ttl))
            {
                let reply = self.reply(c);
                st.served += 1;
                st.last_used = Some(now);
                return Some(Ok(reply));
            }
            st.last_used = Some(now);
            st.idle = false;
            let seen = *seen.get_or_insert(st.attempts);
            let attempted = st.attempts > seen;
            // a fresh token has shown the issuer's lifetime is too short for this
            // min_ttl: say so at once instead of asking the issuer on every call
            // (a token that only aged past min_ttl on its way to this caller,
            // on a loaded machine, proves nothing: the waiter asks again)
            if st.failure.is_none()
                && let Some(c) = &st.token
                && c.expires_at as f64 - c.obtained_at < min_ttl
            {
                let lifetime = c.expires_at as f64 - c.obtained_at;
                return Some(Err(err(
                    ErrorCode::BadRequest,
                    format!(
                        "profile \"{name}\": the issuer's tokens last about {lifetime:.0} s, \
                         less than the min_ttl of {min_ttl:.0} s asked for; ask for less"
                    ),
                )));
            }
            if let Some(f) = &st.failure {
                let permanent = f.class == ErrorClass::Permanent;
                // no new request for a waiter: a rejected secret stays rejected
                if permanent && (attempted || st.next_attempt.is_some_and(|t| t > now)) {
                    return Some(Err(rejected(name, f)));
                }
                if !permanent && !st.inflight {
                    let next =
                        schedule::demand_attempt_at(st.last_attempt, floor, st.retry_after_until);
                    if next > wall_deadline {
                        return Some(Err(unavailable(name, f, st, now, next)));
                    }
                }
            }
            if !st.inflight {
                st.demand = true;
                self.wake.notify_one();
            }
            if wait.is_zero() {
                return Some(Err(not_in_time(name, min_ttl, wait, st, now)));
            }
            None
        };
        let timeout = |st: &State, now: f64| not_in_time(name, min_ttl, wait, st, now);
        self.wait_for(ctx, wait, check, timeout).await
    }

    /// An explicit refresh: asks the issuer now (ignoring backoff and a
    /// permanent failure, but not the issuer's `Retry-After`) and waits for
    /// that attempt's outcome.
    pub(super) async fn force_refresh(
        &self,
        ctx: &Ctx,
        wait: Duration,
    ) -> Result<TokenReply, WaitError> {
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
        let check = |st: &mut State, now: f64| {
            if st.attempts < target {
                return None;
            }
            if let Some(f) = &st.failure {
                return Some(Err(match f.class {
                    ErrorClass::Permanent => rejected(name, f),
                    ErrorClass::Transient => {
                        let next = st.next_attempt.unwrap_or(now);
                        unavailable(name, f, st, now, next)
                    }
                }));
            }
            let c = st.token.as_ref().filter(|c| c.expires_at as f64 > now)?;
            let reply = self.reply(c);
            st.served += 1;
            Some(Ok(reply))
        };
        let timeout = |_: &State, _: f64| {
            err(
                ErrorCode::IssuerUnavailable,
                format!(
                    "profile \"{name}\": the refresh did not finish within {} s",
                    wait.as_secs()
                ),
            )
        };
        self.wait_for(ctx, wait, check, timeout).await
    }

    /// The one wait loop: runs `check` on the state now and after every
    /// attempt until it gives an answer, or `timeout`'s error once `wait` is up.
    async fn wait_for(
        &self,
        ctx: &Ctx,
        wait: Duration,
        mut check: impl FnMut(&mut State, f64) -> Option<Result<TokenReply, EngineError>>,
        timeout: impl FnOnce(&State, f64) -> EngineError,
    ) -> Result<TokenReply, WaitError> {
        let deadline = tokio::time::Instant::now() + wait;
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
                if let Some(answer) = check(&mut st, now) {
                    return answer.map_err(WaitError::Failed);
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let st = self.lock();
                    return Err(WaitError::Failed(timeout(&st, ctx.clock.now())));
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

/// `issuer_unavailable`: the last failure, since when, and when the next attempt is.
fn unavailable(name: &str, f: &Failure, st: &State, now: f64, next: f64) -> EngineError {
    let since = st.failing_since.map_or(0.0, |t| now - t).max(0.0);
    err(
        ErrorCode::IssuerUnavailable,
        format!(
            "profile \"{name}\": issuer unavailable for {since:.0} s: {}; next attempt in {:.0} s",
            f.message,
            (next - now).max(0.0)
        ),
    )
}

/// `issuer_unavailable` for a caller whose wait ran out: why, and what comes next.
fn not_in_time(name: &str, min_ttl: f64, wait: Duration, st: &State, now: f64) -> EngineError {
    let why = match &st.failure {
        Some(f) => {
            let since = st.failing_since.map_or(0.0, |t| now - t).max(0.0);
            format!("failing for {since:.0} s, last: {}", f.message)
        }
        None if st.inflight && st.attempts == 0 => {
            "the first request to the issuer is still running".to_string()
        }
        None if st.inflight => "a refresh is still running".to_string(),
        None if st.attempts == 0 => "no answer from the issuer yet".to_string(),
        None => "the token held has less than that left, and a refresh is due".to_string(),
    };
    let next = if st.inflight {
        let running = st.last_attempt.map_or(0.0, |t| now - t).max(0.0);
        format!("; a request has been in flight for {running:.0} s")
    } else if st.demand {
        "; an attempt starts now".to_string()
    } else {
        match st.next_attempt {
            Some(t) if t > now => format!("; next attempt in {:.0} s", t - now),
            _ => "; next attempt now".to_string(),
        }
    };
    err(
        ErrorCode::IssuerUnavailable,
        format!(
            "profile \"{name}\": no token with {min_ttl:.0} s left within the {:.0} s wait; {why}{next}",
            wait.as_secs_f64()
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
        // backing off; a waiting caller may cut it short, once per retry_floor
        // (never past the issuer's Retry-After, never after a permanent refusal)
        let permanent = st
            .failure
            .as_ref()
            .is_some_and(|f| f.class == ErrorClass::Permanent);
        if st.demand && !permanent {
            let at = schedule::demand_attempt_at(
                st.last_attempt,
                s.retry_floor.as_secs_f64(),
                st.retry_after_until,
            );
            if now >= at {
                return Action::Fetch;
            }
            return Action::Sleep(Some(at.min(t)));
        }
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
                st.last_attempt = Some(now);
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
            st.token = Some(entry.cache(t));
            st.next_refresh = Some(due);
            st.last_refresh = Some(now);
            st.refreshed += 1;
            st.failure = None;
            st.failures_in_row = 0;
            st.next_attempt = None;
            st.failing_since = None;
            st.retry_after_until = None;
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
            let started = st.last_attempt.unwrap_or(now);
            st.failing_since.get_or_insert(started);
            st.retry_after_until = e.retry_after.map(|r| now + r.as_secs_f64());
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
