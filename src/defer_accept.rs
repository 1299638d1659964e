//! `--defer-accept`: Linux's `TCP_DEFER_ACCEPT` on every proxy listener.
//!
//! The kernel then completes a client's handshake without waking the
//! process, and queues the connection for `accept(2)` only once its first
//! bytes (a request head, a TLS ClientHello) are there: accepting it and
//! reading the request take one wake-up instead of two. On loopback, where
//! the client's own core pays for waking the proxy, that is +18 % requests/s
//! and -19 % CPU per `Connection: close` request (BENCHMARKS.md, "Deferred
//! accept"). A client that connects and sends nothing is queued anyway once
//! the kernel's first SYN-ACK retransmission (after about [`SECONDS`]) is
//! acknowledged; from then on `--client-header-timeout` applies.
//!
//! Neither std (its `set_deferaccept` is unstable, and on streams) nor
//! socket2 sets this option, so this module calls `setsockopt(2)` itself:
//! with the allocator, the only `unsafe` code in the crate (the library
//! forbids it). The option is set after `listen(2)`, which Linux allows: it
//! is read as each connection's handshake completes.

use std::io;
use std::net::TcpListener;

/// How long a silent connection stays with the kernel before it is accepted
/// anyway (rounded by Linux up to its SYN-ACK retransmission schedule, 1 s
/// for the first): what nginx's `deferred` and HAProxy's `defer-accept` set.
const SECONDS: i32 = 1;

/// Sets `TCP_DEFER_ACCEPT` ([`SECONDS`]) on `listener` (Linux; elsewhere
/// nothing, and accepting works as without it).
pub fn set(listener: &TcpListener) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        sys::set_int(listener, sys::IPPROTO_TCP, sys::TCP_DEFER_ACCEPT, SECONDS)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{c_int, c_void};
    use std::io;
    use std::os::fd::{AsFd, AsRawFd};

    /// `<netinet/in.h>`: the same on every Linux architecture.
    pub const IPPROTO_TCP: c_int = 6;
    /// `<netinet/tcp.h>` (`linux/tcp.h`): the same on every Linux architecture.
    pub const TCP_DEFER_ACCEPT: c_int = 9;

    unsafe extern "C" {
        fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: u32,
        ) -> c_int;
        #[cfg(test)]
        fn getsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *mut c_void,
            len: *mut u32,
        ) -> c_int;
    }

    /// `setsockopt(2)` with an `int` value.
    pub fn set_int(socket: &impl AsFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
        let fd = socket.as_fd();
        // SAFETY: `fd` is an open descriptor borrowed for the whole call;
        // `value` lives on this stack frame across it, and its exact size is
        // passed, which is what an `int` option reads.
        let rc = unsafe {
            setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                size_of::<c_int>() as u32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `getsockopt(2)` of an `int` option.
    #[cfg(test)]
    pub fn get_int(socket: &impl AsFd, level: c_int, name: c_int) -> io::Result<c_int> {
        let fd = socket.as_fd();
        let mut value: c_int = 0;
        let mut len = size_of::<c_int>() as u32;
        // SAFETY: as in `set_int`; the kernel writes at most `len` bytes
        // into `value` and the written length into `len`, both alive here.
        let rc = unsafe {
            getsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    fn listener(defer: bool) -> TcpListener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        if defer {
            set(&l).unwrap();
        }
        l
    }

    /// Polls `accept` until it returns a connection or `limit` passes.
    fn accepted_within(l: &TcpListener, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match l.accept() {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_option_is_set_and_reads_back() {
        let l = listener(true);
        let got = sys::get_int(&l, sys::IPPROTO_TCP, sys::TCP_DEFER_ACCEPT).unwrap();
        assert!(got > 0, "TCP_DEFER_ACCEPT reads {got}");
        let plain = listener(false);
        assert_eq!(
            sys::get_int(&plain, sys::IPPROTO_TCP, sys::TCP_DEFER_ACCEPT).unwrap(),
            0
        );
    }

    #[test]
    fn a_connection_is_accepted_once_its_first_bytes_arrive() {
        // Without the option: accepted as soon as the handshake completes.
        let plain = listener(false);
        let _silent = TcpStream::connect(plain.local_addr().unwrap()).unwrap();
        assert!(accepted_within(&plain, Duration::from_secs(2)));

        // With it: a connected client that sent nothing is not accepted
        // (well before the kernel's one-second retransmission)...
        let l = listener(true);
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(!accepted_within(&l, Duration::from_millis(300)));
        // ...and is, once its first byte is there.
        client.write_all(b"G").unwrap();
        assert!(accepted_within(&l, Duration::from_secs(2)));
    }
}
