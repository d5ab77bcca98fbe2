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
    // retries after failures 1..6 stay within the capped, growing ceilings
    for (i, w) in calls[1..8].windows(2).enumerate() {
        let gap = w[1] - w[0];
        let ceiling = 2f64.powi(i as i32).min(300.0);
        assert!(gap >= 0.49 && gap <= ceiling + 0.01, "retry {i}: {gap} s");
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
    // the caller's wait (35 s) cannot cover two 20 s pauses: it gets an answer, not a hang
    let r = caller.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::IssuerUnavailable);
    assert!(e.message.contains("scripted failure"), "{}", e.message);
    assert!(e.message.contains("next attempt in"), "{}", e.message);
    let calls = script.calls();
    assert!(calls.len() >= 2);
    assert!(calls[1] - calls[0] >= 20.0, "{calls:?}");
    // later it recovers
    advance(30.0).await;
    engine.token(None, MIN).await.unwrap();
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
        tokio::spawn(async move { e.token(None, MIN).await })
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
