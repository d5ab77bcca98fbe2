//! Bounded waiting: every wait in the suite polls until a deadline instead of
//! sleeping for a guessed time, and fails the test, saying what it waited
//! for, once the deadline has passed.

use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// A point in time by which something must have happened.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    /// [`DEADLINE`] from now.
    pub fn standard() -> Deadline {
        Deadline::after(DEADLINE)
    }

    /// `limit` from now.
    pub fn after(limit: Duration) -> Deadline {
        Deadline(Instant::now() + limit)
    }

    /// Time left, for one blocking step of a loop that must finish by the
    /// deadline as a whole; fails the test once it has passed.
    pub fn left(self, what: &str) -> Duration {
        let left = self.0.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out: {what}");
        left
    }

    /// Whether the deadline has passed, for waits that must not fail the
    /// test (clean-up).
    pub fn passed(self) -> bool {
        Instant::now() >= self.0
    }

    /// Polls `f` until it returns `Some`; fails the test at the deadline.
    pub fn wait_for<T>(self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < self.0, "timed out waiting for {what}");
            std::thread::sleep(POLL);
        }
    }

    /// [`Deadline::wait_for`] for async tests: sleeps on the runtime's timer,
    /// so the runtime's other tasks go on meanwhile.
    pub async fn wait_for_async<T>(self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < self.0, "timed out waiting for {what}");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Polls `f` until it returns `Some`, for at most [`DEADLINE`].
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    Deadline::standard().wait_for(what, f)
}
