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
//! `cargo test --test faults -- --nocapture` prints the figures.

mod faults_support;

use std::sync::Arc;
use std::time::Duration;

use ce_auth::engine::Engine;
use ce_auth::issuer::Fault;
use ce_auth::protocol::ErrorCode;
use faults_support::*;
use serde_json::json;

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

fn engine_for(url: &str, client_id: &str, secret: &str) -> Arc<Engine> {
    Engine::new(config(spec(url, client_id, TIMEOUT), secret))
}

/// A transient outage of about `outage` seconds that starts at a token's
/// first refresh (a tenth into its 6 s life) and, by the time it ends, may
/// have outlived it.
async fn transient_outage(kind: Kind, outage: f64) -> Report {
    let name = kind.name;
    let iss = issuer(6, 0).await;
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
    Report {
        name: name.to_string(),
        outage: span,
        requests: u64::from(n),
        bound,
        recovery,
        recovery_bound: step,
        served: seen.served,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_ridden_out_within_the_backoff_schedule() {
    let scenarios = transient_kinds()
        .into_iter()
        .map(|k| {
            let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Report> + Send>> =
                Box::pin(transient_outage(k.clone(), 3.5));
            (k.name.to_string(), fut)
        })
        .collect();
    let reports = run_all(scenarios).await;
    assert_eq!(reports.len(), transient_kinds().len());
}
