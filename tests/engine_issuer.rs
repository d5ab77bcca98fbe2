//! The engine against the emulated issuer over real HTTP on 127.0.0.1:
//! single-flight under load, short-lived tokens kept fresh, and polite
//! behaviour under 503 storms, 429 + Retry-After and rejected credentials.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ce_auth::daemon::config::{Config, Profile, ProfileSpec};
use ce_auth::daemon::engine::Engine;
use ce_auth::protocol::ErrorCode;
use ce_auth::secret::Secret;
use ce_auth_issuer::{Fault, Issuer};

use crate::util::deadline::Deadline;
use crate::util::issuer::{CLIENT_ID, CLIENT_SECRET, EMAIL, PASSWORD, builder, start};
use crate::util::load::{heavy, timed};
use crate::util::now;

async fn issuer(lifetime: u64) -> Issuer {
    start(
        builder()
            .token_lifetime(Duration::from_secs(lifetime))
            .test_controls(true),
    )
    .await
}

fn spec(iss: &Issuer) -> ProfileSpec {
    ProfileSpec {
        token_url: Some(iss.token_url()),
        client_id: Some(CLIENT_ID.into()),
        timeout: Some(3),
        connect_timeout: Some(2),
        ..ProfileSpec::default()
    }
}

fn engine_with(profiles: Vec<(&str, ProfileSpec, &str)>) -> Arc<Engine> {
    let mut map = BTreeMap::new();
    let mut default = None;
    for (name, spec, secret) in profiles {
        default.get_or_insert_with(|| name.to_string());
        let p = Profile::from_spec(name, spec, Some(Secret::new(secret.into()))).unwrap();
        map.insert(name.to_string(), p);
    }
    Engine::new(Config {
        default_profile: default,
        profiles: map,
        ..Config::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_callers_make_one_request() {
    let _heavy = heavy();
    let iss = issuer(900).await;
    // a slow issuer widens the window in which callers pile up
    iss.inject(Fault::Delay(Duration::from_millis(500)), 1);
    let engine = engine_with(vec![("p", spec(&iss), CLIENT_SECRET)]);
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let e = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move {
            e.token(None, Duration::from_secs(60)).await
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap().unwrap().access_token.expose().to_string());
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(iss.counters().token_requests, 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_and_method_through_the_engine_and_whoami() {
    let _timed = timed();
    let iss = issuer(900).await;
    let with = |m: &str| ProfileSpec {
        auth_method: Some(m.parse().unwrap()),
        ..spec(&iss)
    };
    let pw = ProfileSpec {
        token_url: Some(iss.token_url()),
        grant: Some("password".parse().unwrap()),
        username: Some(EMAIL.into()),
        ..ProfileSpec::default()
    };
    let engine = engine_with(vec![
        ("basic", with("client_secret_basic"), CLIENT_SECRET),
        ("post", with("client_secret_post"), CLIENT_SECRET),
        ("jwt", with("client_secret_jwt"), CLIENT_SECRET),
        ("pw", pw, PASSWORD),
    ]);
    for name in ["basic", "post", "jwt", "pw"] {
        let t = engine
            .token(Some(name), Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.profile, name);
        assert!(t.expires_at as f64 - now() >= 60.0);
        let me = engine.whoami(Some(name)).await.unwrap();
        assert_eq!(me.profile, name);
        assert!(me.user.get("id").is_some(), "{}", me.user);
    }
    let st = engine.status(None).unwrap();
    assert!(st.iter().all(|s| s.state == "fresh" && s.refreshed == 1));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_creates_a_client_that_then_works() {
    let _timed = timed();
    let iss = issuer(900).await;
    let engine = engine_with(vec![]);
    let reply = engine
        .login(Some(&iss.token_url()), EMAIL, &Secret::new(PASSWORD.into()))
        .await
        .unwrap();
    assert!(!reply.client_id.is_empty());
    let p = Profile::from_spec(
        "new",
        ProfileSpec {
            client_id: Some(reply.client_id.clone()),
            ..spec(&iss)
        },
        Some(reply.client_secret.clone()),
    )
    .unwrap();
    engine.add(p, false).unwrap();
    assert_eq!(engine.default_profile().as_deref(), Some("new"));
    engine.token(None, Duration::from_secs(60)).await.unwrap();
    let e = engine
        .login(
            Some(&iss.token_url()),
            EMAIL,
            &Secret::new("wrong-password".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::CredentialsRejected, "{}", e.message);
    assert!(!e.message.contains("wrong-password"));
    let e = engine
        .login(
            Some("http://example.com/token"),
            EMAIL,
            &Secret::new("x".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ConfigError);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_tokens_stay_fresh_for_every_caller() {
    let _timed = timed();
    // 4 s tokens for ~16 s, callers asking for 1 s of validity
    let iss = issuer(4).await;
    let s = ProfileSpec {
        refresh_margin: Some(1),
        ..spec(&iss)
    };
    let engine = engine_with(vec![("p", s, CLIENT_SECRET)]);
    let min_ttl = Duration::from_secs(1);
    let started = Instant::now();
    let mut served = 0u64;
    let mut callers = Vec::new();
    for _ in 0..4 {
        let e = Arc::clone(&engine);
        callers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(16) {
                let t = e.token(None, min_ttl).await.unwrap();
                let left = t.expires_at as f64 - now();
                assert!(left >= 1.0, "served a token with {left:.3} s left");
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        }));
    }
    for c in callers {
        served += c.await.unwrap();
    }
    let issued = iss.counters().tokens_issued;
    let st = &engine.status(None).unwrap()[0];
    assert_eq!(st.refreshed, issued);
    // the effective lifetime is 3-4 s (whole seconds); refreshes land at
    // 50-70 % of it, so every 1.5-2.8 s: about 6-11 over 16 s
    eprintln!("4 s tokens over 16 s: {served} served, {issued} issued, none below min_ttl");
    assert!((5..=13).contains(&issued), "{issued} tokens in 16 s");
    assert!(served > 100, "{served}");
    assert_eq!(iss.counters().token_requests, issued, "no failed requests");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_storm_is_ridden_out_on_the_valid_token() {
    let _timed = timed();
    // 8 s tokens refreshed at a quarter of their life, so the storm starts early
    let iss = issuer(8).await;
    let s = ProfileSpec {
        refresh_fraction: Some(vec![0.25, 0.25]),
        refresh_margin: Some(0),
        ..spec(&iss)
    };
    let engine = engine_with(vec![("p", s, CLIENT_SECRET)]);
    let first = engine.token(None, Duration::from_secs(1)).await.unwrap();
    iss.inject(
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        2,
    );
    let deadline = Deadline::after(Duration::from_secs(12));
    let mut served_old_during_storm = 0;
    loop {
        let t = engine.token(None, Duration::from_secs(1)).await.unwrap();
        assert!(t.expires_at as f64 - now() >= 1.0);
        let c = iss.counters();
        if t.access_token == first.access_token && c.token_requests > 1 {
            served_old_during_storm += 1;
        }
        if c.tokens_issued >= 2 {
            break;
        }
        assert!(!deadline.passed(), "no recovery: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_old_during_storm > 0);
    // 1 first token + 2 refused + 1 success: no retry storm of our own
    assert_eq!(iss.counters().token_requests, 4);
    assert_eq!(engine.status(None).unwrap()[0].failed, 2);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_is_honoured() {
    let _timed = timed();
    let iss = issuer(900).await;
    iss.inject(
        Fault::Status {
            status: 429,
            retry_after: Some(2),
        },
        1,
    );
    let engine = engine_with(vec![("p", spec(&iss), CLIENT_SECRET)]);
    let start = Instant::now();
    let t = engine.token(None, Duration::from_secs(60)).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(t.expires_at as f64 - now() >= 60.0);
    let c = iss.counters();
    assert_eq!((c.token_requests, c.tokens_issued), (2, 1));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_fails_without_hammering() {
    let _timed = timed();
    let iss = issuer(900).await;
    let engine = engine_with(vec![("p", spec(&iss), "not-the-secret")]);
    for _ in 0..20 {
        let e = engine
            .token(None, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::CredentialsRejected);
        assert!(e.message.contains("invalid_client"), "{}", e.message);
        assert!(!e.message.contains("not-the-secret"));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(iss.counters().token_requests, 1);
    let st = &engine.status(None).unwrap()[0];
    assert_eq!(st.state, "failed");
    assert!(st.last_error.as_deref().unwrap().contains("invalid_client"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_issuer_gives_a_bounded_error() {
    let _timed = timed();
    let iss = issuer(900).await;
    iss.inject(Fault::Hang, 100);
    let s = ProfileSpec {
        timeout: Some(1),
        ..spec(&iss)
    };
    let engine = engine_with(vec![("p", s, CLIENT_SECRET)]);
    // the caller's wait bounds the answer, whatever the request timeout (it
    // comes sooner when no further attempt can start within the wait)
    let start = Instant::now();
    let e = engine
        .token_within(None, Duration::from_secs(60), Duration::from_secs(3))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::IssuerUnavailable, "{}", e.message);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        e.message.contains("next attempt in") || e.message.contains("in flight"),
        "{}",
        e.message
    );
    // one attempt per retry_floor (2 s) at most while the caller waits
    assert!(iss.counters().token_requests <= 3, "{:?}", iss.counters());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_reply_line_is_the_serialised_reply_byte_for_byte() {
    let _timed = timed();
    let iss = issuer(900).await;
    let engine = engine_with(vec![
        ("first", spec(&iss), CLIENT_SECRET),
        ("second.one_2", spec(&iss), CLIENT_SECRET),
    ]);
    let mut out = Vec::new();
    assert!(
        !engine.cached_token_line(None, Duration::from_secs(60), &mut out),
        "no token yet"
    );
    assert!(out.is_empty());
    for name in [None, Some("second.one_2")] {
        let reply = engine.token(name, Duration::from_secs(60)).await.unwrap();
        let mut want = Vec::new();
        ce_auth::protocol::write_ok(&mut want, &reply);
        let mut got = b"earlier bytes stay;".to_vec();
        assert!(engine.cached_token_line(name, Duration::from_secs(60), &mut got));
        assert_eq!(
            String::from_utf8_lossy(&got[19..]),
            String::from_utf8_lossy(&want),
            "{name:?}"
        );
        assert_eq!(&got[..19], b"earlier bytes stay;");
        // not enough left for this min_ttl: nothing is written
        let mut none = Vec::new();
        assert!(!engine.cached_token_line(name, Duration::from_secs(3600), &mut none));
        assert!(none.is_empty());
    }
    assert!(!engine.cached_token_line(Some("nobody"), Duration::ZERO, &mut out));
    assert!(out.is_empty());
    engine.shutdown().await;
}
