//! Property tests for the protocol's framing, through the public API: the
//! async line reader under any chunking, the size cap, and that every request
//! and reply the library writes is exactly one line that reads back as itself,
//! through the daemon's async reader and the client's synchronous one.

use std::pin::Pin;
use std::task::{Context, Poll};

use ce_auth::daemon::ops;
use ce_auth::daemon::server::framing::AsyncLines;
use ce_auth::framing::{FrameError, SyncLines, ZeroingReader};
use ce_auth::protocol::{
    self, ErrorCode, ProfileReply, Request, TokenReply, WireError, parse_reply,
};
use ce_auth::secret::Secret;
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

/// An async reader that hands out its data in the given chunk sizes.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    i: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let want = self.sizes.get(self.i).copied().unwrap_or(5).max(1);
        self.i += 1;
        let n = want.min(buf.remaining()).min(self.data.len() - self.pos);
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Lines read from `data` by [`AsyncLines`] with the given chunking, and how it ended.
fn async_lines(
    rt: &tokio::runtime::Runtime,
    data: Vec<u8>,
    sizes: Vec<usize>,
    bufcap: usize,
    cap: usize,
) -> (Vec<Vec<u8>>, Option<FrameError>) {
    rt.block_on(async {
        let r = Chunked {
            data,
            pos: 0,
            sizes,
            i: 0,
        };
        let mut lines = AsyncLines::with_cap(tokio::io::BufReader::with_capacity(bufcap, r), cap);
        let mut out = Vec::new();
        loop {
            match lines.read_line().await {
                Ok(Some(l)) => out.push(l.to_vec()),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    })
}

fn text() -> impl Strategy<Value = String> {
    // any characters, control characters and newlines included
    proptest::collection::vec(any::<char>(), 0..40).prop_map(|v| v.into_iter().collect())
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u32>(), proptest::option::of(text()))
            .prop_map(|(version, client)| Request::Hello { version, client }),
        (
            proptest::option::of(text()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(profile, min_ttl, wait)| Request::Token {
                profile,
                min_ttl,
                wait
            }),
        (proptest::option::of(text()), proptest::option::of(text()))
            .prop_map(|(profile, after)| Request::Status { profile, after }),
        text().prop_map(|profile| Request::Remove { profile }),
        (
            proptest::option::of(text()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(profile, wait)| Request::Refresh { profile, wait }),
        Just(Request::Reload {}),
        Just(Request::Shutdown {}),
        (proptest::option::of(text()), text(), text()).prop_map(|(token_url, email, pw)| {
            Request::Login {
                token_url,
                email,
                password: Secret::new(pw),
            }
        }),
    ]
}

fn one_line(bytes: &[u8]) -> bool {
    bytes.last() == Some(&b'\n') && bytes.iter().filter(|&&b| b == b'\n').count() == 1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn async_reader_gives_the_same_lines_under_any_chunking(
        lines in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..100),
            0..10),
        sizes in proptest::collection::vec(1usize..50, 0..80),
        bufcap in 1usize..40,
    ) {
        let rt = runtime();
        let mut data = Vec::new();
        for l in &lines {
            data.extend_from_slice(l);
            data.push(b'\n');
        }
        let (got, err) = async_lines(&rt, data, sizes, bufcap, 128);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(got, lines);
    }

    #[test]
    fn async_reader_refuses_over_long_lines_and_unfinished_ones(
        ok in proptest::collection::vec("[a-z{}\":,]{0,30}", 0..5),
        extra in 0usize..200,
        terminated in any::<bool>(),
        sizes in proptest::collection::vec(1usize..300, 0..40),
        bufcap in 1usize..64,
    ) {
        let rt = runtime();
        let cap = 32;
        let mut data = Vec::new();
        for l in &ok {
            data.extend_from_slice(l.as_bytes());
            data.push(b'\n');
        }
        data.extend(std::iter::repeat_n(b'y', cap + extra));
        if terminated {
            data.push(b'\n');
        }
        let (got, err) = async_lines(&rt, data, sizes, bufcap, cap);
        let want: Vec<Vec<u8>> = ok.iter().map(|l| l.as_bytes().to_vec()).collect();
        prop_assert_eq!(got, want);
        prop_assert!(matches!(err, Some(FrameError::TooLong(32))), "{:?}", err);

        // a short final line without its newline is an error, not a request
        let (_, err) = async_lines(&rt, b"{\"op\":\"hello\"".to_vec(), vec![3], bufcap, cap);
        prop_assert!(matches!(err, Some(FrameError::Truncated)), "{:?}", err);
    }

    #[test]
    fn every_request_is_one_line_that_reads_back_as_itself(
        reqs in proptest::collection::vec(request(), 1..8),
        sizes in proptest::collection::vec(1usize..64, 0..100),
        bufcap in 1usize..32,
    ) {
        // pipelined on one stream, split anyhow
        let mut stream = Vec::new();
        for r in &reqs {
            let mut line = serde_json::to_vec(r).unwrap();
            line.push(b'\n');
            prop_assert!(one_line(&line));
            stream.extend_from_slice(&line);
        }
        let rt = runtime();
        let (lines, err) = async_lines(&rt, stream.clone(), sizes, bufcap, protocol::MAX_LINE);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(lines.len(), reqs.len());
        for (line, want) in lines.iter().zip(&reqs) {
            let got = ops::parse_request(line).map_err(|e| e.message);
            prop_assert_eq!(got.as_ref(), Ok(want));
            // the fast path agrees on what it accepts
            if let Some((profile, min_ttl)) = ops::fast_token(line) {
                match want {
                    Request::Token {
                        profile: p,
                        min_ttl: t,
                        wait: None,
                    } => {
                        prop_assert_eq!(profile, p.as_deref());
                        prop_assert_eq!(min_ttl, *t);
                    }
                    other => prop_assert!(false, "fast path took {:?}", other),
                }
            }
        }
        // the client's synchronous reader frames the same stream the same way
        let mut sync = SyncLines::new(std::io::BufReader::with_capacity(bufcap, &stream[..]));
        let mut n = 0;
        while let Some(l) = sync.read_line().unwrap() {
            prop_assert_eq!(l, &lines[n][..]);
            n += 1;
        }
        prop_assert_eq!(n, reqs.len());
        // and so does it through the client's zeroing reader
        let mut zeroing = SyncLines::new(ZeroingReader::with_capacity(bufcap, &stream[..]));
        let mut n = 0;
        while let Some(l) = zeroing.read_line().unwrap() {
            prop_assert_eq!(l, &lines[n][..]);
            n += 1;
        }
        prop_assert_eq!(n, reqs.len());
    }

    #[test]
    fn every_reply_is_one_line_that_reads_back_as_itself(
        message in text(),
        profile in text(),
        token in text(),
        expires_at in any::<i64>(),
    ) {
        let e = WireError::new(ErrorCode::BadRequest, message);
        let mut line = Vec::new();
        protocol::write_err(&mut line, &e);
        prop_assert!(one_line(&line));
        let back = parse_reply::<ProfileReply>(&line[..line.len() - 1]).unwrap_err();
        prop_assert_eq!(back, Some(e));

        let mut out = Vec::new();
        protocol::write_ok(&mut out, &ProfileReply { profile: profile.clone() });
        let t = TokenReply {
            access_token: Secret::new(token.clone()),
            token_type: "bearer".into(),
            expires_at,
            profile: profile.clone(),
        };
        protocol::write_ok(&mut out, &t);
        let mut lines = out.split_inclusive(|&b| b == b'\n');
        let first = lines.next().unwrap();
        let second = lines.next().unwrap();
        prop_assert!(lines.next().is_none());
        prop_assert!(one_line(first) && one_line(second));
        let p: ProfileReply = parse_reply(&first[..first.len() - 1]).unwrap();
        prop_assert_eq!(p.profile, profile);
        let back: TokenReply = parse_reply(&second[..second.len() - 1]).unwrap();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn arrays_and_scalars_are_never_requests(
        items in proptest::collection::vec(
            prop_oneof![Just("\"token\"".to_string()), Just("\"dev\"".to_string()),
                        (0u64..1000).prop_map(|n| n.to_string()), Just("null".to_string())],
            0..4),
        lead in "[ \t]{0,3}",
    ) {
        for line in [
            format!("{lead}[{}]", items.join(",")),
            format!("{lead}{}", items.first().cloned().unwrap_or_else(|| "1".into())),
        ] {
            prop_assert_eq!(ops::fast_token(line.as_bytes()), None);
            let e = ops::parse_request(line.as_bytes()).unwrap_err();
            prop_assert_eq!(e.code, ErrorCode::BadRequest);
        }
    }
}
