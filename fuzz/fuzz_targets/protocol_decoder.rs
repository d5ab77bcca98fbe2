//! Fuzzes the socket protocol's decoding: the line framing, then each line
//! through the fast `token` path and the full request parser.
//!
//! Invariants checked: nothing panics; framing yields the same lines however
//! the bytes are split and never holds more than its cap; the fast path only
//! accepts what the full parser reads as the same `token` request; every
//! rejection is a `bad_request` whose reply is one line; an accepted request
//! serialises and parses back to itself.

#![no_main]

use std::io::{BufReader, Read};

use ce_auth::daemon::ops;
use ce_auth::protocol::{self, ErrorCode, Request};
use ce_auth::framing::SyncLines;
use libfuzzer_sys::fuzz_target;

/// A small cap so over-long lines are exercised without megabyte inputs.
const CAP: usize = 512;

/// Hands out its input in chunks whose sizes come from the input itself.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    i: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let want = self
            .sizes
            .get(self.i % self.sizes.len().max(1))
            .copied()
            .unwrap_or(7);
        self.i += 1;
        let n = (want as usize % 64 + 1).min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    // the first bytes choose the chunking, the rest is the stream
    let (sizes, data) = input.split_at(input.len().min(8));
    let reader = Chunked { data, sizes, i: 0 };
    let mut lines = SyncLines::with_cap(BufReader::with_capacity(16, reader), CAP);

    // the same stream split naively, to compare with
    let mut expected = data.split(|&b| b == b'\n');
    loop {
        match lines.read_line() {
            Ok(Some(line)) => {
                let want = expected.next().expect("framing made up a line");
                assert_eq!(line, want, "framing changed a line");
                assert!(line.len() < CAP);
                decode(line);
            }
            Ok(None) => {
                // a clean end: the input ended with `\n` (or was empty)
                assert!(data.is_empty() || data.ends_with(b"\n"));
                break;
            }
            Err(_) => {
                // an over-long or unfinished line; either way no further lines
                break;
            }
        }
    }
});

fn decode(line: &[u8]) {
    let full = ops::parse_request(line);
    if let Some((profile, min_ttl)) = ops::fast_token(line) {
        match &full {
            Ok(Request::Token {
                profile: p,
                min_ttl: t,
            }) => {
                assert_eq!(profile, p.as_deref());
                assert_eq!(min_ttl, *t);
            }
            other => panic!("fast path accepted what the full parser gave {other:?}"),
        }
    }
    match full {
        Ok(req) => {
            // floats (refresh_fraction) need not survive a text round trip bit for bit
            if let Request::Add { settings, .. } = &req
                && settings.refresh_fraction.is_some()
            {
                return;
            }
            let text = serde_json::to_vec(&req).expect("a request serialises");
            let again = ops::parse_request(&text).expect("a serialised request parses");
            assert_eq!(again, req);
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            let mut reply = Vec::new();
            protocol::write_err(&mut reply, &e);
            assert_eq!(
                reply.iter().filter(|&&b| b == b'\n').count(),
                1,
                "an error reply is one line"
            );
            assert!(
                !e.message.chars().any(|c| c.is_control()),
                "control characters in an error message: {:?}",
                e.message
            );
        }
    }
}
