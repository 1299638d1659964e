//! The response body: an upstream body streamed through frame by frame, or
//! a small body the proxy made itself. Three things happen when it ends, each
//! on its own: the upstream body gives its connection back to the pool (only
//! after a clean end), the request record is completed and handed to the
//! sink, and the client connection counts as idle again.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tracing::warn;

use super::h1::serve::BodyReader;
use super::handler::Busy;
use super::record::RequestRecord;
use crate::net::ReadTimer;
use crate::upstream::{ResponseBody, UpstreamError};

/// Why a response body stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The upstream connection failed mid-body.
    #[error("upstream response body failed")]
    Upstream(#[source] UpstreamError),
    /// The upstream sent nothing for `--upstream-read-timeout`.
    #[error("upstream sent no response body data for {0:?}")]
    Stalled(Duration),
}

/// A client's request body: read by branchgate's own HTTP/1 connection,
/// or by hyper's h2 connection.
#[derive(Debug)]
pub enum ClientBody {
    /// HTTP/1 without a body.
    Empty,
    /// An HTTP/1 body, read from its connection's buffer.
    H1(BodyReader),
    /// An h2 stream's body.
    H2(hyper::body::Incoming),
}

/// Why a client's request body could not be read.
pub type ClientBodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::H1(body) => body.is_end_stream(),
            Self::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::H1(body) => body.size_hint(),
            Self::H2(body) => body.size_hint(),
        }
    }
}

/// Body of every response the proxy sends.
pub struct ProxyBody {
    kind: Kind,
    /// Taken when the body ends, completed and handed to the sink.
    record: Option<RequestRecord>,
    bytes: u64,
    /// Dropped with the body: the client connection is idle again.
    busy: Busy,
}

enum Kind {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
    /// The admin side's answer on `--dashboard-host` (event streams included).
    Admin(crate::admin::Body),
}

/// An upstream's response body, cut after its read timeout without data.
/// Its connection goes back to the pool when the body ended cleanly and is
/// closed otherwise (see [`ResponseBody`]); none after a `101`.
struct UpstreamBody {
    body: Option<ResponseBody>,
    timer: ReadTimer,
}

impl UpstreamBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer.progressed();
                Poll::Ready(frame.map(|f| f.map_err(ResponseBodyError::Upstream)))
            }
            Poll::Pending if self.timer.expired(cx) => {
                let upstream = body.upstream().map(|u| u.addr);
                warn!(upstream = ?upstream, timeout = ?self.timer.limit,
                      "upstream stopped sending the response body; closing both connections");
                // Dropped unfinished: its connection closes now.
                self.body = None;
                Poll::Ready(Some(Err(ResponseBodyError::Stalled(self.timer.limit))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }
}

impl ProxyBody {
    /// Streams an upstream body (none after a `101`), cut after
    /// `read_timeout` without data.
    pub fn upstream(
        body: Option<ResponseBody>,
        read_timeout: Duration,
        record: RequestRecord,
        busy: Busy,
    ) -> Self {
        Self {
            kind: Kind::Upstream(UpstreamBody {
                body,
                timer: ReadTimer::new(read_timeout),
            }),
            record: Some(record),
            bytes: 0,
            busy,
        }
    }

    /// A body made by the proxy.
    pub fn full(bytes: Bytes, record: RequestRecord, busy: Busy) -> Self {
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            record: Some(record),
            bytes: 0,
            busy,
        }
    }

    /// The admin side's answer (`--dashboard-host`).
    pub fn admin(body: crate::admin::Body, record: RequestRecord, busy: Busy) -> Self {
        Self {
            kind: Kind::Admin(body),
            record: Some(record),
            bytes: 0,
            busy,
        }
    }

    /// Completes the record, once, and hands it to the sink.
    fn finish(&mut self, complete: bool) {
        if let Some(mut record) = self.record.take() {
            record.complete(self.bytes, complete);
            self.busy.sink().record(&record);
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
            Kind::Upstream(body) => match body.poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => return Poll::Pending,
            },
            Kind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Kind::Admin(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => frame.map(|f| f.map_err(|never| match never {})),
                Poll::Pending => return Poll::Pending,
            },
        };
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Some(Err(_)) => this.finish(false),
            None => this.finish(true),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(u) => u.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Admin(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(u) => u
                .body
                .as_ref()
                .map_or(SizeHint::with_exact(0), Body::size_hint),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Admin(body) => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body that reports its end up front may never be polled.
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}
