//! Framed JSON lines: the size cap and read timeouts, for the async server and the sync client.
//!
//! STUB: to be filled in.
