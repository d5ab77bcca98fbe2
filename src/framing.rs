//! Framed JSON lines: the size cap, shared by both sides, and the client's synchronous reader.
//!
//! One framing core ([`LineBuf`]) decides where lines end and enforces
//! [`MAX_LINE`]; [`SyncLines`] drives it from a `std::io::BufRead`, and the
//! daemon's async reader (`daemon::server::framing`) from a tokio
//! `AsyncBufRead`. Neither ever holds more than
//! `MAX_LINE - 1` bytes of an unfinished line: an over-long line is rejected as
//! soon as it is known to be too long, not when its end arrives.
//!
//! Lines carry secrets (a `token` reply, an `add` or `login` request), so the
//! core zeroes its buffer before reusing it, before growing it and on drop.

use std::io::BufRead;

use zeroize::Zeroize;

pub use crate::protocol::MAX_LINE;

/// Why no line could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The line is longer than the cap (including its `\n`).
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// The stream ended in the middle of a line.
    #[error("connection closed in the middle of a line")]
    Truncated,
    /// No line started within the idle timeout.
    #[error("no request within the idle timeout")]
    Idle,
    /// A line started but did not end within the line timeout.
    #[error("line not finished within the line timeout")]
    Stalled,
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What one step of the framing core made of the bytes it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// All `n` bytes were taken into the unfinished line; show more.
    Partial(usize),
    /// A line ended; `n` bytes (including the `\n`) were taken.
    Line(usize),
    /// The line exceeds the cap; nothing more should be read from this stream.
    TooLong,
}

/// The framing core: accumulates one line, never beyond its cap.
#[derive(Debug)]
pub struct LineBuf {
    buf: Vec<u8>,
    pub(crate) cap: usize,
    /// The last step completed a line that the caller is still looking at.
    done: bool,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf::new(MAX_LINE)
    }
}

impl LineBuf {
    /// A core that accepts lines of at most `cap` bytes including the `\n`.
    pub fn new(cap: usize) -> Self {
        LineBuf {
            buf: Vec::new(),
            cap: cap.max(1),
            done: false,
        }
    }

    /// Feeds bytes available from the stream; the caller consumes as many as
    /// the returned step says.
    pub fn step(&mut self, avail: &[u8]) -> Step {
        if self.done {
            // the previous line may have been a secret
            self.buf.zeroize();
            self.done = false;
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if self.buf.len() + i + 1 > self.cap {
                    return Step::TooLong;
                }
                self.append(&avail[..i]);
                self.done = true;
                Step::Line(i + 1)
            }
            None => {
                // even if the next byte were the `\n`, the line would be over the cap
                if self.buf.len() + avail.len() + 1 > self.cap {
                    return Step::TooLong;
                }
                self.append(avail);
                Step::Partial(avail.len())
            }
        }
    }

    /// The line completed by the last [`Step::Line`], without its `\n`.
    pub fn line(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes of an unfinished line held so far.
    pub fn pending(&self) -> usize {
        if self.done { 0 } else { self.buf.len() }
    }

    /// Bytes of memory held (never more than the cap).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn append(&mut self, bytes: &[u8]) {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            // grow by doubling but never past the cap, so memory stays bounded by it
            let target = need.max((self.buf.capacity() * 2).min(self.cap)).max(256);
            let target = target.min(self.cap.max(need));
            // move to a new buffer by hand: a reallocation would free the old
            // bytes without zeroing them
            let mut grown = Vec::with_capacity(target);
            grown.extend_from_slice(&self.buf);
            self.buf.zeroize();
            self.buf = grown;
        }
        self.buf.extend_from_slice(bytes);
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// A buffered reader that zeroes bytes as soon as they are consumed and its
/// whole buffer on drop, for streams that carry secrets: the client reading
/// `token` replies, the daemon reading `add` and `login` requests. A
/// `BufReader` would keep the last lines in its buffer until it is freed, and
/// free it without zeroing.
///
/// It is a `std::io::BufRead` over a `Read` and a tokio `AsyncBufRead` over an
/// `AsyncRead`.
pub struct ZeroingReader<R> {
    pub(crate) inner: R,
    pub(crate) buf: Box<[u8]>,
    pub(crate) pos: usize,
    pub(crate) filled: usize,
}

impl<R> ZeroingReader<R> {
    /// A reader with an 8 KiB buffer.
    pub fn new(inner: R) -> Self {
        Self::with_capacity(8 * 1024, inner)
    }

    /// A reader with a buffer of `cap` bytes (at least 1).
    pub fn with_capacity(cap: usize, inner: R) -> Self {
        ZeroingReader {
            inner,
            buf: vec![0; cap.max(1)].into_boxed_slice(),
            pos: 0,
            filled: 0,
        }
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader, mutably (e.g. to write requests on a shared stream).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The bytes read from the stream but not consumed yet.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    pub(crate) fn take(&mut self, amt: usize) {
        let end = (self.pos + amt).min(self.filled);
        self.buf[self.pos..end].zeroize();
        self.pos = end;
    }
}

impl<R: std::io::Read> std::io::Read for ZeroingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: std::io::Read> BufRead for ZeroingReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos >= self.filled {
            self.pos = 0;
            self.filled = 0;
            self.filled = self.inner.read(&mut self.buf)?;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amt: usize) {
        self.take(amt);
    }
}

impl<R> Drop for ZeroingReader<R> {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl<R> std::fmt::Debug for ZeroingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the buffered bytes
        f.debug_struct("ZeroingReader")
            .field("capacity", &self.buf.len())
            .field("buffered", &(self.filled - self.pos))
            .finish_non_exhaustive()
    }
}

/// Reads lines from a synchronous `BufRead` (the client side).
///
/// Timeouts come from the socket (`set_read_timeout`); a timed-out read
/// surfaces as [`FrameError::Io`].
#[derive(Debug)]
pub struct SyncLines<R> {
    inner: R,
    core: LineBuf,
}

impl<R: BufRead> SyncLines<R> {
    /// Lines of at most [`MAX_LINE`] bytes from `inner`.
    pub fn new(inner: R) -> Self {
        Self::with_cap(inner, MAX_LINE)
    }

    /// Lines of at most `cap` bytes from `inner`.
    pub fn with_cap(inner: R, cap: usize) -> Self {
        SyncLines {
            inner,
            core: LineBuf::new(cap),
        }
    }

    /// The next line without its `\n`, or `None` at a clean end of stream.
    pub fn read_line(&mut self) -> Result<Option<&[u8]>, FrameError> {
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if avail.is_empty() {
                return if self.core.pending() == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            match self.core.step(avail) {
                Step::Partial(n) => self.inner.consume(n),
                Step::Line(n) => {
                    self.inner.consume(n);
                    return Ok(Some(self.core.line()));
                }
                Step::TooLong => return Err(FrameError::TooLong(self.core.cap)),
            }
        }
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader, mutably (e.g. to write requests on a shared stream).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    /// A reader that hands out its input in the given chunk sizes.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        i: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.pos >= self.data.len() {
                return Ok(0);
            }
            let want = self.sizes.get(self.i).copied().unwrap_or(7).max(1);
            self.i += 1;
            let n = want.min(out.len()).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn lines_of(
        data: &[u8],
        sizes: Vec<usize>,
        cap: usize,
        bufcap: usize,
    ) -> (Vec<Vec<u8>>, Option<String>, usize) {
        let r = Chunked {
            data: data.to_vec(),
            pos: 0,
            sizes,
            i: 0,
        };
        let mut lines = SyncLines::with_cap(std::io::BufReader::with_capacity(bufcap, r), cap);
        let mut out = Vec::new();
        let mut max_mem = 0;
        loop {
            let res = lines.read_line();
            let res = match res {
                Ok(Some(l)) => {
                    out.push(l.to_vec());
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(e.to_string()),
            };
            max_mem = max_mem.max(lines.core.capacity());
            match res {
                Ok(true) => {}
                Ok(false) => return (out, None, max_mem),
                Err(e) => return (out, Some(e), max_mem),
            }
        }
    }

    #[test]
    fn splits_lines_and_reports_clean_eof() {
        let (lines, err, _) = lines_of(b"{\"a\":1}\n\n{}\n", vec![3, 1, 100], 64, 8);
        assert_eq!(
            lines,
            vec![b"{\"a\":1}".to_vec(), b"".to_vec(), b"{}".to_vec()]
        );
        assert_eq!(err, None);
    }

    #[test]
    fn truncated_final_line_is_an_error() {
        let (lines, err, _) = lines_of(b"{}\n{\"op\"", vec![], 64, 8);
        assert_eq!(lines, vec![b"{}".to_vec()]);
        assert!(err.unwrap().contains("middle of a line"));
    }

    #[test]
    fn zeroing_reader_frames_the_same_and_leaves_nothing_behind() {
        let data = b"{\"access_token\":\"tok-123\"}\n{\"ok\":true}\n".to_vec();
        for bufcap in [1, 5, 64] {
            let r = Chunked {
                data: data.clone(),
                pos: 0,
                sizes: vec![3, 100, 1],
                i: 0,
            };
            let mut lines = SyncLines::new(ZeroingReader::with_capacity(bufcap, r));
            assert_eq!(
                lines.read_line().unwrap().unwrap(),
                b"{\"access_token\":\"tok-123\"}"
            );
            assert_eq!(lines.read_line().unwrap().unwrap(), b"{\"ok\":true}");
            assert!(lines.read_line().unwrap().is_none());
            // every byte was consumed, so every byte was zeroed
            assert!(lines.get_ref().buf.iter().all(|&b| b == 0));
            assert!(!format!("{:?}", lines.get_ref()).contains("tok"));
        }
        // and through Read, unframed
        let mut r = ZeroingReader::with_capacity(4, &b"secret-bytes"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"secret-bytes");
        assert!(r.buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn cap_counts_the_newline() {
        // 3 bytes + \n = 4 = cap: accepted; 4 bytes + \n: rejected
        let (lines, err, _) = lines_of(b"abc\n", vec![], 4, 8);
        assert_eq!(lines, vec![b"abc".to_vec()]);
        assert_eq!(err, None);
        let (lines, err, _) = lines_of(b"abcd\n", vec![], 4, 8);
        assert!(lines.is_empty());
        assert!(err.unwrap().contains("longer than 4"));
    }

    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..80,
        )
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_lines(
            lines in proptest::collection::vec(line_strategy(), 0..12),
            sizes in proptest::collection::vec(1usize..40, 0..60),
            bufcap in 1usize..32,
        ) {
            let mut data = Vec::new();
            for l in &lines {
                data.extend_from_slice(l);
                data.push(b'\n');
            }
            let (got, err, _) = lines_of(&data, sizes, 128, bufcap);
            prop_assert_eq!(err, None);
            prop_assert_eq!(got, lines);
        }

        #[test]
        fn over_long_lines_are_always_rejected_and_memory_stays_capped(
            short in proptest::collection::vec(line_strategy(), 0..4),
            extra in 0usize..300,
            terminated in any::<bool>(),
            sizes in proptest::collection::vec(1usize..200, 0..60),
            bufcap in 1usize..64,
            cap in 2usize..100,
        ) {
            let short: Vec<Vec<u8>> = short.into_iter().filter(|l| l.len() < cap).collect();
            let mut data = Vec::new();
            for l in &short {
                data.extend_from_slice(l);
                data.push(b'\n');
            }
            // a line of cap bytes plus the newline is one over
            data.extend(std::iter::repeat_n(b'x', cap + extra));
            if terminated {
                data.push(b'\n');
            }
            let (got, err, max_mem) = lines_of(&data, sizes, cap, bufcap);
            prop_assert_eq!(got, short);
            let err = err.expect("an over-long line must be an error");
            prop_assert!(err.contains("longer than"), "{}", err);
            prop_assert!(max_mem <= cap, "held {} bytes with cap {}", max_mem, cap);
        }
    }
}
