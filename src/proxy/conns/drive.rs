//! One connection's task: hyper's connection future, and the signals other
//! tasks raise for it (eviction, drain, abort, the sweep's timeouts).

use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::{ABORT, ConnState, DRAIN, DROP, EVICT, IDLE, SEND_TIMEOUT, Slot};

/// Why [`drive`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// hyper finished the connection (client closed, error, upgrade, or a
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

/// Runs `conn` to its end, acting on its signals: closes it gracefully
/// (in-flight responses finish, HTTP/2 gets a GOAWAY) once idle for the
/// header timeout or on [`Conns::drain`](super::Conns::drain); closes it at once when evicted
/// while idle (when busy, once its request is done); drops it when it stays
/// idle after being asked to close (a client stuck halfway through a request
/// head), when the client has taken no response bytes for the send timeout,
/// and on [`Conns::abort`](super::Conns::abort).
pub async fn drive<C>(conn: C, slot: &Slot) -> (End, Result<(), C::Error>)
where
    C: Graceful,
{
    let state = &slot.state;
    let mut conn = pin!(conn);
    let mut closing = false;
    let mut seen = 0;
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => return (End::Done, res),
            bits = Signalled { state, seen } => {
                seen |= bits;
                if bits & ABORT != 0 {
                    return (End::Aborted, Ok(()));
                }
                if bits & SEND_TIMEOUT != 0 {
                    return (End::SendTimeout, Ok(()));
                }
                if bits & DROP != 0 {
                    // Raised on another thread: look again here, after hyper's
                    // poll. A request that came in since keeps it.
                    if state.is_idle() {
                        return (End::Dropped, Ok(()));
                    }
                    state.signal.fetch_and(!DROP, Ordering::AcqRel);
                    seen &= !DROP;
                }
                if bits & EVICT != 0 && state.is_idle() {
                    // Idle means no request in progress and every response
                    // byte handed to the kernel (this task wrote them): nothing
                    // is lost by closing now, as nginx closes its idle
                    // connections. A half-sent head would not close on a
                    // graceful request.
                    return (End::Evicted, Ok(()));
                }
                if !closing && bits & (IDLE | DRAIN | EVICT) != 0 {
                    // Idle, draining, or a request came in since it was picked
                    // for eviction: let what is in flight finish. An idle
                    // HTTP/1 connection closes at once, HTTP/2 sends GOAWAY.
                    closing = true;
                    state
                        .closing_since
                        .store(state.now_ms() + 1, Ordering::Relaxed);
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
