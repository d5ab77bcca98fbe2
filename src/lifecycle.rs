//! Daemon lifecycle: detaching, the pidfile, signals and orderly shutdown.
//!
//! STUB: to be filled in.
