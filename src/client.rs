//! A small synchronous client of the daemon's socket, for ce-auth and other Rust programs.
//!
//! STUB: to be filled in.
