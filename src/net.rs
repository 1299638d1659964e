//! Socket helpers below both ends of the flow ([`crate::proxy`] and
//! [`crate::upstream`]). A socket wrapper tells an observer how each write
//! went. The client side learns when a response waits for a
//! client that stopped reading ([`crate::proxy::conns`]); the upstream side
//! counts the bytes an upstream takes ([`crate::upstream`]).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Told the outcome of every write to an [`Observed`] socket.
pub trait WriteObserver {
    /// A write (plain or vectored) returned `poll`.
    fn wrote(&self, poll: &Poll<io::Result<usize>>);
}

/// A socket whose writes are reported to `O`. Reads and flushes pass through:
/// a socket's flush is always ready and says nothing about the peer.
#[derive(Debug)]
pub struct Observed<T, O> {
    inner: T,
    observer: Arc<O>,
}

impl<T, O> Observed<T, O> {
    /// Wraps `inner`, reporting to `observer`.
    pub fn new(inner: T, observer: Arc<O>) -> Self {
        Self { inner, observer }
    }
}

impl<T: AsyncRead + Unpin, O> AsyncRead for Observed<T, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin, O: WriteObserver> AsyncWrite for Observed<T, O> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.observer.wrote(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.observer.wrote(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts the bytes written.
impl WriteObserver for std::sync::atomic::AtomicU64 {
    fn wrote(&self, poll: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = poll {
            self.fetch_add(*n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The most an HTTP/1 connection (client or upstream side) buffers each way.
/// Reads take at most this much at once, so a connection carrying large
/// bodies never grows its buffers past it (hyper's own limit is 400 KiB,
/// reached by doubling on every full read), and no more response body than
/// this is queued for a client that reads slowly. A response head larger
/// than this is refused with 502 (nginx: 4–8 KiB, `proxy_buffer_size`). A
/// request head must fit in it too, or it is answered 431 however it
/// arrives (nginx allows 4 × 8 KiB, `large_client_header_buffers`). 64 KiB, not
/// less: at 32 KiB a 64 KiB body took twice the reads and writes (+26 %
/// instructions per request, benches/callgrind.sh).
pub(crate) const HTTP1_BUFFER: usize = 64 * 1024;

/// A deadline between two reads (nginx's `client_body_timeout`,
/// `proxy_read_timeout`): armed when a read has to wait, cleared when it
/// yields something. Time the consumer spends not asking (backpressure from
/// the other side) never counts. Allocates its timer on the first wait only.
pub(crate) struct ReadTimer {
    /// The longest pause allowed.
    pub(crate) limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl ReadTimer {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: None,
            waiting: false,
        }
    }

    /// The read returned `Pending`: true once the peer has been silent for the limit.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waiting {
            self.waiting = true;
            let deadline = tokio::time::Instant::now() + self.limit;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }

    /// The read produced a frame or ended.
    pub(crate) fn progressed(&mut self) {
        self.waiting = false;
    }
}
