//! Process hardening: not dumpable, no core files, memory locking limits.
//!
//! STUB: to be filled in.
