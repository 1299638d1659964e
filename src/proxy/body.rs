//! The response body type: an upstream body streamed through frame by frame,
//! or a small body the proxy made itself. When an upstream body ends, its
//! connection goes back to the pool and the access-log line is written.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::Lease;
use crate::logging::AccessRecord;

/// Body of every response the proxy sends.
pub struct ProxyBody {
    kind: Kind,
    done: Option<Box<Done>>,
    lease: Option<Lease>,
}

enum Kind {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// What to do when the body ends (only built when access logging is on).
struct Done {
    record: AccessRecord,
    bytes: u64,
}

impl ProxyBody {
    /// Streams an upstream body; `lease` is recycled when it ends.
    pub fn upstream(body: Incoming, lease: Option<Lease>, record: Option<AccessRecord>) -> Self {
        Self {
            kind: Kind::Upstream(body),
            done: record.map(|record| Box::new(Done { record, bytes: 0 })),
            lease,
        }
    }

    /// A body made by the proxy.
    pub fn full(bytes: impl Into<Bytes>, record: Option<AccessRecord>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            done: record.map(|record| Box::new(Done { record, bytes: 0 })),
            lease: None,
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
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.kind {
            Kind::Upstream(body) => ready!(Pin::new(body).poll_frame(cx)),
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
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
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

/// A request body on its way upstream. When it has been sent in full it
/// signals `sent`, which starts the response timeout: time spent uploading
/// never counts against the upstream.
pub struct RequestBody {
    inner: Incoming,
    sent: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl RequestBody {
    /// Wraps `inner`; `sent` is signalled once it has ended.
    pub fn new(inner: Incoming, sent: Option<std::sync::Arc<tokio::sync::Notify>>) -> Self {
        Self { inner, sent }
    }

    fn signal_if_done(&mut self, done: bool) {
        if done && let Some(sent) = self.sent.take() {
            // notify_one keeps a permit if nobody waits yet.
            sent.notify_one();
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        // hyper stops polling once the body says it is at its end, so look
        // at that too, not only at the final `None`.
        let done = frame.is_none() || this.inner.is_end_stream();
        this.signal_if_done(done);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
