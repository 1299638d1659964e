//! The body types: the response body (an upstream body streamed through frame
//! by frame, or a small body the proxy made itself) and the request body on
//! its way upstream. Both cut a peer that stops sending for longer than its
//! read timeout. When a response body ends, its upstream connection goes back
//! to the pool, the access-log line is written, and the client connection
//! counts as idle again.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;
use tokio::time::Sleep;
use tracing::warn;

use super::handler::Busy;
use super::upstream::Lease;
use crate::logging::AccessRecord;

/// A deadline between two reads (nginx's `client_body_timeout`,
/// `proxy_read_timeout`): armed when a read has to wait, cleared when it
/// yields something. Time the consumer spends not asking (backpressure from
/// the other side) never counts. Allocates its timer on the first wait only.
struct ReadTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl ReadTimer {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: None,
            waiting: false,
        }
    }

    /// The read returned `Pending`: true once the peer has been silent for the limit.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
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
    fn progressed(&mut self) {
        self.waiting = false;
    }
}

/// Why a response body stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The upstream connection failed mid-body.
    #[error("upstream response body failed")]
    Upstream(#[source] hyper::Error),
    /// The upstream sent nothing for `--upstream-read-timeout`.
    #[error("upstream sent no response body data for {0:?}")]
    Stalled(Duration),
}

/// Body of every response the proxy sends.
pub struct ProxyBody {
    kind: Kind,
    done: Option<Box<Done>>,
    lease: Option<Lease>,
    /// Dropped with the body: the client connection is idle again.
    _busy: Busy,
}

enum Kind {
    Upstream(Incoming, ReadTimer),
    Full(Option<Bytes>),
}

/// What to do when the body ends (only built when access logging is on).
struct Done {
    record: AccessRecord,
    bytes: u64,
}

impl ProxyBody {
    /// Streams an upstream body, cut after `read_timeout` without data;
    /// `lease` is recycled when it ends.
    pub fn upstream(
        body: Incoming,
        read_timeout: Duration,
        lease: Option<Lease>,
        record: Option<AccessRecord>,
        busy: Busy,
    ) -> Self {
        Self {
            kind: Kind::Upstream(body, ReadTimer::new(read_timeout)),
            done: record.map(|record| Box::new(Done { record, bytes: 0 })),
            lease,
            _busy: busy,
        }
    }

    /// A body made by the proxy.
    pub fn full(bytes: impl Into<Bytes>, record: Option<AccessRecord>, busy: Busy) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            done: record.map(|record| Box::new(Done { record, bytes: 0 })),
            lease: None,
            _busy: busy,
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(lease) = self.lease.take()
            && complete
        {
            lease.recycle();
        }
        if let Some(done) = self.done.take() {
            done.record.emit(done.bytes, complete);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = &mut *self;
        let frame = match &mut this.kind {
            Kind::Upstream(body, timer) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    timer.progressed();
                    frame.map(|f| f.map_err(ResponseBodyError::Upstream))
                }
                Poll::Pending if timer.expired(cx) => {
                    let upstream = this.lease.as_ref().map(|l| l.upstream().addr);
                    warn!(upstream = ?upstream, timeout = ?timer.limit,
                          "upstream stopped sending the response body; closing both connections");
                    Some(Err(ResponseBodyError::Stalled(timer.limit)))
                }
                Poll::Pending => return Poll::Pending,
            },
            Kind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
        };
        match &frame {
            Some(Ok(f)) => {
                if let (Some(done), Some(data)) = (&mut this.done, f.data_ref()) {
                    done.bytes += data.len() as u64;
                }
            }
            Some(Err(_)) => this.finish(false),
            None => this.finish(true),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body, _) => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body, _) => body.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper may never poll a body that reports end-of-stream up front
        // (HEAD, 204, Content-Length: 0); such a body still ended cleanly.
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}

/// Why a request body could not be sent upstream: always the client's doing.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client sent nothing for `--client-body-timeout`.
    #[error("client sent no request body data for {0:?}")]
    Stalled(Duration),
    /// The body's framing was malformed, or the client went away mid-body.
    #[error("reading the request body failed")]
    Client(#[source] hyper::Error),
    /// An HTTP/1.1 chunked body ended with a trailer section. hyper's trailer
    /// parser takes a bare LF as part of a line, so a trailer ended by one
    /// swallows the next pipelined request; trailers never reach an upstream
    /// through branchgate anyway (`Trailer` is hop-by-hop), so none is read.
    #[error("HTTP/1.1 request trailers are refused")]
    Trailers,
}

/// How a request body's trip upstream goes, shared between the body and the
/// handler: whether it has been sent in full, and whether the client keeps
/// the upstream waiting.
#[derive(Debug, Default)]
pub struct Sent {
    done: AtomicBool,
    notify: Notify,
    /// The last read of the body is waiting for the client (whose own
    /// timeout applies then).
    waiting_on_client: AtomicBool,
}

impl Sent {
    /// Waits until the body has been sent in full (`true`), or until the
    /// upstream socket has taken no byte (`written` has not moved) for
    /// `limit` while nothing waited for the client (`false`: the upstream
    /// stopped reading, nginx's `proxy_send_timeout`).
    pub async fn wait(&self, limit: Duration, written: &AtomicU64) -> bool {
        loop {
            let before = written.load(Ordering::Relaxed);
            tokio::select! {
                () = self.notify.notified() => return true,
                () = tokio::time::sleep(limit) => {
                    if self.is_done() {
                        return true;
                    }
                    let moved = written.load(Ordering::Relaxed) != before;
                    if !moved && !self.waiting_on_client.load(Ordering::Relaxed) {
                        return false;
                    }
                }
            }
        }
    }

    /// Whether the body has been sent in full.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn mark(&self) {
        self.done.store(true, Ordering::Release);
        // notify_one keeps a permit if nobody waits yet.
        self.notify.notify_one();
    }
}

/// A request body on its way upstream. When it has been sent in full it
/// signals `sent`, which starts the response timeout: time spent uploading
/// never counts against the upstream.
pub struct RequestBody {
    inner: Incoming,
    sent: Option<Arc<Sent>>,
    timer: ReadTimer,
    http1: bool,
}

impl RequestBody {
    /// Wraps `inner` from an HTTP/1 (`http1`) or HTTP/2 client, cut after
    /// `read_timeout` without data; `sent` is signalled once it has ended.
    pub fn new(
        inner: Incoming,
        read_timeout: Duration,
        http1: bool,
        sent: Option<Arc<Sent>>,
    ) -> Self {
        Self {
            inner,
            sent,
            timer: ReadTimer::new(read_timeout),
            http1,
        }
    }

    fn signal_if_done(&mut self, done: bool) {
        if done && let Some(sent) = self.sent.take() {
            sent.mark();
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(sent) = &this.sent {
            sent.waiting_on_client
                .store(polled.is_pending(), Ordering::Relaxed);
        }
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending if this.timer.expired(cx) => {
                return Poll::Ready(Some(Err(RequestBodyError::Stalled(this.timer.limit))));
            }
            Poll::Pending => return Poll::Pending,
        };
        this.timer.progressed();
        let frame = match frame {
            Some(Ok(f)) if this.http1 && f.is_trailers() => Some(Err(RequestBodyError::Trailers)),
            other => other.map(|f| f.map_err(RequestBodyError::Client)),
        };
        if matches!(frame, Some(Err(_))) {
            return Poll::Ready(frame);
        }
        // hyper stops polling once the body says it is at its end, so look
        // at that too, not only at the final `None`.
        let done = frame.is_none() || this.inner.is_end_stream();
        this.signal_if_done(done);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        // hyper may learn the end here and never poll again.
        if end && let Some(sent) = &self.sent {
            sent.mark();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
