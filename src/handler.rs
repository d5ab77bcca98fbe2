//! One function per socket op: turns a request into a reply.
//!
//! STUB: to be filled in.
