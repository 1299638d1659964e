//! branchgate's own HTTP/1 server connection: the client leg of every
//! HTTP/1.x request, read by [`parse_request`] and the shared body
//! [`Decoder`], answered through [`write_response_head`] and the response
//! body's framing, all in the connection's own task.
//!
//! One future per connection, polled by [`drive`](crate::proxy::conns::drive)
//! as hyper's was: it reads a head, runs the handler's future in place,
//! writes the response head and body, and goes on with the next request in
//! its buffer. A request body is read from the same buffer: the body the
//! handler holds ([`BodyReader`]) and this future share it, and the body
//! asks this future for bytes (in the same task, no channel and no second
//! task: the upload is polled from inside the handler's future).
//!
//! As hyper's server did: a client that closes its side while a request is
//! served has gone (its handler is dropped; no half-close); an answer sent
//! before the request body was read in full closes the connection; `100
//! Continue` goes out when the body is first wanted; a `101`, or a `2xx` to
//! CONNECT, hands the socket and the bytes read past the head to the
//! tunnel ([`OwnUpgrade`]).

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tracing::debug;

use super::{Asked, BodySize, RequestHead, parse_request, write_response_head};
use crate::proxy::body::{ClientBody, ProxyBody};
use crate::proxy::conns::Graceful;
use crate::proxy::proto::{Io, Prefixed};
use crate::upstream::h1::{Decoded, Decoder, Framing, LAST_CHUNK, ParseError, put_chunk_size_line};

/// What a connection is served with: one call per request.
pub trait Handler: Clone + Send + Unpin + 'static {
    /// The request's future: its response, never an error.
    type Future: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static;
    /// Starts serving `req`.
    fn call(&self, req: Request<ClientBody>) -> Self::Future;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request<ClientBody>) -> Fut + Clone + Send + Unpin + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    type Future = Fut;

    fn call(&self, req: Request<ClientBody>) -> Fut {
        self(req)
    }
}

/// Why a connection ended badly (logged at debug by the caller).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How much room a read makes when the buffer has less than [`MIN_READ`]
/// left: a typical request head whole.
const READ_SIZE: usize = 4096;
/// Less room than this left in the buffer: make [`READ_SIZE`] first.
const MIN_READ: usize = 1024;
/// A buffer that grew past this (a large head, pipelined requests, many
/// small frames queued for a slow client) is given back once the
/// connection is idle.
const KEEP_BUFFER: usize = 16 * 1024;
/// Response body data up to this size is copied beside the head (one write
/// for a small response); larger data is written from its own buffer.
const COPY_DATA: usize = 4096;
/// Queued response bytes that are written before the body is polled again.
const WRITE_HIGH: usize = 64 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The request being served, as far as its response and the connection go.
struct Asking {
    method: Method,
    version: Version,
    keep_alive: bool,
    /// Where the socket goes if the response switches protocols.
    upgrade: Option<oneshot::Sender<Upgraded>>,
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// Reading a request head (from the buffer first).
        Head,
        /// The handler runs.
        Handling { #[pin] fut: F },
        /// The response body goes out.
        Body {
            body: ProxyBody,
            framing: Framing,
            // Bytes of a body framed by its length still to send.
            left: u64,
            keep_alive: bool,
            upgrade: Option<oneshot::Sender<Upgraded>>,
        },
        /// What is queued goes out; then the next request, a hand-over, or the end.
        Flush {
            keep_alive: bool,
            upgrade: Option<oneshot::Sender<Upgraded>>,
        },
        /// The connection is closing (TLS: close_notify first).
        Shutdown,
        Done,
    }
}

pin_project_lite::pin_project! {
    /// One client connection served over HTTP/1.x.
    pub struct Conn<I, H>
    where
        H: Handler,
    {
        core: Core<I, H>,
        #[pin]
        state: State<H::Future>,
    }
}

/// A connection's buffers and socket: everything but the handler's future.
struct Core<I, H> {
    /// Taken by a tunnel.
    io: Option<I>,
    /// Bytes read and not yet taken: a head, pipelined requests. While a
    /// request body is being read it lives in the body's shared state.
    read: BytesMut,
    /// Response bytes queued: the head, chunk framing, small data.
    write: Vec<u8>,
    /// How much of `write` went out.
    written: usize,
    /// A larger data frame queued after `write`, then `tail`.
    data: Bytes,
    tail: &'static [u8],
    handler: H,
    limit: usize,
    /// The request being handled.
    asking: Option<Asking>,
    /// The current request's body, while it is not read in full (the
    /// connection cannot carry another request until it is).
    body: Option<Arc<Shared>>,
    /// Asked to finish what is in flight and close.
    closing: bool,
    /// Closing starts with a shutdown (TLS: close_notify). A plain TCP
    /// socket is just closed, as nginx does: a shutdown(2) before close(2)
    /// sends the same FIN, one system call later.
    shutdown: bool,
}

impl<I: Io, H: Handler> Conn<I, H> {
    /// Serves `io`, whose first bytes (already read) are `read`, with
    /// `handler`; request heads may take up to `limit` bytes. `shutdown`:
    /// the stream has something to say before it closes (TLS).
    pub fn new(io: I, read: BytesMut, handler: H, limit: usize, shutdown: bool) -> Self {
        Self {
            core: Core {
                io: Some(io),
                read,
                write: Vec::new(),
                written: 0,
                data: Bytes::new(),
                tail: b"",
                handler,
                limit,
                asking: None,
                body: None,
                closing: false,
                shutdown,
            },
            state: State::Head,
        }
    }
}

/// What [`Core::poll_reads`] found.
enum Reads {
    /// Something changed: go on.
    Progress,
    /// The client has gone.
    Gone,
}

impl<I: Io, H: Handler> Core<I, H> {
    fn io(&mut self) -> Pin<&mut I> {
        socket(&mut self.io)
    }

    /// Reads more into the buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        make_room(&mut self.read);
        let io = socket(&mut self.io);
        tokio_util::io::poll_read_buf(io, cx, &mut self.read)
    }

    /// Writes everything queued.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let head = &self.write[self.written..];
            if head.is_empty() && self.data.is_empty() && self.tail.is_empty() {
                self.write.clear();
                self.written = 0;
                return Poll::Ready(Ok(()));
            }
            let slices = [
                IoSlice::new(head),
                IoSlice::new(&self.data),
                IoSlice::new(self.tail),
            ];
            let io = socket(&mut self.io);
            let mut n = match std::task::ready!(io.poll_write_vectored(cx, &slices)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let from_head = n.min(head.len());
            self.written += from_head;
            n -= from_head;
            let from_data = n.min(self.data.len());
            self.data.advance(from_data);
            if self.data.is_empty() {
                // Let go of the upstream's buffer now: its next read can
                // reuse it instead of allocating another.
                self.data = Bytes::new();
            }
            n -= from_data;
            self.tail = &self.tail[n.min(self.tail.len())..];
        }
    }

    /// Writes everything queued and flushes (TLS).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_write_out(cx))?;
        self.io().poll_flush(cx)
    }

    /// Queues one data frame of the response body, framed.
    fn queue_data(&mut self, framing: Framing, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let chunked = framing == Framing::Chunked;
        if chunked {
            put_chunk_size_line(&mut self.write, data.len());
        }
        if data.len() <= COPY_DATA {
            self.write.extend_from_slice(&data);
            if chunked {
                self.write.extend_from_slice(b"\r\n");
            }
        } else {
            self.data = data;
            self.tail = if chunked { b"\r\n" } else { b"" };
        }
    }

    /// Idle: buffers that grew past [`KEEP_BUFFER`] are given back.
    fn shrink(&mut self) {
        if self.read.capacity() > KEEP_BUFFER {
            self.read = BytesMut::new();
        }
        if self.write.capacity() > KEEP_BUFFER {
            self.write = Vec::new();
        }
    }

    fn queued(&self) -> usize {
        self.write.len() - self.written + self.data.len() + self.tail.len()
    }

    /// Starts serving a parsed head: the handler's future.
    fn start(&mut self, head: RequestHead) -> H::Future {
        let RequestHead {
            method,
            uri,
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        } = head;
        let body = match framing {
            Framing::Length(0) => ClientBody::Empty,
            _ => {
                let shared = Arc::new(Shared {
                    inner: Mutex::new(Inner {
                        buf: std::mem::take(&mut self.read),
                        decoder: Decoder::request(framing),
                        want: false,
                        eof: false,
                        expect_continue,
                        body_waker: None,
                        conn_waker: None,
                    }),
                });
                self.body = Some(shared.clone());
                ClientBody::H1(BodyReader { shared })
            }
        };
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        let tx = match upgrade {
            true => {
                let (tx, rx) = oneshot::channel();
                req.extensions_mut()
                    .insert(OwnUpgrade(Arc::new(Mutex::new(Some(rx)))));
                Some(tx)
            }
            false => None,
        };
        self.asking = Some(Asking {
            method,
            version,
            keep_alive,
            upgrade: tx,
        });
        self.handler.call(req)
    }

    /// Queues the response's head; what follows it.
    fn respond(&mut self, resp: Response<ProxyBody>) -> State<H::Future> {
        let asking = self.asking.take().expect("a request is handled");
        let (parts, body) = resp.into_parts();
        let size = match (body.is_end_stream(), body.size_hint().exact()) {
            (true, _) => BodySize::Empty,
            (false, Some(n)) => BodySize::Exact(n),
            (false, None) => BodySize::Unknown,
        };
        let asked = Asked {
            method: &asking.method,
            version: asking.version,
            keep_alive: asking.keep_alive && !self.closing,
        };
        let written = with_date(|date| {
            write_response_head(
                &mut self.write,
                asked,
                parts.status,
                &parts.headers,
                size,
                date,
            )
        });
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS
            || (asking.method == Method::CONNECT && parts.status.is_success());
        let upgrade = asking.upgrade.filter(|_| switching);
        match written.framing {
            // Nothing follows the head: the body (empty, or a HEAD's) ends here.
            Framing::Length(0) => State::Flush {
                keep_alive: written.keep_alive,
                upgrade,
            },
            framing => State::Body {
                body,
                framing,
                left: match framing {
                    Framing::Length(n) => n,
                    _ => 0,
                },
                keep_alive: written.keep_alive,
                upgrade,
            },
        }
    }

    /// While a request is served: reads what its body wants, or reads ahead
    /// (pipelined bytes; the client's EOF). `handling`: no response head
    /// went out yet (`100 Continue` may).
    fn poll_reads(&mut self, cx: &mut Context<'_>, handling: bool) -> Poll<io::Result<Reads>> {
        if let Some(shared) = self.body.clone() {
            let mut inner = shared.lock();
            if inner.decoder.is_done() {
                drop(inner);
                self.settle_body();
                return Poll::Ready(Ok(Reads::Progress));
            }
            if !inner.want || inner.eof {
                if !inner
                    .conn_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inner.conn_waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            if inner.expect_continue {
                inner.expect_continue = false;
                if handling {
                    self.write.extend_from_slice(CONTINUE);
                }
                return Poll::Ready(Ok(Reads::Progress));
            }
            if handling && self.queued() > 0 {
                // `100 Continue` first.
                drop(inner);
                return self.poll_send(cx).map_ok(|()| Reads::Progress);
            }
            make_room(&mut inner.buf);
            let io = socket(&mut self.io);
            let read = std::task::ready!(tokio_util::io::poll_read_buf(io, cx, &mut inner.buf));
            match read {
                Ok(0) | Err(_) => inner.eof = true,
                Ok(_) => inner.want = false,
            }
            if let Some(waker) = inner.body_waker.take()
                && !waker.will_wake(cx.waker())
            {
                waker.wake();
            }
            return Poll::Ready(Ok(Reads::Progress));
        }
        if self.read.len() >= self.limit {
            return Poll::Pending;
        }
        match std::task::ready!(self.poll_fill(cx)) {
            Ok(0) => Poll::Ready(Ok(Reads::Gone)),
            Ok(_) => Poll::Ready(Ok(Reads::Progress)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Answers a head that could not be read (the connection then closes).
    fn refuse(&mut self, status: StatusCode) {
        let asked = Asked {
            method: &Method::GET,
            version: Version::HTTP_11,
            keep_alive: false,
        };
        with_date(|date| {
            write_response_head(
                &mut self.write,
                asked,
                status,
                &HeaderMap::new(),
                BodySize::Empty,
                date,
            )
        });
    }

    /// Ends the current request's body: if it was read in full (or there
    /// was none), what follows it comes back to the connection and the
    /// connection can carry another request (true).
    fn settle_body(&mut self) -> bool {
        let Some(shared) = self.body.take() else {
            return true;
        };
        let mut inner = shared.lock();
        let whole = inner.decoder.is_done();
        if whole {
            // What follows it is the next request's.
            self.read = std::mem::take(&mut inner.buf);
        }
        whole
    }

    /// Gives the socket, with the bytes read past the head, to the tunnel.
    fn hand_over(&mut self, upgrade: oneshot::Sender<Upgraded>) {
        self.settle_body();
        let io = self.io.take().expect("handed over once");
        let upgraded = Prefixed::new(std::mem::take(&mut self.read), Box::new(io) as Box<dyn Io>);
        // A tunnel that is gone already: the connection closes.
        let _ = upgrade.send(upgraded);
    }
}

/// The connection's socket (a field of its own, so that it can be borrowed
/// beside a buffer); gone only once a tunnel has it.
fn socket<I: Unpin>(io: &mut Option<I>) -> Pin<&mut I> {
    Pin::new(io.as_mut().expect("the socket was handed over"))
}

/// Polls `$poll` (an `io::Result` poll); on an error the connection ends
/// with it; Pending returns Pending.
macro_rules! io_ready {
    ($state:expr, $poll:expr) => {
        match $poll {
            Poll::Ready(Ok(v)) => v,
            Poll::Ready(Err(e)) => {
                $state.set(State::Done);
                return Poll::Ready(Err(e.into()));
            }
            Poll::Pending => return Poll::Pending,
        }
    };
}

impl<I: Io, H: Handler> Future for Conn<I, H> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let core = this.core;
        let mut state = this.state;
        loop {
            match state.as_mut().project() {
                StateProj::Head => {
                    if !core.read.is_empty() {
                        match parse_request(&mut core.read, core.limit) {
                            Ok(Some(head)) => {
                                let fut = core.start(head);
                                state.set(State::Handling { fut });
                                continue;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                debug!(error = %e, "request head refused");
                                core.refuse(e.status());
                                state.set(State::Flush {
                                    keep_alive: false,
                                    upgrade: None,
                                });
                                continue;
                            }
                        }
                    } else if core.closing {
                        state.set(State::Shutdown);
                        continue;
                    } else {
                        core.shrink();
                    }
                    if io_ready!(state, core.poll_fill(cx)) == 0 {
                        // Closed: between requests, or halfway through a head.
                        state.set(State::Done);
                        return Poll::Ready(Ok(()));
                    }
                }
                StateProj::Handling { fut } => {
                    let Poll::Ready(Ok(resp)) = fut.poll(cx) else {
                        match io_ready!(state, core.poll_reads(cx, true)) {
                            Reads::Progress => continue,
                            Reads::Gone => {
                                // The client went away: its request goes too.
                                state.set(State::Done);
                                return Poll::Ready(Ok(()));
                            }
                        }
                    };
                    let next = core.respond(resp);
                    // Drops the handler's future in place.
                    state.set(next);
                }
                StateProj::Body {
                    body,
                    framing,
                    left,
                    ..
                } => {
                    let framing = *framing;
                    // With much queued, write it out before taking more.
                    let full = core.queued() >= WRITE_HIGH || !core.data.is_empty();
                    let polled = match full {
                        true => Poll::Pending,
                        false => Pin::new(body).poll_frame(cx),
                    };
                    match polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            let Ok(data) = frame.into_data() else {
                                // Trailers do not go to HTTP/1 clients.
                                continue;
                            };
                            if let Framing::Length(_) = framing {
                                let n = data.len() as u64;
                                if n > *left {
                                    state.set(State::Done);
                                    return Poll::Ready(Err(
                                        "response body longer than its Content-Length".into(),
                                    ));
                                }
                                *left -= n;
                            }
                            core.queue_data(framing, data);
                        }
                        Poll::Ready(None) => {
                            if framing == Framing::Chunked {
                                core.write.extend_from_slice(LAST_CHUNK);
                            }
                            let StateProj::Body {
                                left,
                                keep_alive,
                                upgrade,
                                ..
                            } = state.as_mut().project()
                            else {
                                unreachable!()
                            };
                            if matches!(framing, Framing::Length(_)) && *left > 0 {
                                state.set(State::Done);
                                return Poll::Ready(Err(
                                    "response body shorter than its Content-Length".into(),
                                ));
                            }
                            let next = State::Flush {
                                keep_alive: *keep_alive && framing != Framing::Close,
                                upgrade: upgrade.take(),
                            };
                            state.set(next);
                        }
                        Poll::Ready(Some(Err(e))) => {
                            // Cut short: the client sees the connection close
                            // before the body's end.
                            state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Pending => {
                            // Out with what is queued while the body waits
                            // (or the socket); the request body's reads
                            // meanwhile.
                            let sent = core.poll_send(cx);
                            if let Poll::Ready(Err(e)) = sent {
                                state.set(State::Done);
                                return Poll::Ready(Err(e.into()));
                            }
                            if full && sent.is_ready() {
                                continue;
                            }
                            match io_ready!(state, core.poll_reads(cx, false)) {
                                Reads::Progress => continue,
                                Reads::Gone => {
                                    state.set(State::Done);
                                    return Poll::Ready(Ok(()));
                                }
                            }
                        }
                    }
                }
                StateProj::Flush {
                    keep_alive,
                    upgrade,
                } => {
                    io_ready!(state, core.poll_send(cx));
                    if let Some(upgrade) = upgrade.take() {
                        core.hand_over(upgrade);
                        state.set(State::Done);
                        return Poll::Ready(Ok(()));
                    }
                    // A body still being read: whether it ended in time.
                    let next = match core.settle_body() && *keep_alive && !core.closing {
                        true => State::Head,
                        false => State::Shutdown,
                    };
                    state.set(next);
                }
                StateProj::Shutdown => {
                    // Errors closing are the client's: nothing is lost.
                    if core.shutdown {
                        let _ = std::task::ready!(core.io().poll_shutdown(cx));
                    }
                    state.set(State::Done);
                    return Poll::Ready(Ok(()));
                }
                StateProj::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<I: Io, H: Handler> Graceful for Conn<I, H> {
    type Error = Error;

    /// No more requests after the one in flight (its response says
    /// `Connection: close` if not written yet); idle, it closes at once.
    fn graceful_shutdown(self: Pin<&mut Self>) {
        self.project().core.closing = true;
    }
}

/// Room for a read in `buf`: what is left if at least [`MIN_READ`], else
/// [`READ_SIZE`] more (reusing the allocation when nothing else holds it).
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(READ_SIZE);
    }
}

/// Calls `f` with the current `Date` value, formatted once a second per thread.
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        // The second it was formatted for; none yet.
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            let len = text.len().min(29);
            cached.1[..len].copy_from_slice(&text.as_bytes()[..len]);
            cached.0 = secs;
        }
        f(&cached.1)
    })
}

/// A request body's state, shared by its [`BodyReader`] and the connection.
struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in here is left half-changed by a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    /// The connection's read buffer, while the body is read.
    buf: BytesMut,
    decoder: Decoder,
    /// The body waits for bytes: the connection reads.
    want: bool,
    /// The client closed (or the read failed).
    eof: bool,
    /// `100 Continue` is still to be sent when the body is first wanted.
    expect_continue: bool,
    body_waker: Option<Waker>,
    conn_waker: Option<Waker>,
}

/// An HTTP/1 request body read by the connection it came on.
pub struct BodyReader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyReader")
    }
}

impl Body for BodyReader {
    type Data = Bytes;
    type Error = ParseError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ParseError>>> {
        let mut inner = self.shared.lock();
        let inner = &mut *inner;
        match inner.decoder.decode(&mut inner.buf) {
            Ok(Decoded::Data(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(Decoded::End) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
            Ok(Decoded::More) if inner.eof => Poll::Ready(Some(Err(ParseError::Cut))),
            Ok(Decoded::More) => {
                inner.want = true;
                if !inner
                    .body_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inner.body_waker = Some(cx.waker().clone());
                }
                // Polled from another task: wake the connection to read.
                if let Some(conn) = inner.conn_waker.take()
                    && !conn.will_wake(cx.waker())
                {
                    conn.wake();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared.lock().decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.shared.lock().decoder.length_left() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The client's side of a protocol switch on an HTTP/1 connection served
/// by [`Conn`]: in the request's extensions until the upgrade is taken.
/// (Shared, as request extensions must be `Clone`; only the first taker
/// gets it.)
#[derive(Clone)]
pub struct OwnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OwnUpgrade {
    /// The client's socket once the `101` went out; `None` if the
    /// connection ended without switching (or it was taken already).
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        rx.await.ok()
    }
}

/// The client's socket after a `101` (or a tunnel's `2xx`), the bytes it
/// sent past its request head first.
pub type Upgraded = Prefixed<Box<dyn Io>>;
