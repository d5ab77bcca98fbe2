//! `ce-auth`: the companion client of ce-authd.
//!
//! STUB: the client work fills this in.

fn main() {}
