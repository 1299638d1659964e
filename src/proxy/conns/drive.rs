//! One connection's task: its connection future, and the signals other
//! tasks raise for it (eviction, drain, abort, the sweep's timeouts).

use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::{ABORT, ConnState, DRAIN, DROP, EVICT, IDLE, SEND_TIMEOUT, Slot};

/// Why [`drive`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The connection finished (client closed, error, upgrade, or a
    /// graceful close after idling, drain or eviction).
    Done,
    /// Asked to close, still idle a moment later: a half-sent request head.
    Dropped,
    /// Closed while idle to make room under the cap.
    Evicted,
    /// The client read none of its response for the send timeout.
    SendTimeout,
    /// Still open when the drain's grace period ran out ([`Conns::abort`](super::Conns::abort)).
    Aborted,
}

/// A connection's future that can be asked to finish what is in flight and
/// close (hyper-util's own trait for this is sealed).
pub trait Graceful: std::future::Future<Output = Result<(), Self::Error>> {
    /// Why the connection ended badly.
    type Error;
    /// Finish in-flight requests, then close (HTTP/2: GOAWAY).
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// Resolves with the [`ConnState::signal`] bits not in `seen`, once any is raised.
struct Signalled<'a> {
    state: &'a ConnState,
    seen: u8,
}

impl std::future::Future for Signalled<'_> {
    type Output = u8;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
        let new = || self.state.signal.load(Ordering::Acquire) & !self.seen;
        if new() == 0 {
            self.state.waker.register(cx.waker());
            // Raised between the first look and the registration?
            if new() == 0 {
                return Poll::Pending;
            }
        }
        Poll::Ready(new())
    }
}

pin_project_lite::pin_project! {
    /// A connection's future and what [`drive`] keeps about its signals.
    /// A named future, not an `async fn`: the connection is polled where it
    /// lies (an `async fn` taking it by value kept it twice, the argument and
    /// its pinned copy, and moved it between them on every connection).
    pub struct Drive<'a, C> {
        #[pin]
        conn: C,
        state: &'a ConnState,
        closing: bool,
        seen: u8,
    }
}

/// Runs `conn` to its end, acting on its signals: closes it gracefully
/// (in-flight responses finish, HTTP/2 gets a GOAWAY) once idle for the
/// header timeout or on [`Conns::drain`](super::Conns::drain); closes it at once when evicted
/// while idle (when busy, once its request is done); drops it when it stays
/// idle after being asked to close (a client stuck halfway through a request
/// head), when the client has taken no response bytes for the send timeout,
/// and on [`Conns::abort`](super::Conns::abort).
pub fn drive<C: Graceful>(conn: C, slot: &Slot) -> Drive<'_, C> {
    Drive {
        conn,
        state: &slot.state,
        closing: false,
        seen: 0,
    }
}

impl<C: Graceful> std::future::Future for Drive<'_, C> {
    type Output = (End, Result<(), C::Error>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let state = *this.state;
        loop {
            // The connection first: its own end wins over a signal.
            if let Poll::Ready(res) = this.conn.as_mut().poll(cx) {
                return Poll::Ready((End::Done, res));
            }
            let signalled = Signalled {
                state,
                seen: *this.seen,
            };
            let Poll::Ready(bits) = pin!(signalled).poll(cx) else {
                return Poll::Pending;
            };
            *this.seen |= bits;
            if bits & ABORT != 0 {
                return Poll::Ready((End::Aborted, Ok(())));
            }
            if bits & SEND_TIMEOUT != 0 {
                return Poll::Ready((End::SendTimeout, Ok(())));
            }
            if bits & DROP != 0 {
                // Raised on another thread: look again here, after the connection's
                // poll. A request that came in since keeps it.
                if state.is_idle() {
                    return Poll::Ready((End::Dropped, Ok(())));
                }
                state.signal.fetch_and(!DROP, Ordering::AcqRel);
                *this.seen &= !DROP;
            }
            if bits & EVICT != 0 && state.is_idle() {
                // Idle means no request in progress and every response
                // byte handed to the kernel (this task wrote them): nothing
                // is lost by closing now, as nginx closes its idle
                // connections. A half-sent head would not close on a
                // graceful request.
                return Poll::Ready((End::Evicted, Ok(())));
            }
            if !*this.closing && bits & (IDLE | DRAIN | EVICT) != 0 {
                // Idle, draining, or a request came in since it was picked
                // for eviction: let what is in flight finish. An idle
                // HTTP/1 connection closes at once, HTTP/2 sends GOAWAY.
                *this.closing = true;
                state
                    .closing_since
                    .store(state.now_ms() + 1, Ordering::Relaxed);
                this.conn.as_mut().graceful_shutdown();
            }
            // Poll the connection again (it may close now), then wait for
            // the signals not seen yet.
        }
    }
}
