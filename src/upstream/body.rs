//! The request body on its way upstream: cut when the client stops sending
//! for `--client-body-timeout`, and [`Sent`] tells the forward phase when it
//! has been sent in full (the response timeout starts then) or when the
//! upstream stopped taking it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use crate::net::ReadTimer;
use crate::proxy::body::ClientBody;

/// Why a request body could not be sent upstream: always the client's doing.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client sent nothing for `--client-body-timeout`.
    #[error("client sent no request body data for {0:?}")]
    Stalled(Duration),
    /// The body's framing was malformed, or the client went away mid-body.
    #[error("reading the request body failed")]
    Client(#[source] crate::proxy::body::ClientBodyError),
    /// An HTTP/1.1 chunked body ended with a trailer section. The HTTP/1
    /// connection's decoder refuses one before it yields anything
    /// (`Decoder::request`, as a `Client` error); this is the same rule for
    /// any HTTP/1 body that yields a trailers frame. Trailers never reach
    /// an upstream through branchgate (`Trailer` is hop-by-hop); see
    /// SECURITY.md for why a trailer section is refused, not dropped.
    #[error("HTTP/1.1 request trailers are refused")]
    Trailers,
    /// The body grew past the route's `max_body`.
    #[error("request body is larger than {0} bytes")]
    TooLarge(u64),
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
        // On a second try the first one may have taken the notification.
        if self.is_done() {
            return true;
        }
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
    inner: ClientBody,
    sent: Option<Arc<Sent>>,
    timer: ReadTimer,
    http1: bool,
    /// The route's `max_body` and the bytes read so far, if limited.
    limit: Option<(u64, u64)>,
}

impl RequestBody {
    /// Wraps `inner` from an HTTP/1 (`http1`) or HTTP/2 client, cut after
    /// `read_timeout` without data; `sent` is signalled once it has ended.
    pub fn new(
        inner: ClientBody,
        read_timeout: Duration,
        http1: bool,
        sent: Option<Arc<Sent>>,
    ) -> Self {
        Self {
            inner,
            sent,
            timer: ReadTimer::new(read_timeout),
            http1,
            limit: None,
        }
    }

    /// Cuts the body with [`RequestBodyError::TooLarge`] once it brings
    /// more than `max` bytes.
    pub fn limit(mut self, max: Option<u64>) -> Self {
        self.limit = max.map(|m| (m, 0));
        self
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
        if let (Some((max, read)), Some(Ok(f))) = (&mut this.limit, &frame)
            && let Some(data) = f.data_ref()
        {
            *read += data.len() as u64;
            if *read > *max {
                return Poll::Ready(Some(Err(RequestBodyError::TooLarge(*max))));
            }
        }
        // The sender stops polling once the body says it is at its end, so look
        // at that too, not only at the final `None`.
        let done = frame.is_none() || this.inner.is_end_stream();
        this.signal_if_done(done);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        // The sender may learn the end here and never poll again.
        if end && let Some(sent) = &self.sent {
            sent.mark();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
