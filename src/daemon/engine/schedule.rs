//! Refresh and backoff arithmetic, kept pure so it can be tested exactly.
//!
//! Times are Unix seconds (`f64`); randomness comes in as `u` in `[0, 1)`.

use std::time::Duration;

/// Longest single sleep: a suspended machine notices the time on wake within this.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
/// First backoff ceiling after a transient failure, in seconds.
pub const BACKOFF_BASE: f64 = 1.0;
/// Largest backoff after transient failures, in seconds.
pub const BACKOFF_CAP: f64 = 300.0;
/// Shortest wait between two background attempts.
pub const MIN_RETRY: f64 = 0.5;
/// Wait after a permanent failure before the issuer is asked again, unless a
/// reload or an explicit refresh comes first.
pub const PERMANENT_RETRY: f64 = 600.0;

/// When a token obtained at `obtained` and expiring at `expires` should be
/// refreshed: at `fraction` (already jittered) of its lifetime, no later than
/// `margin` before expiry, but never before a quarter of the lifetime has
/// passed (a margin larger than the lifetime must not cause a refresh loop).
pub fn refresh_due(obtained: f64, expires: f64, fraction: f64, margin: f64) -> f64 {
    let lifetime = (expires - obtained).max(0.0);
    let by_fraction = obtained + fraction * lifetime;
    let latest = (expires - margin).max(obtained + lifetime / 4.0);
    by_fraction.min(latest)
}

/// A point in `[lo, hi]` chosen by `u`.
pub fn jittered(lo: f64, hi: f64, u: f64) -> f64 {
    lo + (hi - lo) * u.clamp(0.0, 1.0)
}

/// Seconds the background retry waits after the `failures`-th transient
/// failure in a row (1-based): "equal jitter", uniform in `[c/2, c]` with
/// `c = min(cap, base * 2^(failures-1))`, at least [`MIN_RETRY`], and never
/// less than the issuer's `Retry-After`.
///
/// Equal jitter keeps every wait at least half its ceiling, so the spacing
/// grows steadily (0.5–1 s, 1–2 s, 2–4 s, ...) instead of racing to the cap
/// through a run of near-zero draws as full jitter does. Callers that need a
/// token do not wait for it: see [`demand_attempt_at`].
pub fn backoff(failures: u32, u: f64, retry_after: Option<Duration>) -> f64 {
    let exp = failures.saturating_sub(1).min(30);
    let ceiling = (BACKOFF_BASE * f64::from(1u32 << exp)).min(BACKOFF_CAP);
    let d = (ceiling / 2.0 * (1.0 + u.clamp(0.0, 1.0))).max(MIN_RETRY);
    match retry_after {
        Some(r) => d.max(r.as_secs_f64()),
        None => d,
    }
}

/// The earliest time a caller's demand may start an attempt, whatever the
/// background backoff says: `floor` after the last attempt started, and not
/// before the issuer's `Retry-After` ran out.
pub fn demand_attempt_at(
    last_attempt: Option<f64>,
    floor: f64,
    retry_after_until: Option<f64>,
) -> f64 {
    let by_floor = last_attempt.map_or(f64::NEG_INFINITY, |t| t + floor);
    by_floor.max(retry_after_until.unwrap_or(f64::NEG_INFINITY))
}

/// How long to sleep until `until` from `now`, capped at [`MAX_SLEEP`].
pub fn sleep_for(now: f64, until: Option<f64>) -> Duration {
    let cap = MAX_SLEEP.as_secs_f64();
    let secs = until.map_or(cap, |u| (u - now).clamp(0.0, cap));
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn climate_engine_tokens_refresh_at_the_fraction() {
        // 900 s token, margin 120: 60 % of the lifetime wins
        assert_eq!(refresh_due(1000.0, 1900.0, 0.6, 120.0), 1540.0);
    }

    #[test]
    fn margin_caps_the_refresh() {
        // 200 s token, margin 120: expiry - margin = 80 s after issue
        assert_eq!(refresh_due(0.0, 200.0, 0.6, 120.0), 80.0);
    }

    #[test]
    fn margin_longer_than_lifetime_does_not_loop() {
        assert_eq!(refresh_due(0.0, 2.0, 0.6, 120.0), 0.5);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1, 1.0, None), 1.0);
        assert_eq!(backoff(2, 1.0, None), 2.0);
        assert_eq!(backoff(4, 1.0, None), 8.0);
        assert_eq!(backoff(40, 1.0, None), BACKOFF_CAP);
        assert_eq!(backoff(1, 0.5, Some(Duration::from_secs(7))), 7.0);
    }

    #[test]
    fn equal_jitter_keeps_half_the_ceiling() {
        // the smallest draw is half the ceiling, never near zero
        assert_eq!(backoff(1, 0.0, None), MIN_RETRY);
        assert_eq!(backoff(3, 0.0, None), 2.0);
        assert_eq!(backoff(5, 0.0, None), 8.0);
        assert_eq!(backoff(40, 0.0, None), BACKOFF_CAP / 2.0);
        assert_eq!(backoff(3, 0.5, None), 3.0);
        // so ten failures in a row take at least 0.5+1+2+...+256 s / 2 before the cap
        let least: f64 = (1..=10).map(|n| backoff(n, 0.0, None)).sum();
        assert!(least > 300.0, "{least}");
    }

    #[test]
    fn demand_waits_for_the_floor_and_retry_after() {
        assert_eq!(demand_attempt_at(None, 2.0, None), f64::NEG_INFINITY);
        assert_eq!(demand_attempt_at(Some(10.0), 2.0, None), 12.0);
        assert_eq!(demand_attempt_at(Some(10.0), 2.0, Some(40.0)), 40.0);
        assert_eq!(demand_attempt_at(Some(10.0), 2.0, Some(5.0)), 12.0);
    }

    #[test]
    fn sleeps_are_capped() {
        assert_eq!(sleep_for(0.0, Some(1e6)), MAX_SLEEP);
        assert_eq!(sleep_for(0.0, None), MAX_SLEEP);
        assert_eq!(sleep_for(10.0, Some(5.0)), Duration::ZERO);
        assert_eq!(sleep_for(0.0, Some(2.5)), Duration::from_secs_f64(2.5));
    }

    proptest! {
        #[test]
        fn refresh_is_inside_the_lifetime(
            obtained in 0.0f64..1e9,
            lifetime in 1.0f64..1e5,
            frac in 0.01f64..0.99,
            margin in 0.0f64..1e5,
        ) {
            let due = refresh_due(obtained, obtained + lifetime, frac, margin);
            prop_assert!(due >= obtained + lifetime / 4.0 - 1e-6 || due <= obtained + frac * lifetime + 1e-6);
            prop_assert!(due > obtained);
            prop_assert!(due < obtained + lifetime);
            prop_assert!(due <= obtained + frac * lifetime + 1e-6);
        }

        #[test]
        fn backoff_is_bounded(n in 1u32..100, u in 0.0f64..1.0, ra in proptest::option::of(0u64..4000)) {
            let d = backoff(n, u, ra.map(Duration::from_secs));
            prop_assert!(d >= MIN_RETRY);
            prop_assert!(d <= BACKOFF_CAP.max(ra.unwrap_or(0) as f64));
            // at least half the ceiling
            let ceiling = (BACKOFF_BASE * f64::from(1u32 << (n - 1).min(30))).min(BACKOFF_CAP);
            prop_assert!(d >= ceiling / 2.0);
        }
    }
}
