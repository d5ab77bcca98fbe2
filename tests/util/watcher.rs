//! The engine while an issuer fault plays out: a watcher that keeps asking
//! for tokens and status and checks every answer as it comes, the backoff
//! bounds derived from the schedule constants, and a runner for scenarios
//! that mostly wait and so run at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ce_auth::daemon::config::{Config, Profile, ProfileSpec};
use ce_auth::daemon::engine::Engine;
use ce_auth::daemon::engine::schedule::{BACKOFF_BASE, BACKOFF_CAP, MIN_RETRY};
use ce_auth::protocol::{ErrorCode, ProfileStatus};
use ce_auth::secret::Secret;
use ce_auth_issuer::TokenRequest;

use super::deadline::Deadline;
use super::issuer::{CLIENT_SECRET, CLIENT2_SECRET, jwt_exp};
use super::{now, secs};

/// The profile every engine here serves.
pub const PROFILE: &str = "p";

/// The `min_ttl` the watcher asks for.
pub const MIN_TTL: f64 = 1.0;
/// Allowance for scheduling and request latency on a loaded machine, on top
/// of what the backoff schedule allows. Only upper bounds use it. Stalls of
/// about 2 s were seen with two cores shared by several builds; the exact
/// schedule is tested with paused time in tests/engine_schedule.rs.
pub const SLACK: f64 = 2.5;
/// Resolution of arrival times compared with lower bounds (timer granularity).
pub const EPSILON: f64 = 0.05;
/// How long any single wait for a fault to play out may take before it is a failure.
pub const FAULT_DEADLINE: Duration = Duration::from_secs(40);

/// The issuer's backoff ceiling for the `n`-th transient failure in a row
/// (1-based), as docs/CONFIG.md states it: min(cap, base * 2^(n-1)), and at
/// least the issuer's `Retry-After`.
pub fn step_bound(n: u32, retry_after: f64) -> f64 {
    let exp = n.saturating_sub(1).min(30);
    (BACKOFF_BASE * f64::from(1u32 << exp))
        .min(BACKOFF_CAP)
        .max(retry_after)
}

/// The shortest time between two attempts: [`MIN_RETRY`], or the
/// `Retry-After` when longer, plus what each failing request itself takes.
pub fn min_gap(retry_after: f64, latency: f64) -> f64 {
    MIN_RETRY.max(retry_after) + latency
}

/// The most requests an outage spanning `span` seconds (first to last failed
/// request) can see: the first, then one per shortest gap.
pub fn max_requests(span: f64, retry_after: f64, latency: f64) -> u64 {
    // arrival times carry timer jitter: EPSILON keeps a gap of exactly the
    // minimum from being counted as shorter
    1 + ((span + EPSILON) / min_gap(retry_after, latency)).floor() as u64
}

/// A profile against `token_url` that refreshes at a tenth of each token's
/// life (so a fault injected right after the first token meets the first
/// refresh) and gives up on a request after `timeout` seconds.
pub fn spec(token_url: &str, client_id: &str, timeout: u64) -> ProfileSpec {
    ProfileSpec {
        token_url: Some(token_url.to_string()),
        client_id: Some(client_id.to_string()),
        auth_method: Some("client_secret_post".parse().unwrap()),
        refresh_fraction: Some(vec![0.1, 0.1]),
        refresh_margin: Some(0),
        timeout: Some(timeout),
        connect_timeout: Some(1),
        ..ProfileSpec::default()
    }
}

/// A configuration with the one profile [`PROFILE`].
pub fn config(spec: ProfileSpec, secret: &str) -> Config {
    let p = Profile::from_spec(PROFILE, spec, Some(Secret::new(secret.to_string())))
        .expect("valid profile");
    Config {
        profiles: BTreeMap::from([(PROFILE.to_string(), p)]),
        ..Config::default()
    }
}

/// The profile's status.
pub fn status(engine: &Engine) -> ProfileStatus {
    engine
        .status(Some(PROFILE))
        .expect("the profile exists")
        .remove(0)
}

/// Polls `f` until it returns `Some`, for at most [`FAULT_DEADLINE`].
pub async fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    Deadline::after(FAULT_DEADLINE)
        .wait_for_async(what, f)
        .await
}

/// Sleeps until the wall-clock time `t` (Unix seconds).
pub async fn sleep_until(t: f64) {
    let d = t - now();
    if d > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(d)).await;
    }
}

/// The arrival times of the faulted requests in `log`.
pub fn faulted(log: &[TokenRequest]) -> Vec<f64> {
    log.iter()
        .filter(|r| r.fault.is_some())
        .map(|r| secs(r.at))
        .collect()
}

/// The arrival times of the requests that got no fault.
pub fn clean(log: &[TokenRequest]) -> Vec<f64> {
    log.iter()
        .filter(|r| r.fault.is_none())
        .map(|r| secs(r.at))
        .collect()
}

/// Checks the spacing of consecutive failed attempts against the schedule:
/// at least the shortest gap, at most the `n`-th step plus the request time.
pub fn check_gaps(name: &str, times: &[f64], retry_after: f64, latency: f64) {
    for (i, w) in times.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let n = i as u32 + 1;
        let lo = min_gap(retry_after, latency) - EPSILON;
        let hi = latency + step_bound(n, retry_after) + SLACK;
        assert!(
            gap >= lo && gap <= hi,
            "{name}: attempt {} came {gap:.3} s after failure {n}; the schedule allows {lo:.2}..{hi:.2} s (times {times:?})",
            n + 1
        );
    }
}

/// What a watcher saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Tokens served.
    pub served: u64,
    /// Errors by wire code (and `wait` for calls still waiting after 300 ms).
    pub errors: BTreeMap<String, u64>,
    /// States `status` reported.
    pub states: BTreeSet<String>,
    /// Distinct tokens served, by expiry.
    pub expiries: BTreeSet<i64>,
}

/// What the watcher accepts while a fault plays out.
#[derive(Clone)]
pub struct Expect {
    pub name: String,
    /// Error codes a caller may get when no valid token can be served.
    pub codes: Vec<ErrorCode>,
    /// Text `last_error` must contain while the profile is in backoff or failed.
    pub error_text: String,
    /// The issuer's `Retry-After`, seconds (0 when none).
    pub retry_after: f64,
}

/// Asks for a token (min_ttl 1 s) and the status every 50 ms and checks each
/// answer: no expired token and none past its JWT `exp`, a still-valid token
/// always served, only the expected error codes, and a status that agrees
/// with the facts.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Seen>,
}

impl Watcher {
    pub fn start(engine: Arc<Engine>, expect: Expect) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(watch(engine, expect, Arc::clone(&stop)));
        Watcher { stop, task }
    }

    /// Stops watching; a failed check resurfaces here as a panic.
    pub async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Release);
        match self.task.await {
            Ok(seen) => seen,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

async fn watch(engine: Arc<Engine>, x: Expect, stop: Arc<AtomicBool>) -> Seen {
    let name = &x.name;
    let mut seen = Seen::default();
    // the latest token served: while it has min_ttl left, it must be served
    let mut latest: Option<i64> = None;
    let (mut refreshed, mut failed) = (0u64, 0u64);
    while !stop.load(Ordering::Acquire) {
        let t0 = now();
        let call = engine.token(None, Duration::from_secs_f64(MIN_TTL));
        let result = tokio::time::timeout(Duration::from_millis(300), call).await;
        let t1 = now();
        match result {
            Ok(Ok(r)) => {
                let exp = jwt_exp(r.access_token.expose());
                assert!(
                    r.expires_at as f64 >= t0 + MIN_TTL,
                    "{name}: served a token expiring at {} with less than {MIN_TTL} s left at {t0:.3}",
                    r.expires_at
                );
                assert!(
                    r.expires_at <= exp,
                    "{name}: served a token said to expire at {} past its own exp {exp}",
                    r.expires_at
                );
                seen.served += 1;
                seen.expiries.insert(r.expires_at);
                latest = latest.max(Some(r.expires_at));
            }
            other => {
                let code = match other {
                    Ok(Err(e)) => {
                        assert!(
                            x.codes.contains(&e.code),
                            "{name}: unexpected error {:?}: {}",
                            e.code,
                            e.message
                        );
                        format!("{:?}", e.code)
                    }
                    _ => "wait".to_string(),
                };
                if let Some(e) = latest {
                    assert!(
                        (e as f64) - t1 < MIN_TTL,
                        "{name}: a token valid until {e} was not served at {t1:.3} ({code})"
                    );
                }
                *seen.errors.entry(code).or_default() += 1;
            }
        }
        let t2 = now();
        let st = status(&engine);
        check_status(name, &st, t2, &x);
        assert!(
            st.refreshed >= refreshed && st.failed >= failed,
            "{name}: counts went back: {st:?}"
        );
        refreshed = st.refreshed;
        failed = st.failed;
        seen.states.insert(st.state.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Checks that a status taken at (or after) `t` tells the truth.
pub fn check_status(name: &str, st: &ProfileStatus, t: f64, x: &Expect) {
    if let Some(e) = st.expires_at {
        assert!(
            e as f64 > t,
            "{name}: status shows a token expired at {e} as held at {t:.3}: {st:?}"
        );
    }
    match st.state.as_str() {
        "fresh" => {
            assert!(
                st.expires_at.is_some(),
                "{name}: fresh without a token: {st:?}"
            );
            assert!(
                st.last_error.is_none(),
                "{name}: fresh with an error: {st:?}"
            );
            assert!(
                st.next_refresh.is_some(),
                "{name}: fresh, no refresh planned: {st:?}"
            );
        }
        "backoff" | "failed" => {
            let err = st.last_error.as_deref().unwrap_or_default();
            assert!(
                err.contains(&x.error_text),
                "{name}: {} but last_error {err:?} does not say {:?}",
                st.state,
                x.error_text
            );
            assert!(!err.contains(CLIENT_SECRET) && !err.contains(CLIENT2_SECRET));
            let next = st.next_refresh.expect("a next attempt is planned") as f64;
            // the next attempt is no further away than the largest step so far
            let bound = if st.state == "failed" {
                ce_auth::daemon::engine::schedule::PERMANENT_RETRY
            } else {
                step_bound(st.failed.min(u64::from(u32::MAX)) as u32, x.retry_after)
            };
            assert!(
                next - t <= bound + 1.0,
                "{name}: next attempt {:.1} s away, more than the schedule's {bound} s: {st:?}",
                next - t
            );
        }
        "empty" => assert!(
            st.expires_at.is_none(),
            "{name}: empty with a token: {st:?}"
        ),
        "refreshing" => {}
        other => panic!("{name}: unexpected state {other}: {st:?}"),
    }
}

/// One line of the summary printed under `--nocapture`.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    /// Seconds from the first failed request until the issuer was back.
    pub outage: f64,
    /// Seconds from the first to the last failed request (the bound's basis).
    pub span: f64,
    /// Failed requests seen by the issuer (or the engine when the issuer was down).
    pub requests: u64,
    /// The most the backoff schedule allows for that outage.
    pub bound: u64,
    /// Seconds from the issuer's return to the first good request.
    pub recovery: f64,
    /// The one backoff step recovery had to fit in (plus request time).
    pub recovery_bound: f64,
    pub served: u64,
}

impl Report {
    pub fn header() -> String {
        format!(
            "{:<46} {:>8} {:>6} {:>9} {:>6} {:>10} {:>7} {:>7}",
            "fault", "outage s", "span s", "requests", "bound", "recovery s", "step s", "served"
        )
    }

    pub fn line(&self) -> String {
        format!(
            "{:<46} {:>8.2} {:>6.2} {:>9} {:>6} {:>10.2} {:>7.2} {:>7}",
            self.name,
            self.outage,
            self.span,
            self.requests,
            self.bound,
            self.recovery,
            self.recovery_bound,
            self.served
        )
    }
}

/// A named scenario, ready to run.
pub type Scenario = (
    String,
    std::pin::Pin<Box<dyn std::future::Future<Output = Report> + Send>>,
);

/// A scenario from a name and a future.
pub fn scenario(
    name: &str,
    fut: impl std::future::Future<Output = Report> + Send + 'static,
) -> Scenario {
    (name.to_string(), Box::pin(fut))
}

/// Runs scenarios at once (they mostly wait), prints the summary, and fails
/// with every scenario's failure.
pub async fn run_all(scenarios: Vec<Scenario>) -> Vec<Report> {
    let handles: Vec<_> = scenarios
        .into_iter()
        .map(|(name, fut)| (name, tokio::spawn(fut)))
        .collect();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (name, h) in handles {
        match h.await {
            Ok(r) => reports.push(r),
            Err(e) => {
                let msg = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into()),
                    Err(e) => e.to_string(),
                };
                failures.push(format!("{name}: {msg}"));
            }
        }
    }
    println!("{}", Report::header());
    for r in &reports {
        println!("{}", r.line());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    reports
}
