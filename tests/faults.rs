//! Issuer faults, driven by the emulated issuer's fault controls over real
//! HTTP on 127.0.0.1, against the token engine with 3–6 s tokens: 503 storms,
//! 429 with `Retry-After`, timeouts, hangs, resets, malformed or truncated
//! JSON, missing fields, odd `expires_in`, a `token_type` other than bearer,
//! a secret revoked mid-life, and an issuer restart with a new signing key.
//!
//! In each case a watcher keeps asking for tokens and status and checks every
//! answer (no expired token, none past its JWT `exp`, a still-valid token
//! always served, a truthful status); the issuer's request log is checked
//! against the backoff schedule (each gap between failed attempts, and their
//! number for the outage's length, derived from the schedule constants); and
//! service must resume within one backoff step once the issuer is back.
//! Scenarios of one kind run at once, each with its own issuer and engine;
//! one last test does it with the real binaries and `ce-auth status`.
//! `cargo test --test faults -- --nocapture` prints the figures.

use std::sync::Arc;
use std::time::Duration;

use ce_auth::daemon::engine::Engine;
use ce_auth::daemon::engine::schedule::PERMANENT_RETRY;
use ce_auth::protocol::ErrorCode;
use ce_auth::spec::ProfileSpec;
use ce_auth_issuer::{Fault, Issuer};
use serde_json::json;

use crate::util::issuer::{
    CLIENT_ID, CLIENT_SECRET, CLIENT2_ID, CLIENT2_SECRET, builder, jwt_claim, jwt_exp, quiet_port,
    start,
};
use crate::util::load::timed;
use crate::util::process::stderr;
use crate::util::watcher::*;
use crate::util::world::World;
use crate::util::{now, secs};

/// Seconds a request may take before the engine gives up on it.
const TIMEOUT: u64 = 1;

/// A transient fault and what to expect of it.
#[derive(Clone)]
struct Kind {
    name: &'static str,
    fault: Fault,
    /// The `Retry-After` it carries, seconds.
    retry_after: f64,
    /// How long each failing request takes (the engine's timeout for hangs).
    latency: f64,
    /// What `last_error` says.
    error_text: &'static str,
}

fn status_fault(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status {
        status,
        retry_after,
    }
}

fn transient_kinds() -> Vec<Kind> {
    let k = |name, fault, error_text| Kind {
        name,
        fault,
        retry_after: 0.0,
        latency: 0.0,
        error_text,
    };
    let slow = TIMEOUT as f64;
    vec![
        k("503 storm", status_fault(503, None), "503"),
        k("500 storm", status_fault(500, None), "500"),
        Kind {
            retry_after: 2.0,
            ..k("429 with Retry-After: 2", status_fault(429, Some(2)), "429")
        },
        Kind {
            latency: slow,
            ..k(
                "timeout (answer after 2 s)",
                Fault::Delay(Duration::from_secs(2)),
                "timed out",
            )
        },
        Kind {
            latency: slow,
            ..k("hang", Fault::Hang, "timed out")
        },
        k("TCP reset", Fault::Reset, "request failed"),
        k("malformed JSON", Fault::Malformed, "malformed"),
        k("truncated JSON", Fault::Truncated, "malformed"),
        k(
            "no access_token",
            Fault::MissingField("access_token".into()),
            "no access_token",
        ),
        k(
            "expires_in 0",
            Fault::Override(json!({"expires_in": 0})),
            "already expired",
        ),
        k(
            "expires_in -5",
            Fault::Override(json!({"expires_in": -5})),
            "already expired",
        ),
    ]
}

/// An issuer with both clients and `lifetime`-second tokens, on `port` (0: any).
async fn issuer(lifetime: u64, port: u16) -> Issuer {
    start(
        builder()
            .client(CLIENT2_ID, CLIENT2_SECRET)
            .token_lifetime(Duration::from_secs(lifetime))
            .port(port),
    )
    .await
}

fn engine_for(url: &str, client_id: &str, secret: &str) -> Arc<Engine> {
    Engine::new(config(spec(url, client_id, TIMEOUT), secret))
}

/// A transient outage of `outage` seconds that starts at a token's first
/// refresh (a tenth into its `lifetime`) and, by the time it ends, may have
/// outlived it.
async fn transient_outage(kind: Kind, outage: f64, lifetime: u64) -> Report {
    let name = kind.name;
    let iss = issuer(lifetime, 0).await;
    let engine = engine_for(&iss.token_url(), CLIENT_ID, CLIENT_SECRET);
    let first = engine
        .token(None, Duration::from_secs(1))
        .await
        .expect("the first token");
    let failed_before = status(&engine).failed;
    assert_eq!(failed_before, 0, "{name}: a failure before any fault");
    iss.inject(kind.fault.clone(), 1_000_000);
    let watcher = Watcher::start(
        Arc::clone(&engine),
        Expect {
            name: name.to_string(),
            codes: vec![ErrorCode::IssuerUnavailable],
            error_text: kind.error_text.to_string(),
            retry_after: kind.retry_after,
        },
    );
    let start = wait_for("the first failed request", || {
        faulted(&iss.token_requests()).first().copied()
    })
    .await;
    sleep_until(start + outage).await;
    let st = status(&engine);
    assert!(
        st.state == "backoff" || st.state == "refreshing",
        "{name}: status during the outage: {st:?}"
    );
    iss.clear_faults();
    let back = now();
    let recovered = wait_for("a good request after the outage", || {
        clean(&iss.token_requests()).get(1).copied()
    })
    .await;
    wait_for("the new token in the cache", || {
        (status(&engine).refreshed >= 2).then_some(())
    })
    .await;
    let st = status(&engine);
    let seen = watcher.finish().await;
    engine.shutdown().await;

    let log = iss.token_requests();
    let failed = faulted(&log);
    let n = failed.len() as u32;
    let span = failed.last().unwrap() - failed.first().unwrap();
    check_gaps(name, &failed, kind.retry_after, kind.latency);
    let bound = max_requests(span, kind.retry_after, kind.latency);
    assert!(
        u64::from(n) <= bound,
        "{name}: {n} requests in {span:.2} s; the schedule allows {bound}"
    );
    // the engine counted exactly what the issuer saw
    assert_eq!(
        st.failed,
        u64::from(n),
        "{name}: the engine's count of failures against the issuer's log: {st:?}, log {:?}",
        log.iter()
            .map(|r| (secs(r.at) - start, r.fault.is_some()))
            .collect::<Vec<_>>()
    );
    let recovery = recovered - back;
    let step = kind.latency + step_bound(n, kind.retry_after);
    assert!(
        recovery <= step + SLACK,
        "{name}: back at {back:.3}, first good request {recovery:.2} s later; one step is {step:.2} s"
    );
    assert!(
        seen.expiries.contains(&first.expires_at),
        "{name}: the first token was never served during the outage: {seen:?}"
    );
    assert!(
        seen.states.contains("backoff"),
        "{name}: status never said backoff: {seen:?}"
    );
    if start + outage > first.expires_at as f64 + 1.0 {
        // past expiry callers were told the issuer is unavailable (or kept
        // waiting), never handed the expired token
        assert!(
            !seen.errors.is_empty(),
            "{name}: no caller noticed the gap: {seen:?}"
        );
    }
    Report {
        name: name.to_string(),
        outage: back - start,
        span,
        requests: u64::from(n),
        bound,
        recovery,
        recovery_bound: step,
        served: seen.served,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_ridden_out_within_the_backoff_schedule() {
    let _timed = timed();
    // 3.5 s outages inside a 6 s token's life
    let scenarios = transient_kinds()
        .into_iter()
        .map(|k| scenario(k.name, transient_outage(k.clone(), 3.5, 6)))
        .collect();
    let reports = run_all(scenarios).await;
    assert_eq!(reports.len(), transient_kinds().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_past_expiry_never_serve_the_expired_token() {
    let _timed = timed();
    // 4.5 s outages, 3 s tokens: callers meet the gap
    let kinds: Vec<Kind> = transient_kinds()
        .into_iter()
        .filter(|k| ["503 storm", "hang", "TCP reset", "truncated JSON"].contains(&k.name))
        .collect();
    let scenarios = kinds
        .iter()
        .map(|k| {
            let k = Kind {
                name: Box::leak(format!("{} past expiry", k.name).into_boxed_str()),
                ..k.clone()
            };
            scenario(k.name, transient_outage(k.clone(), 4.5, 3))
        })
        .collect();
    run_all(scenarios).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_past_expiry_the_background_retry_still_happens() {
    let _timed = timed();
    // nobody asks for a token once the outage starts: only the background
    // refresher can bring one back, so the outcome does not hang on how long
    // some caller happens to wait
    let iss = issuer(3, 0).await;
    let engine = engine_for(&iss.token_url(), CLIENT_ID, CLIENT_SECRET);
    let first = engine.token(None, Duration::from_secs(1)).await.unwrap();
    iss.inject(status_fault(503, None), 1_000_000);
    let expect = Expect {
        name: "outage past expiry, no callers".into(),
        codes: vec![],
        error_text: "503".into(),
        retry_after: 0.0,
    };
    // the token expires in the outage, and a failure after that drops it
    let st = wait_for("a failed attempt after the token expired", || {
        let t = now();
        let st = status(&engine);
        check_status(&expect.name, &st, t, &expect);
        let failed = faulted(&iss.token_requests());
        let after = failed.iter().any(|&a| a > first.expires_at as f64);
        (after && st.failed == failed.len() as u64 && st.state == "backoff").then_some(st)
    })
    .await;
    assert_eq!(
        st.expires_at, None,
        "an expired token shown as held: {st:?}"
    );
    iss.clear_faults();
    let back = now();
    let st = wait_for("the background retry to bring a token", || {
        let t = now();
        let st = status(&engine);
        check_status(&expect.name, &st, t, &expect);
        (st.refreshed == 2).then_some(st)
    })
    .await;
    let log = iss.token_requests();
    let recovered = clean(&log)[1];
    let n = faulted(&log).len() as u32;
    let step = step_bound(n, 0.0);
    assert!(
        recovered - back <= step + SLACK,
        "recovery took {:.2} s; one step is {step} s",
        recovered - back
    );
    assert_eq!(st.state, "fresh", "{st:?}");
    assert_eq!(st.served, 1, "no caller asked during the outage: {st:?}");
    let t = engine.token(None, Duration::from_secs(1)).await.unwrap();
    assert!(t.expires_at > first.expires_at);
    assert!(t.expires_at as f64 - now() >= 1.0);
    println!(
        "outage past expiry, no callers: {n} failed requests, recovery {:.2} s (step {step} s)",
        recovered - back
    );
    engine.shutdown().await;
}

/// A permanent refusal in the middle of a token's life, then the way back:
/// `fault` sets it up, `recover` undoes it and gets a token.
async fn permanent_fault(
    name: &'static str,
    error_text: &'static str,
    fault: impl FnOnce(&Issuer),
    recover: impl AsyncFnOnce(&Issuer, &Engine),
) -> Report {
    let iss = issuer(4, 0).await;
    let engine = engine_for(&iss.token_url(), CLIENT_ID, CLIENT_SECRET);
    let first = engine.token(None, Duration::from_secs(1)).await.unwrap();
    fault(&iss);
    let watcher = Watcher::start(
        Arc::clone(&engine),
        Expect {
            name: name.to_string(),
            codes: vec![ErrorCode::CredentialsRejected],
            error_text: error_text.to_string(),
            retry_after: 0.0,
        },
    );
    let st = wait_for("the refusal", || {
        let st = status(&engine);
        (st.state == "failed").then_some(st)
    })
    .await;
    // the refused refresh came a tenth into the token's life: the token is
    // still good and still served
    assert!(st.expires_at.is_some(), "{name}: {st:?}");
    let failed_at = secs(iss.token_requests()[1].at);
    let next = st.next_refresh.expect("a next attempt") as f64;
    assert!(
        (next - failed_at - PERMANENT_RETRY).abs() <= 1.5,
        "{name}: next attempt {:.0} s after the refusal, not {PERMANENT_RETRY}",
        next - failed_at
    );
    // watch past the token's expiry
    sleep_until(first.expires_at as f64 + 1.5).await;
    let requests = iss.token_requests().len() as u64 - 1;
    let outage = now() - failed_at;
    let bound = 1 + (outage / PERMANENT_RETRY).floor() as u64;
    assert!(
        requests <= bound,
        "{name}: {requests} requests in {outage:.1} s after a permanent refusal"
    );
    let st = status(&engine);
    assert_eq!(
        (st.state.as_str(), st.expires_at),
        ("failed", None),
        "{name}: {st:?}"
    );
    let seen = watcher.finish().await;
    assert!(
        seen.expiries.contains(&first.expires_at),
        "{name}: {seen:?}"
    );
    assert!(
        seen.errors.contains_key("CredentialsRejected") && !seen.errors.contains_key("wait"),
        "{name}: after expiry callers are refused at once: {seen:?}"
    );
    let back = now();
    recover(&iss, &engine).await;
    let recovery = now() - back;
    let st = status(&engine);
    assert_eq!(st.state, "fresh", "{name}: {st:?}");
    assert_eq!(
        iss.token_requests().len() as u64,
        2 + requests,
        "{name}: one request brings service back"
    );
    engine.shutdown().await;
    Report {
        name: name.to_string(),
        outage,
        span: outage,
        requests,
        bound,
        recovery,
        recovery_bound: 0.0,
        served: seen.served,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_keep_the_valid_token_and_stop_asking() {
    let _timed = timed();
    let mac = scenario(
        "token_type mac (refresh to recover)",
        permanent_fault(
            "token_type mac (refresh to recover)",
            "token_type",
            |iss| iss.inject(Fault::Override(json!({"token_type": "mac"})), 1_000_000),
            async |iss, engine| {
                iss.clear_faults();
                let t = engine.refresh(None).await.expect("refresh after the fix");
                assert!(t.expires_at as f64 - now() >= 1.0);
            },
        ),
    );
    let revoked = scenario(
        "invalid_client mid-life (new secret, reload)",
        permanent_fault(
            "invalid_client mid-life (new secret, reload)",
            "invalid_client",
            |iss| assert!(iss.revoke_client(CLIENT_ID)),
            async |iss, engine| {
                let r = engine
                    .reload(config(
                        spec(&iss.token_url(), CLIENT2_ID, TIMEOUT),
                        CLIENT2_SECRET,
                    ))
                    .expect("reload");
                assert_eq!(r.changed, [PROFILE]);
                let t = engine
                    .token(None, Duration::from_secs(1))
                    .await
                    .expect("a token with the new client");
                assert!(t.expires_at as f64 - now() >= 1.0);
            },
        ),
    );
    run_all(vec![mac, revoked]).await;
}

/// Token answers whose expiry fields are odd but which carry a good token:
/// over two token lifetimes, nothing served outlives its JWT `exp`.
async fn odd_expiry(name: &'static str, fault: Fault) -> Report {
    let iss = issuer(3, 0).await;
    iss.inject(fault, 1_000_000);
    // refreshing at half of each token's life, as a real profile would
    let s = ProfileSpec {
        refresh_fraction: Some(vec![0.5, 0.5]),
        ..spec(&iss.token_url(), CLIENT_ID, TIMEOUT)
    };
    let engine = Engine::new(config(s, CLIENT_SECRET));
    let watcher = Watcher::start(
        Arc::clone(&engine),
        Expect {
            name: name.to_string(),
            codes: vec![],
            error_text: String::new(),
            retry_after: 0.0,
        },
    );
    let started = now();
    wait_for("a first token", || {
        (status(&engine).refreshed >= 1).then_some(())
    })
    .await;
    sleep_until(started + 6.5).await;
    let seen = watcher.finish().await;
    let st = status(&engine);
    engine.shutdown().await;
    assert_eq!(st.failed, 0, "{name}: {st:?}");
    assert!(
        seen.expiries.len() >= 2,
        "{name}: tokens were not renewed in time: {seen:?}"
    );
    assert!(seen.errors.is_empty(), "{name}: {seen:?}");
    Report {
        name: name.to_string(),
        outage: 0.0,
        span: 0.0,
        requests: iss.token_requests().len() as u64,
        bound: 0,
        recovery: 0.0,
        recovery_bound: 0.0,
        served: seen.served,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_expiry_and_type_fields_never_outlive_the_token() {
    let _timed = timed();
    let months = now() + 2.0e7;
    run_all(vec![
        scenario(
            "expires_in absent",
            odd_expiry(
                "expires_in absent",
                Fault::MissingField("expires_in".into()),
            ),
        ),
        scenario(
            "expires_in absurd (1e12 s)",
            odd_expiry(
                "expires_in absurd (1e12 s)",
                Fault::Override(json!({"expires_in": 1e12})),
            ),
        ),
        scenario(
            "expires_in and expires_at months away",
            odd_expiry(
                "expires_in and expires_at months away",
                Fault::Override(json!({"expires_in": 2.0e7, "expires_at": months as i64})),
            ),
        ),
        scenario(
            "no expires_in, no expires_at",
            odd_expiry(
                "no expires_in, no expires_at",
                Fault::Override(json!({"expires_in": null, "expires_at": null})),
            ),
        ),
        scenario(
            "expires_at absent",
            odd_expiry(
                "expires_at absent",
                Fault::MissingField("expires_at".into()),
            ),
        ),
        scenario(
            "token_type Bearer",
            odd_expiry(
                "token_type Bearer",
                Fault::Override(json!({"token_type": "Bearer"})),
            ),
        ),
        scenario(
            "token_type absent",
            odd_expiry(
                "token_type absent",
                Fault::MissingField("token_type".into()),
            ),
        ),
    ])
    .await;
}

/// The issuer stops for `down` seconds and comes back on the same port with
/// a new signing key. The port is a quiet one, so nothing else can take it
/// while the issuer is down.
async fn restart(name: &'static str, lifetime: u64, down: f64) -> Report {
    let port = quiet_port();
    let iss = issuer(lifetime, port).await;
    let url = iss.token_url();
    let engine = engine_for(&url, CLIENT_ID, CLIENT_SECRET);
    let first = engine.token(None, Duration::from_secs(1)).await.unwrap();
    let kid = |t: &str| jwt_claim(t, true, "kid").expect("a kid");
    let first_kid = kid(first.access_token.expose());
    let watcher = Watcher::start(
        Arc::clone(&engine),
        Expect {
            name: name.to_string(),
            codes: vec![ErrorCode::IssuerUnavailable],
            // connection refused, or a pooled connection closed under it
            error_text: url.clone(),
            retry_after: 0.0,
        },
    );
    iss.shutdown().await;
    let down_at = now();
    sleep_until(down_at + down).await;
    let iss = issuer(lifetime, port).await;
    let back = now();
    let st = wait_for("a token from the new issuer", || {
        let st = status(&engine);
        (st.refreshed >= 2).then_some(st)
    })
    .await;
    let recovered = secs(iss.token_requests()[0].at);
    let seen = watcher.finish().await;
    let t = engine.token(None, Duration::from_secs(1)).await.unwrap();
    assert_ne!(kid(t.access_token.expose()), first_kid, "{name}: same key");
    engine.shutdown().await;
    // the issuer was down: the engine's own count is all there is
    let n = st.failed;
    let span = back - down_at;
    let bound = max_requests(span, 0.0, 0.0);
    assert!(
        (1..=bound).contains(&n),
        "{name}: {n} failed attempts in {span:.2} s down; the schedule allows {bound}"
    );
    let step = step_bound(n as u32, 0.0);
    let recovery = recovered - back;
    assert!(
        recovery <= step + SLACK,
        "{name}: recovery {recovery:.2} s; one step is {step} s"
    );
    assert!(
        seen.expiries.contains(&first.expires_at),
        "{name}: {seen:?}"
    );
    Report {
        name: name.to_string(),
        outage: span,
        span,
        requests: n,
        bound,
        recovery,
        recovery_bound: step,
        served: seen.served,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_restart_with_a_new_signing_key() {
    let _timed = timed();
    run_all(vec![
        scenario(
            "restart, 3 s down, 6 s token",
            restart("restart, 3 s down, 6 s token", 6, 3.0),
        ),
        scenario(
            "restart, 4.5 s down, 3 s token",
            restart("restart, 4.5 s down, 3 s token", 3, 4.5),
        ),
    ])
    .await;
}

#[test]
fn the_cli_tells_the_truth_about_an_outage() {
    // the real binaries: a 15-minute token rides out a 503 storm while
    // `ce-auth refresh` reports the outage and `status` shows it
    let _timed = timed();
    let w = World::started();
    let reply: serde_json::Value = serde_json::from_str(&w.ok(&["token", "--json"])).unwrap();
    let token = reply["access_token"].as_str().unwrap().to_string();
    w.issuer.inject(status_fault(503, Some(1)), 1_000_000);
    let out = w.run(&["refresh"], None);
    assert_eq!(
        out.status.code(),
        Some(ce_auth::exit::client::ISSUER_UNAVAILABLE),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("503"));
    assert_eq!(w.token(), token, "the valid token is still served");
    let st: ce_auth::protocol::StatusReply =
        serde_json::from_str(&w.ok(&["status", "--json"])).unwrap();
    let p = &st.profiles[0];
    assert_eq!(p.state, "backoff", "{p:?}");
    assert_eq!(p.expires_at, reply["expires_at"].as_i64(), "{p:?}");
    assert!(p.last_error.as_deref().unwrap_or_default().contains("503"));
    assert_eq!((p.refreshed, p.failed), (1, 1), "{p:?}");
    let table = w.ok(&["status"]);
    assert!(
        table.contains("backoff") && table.contains("503"),
        "{table}"
    );

    w.issuer.clear_faults();
    let out = w.ok(&["refresh"]);
    assert!(out.starts_with("refreshed profile dev"), "{out}");
    let st: ce_auth::protocol::StatusReply =
        serde_json::from_str(&w.ok(&["status", "--json"])).unwrap();
    let p = &st.profiles[0];
    assert_eq!(
        (p.state.as_str(), p.last_error.as_deref()),
        ("fresh", None),
        "{p:?}"
    );
    assert_ne!(w.token(), token);
    assert_eq!(w.issuer.counters().token_requests, 3);
}

/// The default `retry_floor`, seconds: the least time between two
/// attempts that callers' demand may start.
const RETRY_FLOOR: f64 = ce_auth::daemon::config::DEFAULT_RETRY_FLOOR.as_secs_f64();
/// How long a caller may wait beyond its `wait` for an answer.
const ANSWER_SLACK: f64 = 1.0;
/// How soon after the issuer is back a caller that keeps asking gets a token.
const RECOVERY_TARGET: f64 = 10.0;

/// What callers saw during one long outage.
#[derive(Debug, Default)]
struct Callers {
    /// The longest time any call took beyond its wait, seconds.
    worst_over_wait: f64,
    /// Calls answered with a token and with `issuer_unavailable`.
    tokens: u64,
    unavailable: u64,
}

/// Keeps asking for a token with `wait` until `stop`, checking each answer:
/// within `wait` + [`ANSWER_SLACK`], a token with `min_ttl` left or
/// `issuer_unavailable` naming the fault; returns when it was first served
/// after `back` (if `back` is set by then) and what it saw.
async fn caller(
    name: String,
    engine: Arc<Engine>,
    wait: f64,
    error_text: &'static str,
    back: Arc<std::sync::Mutex<Option<f64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Option<f64>, Callers) {
    use std::sync::atomic::Ordering;
    let mut seen = Callers::default();
    let mut recovered = None;
    while !stop.load(Ordering::Acquire) {
        let t0 = now();
        let r = engine
            .token_within(
                None,
                Duration::from_secs_f64(MIN_TTL),
                Duration::from_secs_f64(wait),
            )
            .await;
        let t1 = now();
        let over = t1 - t0 - wait;
        seen.worst_over_wait = seen.worst_over_wait.max(over);
        assert!(
            over <= ANSWER_SLACK,
            "{name}: a call with wait {wait} s took {:.2} s",
            t1 - t0
        );
        match r {
            Ok(t) => {
                assert!(
                    t.expires_at as f64 >= t0 + MIN_TTL,
                    "{name}: served a token expiring at {} at {t0:.3}",
                    t.expires_at
                );
                assert!(t.expires_at <= jwt_exp(t.access_token.expose()));
                seen.tokens += 1;
                let back = *back.lock().unwrap();
                if recovered.is_none() && back.is_some_and(|b| t0 >= b) {
                    recovered = Some(t1);
                }
            }
            Err(e) => {
                assert_eq!(
                    e.code,
                    ErrorCode::IssuerUnavailable,
                    "{name}: {}",
                    e.message
                );
                // the last failure (or the request still running) and what comes next
                let why = [error_text, "still running", "refresh is due"]
                    .iter()
                    .any(|w| e.message.contains(w));
                let next = ["next attempt", "starts now", "in flight for"]
                    .iter()
                    .any(|n| e.message.contains(n));
                assert!(
                    why && next,
                    "{name}: the error does not say why and what comes next: {}",
                    e.message
                );
                seen.unavailable += 1;
            }
        }
        // a caller of a script, not a load generator
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (recovered, seen)
}

/// The most attempts an outage whose failed requests span `span` seconds may
/// see while callers keep asking: the background backoff's (each gap at least
/// the lower end of its equal-jitter step, as docs/CONFIG.md states it) plus
/// one demand attempt per [`RETRY_FLOOR`].
fn max_attempts_with_demand(span: f64, latency: f64) -> u64 {
    use ce_auth::daemon::engine::schedule::backoff;
    let mut background = 1u64;
    let mut t = 0.0;
    for n in 1.. {
        t += backoff(n, 0.0, None) + latency;
        if t > span + EPSILON {
            break;
        }
        background += 1;
    }
    let demand = 1 + ((span + EPSILON) / RETRY_FLOOR).floor() as u64;
    background + demand
}

/// A transient outage of `outage` seconds, longer than a token's life, with
/// callers asking throughout: every call answered within its wait plus a
/// second, never an expired token, the issuer's log within the schedule,
/// and a token within [`RECOVERY_TARGET`] of the issuer's return.
async fn long_outage(kind: Kind, outage: f64) -> Report {
    use std::sync::atomic::{AtomicBool, Ordering};
    let name = kind.name;
    let iss = issuer(3, 0).await;
    let engine = engine_for(&iss.token_url(), CLIENT_ID, CLIENT_SECRET);
    engine
        .token(None, Duration::from_secs(1))
        .await
        .expect("the first token");
    iss.inject(kind.fault.clone(), 1_000_000);
    let back = Arc::new(std::sync::Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = [2.0, 0.0, 5.0]
        .into_iter()
        .map(|wait| {
            tokio::spawn(caller(
                format!("{name}, wait {wait}"),
                Arc::clone(&engine),
                wait,
                kind.error_text,
                Arc::clone(&back),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let start = wait_for("the first failed request", || {
        faulted(&iss.token_requests()).first().copied()
    })
    .await;
    sleep_until(start + outage).await;
    iss.clear_faults();
    let t_back = now();
    *back.lock().unwrap() = Some(t_back);
    // the caller with a 2 s wait is the one that keeps asking
    wait_for("a token after the outage", || {
        (status(&engine).state == "fresh").then_some(())
    })
    .await;
    sleep_until(now() + 3.0).await;
    stop.store(true, Ordering::Release);
    let mut recoveries = Vec::new();
    let mut seen = Callers::default();
    for c in callers {
        let (r, s) = match c.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        recoveries.push(r);
        seen.worst_over_wait = seen.worst_over_wait.max(s.worst_over_wait);
        seen.tokens += s.tokens;
        seen.unavailable += s.unavailable;
    }
    engine.shutdown().await;

    let recovery = recoveries[0].expect("the caller was served after the outage") - t_back;
    assert!(
        recovery <= RECOVERY_TARGET,
        "{name}: a caller that kept asking waited {recovery:.2} s for a token after the issuer came back"
    );
    assert!(
        seen.unavailable > 0,
        "{name}: no caller met the outage: {seen:?}"
    );
    let failed = faulted(&iss.token_requests());
    let span = failed.last().unwrap() - failed.first().unwrap();
    let bound = max_attempts_with_demand(span, kind.latency);
    let n = failed.len() as u64;
    assert!(
        n <= bound,
        "{name}: {n} issuer requests in {span:.1} s; background backoff plus one demand attempt per {RETRY_FLOOR} s allows {bound}"
    );
    for w in failed.windows(2) {
        assert!(
            w[1] - w[0] >= min_gap(0.0, kind.latency) - EPSILON,
            "{name}: two attempts {:.3} s apart",
            w[1] - w[0]
        );
    }
    println!(
        "{name}: worst answer {:.2} s past its wait, {} tokens / {} unavailable",
        seen.worst_over_wait, seen.tokens, seen.unavailable
    );
    Report {
        name: name.to_string(),
        outage: t_back - start,
        span,
        requests: n,
        bound,
        recovery,
        recovery_bound: RECOVERY_TARGET,
        served: seen.tokens,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_outages_answer_callers_within_their_wait_and_recover_within_seconds() {
    let _timed = timed();
    // 12 s outages, 3 s tokens: callers with waits of 0, 2 and 5 s ask throughout
    let kinds: Vec<Kind> = transient_kinds()
        .into_iter()
        .filter(|k| {
            [
                "503 storm",
                "500 storm",
                "timeout (answer after 2 s)",
                "hang",
                "TCP reset",
            ]
            .contains(&k.name)
        })
        .collect();
    let scenarios = kinds
        .iter()
        .map(|k| {
            let k = Kind {
                name: Box::leak(format!("{}, 12 s", k.name).into_boxed_str()),
                ..k.clone()
            };
            scenario(k.name, long_outage(k.clone(), 12.0))
        })
        .collect();
    run_all(scenarios).await;
}
