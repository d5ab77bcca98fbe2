//! Engine scheduling with paused tokio time and a scripted token source:
//! caching, single-flight, proactive refresh, idleness, backoff, permanent
//! failure, clock jumps, reload and shutdown. No network is involved.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ce_auth::daemon::config::{Config, Profile, ProfileSpec};
use ce_auth::daemon::engine::{Clock, Engine, TokenSource};
use ce_auth::daemon::oauth::{ErrorClass, ExpirySource, Token, TokenError};
use ce_auth::protocol::ErrorCode;
use ce_auth::secret::Secret;

const T0: f64 = 1_700_000_000.0;

/// What the scripted issuer does for one request.
#[derive(Clone)]
enum Outcome {
    Ok,
    Transient(Option<u64>),
    Permanent,
}

/// A token source that follows a script, then succeeds; it records when each
/// request was made.
struct Script {
    lifetime: f64,
    delay: Duration,
    plan: Mutex<VecDeque<Outcome>>,
    calls: Mutex<Vec<f64>>,
}

impl Script {
    fn new(clock: &Clock, lifetime: f64) -> Arc<Script> {
        let _ = clock;
        Arc::new(Script {
            lifetime,
            delay: Duration::ZERO,
            plan: Mutex::new(VecDeque::new()),
            calls: Mutex::new(Vec::new()),
        })
    }
    fn with_delay(clock: &Clock, lifetime: f64, delay: Duration) -> Arc<Script> {
        let mut s = Script::new(clock, lifetime);
        Arc::get_mut(&mut s).unwrap().delay = delay;
        s
    }
    fn plan(&self, outcomes: &[Outcome]) {
        self.plan.lock().unwrap().extend(outcomes.iter().cloned());
    }
    fn clear(&self) {
        self.plan.lock().unwrap().clear();
    }
    fn calls(&self) -> Vec<f64> {
        self.calls.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl TokenSource for Script {
    fn fetch<'a>(
        &'a self,
        _profile: &'a Profile,
        now: f64,
    ) -> Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>> {
        Box::pin(async move {
            let n = {
                let mut c = self.calls.lock().unwrap();
                c.push(now);
                c.len()
            };
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let outcome = self.plan.lock().unwrap().pop_front().unwrap_or(Outcome::Ok);
            let err = |class, retry_after: Option<u64>| TokenError {
                class,
                message: format!("scripted failure {n}"),
                retry_after: retry_after.map(Duration::from_secs),
                status: Some(if class == ErrorClass::Transient {
                    503
                } else {
                    401
                }),
                oauth_error: None,
            };
            match outcome {
                Outcome::Ok => {
                    let sent = now;
                    Ok(Token {
                        access_token: Secret::new(format!("tok-{n}")),
                        expires_at: (sent + self.lifetime).floor() as i64,
                        obtained_at: sent,
                        expiry_source: ExpirySource::ExpiresIn,
                    })
                }
                Outcome::Transient(ra) => Err(err(ErrorClass::Transient, ra)),
                Outcome::Permanent => Err(err(ErrorClass::Permanent, None)),
            }
        })
    }
}

fn spec() -> ProfileSpec {
    ProfileSpec {
        token_url: Some("http://127.0.0.1:9/token".into()),
        client_id: Some("client".into()),
        ..ProfileSpec::default()
    }
}

fn profile(name: &str, spec: ProfileSpec) -> Profile {
    Profile::from_spec(name, spec, Some(Secret::new("s3cret".into()))).unwrap()
}

fn config(profiles: Vec<Profile>) -> Config {
    let default_profile = profiles.first().map(|p| p.name.clone());
    Config {
        default_profile,
        profiles: profiles
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect::<BTreeMap<_, _>>(),
        ..Config::default()
    }
}

fn setup(lifetime: f64, spec: ProfileSpec) -> (Arc<Engine>, Arc<Script>, Clock) {
    let clock = Clock::tokio(T0);
    let script = Script::new(&clock, lifetime);
    let engine = Engine::with_source(
        config(vec![profile("p", spec)]),
        script.clone(),
        clock.clone(),
    );
    (engine, script, clock)
}

const MIN: Duration = Duration::from_secs(60);

async fn advance(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn serves_from_cache_after_one_request() {
    let (engine, script, clock) = setup(900.0, spec());
    let first = engine.token(None, MIN).await.unwrap();
    assert_eq!(first.profile, "p");
    assert_eq!(first.token_type, "bearer");
    assert_eq!(first.access_token.expose(), "tok-1");
    for _ in 0..100 {
        let t = engine.token(Some("p"), MIN).await.unwrap();
        assert_eq!(t.access_token, first.access_token);
        assert!(t.expires_at as f64 - clock.now() >= 60.0);
    }
    assert_eq!(script.count(), 1);
    let st = &engine.status(Some("p")).unwrap()[0];
    assert_eq!(st.state, "fresh");
    assert_eq!((st.served, st.refreshed, st.failed), (101, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn single_flight_under_500_concurrent_callers() {
    let clock = Clock::tokio(T0);
    let script = Script::with_delay(&clock, 900.0, Duration::from_secs(2));
    let engine = Engine::with_source(config(vec![profile("p", spec())]), script.clone(), clock);
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let e = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move { e.token(None, MIN).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().access_token.expose(), "tok-1");
    }
    assert_eq!(script.count(), 1, "exactly one token request");
}

#[tokio::test(start_paused = true)]
async fn proactive_refresh_in_the_jittered_window() {
    let (engine, script, clock) = setup(900.0, spec());
    engine.token(None, MIN).await.unwrap();
    // keep using it so it is not idle; refreshes must come at 50-70 % (450-630 s)
    for _ in 0..40 {
        advance(60.0).await;
        let t = engine.token(None, MIN).await.unwrap();
        assert!(t.expires_at as f64 - clock.now() >= 60.0);
    }
    let calls = script.calls();
    assert!(calls.len() >= 4, "{calls:?}");
    for w in calls.windows(2) {
        let gap = w[1] - w[0];
        assert!((449.0..=631.0).contains(&gap), "refresh after {gap} s");
    }
    // every refresh was in the background: callers never had to wait
    let st = &engine.status(None).unwrap()[0];
    assert_eq!(st.refreshed as usize, calls.len());
}

#[tokio::test(start_paused = true)]
async fn idle_profiles_stop_refreshing_and_wake_on_demand() {
    let s = ProfileSpec {
        idle_timeout: Some(600),
        ..spec()
    };
    let (engine, script, clock) = setup(900.0, s);
    engine.token(None, MIN).await.unwrap();
    advance(5000.0).await;
    // one background refresh may happen within the idle period (at 450-630 s), no more
    assert!(script.count() <= 2, "{:?}", script.calls());
    let before = script.count();
    assert_eq!(engine.status(None).unwrap()[0].state, "idle");
    let t = engine.token(None, MIN).await.unwrap();
    assert!(t.expires_at as f64 - clock.now() >= 60.0);
    assert_eq!(script.count(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn suspend_past_expiry_gets_a_new_token_never_the_old() {
    let (engine, script, clock) = setup(900.0, spec());
    let old = engine.token(None, MIN).await.unwrap();
    // the machine sleeps for an hour: wall time jumps, tokio time does not
    clock.jump(3600.0);
    let new = engine.token(None, Duration::ZERO).await.unwrap();
    assert_ne!(new.access_token, old.access_token);
    assert!(new.expires_at as f64 > clock.now());
    assert_eq!(script.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_while_the_valid_token_is_served() {
    let (engine, script, clock) = setup(900.0, spec());
    let first = engine.token(None, MIN).await.unwrap();
    script.plan(&vec![Outcome::Transient(None); 6]);
    // use the profile through the proactive refresh and the outage
    let mut served_during_outage = 0;
    for _ in 0..70 {
        advance(10.0).await;
        if let Ok(t) = engine.token(None, MIN).await {
            assert!(t.expires_at as f64 - clock.now() >= 60.0);
            if t.access_token == first.access_token && script.count() > 1 {
                served_during_outage += 1;
            }
        }
    }
    assert!(served_during_outage > 0);
    let calls = script.calls();
    assert!(calls.len() >= 8, "{calls:?}");
    // retries after failures 1..6 stay within the growing equal-jitter
    // windows [ceiling / 2, ceiling] (nobody waits: the valid token is served)
    for (i, w) in calls[1..8].windows(2).enumerate() {
        let gap = w[1] - w[0];
        let ceiling = 2f64.powi(i as i32).min(300.0);
        let least = (ceiling / 2.0).max(0.5);
        assert!(
            gap >= least - 0.01 && gap <= ceiling + 0.01,
            "retry {i}: {gap} s"
        );
    }
    let st = &engine.status(None).unwrap()[0];
    assert_eq!(st.failed, 6);
    assert_eq!(st.state, "fresh");
    assert_eq!(st.last_error, None);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let (engine, script, _clock) = setup(900.0, spec());
    script.plan(&[Outcome::Transient(Some(20)), Outcome::Transient(Some(20))]);
    let caller = {
        let e = Arc::clone(&engine);
        tokio::spawn(async move { e.token(None, MIN).await })
    };
    // the caller's wait (10 s) cannot cover a 20 s pause: it gets an answer at
    // once, not a hang, and its demand does not cut the Retry-After short
    let start = tokio::time::Instant::now();
    let r = caller.await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::IssuerUnavailable);
    assert!(e.message.contains("scripted failure"), "{}", e.message);
    assert!(e.message.contains("next attempt in 20 s"), "{}", e.message);
    assert_eq!(script.count(), 1);
    // a caller that waits long enough gets the retries, each after its Retry-After
    engine
        .token_within(None, MIN, Duration::from_secs(60))
        .await
        .unwrap();
    let calls = script.calls();
    for w in calls.windows(2).take(2) {
        assert!(w[1] - w[0] >= 20.0, "{calls:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn unmet_min_ttl_during_outage_is_a_bounded_error_never_a_stale_token() {
    // a 200 s token, 150 s in: 50 s left, less than MIN; the caller's wait
    // (the request timeout + 5 s = 35 s) ends before the token expires, so
    // the valid token can still be checked afterwards whatever the jitter did
    let (engine, script, clock) = setup(200.0, spec());
    engine.token(None, Duration::from_secs(10)).await.unwrap();
    script.plan(&vec![Outcome::Transient(None); 1000]);
    advance(150.0).await;
    let start = tokio::time::Instant::now();
    let e = engine.token(None, MIN).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::IssuerUnavailable, "{}", e.message);
    assert!(start.elapsed() <= Duration::from_secs(36));
    // a smaller min_ttl is still served from the valid token
    let t = engine.token(None, Duration::from_secs(5)).await.unwrap();
    assert!(t.expires_at as f64 - clock.now() >= 5.0);
    advance(60.0).await;
    // expired now: nothing is served
    let e = engine.token(None, Duration::ZERO).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::IssuerUnavailable);
    assert_eq!(engine.status(None).unwrap()[0].state, "backoff");
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_past_expiry_the_background_retry_still_happens() {
    let (engine, script, clock) = setup(100.0, spec());
    engine.token(None, MIN).await.unwrap();
    script.plan(&vec![Outcome::Transient(None); 1000]);
    // the outage outlasts the token: the failure after expiry drops it
    advance(150.0).await;
    let failures = script.count() - 1;
    assert!(failures >= 2, "the refresher kept trying: {failures}");
    assert_eq!(engine.status(None).unwrap()[0].expires_at, None);
    // the issuer recovers; nobody calls, yet the refresher (in use within the
    // idle timeout) gets a token within one backoff step (at most the cap)
    script.clear();
    let mut fresh = false;
    for _ in 0..400 {
        if engine.status(None).unwrap()[0].state == "fresh" {
            fresh = true;
            break;
        }
        advance(1.0).await;
    }
    assert!(
        fresh,
        "no background retry after the outage: {:?}",
        script.calls()
    );
    let served = script.count();
    let t = engine.token(None, MIN).await.unwrap();
    assert!(t.expires_at as f64 - clock.now() >= 60.0);
    assert_eq!(script.count(), served, "served from the new cached token");
}

#[tokio::test(start_paused = true)]
async fn permanent_failure_stops_retrying_until_refresh() {
    let (engine, script, _clock) = setup(900.0, spec());
    script.plan(&[Outcome::Permanent]);
    let e = engine.token(None, MIN).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::CredentialsRejected);
    assert!(e.message.contains("scripted failure 1"), "{}", e.message);
    for _ in 0..50 {
        advance(5.0).await;
        let e = engine.token(None, MIN).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::CredentialsRejected);
    }
    assert_eq!(script.count(), 1, "no hammering after a permanent failure");
    let st = &engine.status(None).unwrap()[0];
    assert_eq!(st.state, "failed");
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("scripted failure 1")
    );
    // an explicit refresh asks again at once
    let t = engine.refresh(None).await.unwrap();
    assert_eq!(t.access_token.expose(), "tok-2");
    assert_eq!(engine.status(None).unwrap()[0].state, "fresh");
}

#[tokio::test(start_paused = true)]
async fn min_ttl_beyond_the_lifetime_is_refused_without_a_loop() {
    let (engine, script, _clock) = setup(100.0, spec());
    let e = engine
        .token(None, Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("min_ttl"), "{}", e.message);
    assert_eq!(script.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn refresh_always_gets_a_new_token() {
    let (engine, script, _clock) = setup(900.0, spec());
    let a = engine.token(None, MIN).await.unwrap();
    let b = engine.refresh(None).await.unwrap();
    assert_ne!(a.access_token, b.access_token);
    let c = engine.token(None, MIN).await.unwrap();
    assert_eq!(b.access_token, c.access_token);
    assert_eq!(script.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn unknown_and_missing_default_profiles() {
    let (engine, _script, _clock) = setup(900.0, spec());
    let e = engine.token(Some("nope"), MIN).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownProfile);
    assert!(e.message.contains("\"nope\"") && e.message.contains("known profiles: p"));
    engine.remove("p").unwrap();
    let e = engine.token(None, MIN).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownProfile);
    assert!(e.message.contains("no default_profile"), "{}", e.message);
    assert_eq!(
        engine.remove("p").unwrap_err().code,
        ErrorCode::UnknownProfile
    );
}

#[tokio::test(start_paused = true)]
async fn a_lone_profile_is_the_default_without_default_profile() {
    // as docs/CONFIG.md says: `default_profile` is optional with one profile
    let clock = Clock::tokio(T0);
    let script = Script::new(&clock, 900.0);
    let engine = Engine::with_source(
        Config {
            default_profile: None,
            profiles: BTreeMap::from([("a".to_string(), profile("a", spec()))]),
            ..Config::default()
        },
        script.clone(),
        clock,
    );
    assert_eq!(engine.default_profile().as_deref(), Some("a"));
    assert_eq!(engine.token(None, MIN).await.unwrap().profile, "a");
    // a second profile makes the choice ambiguous: name one or set a default
    engine.add(profile("b", spec()), false).unwrap();
    assert_eq!(engine.default_profile(), None);
    let e = engine.token(None, MIN).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownProfile);
    assert!(e.message.contains("no default_profile"), "{}", e.message);
    engine.remove("a").unwrap();
    assert_eq!(engine.token(None, MIN).await.unwrap().profile, "b");
}

#[tokio::test(start_paused = true)]
async fn add_replace_and_profile_exists() {
    let (engine, script, _clock) = setup(900.0, spec());
    let e = engine.add(profile("p", spec()), false).unwrap_err();
    assert_eq!(e.code, ErrorCode::ProfileExists);
    engine.token(None, MIN).await.unwrap();
    // identical settings: the token is kept
    engine.add(profile("p", spec()), true).unwrap();
    engine.token(None, MIN).await.unwrap();
    assert_eq!(script.count(), 1);
    let changed = ProfileSpec {
        scope: Some("read".into()),
        ..spec()
    };
    engine.add(profile("p", changed), true).unwrap();
    engine.token(None, MIN).await.unwrap();
    assert_eq!(script.count(), 2);
    engine.add(profile("q", spec()), false).unwrap();
    let names: Vec<String> = engine
        .status(None)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["p", "q"]);
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_unchanged_restarts_changed_and_stops_removed() {
    let clock = Clock::tokio(T0);
    let script = Script::new(&clock, 900.0);
    let engine = Engine::with_source(
        config(vec![profile("a", spec()), profile("b", spec())]),
        script.clone(),
        clock,
    );
    let a1 = engine.token(Some("a"), MIN).await.unwrap();
    engine.token(Some("b"), MIN).await.unwrap();
    engine.add(profile("rt", spec()), false).unwrap();
    let changed_b = profile(
        "b",
        ProfileSpec {
            audience: Some("x".into()),
            ..spec()
        },
    );
    let r = engine
        .reload(config(vec![
            profile("a", spec()),
            changed_b,
            profile("c", spec()),
        ]))
        .unwrap();
    assert_eq!(r.unchanged, ["a", "rt"]);
    assert_eq!(r.changed, ["b"]);
    assert_eq!(r.added, ["c"]);
    assert!(r.removed.is_empty());
    let a2 = engine.token(Some("a"), MIN).await.unwrap();
    assert_eq!(
        a1.access_token, a2.access_token,
        "unchanged keeps its token"
    );
    assert_eq!(engine.status(Some("b")).unwrap()[0].state, "empty");
    let r = engine.reload(config(vec![profile("c", spec())])).unwrap();
    assert_eq!(r.removed.len(), 2);
    assert_eq!(
        engine.token(Some("a"), MIN).await.unwrap_err().code,
        ErrorCode::UnknownProfile
    );
    // the runtime profile survives
    engine.token(Some("rt"), MIN).await.unwrap();
    assert_eq!(engine.default_profile().as_deref(), Some("c"));
}

#[tokio::test(start_paused = true)]
async fn a_slow_refresh_cannot_write_back_after_reload() {
    let clock = Clock::tokio(T0);
    let script = Script::with_delay(&clock, 900.0, Duration::from_secs(20));
    let engine = Engine::with_source(config(vec![profile("p", spec())]), script.clone(), clock);
    let waiter = {
        let e = Arc::clone(&engine);
        tokio::spawn(async move { e.token_within(None, MIN, Duration::from_secs(60)).await })
    };
    advance(5.0).await;
    assert_eq!(engine.status(None).unwrap()[0].state, "refreshing");
    let changed = profile(
        "p",
        ProfileSpec {
            scope: Some("new".into()),
            ..spec()
        },
    );
    let r = engine.reload(config(vec![changed])).unwrap();
    assert_eq!(r.changed, ["p"]);
    // the old request's result is dropped; the waiter moves to the new profile
    let t = waiter.await.unwrap().unwrap();
    assert_eq!(t.access_token.expose(), "tok-2");
    let st = &engine.status(None).unwrap()[0];
    assert_eq!(st.refreshed, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_everything() {
    let (engine, _script, _clock) = setup(900.0, spec());
    engine.token(None, MIN).await.unwrap();
    engine.shutdown().await;
    let e = engine.token(None, MIN).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::ShuttingDown);
    assert!(engine.status(None).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn token_file_is_written_atomically_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let s = ProfileSpec {
        token_file: Some(path.display().to_string()),
        ..spec()
    };
    let (engine, _script, _clock) = setup(900.0, s);
    let t = engine.token(None, MIN).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&path).ok().as_deref() != Some(t.access_token.expose()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "token file not written"
        );
        tokio::task::yield_now().await;
        advance(0.01).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left");
}

#[tokio::test(start_paused = true)]
async fn token_file_failure_shows_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let s = ProfileSpec {
        token_file: Some(path.display().to_string()),
        ..spec()
    };
    let (engine, _script, _clock) = setup(900.0, s);
    // the directory disappears after validation
    drop(dir);
    engine.token(None, MIN).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = engine.status(None).unwrap().remove(0);
        if let Some(e) = st.last_error {
            assert!(e.contains("token_file"), "{e}");
            assert!(!e.contains("tok-1"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error reported");
        advance(0.01).await;
    }
    // serving goes on
    engine.token(None, MIN).await.unwrap();
}

/// Repeats `engine.token` for `profile` until a token comes or `limit` of
/// (paused) time has passed; returns when the token came (Unix seconds).
async fn keep_asking(engine: &Engine, clock: &Clock, limit: f64) -> Option<f64> {
    let end = clock.now() + limit;
    while clock.now() < end {
        if engine.token(None, MIN).await.is_ok() {
            return Some(clock.now());
        }
        advance(0.25).await;
    }
    None
}

#[tokio::test(start_paused = true)]
async fn waiting_callers_retry_at_the_floor_not_the_backoff() {
    let (engine, script, clock) = setup(900.0, spec());
    script.plan(&vec![Outcome::Transient(None); 20]);
    // the first 20 attempts fail; a caller that keeps asking drives an attempt
    // every retry_floor (2 s) instead of waiting out the growing backoff
    let got = keep_asking(&engine, &clock, 120.0).await;
    let calls = script.calls();
    assert_eq!(calls.len(), 21, "{calls:?}");
    check_floor(&calls, 2.0);
    // and the token came with the first attempt after the outage
    let got = got.expect("a token once the issuer answers");
    assert!(got - calls[20] < 0.3, "{got} vs {}", calls[20]);
}

#[tokio::test(start_paused = true)]
async fn retry_floor_is_configurable() {
    let s = ProfileSpec {
        retry_floor: Some(5),
        ..spec()
    };
    let (engine, script, clock) = setup(900.0, s);
    script.plan(&vec![Outcome::Transient(None); 6]);
    keep_asking(&engine, &clock, 120.0).await.expect("a token");
    check_floor(&script.calls(), 5.0);
}

/// The schedule while a caller keeps asking: no gap longer than the floor
/// (plus the caller's polling), and none shorter once the background backoff
/// (whose k-th gap is at least 2^k / 2 s) no longer comes first.
fn check_floor(calls: &[f64], floor: f64) {
    for (k, w) in calls.windows(2).enumerate() {
        let gap = w[1] - w[0];
        assert!(gap <= floor + 0.3, "gap {k}: {gap} s in {calls:?}");
        let background_least = (2f64.powi(k as i32) / 2.0).max(0.5);
        if background_least >= floor {
            assert!(gap >= floor - 0.001, "gap {k}: {gap} s in {calls:?}");
        } else {
            assert!(
                gap >= background_least - 0.001,
                "gap {k}: {gap} s in {calls:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn once_the_issuer_answers_a_caller_that_keeps_asking_gets_a_token_within_the_floor() {
    let (engine, script, clock) = setup(60.0, spec());
    engine.token(None, Duration::from_secs(10)).await.unwrap();
    // a long outage that outlasts the token and drives the background backoff to the cap
    script.plan(&vec![Outcome::Transient(None); 10_000]);
    advance(1800.0).await;
    let background = script.count();
    assert!(
        background < 30,
        "the background retry was not polite: {background}"
    );
    // the issuer comes back; nobody knows yet
    script.clear();
    let back = clock.now();
    let got = keep_asking(&engine, &clock, 30.0).await.expect("a token");
    assert!(
        got - back <= 2.0 + 0.3,
        "{} s after the issuer came back",
        got - back
    );
}

#[tokio::test(start_paused = true)]
async fn without_callers_the_background_retry_keeps_its_backoff() {
    let (engine, script, clock) = setup(60.0, spec());
    engine.token(None, Duration::from_secs(10)).await.unwrap();
    script.plan(&vec![Outcome::Transient(None); 10_000]);
    advance(3000.0).await;
    let calls = script.calls();
    // after the proactive refresh, failures n = 1, 2, ... wait [c/2, c] with
    // c = min(300, 2^(n-1)) each: no demand, so nothing closer
    for (i, w) in calls[1..].windows(2).enumerate() {
        let gap = w[1] - w[0];
        let ceiling = 2f64.powi(i as i32).min(300.0);
        let least = (ceiling / 2.0).max(0.5);
        assert!(
            gap >= least - 0.01 && gap <= ceiling + 0.01,
            "retry {i}: {gap} s"
        );
    }
    // 3000 s hold at most ~11 growing steps and then one every 150-300 s
    assert!(calls.len() <= 1 + 11 + 3000 / 150, "{}", calls.len());
    let _ = clock;
}

#[tokio::test(start_paused = true)]
async fn a_callers_wait_bounds_its_answer() {
    let clock = Clock::tokio(T0);
    let script = Script::with_delay(&clock, 900.0, Duration::from_secs(100));
    let engine = Engine::with_source(config(vec![profile("p", spec())]), script.clone(), clock);
    for wait in [0, 3, 10] {
        let start = tokio::time::Instant::now();
        let e = engine
            .token_within(None, MIN, Duration::from_secs(wait))
            .await
            .unwrap_err();
        let took = start.elapsed().as_secs_f64();
        assert!(
            took >= wait as f64 && took < wait as f64 + 0.1,
            "wait {wait}: answered after {took} s"
        );
        assert_eq!(e.code, ErrorCode::IssuerUnavailable);
        let why = if wait == 0 { "starts now" } else { "in flight" };
        assert!(e.message.contains(why), "{}", e.message);
    }
    // one request in flight all along: waits never start a second one
    assert_eq!(script.count(), 1);
    // the default wait is 10 s
    let start = tokio::time::Instant::now();
    engine.token(None, MIN).await.unwrap_err();
    assert_eq!(start.elapsed().as_secs(), 10);
}

#[tokio::test(start_paused = true)]
async fn wait_zero_fails_fast_but_starts_an_attempt() {
    let (engine, script, _clock) = setup(900.0, spec());
    let e = engine
        .token_within(None, MIN, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::IssuerUnavailable);
    advance(0.1).await;
    assert_eq!(script.count(), 1);
    // the attempt it started is served to the next caller at once
    engine
        .token_within(None, MIN, Duration::ZERO)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn min_ttl_longer_than_the_lifetime_is_answered_at_once() {
    let (engine, script, _clock) = setup(100.0, spec());
    let e = engine
        .token(None, Duration::from_secs(200))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(
        e.message.contains("less than the min_ttl of 200 s"),
        "{}",
        e.message
    );
    assert_eq!(script.count(), 1);
    // the token has shown the lifetime: further callers get the answer at
    // once, without another request to the issuer
    for _ in 0..20 {
        let start = tokio::time::Instant::now();
        let e = engine
            .token(None, Duration::from_secs(200))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(start.elapsed() < Duration::from_millis(10));
    }
    assert_eq!(script.count(), 1);
    // a min_ttl the tokens can meet is served as usual
    engine.token(None, Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_token_that_aged_on_its_way_is_not_taken_for_a_short_lifetime() {
    // 3 s tokens that take 2.5 s to arrive: each has 0.5 s left, less than
    // the min_ttl of 1 s, though the issuer's lifetime (3 s) meets it. That
    // is a slow issuer (or a loaded machine), not an unmeetable min_ttl.
    let clock = Clock::tokio(T0);
    let script = Script::with_delay(&clock, 3.0, Duration::from_millis(2500));
    let engine = Engine::with_source(
        config(vec![profile("p", spec())]),
        script.clone(),
        clock.clone(),
    );
    let e = engine
        .token_within(None, Duration::from_secs(1), Duration::from_secs(6))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::IssuerUnavailable, "{}", e.message);
    assert!(
        e.message.contains("no token with 1 s left"),
        "{}",
        e.message
    );
    // the waiter kept asking: more than the one attempt
    assert!(script.count() >= 2, "{:?}", script.calls());
    // a min_ttl the arriving tokens meet is served
    let t = engine
        .token_within(None, Duration::from_millis(200), Duration::from_secs(6))
        .await
        .unwrap();
    assert!(t.expires_at as f64 - clock.now() >= 0.2);
}
