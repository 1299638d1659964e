//! HTTP/1.1 or h2 on one port: which one a connection speaks, and the
//! connection that serves it (branchgate's own for HTTP/1, hyper's for h2).
//!
//! Over TLS, ALPN has said it already. On a plain connection (and TLS without
//! ALPN) the first read decides: bytes that are not the start of the h2
//! connection preface are HTTP/1 (h2c needs prior knowledge). That first read
//! takes whatever the client sent, up to [`FIRST_READ`], into the buffer the
//! HTTP/1 connection goes on reading into (so a whole first request head is
//! parsed from it at once), or hands it to hyper's h2 connection as the start
//! of the stream.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::body::{ClientBody, ProxyBody};
use super::conns::Graceful;
use super::h1::serve::{Conn, Handler};

/// The h2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much the deciding read may take: a typical request head whole.
const FIRST_READ: usize = 4096;

/// What a connection speaks, when known before its first byte (TLS ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x (ALPN `http/1.1`, or anything but the h2 preface).
    Http1,
    /// HTTP/2 (ALPN `h2`, or the preface with prior knowledge).
    H2,
}

impl Proto {
    /// What a TLS connection's negotiated ALPN protocol says; `None` without one.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Option<Self> {
        match alpn? {
            b"h2" => Some(Self::H2),
            _ => Some(Self::Http1),
        }
    }
}

/// A client stream a connection's own task can serve.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The proxy's request handler as hyper's h2 connection calls it.
#[derive(Clone)]
pub struct H2Service<H>(H);

impl<H: Handler> hyper::service::Service<Request<Incoming>> for H2Service<H> {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = H::Future;

    fn call(&self, req: Request<Incoming>) -> H::Future {
        self.0.call(req.map(ClientBody::H2))
    }
}

type H2<I, H> = http2::Connection<TokioIo<Prefixed<I>>, H2Service<H>, TokioExecutor>;

/// Why a served connection ended badly.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// One served connection: deciding, then branchgate's own HTTP/1
    /// connection or hyper's h2 one. A graceful shutdown while deciding
    /// closes at once (nothing was asked yet).
    pub struct Serve<I, H>
    where
        H: Handler,
    {
        #[pin]
        state: State<I, H>,
    }
}

/// What deciding needs, then hands on.
struct Deciding<I, H> {
    io: I,
    buf: BytesMut,
    handler: H,
    http2: Arc<http2::Builder<TokioExecutor>>,
    tls: bool,
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<I, H>
    where
        H: Handler,
    {
        // Taken when decided.
        Deciding { deciding: Option<Deciding<I, H>> },
        // Both boxed: the HTTP/1 connection holds the handler's future
        // (1.3 KiB), hyper's h2 connection more. Inline, every connection's
        // future would be that large, and it is moved whole four times on
        // its way (through `Serve::new`, into `drive`, into its task, and
        // at the decision): one allocation costs less.
        H1 { conn: Pin<Box<Conn<I, H>>> },
        H2 { conn: Box<H2<I, H>> },
        Closed,
    }
}

impl<I: Io, H: Handler> Serve<I, H> {
    /// Serves `io` with `handler`: as `known` says, or as its first bytes
    /// say; `tls`: a TLS stream (closed with close_notify).
    pub fn new(
        io: I,
        handler: H,
        http2: &Arc<http2::Builder<TokioExecutor>>,
        known: Option<Proto>,
        tls: bool,
    ) -> Self {
        let state = match known {
            Some(proto) => start(proto, io, BytesMut::new(), handler, http2, tls),
            None => State::Deciding {
                deciding: Some(Deciding {
                    io,
                    buf: BytesMut::new(),
                    handler,
                    http2: http2.clone(),
                    tls,
                }),
            },
        };
        Self { state }
    }
}

fn start<I: Io, H: Handler>(
    proto: Proto,
    io: I,
    read: BytesMut,
    handler: H,
    http2: &http2::Builder<TokioExecutor>,
    tls: bool,
) -> State<I, H> {
    match proto {
        Proto::Http1 => State::H1 {
            conn: Box::pin(Conn::new(io, read, handler, crate::net::HTTP1_BUFFER, tls)),
        },
        Proto::H2 => State::H2 {
            conn: Box::new(
                http2.serve_connection(TokioIo::new(Prefixed { read, io }), H2Service(handler)),
            ),
        },
    }
}

/// What `read` (bytes from the start of a connection) says it speaks; `None`
/// while they are a proper prefix of the h2 preface.
fn decide(read: &[u8]) -> Option<Proto> {
    let n = read.len().min(PREFACE.len());
    if read[..n] != PREFACE[..n] {
        Some(Proto::Http1)
    } else if n == PREFACE.len() {
        Some(Proto::H2)
    } else {
        None
    }
}

/// Reads from the start of a connection into `read` until its bytes decide;
/// `None` if the read failed (the connection is over).
fn poll_decide<I: AsyncRead + Unpin>(
    io: &mut I,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Option<Proto>> {
    loop {
        if let Some(proto) = decide(read) {
            return Poll::Ready(Some(proto));
        }
        // Read on the stack: a connection that sends nothing holds nothing.
        let mut space = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut buf = ReadBuf::uninit(&mut space);
        if let Err(error) = ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
            debug!(%error, "connection failed before its first request");
            return Poll::Ready(None);
        }
        if buf.filled().is_empty() {
            // Closed before a whole preface: whatever came is an HTTP/1
            // head, which the HTTP/1 connection answers or drops.
            return Poll::Ready(Some(Proto::Http1));
        }
        if read.capacity() == 0 {
            // What the HTTP/1 connection reads into from now on: room for
            // the next read too, so its first read allocates nothing.
            *read = BytesMut::with_capacity(FIRST_READ);
        }
        read.extend_from_slice(buf.filled());
    }
}

impl<I: Io, H: Handler> Future for Serve<I, H> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Deciding { deciding } => {
                    let Some(d) = deciding else {
                        return Poll::Ready(Ok(()));
                    };
                    let Some(proto) = ready!(poll_decide(&mut d.io, &mut d.buf, cx)) else {
                        return Poll::Ready(Ok(()));
                    };
                    let d = deciding.take().expect("deciding");
                    state.set(start(proto, d.io, d.buf, d.handler, &d.http2, d.tls));
                }
                StateProj::H1 { conn } => return conn.as_mut().poll(cx),
                StateProj::H2 { conn } => {
                    return Pin::new(&mut **conn).poll(cx).map_err(Into::into);
                }
                StateProj::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<I: Io, H: Handler> Graceful for Serve<I, H> {
    type Error = Error;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        let mut state = self.project().state;
        match state.as_mut().project() {
            StateProj::Deciding { .. } => state.set(State::Closed),
            StateProj::H1 { conn } => conn.as_mut().graceful_shutdown(),
            StateProj::H2 { conn } => Pin::new(&mut **conn).graceful_shutdown(),
            StateProj::Closed => {}
        }
    }
}

/// A stream whose first bytes were already read: those come first.
pub struct Prefixed<I> {
    read: BytesMut,
    io: I,
}

impl<I> Prefixed<I> {
    /// `io`, after `read`.
    pub fn new(read: BytesMut, io: I) -> Self {
        Self { read, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.has_remaining() {
            let n = this.read.len().min(out.remaining());
            out.put_slice(&this.read[..n]);
            this.read.advance(n);
            if !this.read.has_remaining() {
                // Hand the allocation back now, not at the connection's end.
                this.read = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_decide() {
        assert_eq!(decide(b"GET / HTTP/1.1\r\n"), Some(Proto::Http1));
        assert_eq!(decide(b"G"), Some(Proto::Http1));
        assert_eq!(decide(b"PRX"), Some(Proto::Http1));
        // "PRI" is also an HTTP/1 method name: only the whole preface is h2.
        assert_eq!(decide(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r"), None);
        assert_eq!(decide(b"PRI * HTTP/1.1\r\n"), Some(Proto::Http1));
        assert_eq!(decide(b""), None);
        assert_eq!(decide(PREFACE), Some(Proto::H2));
        let mut more = PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(decide(&more), Some(Proto::H2));
    }

    #[test]
    fn alpn_decides_over_tls() {
        assert_eq!(Proto::from_alpn(Some(b"h2")), Some(Proto::H2));
        assert_eq!(Proto::from_alpn(Some(b"http/1.1")), Some(Proto::Http1));
        assert_eq!(Proto::from_alpn(None), None);
    }
}
