//! HTTP/1.1 or h2 on one port: which one a connection speaks, and hyper's
//! connection for it.
//!
//! Over TLS, ALPN has said it already. On a plain connection (and TLS without
//! ALPN) the first read decides: bytes that are not the start of the h2
//! connection preface are HTTP/1 (h2c needs prior knowledge). That first read
//! takes whatever the client sent, up to [`FIRST_READ`], and is handed to
//! hyper as the start of the stream, so hyper parses a whole first request head
//! from its first read. (hyper-util's `auto` reads exactly the 24-byte preface
//! length first: hyper then starts from a partial head, and its next read
//! reallocates and copies its 8 KiB buffer, on every connection.)

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::body::ProxyBody;
use super::conns::Graceful;

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

/// A client stream hyper can serve in a connection's own task.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The proxy's request handler as hyper serves it, on both protocols.
pub trait Service:
    HttpService<
        Incoming,
        ResBody = ProxyBody,
        Future: Send + 'static,
        Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    > + Unpin
{
}
impl<S> Service for S where
    S: HttpService<
            Incoming,
            ResBody = ProxyBody,
            Future: Send + 'static,
            Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        > + Unpin
{
}

/// The two builders a connection is served with.
#[derive(Clone)]
pub struct Builders {
    /// For HTTP/1.x connections (served with upgrades).
    pub http1: http1::Builder,
    /// For h2 and h2c connections.
    pub http2: http2::Builder<TokioExecutor>,
}

type H1<I, S> = http1::UpgradeableConnection<TokioIo<Prefixed<I>>, S>;
type H2<I, S> = http2::Connection<TokioIo<Prefixed<I>>, S, TokioExecutor>;

/// One served connection: deciding, then hyper's HTTP/1 (with upgrades) or
/// h2 connection. A graceful shutdown while deciding closes at once (nothing
/// was asked yet).
pub struct Serve<I, S>
where
    S: HttpService<Incoming>,
{
    state: State<I, S>,
}

#[allow(
    clippy::large_enum_variant,
    reason = "H1 is what nearly every connection becomes: boxing it would cost an allocation each"
)]
enum State<I, S>
where
    S: HttpService<Incoming>,
{
    Deciding {
        io: I,
        buf: BytesMut,
        service: S,
        builders: Arc<Builders>,
    },
    H1(H1<I, S>),
    /// Boxed: hyper's h2 connection is twice the size of its HTTP/1 one, and
    /// every connection's future would be that large (and moved) otherwise.
    H2(Box<H2<I, S>>),
    Closed,
}

impl<I: Io, S: Service> Serve<I, S> {
    /// Serves `io` with `service`: as `known` says, or as its first bytes say.
    pub fn new(io: I, service: S, builders: &Arc<Builders>, known: Option<Proto>) -> Self {
        let state = match known {
            Some(proto) => start(proto, io, BytesMut::new(), service, builders),
            None => State::Deciding {
                io,
                buf: BytesMut::new(),
                service,
                builders: builders.clone(),
            },
        };
        Self { state }
    }
}

fn start<I: Io, S: Service>(
    proto: Proto,
    io: I,
    read: BytesMut,
    service: S,
    b: &Builders,
) -> State<I, S> {
    let io = TokioIo::new(Prefixed { read, io });
    match proto {
        Proto::Http1 => State::H1(b.http1.serve_connection(io, service).with_upgrades()),
        Proto::H2 => State::H2(Box::new(b.http2.serve_connection(io, service))),
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
        // Read on the stack; keep only what came, sized to it: a connection
        // that sends nothing holds nothing.
        let mut space = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut buf = ReadBuf::uninit(&mut space);
        if let Err(error) = ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
            debug!(%error, "connection failed before its first request");
            return Poll::Ready(None);
        }
        if buf.filled().is_empty() {
            // Closed before a whole preface: whatever came is an HTTP/1
            // head, which hyper answers or drops.
            return Poll::Ready(Some(Proto::Http1));
        }
        read.extend_from_slice(buf.filled());
    }
}

impl<I: Io, S: Service> Future for Serve<I, S> {
    type Output = Result<(), hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Deciding { io, buf, .. } => {
                    let Some(proto) = ready!(poll_decide(io, buf, cx)) else {
                        return Poll::Ready(Ok(()));
                    };
                    let State::Deciding {
                        io,
                        buf,
                        service,
                        builders,
                    } = std::mem::replace(&mut this.state, State::Closed)
                    else {
                        unreachable!()
                    };
                    this.state = start(proto, io, buf, service, &builders);
                }
                State::H1(conn) => return Pin::new(conn).poll(cx),
                State::H2(conn) => return Pin::new(&mut **conn).poll(cx),
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<I: Io, S: Service> Graceful for Serve<I, S> {
    type Error = hyper::Error;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        match &mut this.state {
            State::Deciding { .. } => this.state = State::Closed,
            State::H1(conn) => Pin::new(conn).graceful_shutdown(),
            State::H2(conn) => Pin::new(&mut **conn).graceful_shutdown(),
            State::Closed => {}
        }
    }
}

/// A stream whose first bytes were already read: those come first.
struct Prefixed<I> {
    read: BytesMut,
    io: I,
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
