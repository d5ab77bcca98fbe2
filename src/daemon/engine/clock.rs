//! Wall-clock time for expiry and scheduling, replaceable in tests.
//!
//! Token expiry is wall-clock (Unix seconds): a laptop that sleeps through a
//! token's expiry must notice on wake. Sleeping itself uses tokio timers, so
//! the test clock derives wall time from tokio's (pausable) clock and can be
//! made to jump, as after a suspend or a clock change.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in Unix seconds. Cheap to clone.
#[derive(Clone)]
pub struct Clock(Arc<Kind>);

enum Kind {
    System,
    Tokio {
        base: f64,
        start: tokio::time::Instant,
        /// Extra wall time in milliseconds, from [`Clock::jump`].
        jumped_ms: AtomicI64,
    },
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Kind::System))
    }

    /// A clock that starts at `base` (Unix seconds) and advances with tokio's
    /// clock, so `tokio::time::pause()` and `advance()` drive it.
    pub fn tokio(base: f64) -> Clock {
        Clock(Arc::new(Kind::Tokio {
            base,
            start: tokio::time::Instant::now(),
            jumped_ms: AtomicI64::new(0),
        }))
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> f64 {
        match &*self.0 {
            Kind::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                // a clock before 1970 is broken; treating it as 0 makes tokens look expired, which is safe
                .unwrap_or(0.0),
            Kind::Tokio {
                base,
                start,
                jumped_ms,
            } => {
                base + start.elapsed().as_secs_f64()
                    + jumped_ms.load(Ordering::Relaxed) as f64 / 1000.0
            }
        }
    }

    /// Moves a test clock's wall time by `secs` without tokio time passing
    /// (a suspend/resume or a clock change). No effect on the system clock.
    pub fn jump(&self, secs: f64) {
        if let Kind::Tokio { jumped_ms, .. } = &*self.0 {
            jumped_ms.fetch_add((secs * 1000.0) as i64, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Kind::System => f.write_str("Clock::system"),
            Kind::Tokio { .. } => f.write_str("Clock::tokio"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time_and_jumps() {
        let c = Clock::tokio(1000.0);
        assert_eq!(c.now(), 1000.0);
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert!((c.now() - 1005.0).abs() < 1e-6);
        c.jump(100.0);
        assert!((c.now() - 1105.0).abs() < 1e-6);
    }

    #[test]
    fn system_clock_is_recent() {
        assert!(Clock::system().now() > 1.6e9);
    }
}
