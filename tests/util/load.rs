//! Tests under load, in a process that runs all the tests at once: a lock
//! that keeps the tests that load the machine apart from each other and from
//! the tests whose assertions are about time, and a probe that measures how
//! promptly the daemon answers while something else goes on.
//!
//! Tests that take neither side run beside both: their waits are bounded by
//! the generous [`DEADLINE`](super::deadline::DEADLINE), not by a latency.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::json;

use super::line::LineClient;

static LOAD: RwLock<()> = RwLock::new(());

/// A test's place beside the others, held for the whole test (across awaits
/// too: it guards no data, only which tests run at the same time).
#[must_use = "the place is given up when this is dropped"]
pub enum Load {
    Heavy {
        _guard: RwLockWriteGuard<'static, ()>,
    },
    Timed {
        _guard: RwLockReadGuard<'static, ()>,
    },
}

/// For a test that loads the machine (floods of connections, hundreds of
/// processes or tasks at once, a load generator): it runs while no other
/// such test and no [`timed`] test runs.
pub fn heavy() -> Load {
    // a test that failed while holding its place poisons nothing the others use
    Load::Heavy {
        _guard: LOAD.write().unwrap_or_else(|e| e.into_inner()),
    }
}

/// For a test that asserts on time (backoff gaps, timeouts, latency): it
/// runs beside others of its kind, which mostly wait, but never while a
/// [`heavy`] test runs.
pub fn timed() -> Load {
    Load::Timed {
        _guard: LOAD.read().unwrap_or_else(|e| e.into_inner()),
    }
}

/// Latency figures of a probe that kept asking while something else went on.
#[derive(Debug, Default, Clone)]
pub struct Latency {
    pub count: usize,
    pub max: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        Latency {
            count: samples.len(),
            max: samples.last().copied().unwrap_or_default(),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// A client that keeps one connection and asks `hello` in a loop until told
/// to stop, timing each answer.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Duration>>>,
}

impl Probe {
    /// Connects now (so the probe holds its place under a connection cap) and starts asking.
    pub fn start(socket: &Path) -> Probe {
        let mut c = LineClient::connect(socket);
        assert_eq!(c.call(&json!({"op": "hello", "version": 1}))["ok"], true);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            // bounded even if nobody stops it
            let end = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                let t = Instant::now();
                let r = c.call(&json!({"op": "hello", "version": 1}));
                samples.push(t.elapsed());
                assert_eq!(r["ok"], true, "{r}");
                // pace the probe so it measures the daemon, not its own load
                std::thread::sleep(Duration::from_millis(2));
            }
            samples
        });
        Probe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops asking and returns the figures.
    pub fn finish(mut self) -> Latency {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.take().unwrap().join().expect("probe thread");
        Latency::of(samples)
    }
}
