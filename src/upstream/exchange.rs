//! One request on an upstream connection, driven in the request's own task:
//! the head and body are written while the response head is awaited (an
//! upstream may answer before the upload ends), then [`ResponseBody`] reads
//! the body straight off the socket and gives the connection back to its
//! upstream's idle queue when the response ended cleanly. No connection
//! task, no channel: an idle connection is watched by nobody, and checked
//! for life when it is taken ([`Conn::is_alive`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::body::{RequestBody, RequestBodyError};
use super::conn::Lease;
use super::h1::{self, Decoded, Decoder, ParseError, RequestFraming};
use crate::net::{HTTP1_BUFFER, Observed};

/// The socket to an upstream, plain or TLS; its writes are counted.
pub(super) enum Stream {
    Plain(Observed<TcpStream, AtomicU64>),
    Tls(Box<TlsStream<Observed<TcpStream, AtomicU64>>>),
}

macro_rules! on_stream {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($io) => {
                let $io = Pin::new($io);
                $e
            }
            Stream::Tls($io) => {
                let $io = Pin::new(&mut **$io);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_stream!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        on_stream!(self, io => io.poll_write(cx, b))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self, io => io.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, io => io.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, io => io.poll_shutdown(cx))
    }
}

/// An upstream connection between requests: its socket, what was read and
/// not yet used (always empty while it is idle), and its write counter.
pub(super) struct Conn {
    io: Stream,
    buf: BytesMut,
    written: Arc<AtomicU64>,
    /// It has carried a response before (a failure then may just be the
    /// upstream closing an idle connection).
    reused: bool,
    /// How much to read at once when the body's length is unknown: doubles
    /// while reads fill it (to [`HTTP1_BUFFER`]), back to [`HEAD_READ`] when
    /// one does not, so small chunked answers never get a large buffer.
    read_hint: usize,
    /// The buffer was grown past [`HEAD_READ`] for this response.
    grown: bool,
}

/// Room for a response head and a small body in one read. Every pooled
/// connection keeps a buffer this size, of which the allocator touches at
/// least the first page: at 2 KiB two share a page (at 4 or 8 KiB each
/// holds one: +0.5 MiB at 256 connections). A larger head takes more reads
/// (the buffer grows to [`HTTP1_BUFFER`]); nginx reads a head into one page
/// (`proxy_buffer_size`) and refuses a larger one.
const HEAD_READ: usize = 2 * 1024;

impl Conn {
    pub(super) fn new(io: Stream, written: Arc<AtomicU64>) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            written,
            reused: false,
            read_hint: HEAD_READ,
            grown: false,
        }
    }

    pub(super) fn written(&self) -> &Arc<AtomicU64> {
        &self.written
    }

    /// Whether an idle connection can take a request: nothing to read on
    /// it (no close, no reset, no stray bytes). Costs no system call unless
    /// the socket has become readable since its last read.
    pub(super) fn is_alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Readies the connection for the idle queue once its response ended
    /// cleanly. An idle connection keeps a head-sized buffer at most: one
    /// grown for a large body is freed (the client holds what it carried),
    /// so pooled connections do not each hold 64 KiB after large responses
    /// (−3 MiB at 256 connections after the 64 KiB load, BENCHMARKS.md).
    fn idle(&mut self) {
        self.reused = true;
        if self.grown {
            self.buf = BytesMut::new();
            self.grown = false;
            // The next response starts with its head.
            self.read_hint = HEAD_READ;
        }
    }

    /// Reads more into the buffer, with room for `want` bytes (the rest of
    /// the body when its length is known, else the read hint), within 1 KiB
    /// and [`HTTP1_BUFFER`].
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: Option<u64>) -> Poll<io::Result<usize>> {
        let want = want.map_or(self.read_hint, |w| usize::try_from(w).unwrap_or(usize::MAX));
        let want = want.clamp(1024, HTTP1_BUFFER);
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
            self.grown |= want > HEAD_READ;
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        if let Poll::Ready(Ok(n)) = read {
            self.read_hint = match n >= room {
                true => (self.read_hint * 2).min(HTTP1_BUFFER),
                false => HEAD_READ,
            };
        }
        read
    }
}

/// Why a request on an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The socket failed.
    #[error("upstream connection failed")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a whole response head.
    #[error("upstream closed the connection before responding")]
    Closed,
    /// The response is not valid HTTP/1.
    #[error("upstream response is invalid")]
    Parse(#[from] ParseError),
    /// The request body ended before its Content-Length.
    #[error("request body ended before its Content-Length")]
    ShortBody,
    /// A `101` before the whole request body was sent: what the upstream
    /// would read as the new protocol is unknown.
    #[error("upstream switched protocols before the request body was sent")]
    EarlySwitch,
}

/// Why [`Lease::send`] returned no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The upstream failed.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The client's request body failed (stalled, malformed, too large).
    #[error(transparent)]
    Body(RequestBodyError),
}

/// A pooled connection failed before the upstream can have acted on the
/// request: it may go again, unchanged, on a fresh connection.
pub struct Retry(pub UpstreamError);

/// The write side of an exchange: what is left of the request head, body
/// bytes queued for the socket, and where the request body is.
struct Upload<'a> {
    /// The head's bytes not yet written, lent by the [`Outgoing`] (which
    /// keeps them whole for a retry).
    head: &'a [u8],
    /// Body bytes read ahead of the socket (never allocated without a body).
    queue: VecDeque<Bytes>,
    queued: usize,
    framing: RequestFraming,
    /// Body bytes still owed under a Content-Length.
    left: u64,
    /// The body has been read to its end (and its end queued).
    ended: bool,
    /// A body frame was taken from the client (the request cannot go again).
    taken: bool,
    /// Some bytes reached the socket.
    wrote: bool,
    /// Writing failed: the response is still read, the connection not reused.
    broken: bool,
}

/// How much body is read ahead of the socket.
const QUEUE_LIMIT: usize = 64 * 1024;

impl Upload<'_> {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queued += bytes.len();
            self.queue.push_back(bytes);
        }
    }

    /// Nothing is waiting to be written.
    fn flushed(&self) -> bool {
        self.head.is_empty() && self.queue.is_empty()
    }

    fn done(&self) -> bool {
        self.ended && self.flushed()
    }

    /// Queues what the body has ready, up to the limit.
    fn fill(&mut self, body: &mut RequestBody, cx: &mut Context<'_>) -> Result<bool, SendError> {
        let mut progressed = false;
        while !self.ended && self.queued < QUEUE_LIMIT {
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(frame) => frame,
            };
            progressed = true;
            match frame {
                Some(Err(e)) => return Err(SendError::Body(e)),
                Some(Ok(frame)) => {
                    // Trailers of an h2 request are dropped (hop-by-hop).
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    self.taken = true;
                    match self.framing {
                        RequestFraming::Length(_) => {
                            if data.len() as u64 > self.left {
                                return Err(SendError::Upstream(UpstreamError::ShortBody));
                            }
                            self.left -= data.len() as u64;
                            self.push(data);
                        }
                        RequestFraming::Chunked => {
                            self.push(h1::chunk_size_line(data.len()));
                            self.push(data);
                            self.push(Bytes::from_static(b"\r\n"));
                        }
                    }
                }
                None => {
                    self.ended = true;
                    match self.framing {
                        RequestFraming::Length(_) if self.left != 0 => {
                            return Err(SendError::Upstream(UpstreamError::ShortBody));
                        }
                        RequestFraming::Length(_) => {}
                        RequestFraming::Chunked => self.push(Bytes::from_static(h1::LAST_CHUNK)),
                    }
                }
            }
        }
        Ok(progressed)
    }

    /// Writes what is queued. A write error breaks the upload, not the
    /// exchange: the upstream may have answered and closed.
    fn write(&mut self, io: &mut Stream, cx: &mut Context<'_>) -> bool {
        let mut progressed = false;
        while !self.broken && !self.flushed() {
            let mut slices = [IoSlice::new(&[]); 16];
            let pending = std::iter::once(self.head)
                .filter(|head| !head.is_empty())
                .chain(self.queue.iter().map(|bytes| &bytes[..]));
            let mut count = 0;
            for (slice, bytes) in slices.iter_mut().zip(pending) {
                *slice = IoSlice::new(bytes);
                count += 1;
            }
            match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.broken = true,
                Poll::Ready(Ok(mut n)) => {
                    self.wrote = true;
                    let from_head = n.min(self.head.len());
                    self.head = &self.head[from_head..];
                    n -= from_head;
                    self.queued -= n;
                    while n > 0 {
                        let front = self.queue.front_mut().expect("wrote what was queued");
                        if n >= front.len() {
                            n -= front.len();
                            self.queue.pop_front();
                        } else {
                            let _ = front.split_to(n);
                            n = 0;
                        }
                    }
                }
            }
            progressed = true;
        }
        if !self.broken && self.flushed() {
            // TLS holds written records until flushed; a TCP flush is free.
            if let Poll::Ready(Err(_)) = Pin::new(&mut *io).poll_flush(cx) {
                self.broken = true;
            }
        }
        progressed
    }
}

/// A request ready for any upstream connection: its head written out (with
/// the framing the body gets), its body still to stream. Made as soon as the
/// request is ready to forward, so that nothing of the request's head (its
/// header map, its target) outlives that moment: those share hyper's read
/// buffer, which hyper can then reuse for the connection's next read
/// instead of allocating another (hyper#4060).
pub struct Outgoing {
    head: Vec<u8>,
    method: Method,
    framing: RequestFraming,
    body: RequestBody,
}

impl Outgoing {
    /// Writes out `req`'s head, with the `extra` fields after its own.
    pub fn new(req: Request<RequestBody>, extra: &[(&HeaderName, &HeaderValue)]) -> Self {
        let (mut parts, body) = req.into_parts();
        let ended = body.is_end_stream();
        let exact = body.size_hint().exact();
        let framing = h1::request_framing(&mut parts.headers, ended, exact);
        let mut head = Vec::new();
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        h1::write_head(&mut head, &parts.method, target, &parts.headers, extra);
        Self {
            head,
            method: parts.method,
            framing,
            body,
        }
    }
}

impl Lease {
    /// Sends `out` on this lease's connection and waits for the response
    /// head; the body follows through the returned [`ResponseBody`], which
    /// owns the lease from then on. On a pooled connection that failed
    /// before the upstream can have acted on the request, the request (its
    /// body untouched) may go again on a fresh connection ([`Retry`]).
    ///
    /// Not an `async fn`, and the request is lent, not moved: every
    /// request's future contains this one (see `proxy::handler::handle`),
    /// and an `async fn` holds each argument twice.
    pub fn send(
        mut self,
        out: &mut Outgoing,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Result<SendError, Retry>>> + Send + '_
    {
        let framing = out.framing;
        let mut upload = Upload {
            head: &out.head,
            queue: VecDeque::new(),
            queued: 0,
            framing,
            left: match framing {
                RequestFraming::Length(n) => n,
                RequestFraming::Chunked => 0,
            },
            ended: framing == RequestFraming::Length(0),
            taken: false,
            wrote: false,
            broken: false,
        };
        let method = &out.method;
        let body = &mut out.body;
        async move {
            let conn = self.conn_mut();
            let got = poll_fn(|cx| {
                loop {
                    let mut progressed = false;
                    if !upload.ended {
                        match upload.fill(body, cx) {
                            Ok(p) => progressed |= p,
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    progressed |= upload.write(&mut conn.io, cx);
                    match conn.poll_fill(cx, None) {
                        Poll::Pending => {}
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(SendError::Upstream(UpstreamError::Closed)));
                        }
                        Poll::Ready(Ok(_)) => {
                            progressed = true;
                            // Parsed only when bytes came; interim answers
                            // (100 Continue, 103) are skipped.
                            loop {
                                match h1::parse_head(&mut conn.buf, method, HTTP1_BUFFER) {
                                    Err(e) => {
                                        return Poll::Ready(Err(SendError::Upstream(e.into())));
                                    }
                                    Ok(Some(head))
                                        if head.status.is_informational() && head.status != 101 => {
                                    }
                                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                                    Ok(None) => break,
                                }
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            return Poll::Ready(Err(SendError::Upstream(e.into())));
                        }
                    }
                    if !progressed {
                        return Poll::Pending;
                    }
                }
            })
            .await;
            let head = match got {
                Ok(head) => head,
                Err(SendError::Upstream(e)) => {
                    // Nothing of the response came and nothing of the body was
                    // taken: either nothing reached the upstream, or the method
                    // is one that may be repeated (RFC 9110 9.2.2).
                    let conn = self.conn_mut();
                    let again = conn.reused
                        && conn.buf.is_empty()
                        && !upload.taken
                        && matches!(e, UpstreamError::Closed | UpstreamError::Io(_))
                        && (!upload.wrote || idempotent(method));
                    return Err(if again {
                        Err(Retry(e))
                    } else {
                        Ok(SendError::Upstream(e))
                    });
                }
                Err(e) => return Err(Ok(e)),
            };
            if head.status == http::StatusCode::SWITCHING_PROTOCOLS && !upload.done() {
                return Err(Ok(SendError::Upstream(UpstreamError::EarlySwitch)));
            }
            // An answer before the whole body went: the rest is not sent, and
            // the connection is closed after the response.
            let reusable = head.keep_alive
                && head.status != http::StatusCode::SWITCHING_PROTOCOLS
                && upload.done()
                && !upload.broken;
            let mut response = Response::new(());
            *response.status_mut() = head.status;
            // The version is hop-by-hop: the client gets its own connection's
            // (nginx answers an HTTP/1.1 client with HTTP/1.1 whatever the upstream spoke).
            *response.version_mut() = http::Version::HTTP_11;
            *response.headers_mut() = head.headers;
            let body = ResponseBody {
                decoder: Decoder::new(head.framing),
                lease: Some(self),
                reusable,
            };
            Ok(response.map(|()| body))
        }
    }

    fn conn_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until it is recycled")
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// An upstream's response body, read off its connection as the client
/// takes it. Owns the lease: the connection goes back to the idle queue
/// when the body ended cleanly (and may carry another request), and is
/// closed otherwise.
pub struct ResponseBody {
    decoder: Decoder,
    lease: Option<Lease>,
    reusable: bool,
}

impl ResponseBody {
    /// The upstream this body comes from.
    pub fn upstream(&self) -> Option<&Arc<super::Upstream>> {
        self.lease.as_ref().map(Lease::upstream)
    }

    /// The connection for a tunnel (after a `101`), with what the upstream
    /// sent past its response head.
    pub fn into_tunnel(mut self) -> Option<(impl AsyncRead + AsyncWrite + Send + Unpin, Bytes)> {
        let mut lease = self.lease.take()?;
        let conn = lease.take_conn()?;
        Some((conn.io, conn.buf.freeze()))
    }

    fn finish(&mut self) {
        if let Some(mut lease) = self.lease.take()
            && self.reusable
            && let Some(conn) = lease.conn.as_mut()
        {
            // Bytes past the end of a response are never the start of the next one.
            if conn.buf.is_empty() {
                conn.idle();
                lease.recycle();
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        let Some(lease) = this.lease.as_mut() else {
            return Poll::Ready(None);
        };
        let conn = lease.conn_mut();
        loop {
            let decoded = match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::More) => match conn.poll_fill(cx, this.decoder.remaining()) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => this.decoder.eof(),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) => {
                        this.lease = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                other => other,
            };
            return Poll::Ready(match decoded {
                Ok(Decoded::Data(data)) => Some(Ok(Frame::data(data))),
                Ok(Decoded::End) => {
                    this.finish();
                    None
                }
                Ok(Decoded::More) => continue,
                Err(e) => {
                    this.lease = None;
                    Some(Err(e.into()))
                }
            });
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder
            .length_left()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body that says it has ended may never be polled (HEAD, 204,
        // Content-Length: 0); it still ended cleanly.
        if self.decoder.is_done() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn an_idle_connection_keeps_a_head_buffer_but_no_grown_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut upstream, _) = listener.accept().await.unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let mut conn = Conn::new(
            Stream::Plain(Observed::new(stream, written.clone())),
            written,
        );

        // A small response: its buffer stays for the next one.
        upstream.write_all(&[b'x'; 100]).await.unwrap();
        poll_fn(|cx| conn.poll_fill(cx, None)).await.unwrap();
        conn.buf.clear();
        conn.idle();
        assert!(conn.reused);
        assert!(
            (1024..=HEAD_READ).contains(&conn.buf.capacity()),
            "{}",
            conn.buf.capacity()
        );

        // A large body with a known length grows it; going idle frees it.
        upstream.write_all(&[b'y'; 64 * 1024]).await.unwrap();
        poll_fn(|cx| conn.poll_fill(cx, Some(64 * 1024)))
            .await
            .unwrap();
        assert!(conn.buf.capacity() > HEAD_READ);
        conn.buf.clear();
        conn.idle();
        assert_eq!(conn.buf.capacity(), 0);

        // And the next small response gets a head-sized buffer again.
        upstream.write_all(&[b'z'; 100]).await.unwrap();
        poll_fn(|cx| conn.poll_fill(cx, None)).await.unwrap();
        conn.buf.clear();
        conn.idle();
        assert!(
            (1024..=HEAD_READ).contains(&conn.buf.capacity()),
            "{}",
            conn.buf.capacity()
        );
    }
}
