//! The daemon's half of the framing: lines read from a tokio stream, with an
//! idle timeout and a line timeout, through the shared [`LineBuf`] core.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::time::{Instant, Sleep};

use crate::framing::{FrameError, LineBuf, MAX_LINE, Step, ZeroingReader};

impl<R: tokio::io::AsyncRead + Unpin> ZeroingReader<R> {
    fn poll_fill(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos < self.filled {
            return std::task::Poll::Ready(Ok(()));
        }
        self.pos = 0;
        self.filled = 0;
        let mut rb = tokio::io::ReadBuf::new(&mut self.buf);
        std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
        self.filled = rb.filled().len();
        std::task::Poll::Ready(Ok(()))
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ZeroingReader<R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_fill(cx))?;
        let n = out.remaining().min(this.filled - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.take(n);
        std::task::Poll::Ready(Ok(()))
    }
}

impl<R: tokio::io::AsyncRead + Unpin> AsyncBufRead for ZeroingReader<R> {
    fn poll_fill_buf(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_fill(cx))?;
        std::task::Poll::Ready(Ok(&this.buf[this.pos..this.filled]))
    }

    fn consume(self: std::pin::Pin<&mut Self>, amt: usize) {
        self.get_mut().take(amt);
    }
}

/// Reads lines from a tokio `AsyncBufRead` (the server side), with an idle
/// timeout before a line starts and a shorter one to finish a started line.
#[derive(Debug)]
pub struct AsyncLines<R> {
    inner: R,
    core: LineBuf,
}

impl<R: AsyncBufRead + Unpin> AsyncLines<R> {
    /// Lines of at most [`MAX_LINE`] bytes from `inner`.
    pub fn new(inner: R) -> Self {
        Self::with_cap(inner, MAX_LINE)
    }

    /// Lines of at most `cap` bytes from `inner`.
    pub fn with_cap(inner: R, cap: usize) -> Self {
        AsyncLines {
            inner,
            core: LineBuf::new(cap),
        }
    }

    /// The next line without its `\n`, or `None` at a clean end of stream, with no timeout.
    pub async fn read_line(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let far = Duration::from_secs(u32::MAX as u64);
        self.read_line_timed(far, far).await
    }

    /// The next line: waits at most `idle` for a line to start and then at
    /// most `line` for it to end.
    pub async fn read_line_timed(
        &mut self,
        idle: Duration,
        line: Duration,
    ) -> Result<Option<&[u8]>, FrameError> {
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        self.read_line_with_timer(&mut timer, idle, line).await
    }

    /// [`AsyncLines::read_line_timed`] on the caller's `timer`, kept from one
    /// line to the next. The timer is moved only when a deadline comes
    /// earlier than it, or when it fires before the deadline, so a busy
    /// connection re-arms it about once per `idle` rather than once per line.
    pub async fn read_line_with_timer(
        &mut self,
        timer: &mut Pin<&mut Sleep>,
        idle: Duration,
        line: Duration,
    ) -> Result<Option<&[u8]>, FrameError> {
        let now = Instant::now();
        let idle_deadline = now + idle;
        let mut line_deadline = if self.core.pending() > 0 {
            Some(now + line)
        } else {
            None
        };
        loop {
            let deadline = line_deadline.unwrap_or(idle_deadline);
            if timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            let arrived = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_fill_buf(cx) {
                    return Poll::Ready(r.map(|_| true));
                }
                loop {
                    std::task::ready!(timer.as_mut().poll(cx));
                    if Instant::now() >= deadline {
                        return Poll::Ready(Ok(false));
                    }
                    // armed for an earlier deadline than this one
                    timer.as_mut().reset(deadline);
                }
            })
            .await?;
            if !arrived {
                return Err(if line_deadline.is_some() {
                    FrameError::Stalled
                } else {
                    FrameError::Idle
                });
            }
            // ready now: the bytes (or the end of the stream) are buffered
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                return if self.core.pending() == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            match self.core.step(avail) {
                Step::Partial(n) => {
                    self.inner.consume(n);
                    if line_deadline.is_none() {
                        line_deadline = Some(Instant::now() + line);
                    }
                }
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

    /// The underlying reader, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<S> AsyncLines<ZeroingReader<S>> {
    /// Whether a complete line is already buffered, so it can be answered
    /// without waiting: replies to pipelined requests are flushed once per batch.
    pub fn has_buffered_line(&self) -> bool {
        self.inner.buffer().contains(&b'\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zeroing_reader_serves_async_lines_and_zeroes_them() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64);
        let mut lines = AsyncLines::new(ZeroingReader::with_capacity(16, server));
        client
            .write_all(b"{\"op\":\"add\",\"secret\":\"s3cr3t\"}\n{\"op\":\"status\"}\n")
            .await
            .unwrap();
        drop(client);
        assert_eq!(
            lines.read_line().await.unwrap().unwrap(),
            b"{\"op\":\"add\",\"secret\":\"s3cr3t\"}"
        );
        assert_eq!(
            lines.read_line().await.unwrap().unwrap(),
            b"{\"op\":\"status\"}"
        );
        assert!(!lines.has_buffered_line());
        assert!(lines.read_line().await.unwrap().is_none());
        assert!(lines.get_ref().buf.iter().all(|&b| b == 0));
    }

    #[tokio::test]
    async fn async_reader_times_out_idle_and_stalled_lines() {
        tokio::time::pause();
        let (client, server) = tokio::io::duplex(1024);
        let mut lines = AsyncLines::new(tokio::io::BufReader::new(server));
        let idle = Duration::from_secs(60);
        let line = Duration::from_secs(10);
        let err = lines.read_line_timed(idle, line).await.unwrap_err();
        assert!(matches!(err, FrameError::Idle), "{err}");

        use tokio::io::AsyncWriteExt;
        let mut client = client;
        client.write_all(b"{\"op\":").await.unwrap();
        let started = Instant::now();
        let err = lines.read_line_timed(idle, line).await.unwrap_err();
        assert!(matches!(err, FrameError::Stalled), "{err}");
        // the started line, not the idle timeout, bounded the wait
        assert!(started.elapsed() < idle);
        client.write_all(b"\"hello\"}\n").await.unwrap();
        let got = lines.read_line_timed(idle, line).await.unwrap().unwrap();
        assert_eq!(got, b"{\"op\":\"hello\"}");
    }
}
